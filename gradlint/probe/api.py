"""Python API, for pinning a training loop in a test suite.

    report = gradlint.probe.run("train.py", args=["--epochs", "1"], steps=4)
    assert report.ok, report.text()

    with gradlint.probe.watch() as probe:      # in-process, around your own loop
        train_one_epoch(model, loader, optimizer)
    assert probe.report.ok

    report = gradlint.probe.probe_train_step(train_step, batches, optimizer=opt, accumulation_steps=4)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from gradlint.probe.model import ProbeReport, report_from_records
from gradlint.probe.options import ProbeOptions
from gradlint.probe.runner import TORCH_MISSING, run_script, torch_available


def run(script: str, args: Sequence[str] = (), *, steps: int = 4, max_steps: int = 100,
        until_epoch_end: bool = True, timeout: float | None = 300.0, sample: int | None = 4096,
        full: bool = False, disable_dynamo: bool = True) -> ProbeReport:
    """Probe `python script *args` in a child process and return the report (the script's output
    is in `report.script_output`)."""
    options = ProbeOptions(steps=steps, max_steps=max_steps, until_epoch_end=until_epoch_end, timeout=timeout,
                         sample=None if full else sample)
    return run_script(script, list(args), options, capture_output=True, disable_dynamo=disable_dynamo)


class watch:
    """Instrument torch for the duration of a `with` block and judge every optimizer step in it.

    Optimizers created inside the block are tracked automatically; pass existing ones as
    arguments. With `steps=N` the block is left after N optimizer steps (the rest of its body is
    skipped, like `gradlint probe --steps N --no-until-epoch-end`)."""

    def __init__(self, *optimizers: Any, steps: int | None = None, sample: int | None = 4096,
                 full: bool = False) -> None:
        if not torch_available():
            raise RuntimeError(TORCH_MISSING)
        from gradlint.probe.instrumentation import Session

        self.records: list[dict[str, Any]] = []
        never = 1 << 62
        options = ProbeOptions(steps=steps if steps is not None else never, max_steps=never,
                               until_epoch_end=False, timeout=None, sample=None if full else sample)
        self._session = Session(options, self.records.append, hard_exit=False)
        self._optimizers = optimizers
        self._report: ProbeReport | None = None

    def __enter__(self) -> watch:
        self._session.install()
        for opt in self._optimizers:
            self._session.adopt(opt)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        from gradlint.probe.instrumentation import ProbeStop

        stopped = exc_type is not None and issubclass(exc_type, ProbeStop)
        try:
            self._session.finish(natural_end=exc_type is None and not self._session.stop_raised)
        finally:
            self._session.uninstall()
        self._report = report_from_records(self.records, "<in-process>", [])
        return stopped

    @property
    def report(self) -> ProbeReport:
        if self._report is None:
            raise RuntimeError("the report is ready when the `with gradlint.probe.watch()` block has ended")
        return self._report


def probe_train_step(train_step: Callable[[Any], Any], batches: Iterable[Any], *, optimizer: Any,
                     accumulation_steps: int, scaler: Any = None, step_remainder: bool = True,
                     sample: int | None = 4096) -> ProbeReport:
    """Drive `train_step(batch)` (forward + backward of one micro-batch, scaled as your loop scales
    it) with a known-good outer loop: step and zero_grad every `accumulation_steps` batches (and
    on the remainder). Any mismatch is then the fault of `train_step`'s loss scaling, clearing or
    clipping."""
    batches = list(batches)
    with watch(optimizer, sample=sample) as probe:
        optimizer.zero_grad()
        for i, batch in enumerate(batches, 1):
            train_step(batch)
            if i % accumulation_steps == 0 or (step_remainder and i == len(batches)):
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad()
    return probe.report

"""GA010-GA013 beyond their fixtures: GA013 is opt-in, GA012 is a warning in every format, and the
counter analysis of GA010 follows where the counter starts and when it is incremented."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradlint.checker import check_source
from gradlint.cli import main
from gradlint.rules import RULES_BY_CODE
from gradlint.selection import resolve_layers, select_rules

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GA012_FIXTURE = FIXTURES / "GA012" / "ddp_plain_loop_without_no_sync.py"
GA013_FIXTURE = FIXTURES / "GA013" / "hf_causal_lm_divided.py"


def _codes(source: str, *codes: str) -> list[str]:
    rules = [RULES_BY_CODE[c]() for c in codes]
    return [d.code for d in check_source(textwrap.dedent(source), "t.py", rules).diagnostics]


def test_ga013_is_off_by_default_and_selected_explicitly_or_by_prefix() -> None:
    assert "GA013" not in {r.code for r in select_rules(None)}
    assert "GA013" not in {r.code for r in resolve_layers([(None, [], [])])}
    assert [r.code for r in select_rules(["GA013"])] == ["GA013"]
    assert "GA013" in {r.code for r in select_rules(["GA01"])}
    assert "GA013" in {r.code for r in resolve_layers([(None, [], ["GA013"])])}


def test_ga013_only_with_select_on_the_command_line() -> None:
    default = CliRunner().invoke(main, ["--isolated", "--output-format", "json", str(GA013_FIXTURE)])
    assert default.exit_code == 0, default.output
    selected = CliRunner().invoke(main, ["--isolated", "--select", "GA013", "--output-format", "json",
                                         str(GA013_FIXTURE)])
    assert selected.exit_code == 1
    assert [d["code"] for d in json.loads(selected.output)] == ["GA013"]


@pytest.mark.parametrize(("fmt", "needle"), [
    ("json", '"severity": "warning"'),
    ("github", "::warning file="),
    ("gitlab", '"severity": "minor"'),
])
def test_ga012_is_a_warning(fmt: str, needle: str) -> None:
    result = CliRunner().invoke(main, ["--isolated", "--output-format", fmt, str(GA012_FIXTURE)])
    assert result.exit_code == 1  # a warning is still a finding, as in ruff
    assert needle in result.output


def test_ga012_sarif_levels() -> None:
    result = CliRunner().invoke(main, ["--isolated", "--output-format", "sarif", str(GA012_FIXTURE)])
    run = json.loads(result.output)["runs"][0]
    assert {r["ruleId"]: r["level"] for r in run["results"]} == {"GA012": "warning"}
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in run["tool"]["driver"]["rules"]}
    assert levels["GA012"] == "warning" and levels["GA001"] == "error"


LOOP = """
import torch
for {target} in {iterable}:
    {before}(loss / K).backward()
    if {counter} % K == 0:
        optimizer.step()
        optimizer.zero_grad()
    {after}
"""


@pytest.mark.parametrize(("target", "iterable", "before", "after", "counter", "flagged"), [
    ("i, x", "enumerate(loader)", "", "", "i", True),
    ("i, x", "enumerate(loader, start=1)", "", "", "i", False),
    ("i, x", "enumerate(loader, 1)", "", "", "i", False),
    ("step", "range(max_steps)", "", "", "step", True),
    ("step", "range(1, max_steps + 1)", "", "", "step", False),
    ("x", "loader", "n += 1\n    ", "", "n", False),  # incremented before the test: 1-based
    ("x", "loader", "", "n += 1", "n", True),  # incremented after the test, from 0
])
def test_ga010_counter_start(target: str, iterable: str, before: str, after: str, counter: str,
                             flagged: bool) -> None:
    source = "n = 0\n" + LOOP.format(target=target, iterable=iterable, before=before, after=after, counter=counter)
    assert _codes(source, "GA010") == (["GA010"] if flagged else [])


def test_ga010_counter_resumed_from_a_checkpoint_is_not_judged() -> None:
    source = "n = 0\nn = ckpt['step']\n" + LOOP.format(target="x", iterable="loader", before="", after="n += 1",
                                                      counter="n")
    assert _codes(source, "GA010") == []


def test_ga010_step_opening_the_window_before_backward_is_not_flagged() -> None:
    source = """
    for i, x in enumerate(loader):
        if i % K == 0:
            optimizer.step()
            optimizer.zero_grad()
        (loss_fn(x) / K).backward()
    """
    assert _codes(source, "GA010") == []


def test_ga011_accelerator_from_environment_or_set_later_is_not_flagged() -> None:
    body = """
    from accelerate import Accelerator
    {intent}
    accelerator = Accelerator()
    {extra}
    for x in loader:
        with accelerator.accumulate(model):
            accelerator.backward(loss_fn(model(x)))
            optimizer.step()
            optimizer.zero_grad()
    """
    intent = 'parser.add_argument("--gradient_accumulation_steps", type=int)'
    assert _codes(body.format(intent=intent, extra=""), "GA011") == ["GA011"]
    # No K anywhere: `accumulate()` kept from a template is a harmless no-op, not a bug.
    assert _codes(body.format(intent="", extra=""), "GA011") == []
    later = "def resize(k):\n        accelerator.gradient_accumulation_steps = k"
    assert _codes(body.format(intent=intent, extra=later), "GA011") == []
    env = "os.environ.setdefault('ACCELERATE_GRADIENT_ACCUMULATION_STEPS', '4')"
    assert _codes(body.format(intent=intent, extra=env), "GA011") == []


def test_ga011_uses_the_accelerator_built_in_the_loops_own_function() -> None:
    source = """
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin

    def run(gradient_accumulation_steps):
        accelerator = Accelerator(gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=2))
        for x in loader:
            with accelerator.accumulate(model):
                accelerator.backward(loss_fn(model(x)))
                optimizer.step()

    def other():
        accelerator = Accelerator()
        accelerator.print("hello")
    """
    assert _codes(source, "GA011") == []


def test_ga011_deepspeed_with_a_hand_gated_step_is_not_flagged() -> None:
    source = """
    import deepspeed
    engine, _, _, _ = deepspeed.initialize(model=net, config=cfg)
    for i, x in enumerate(loader):
        engine.backward(engine(x) / grad_accum_steps)
        if (i + 1) % grad_accum_steps == 0:
            engine.step()
    """
    assert _codes(source, "GA011") == []


def test_ga012_needs_a_visibly_wrapped_model() -> None:
    source = """
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / K).backward()
        if (i + 1) % K == 0:
            optimizer.step()
            optimizer.zero_grad()
    """
    assert _codes(source, "GA012") == []
    torch_ddp = "from torch.nn.parallel import DistributedDataParallel as DDP\nmodel = DDP(net)\n"
    assert _codes(torch_ddp + textwrap.dedent(source), "GA012") == ["GA012"]
    # apex's DDP has no `no_sync()`: its advice would be wrong there.
    apex_ddp = "from apex.parallel import DistributedDataParallel as DDP\nmodel = DDP(net)\n"
    assert _codes(apex_ddp + textwrap.dedent(source), "GA012") == []


def test_ga013_sum_reduction_and_unknown_models_are_not_flagged() -> None:
    loop = """
    for i, batch in enumerate(loader):
        loss = {loss}
        (loss / K).backward()
        if (i + 1) % K == 0:
            optimizer.step()
            optimizer.zero_grad()
    """
    ce = "F.cross_entropy(logits, labels, ignore_index=-100{extra})"
    assert _codes(loop.format(loss=ce.format(extra="")), "GA013") == ["GA013"]
    assert _codes(loop.format(loss=ce.format(extra=", reduction='sum'")), "GA013") == []
    assert _codes(loop.format(loss="F.cross_entropy(logits, labels)"), "GA013") == []
    assert _codes(loop.format(loss="model(**batch).loss"), "GA013") == []  # no language model built here
    lm = "model = AutoModelForCausalLM.from_pretrained('gpt2')\n"
    assert _codes(lm + textwrap.dedent(loop.format(loss="model(**batch).loss")), "GA013") == ["GA013"]


_PADDING = "".join(f"\ndef unrelated_{i}(x):\n    return [x * {i} for _ in range(3)]\n" for i in range(600))


@pytest.mark.parametrize(("source", "expected"), [
    # Lightning's training_step has no backward, yet GA011 reads it.
    ("""
import lightning.pytorch as pl


class Lit(pl.LightningModule):
    def training_step(self, batch, batch_idx):
        return self.net(batch).mean() / self.trainer.accumulate_grad_batches
""", ["GA011"]),
    # The model is wrapped in a setup function the loop never calls by name.
    ("""
from torch.nn.parallel import DistributedDataParallel as DDP


def setup(net):
    global model
    model = DDP(net)


def train(loader, optimizer, K):
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / K).backward()
        if (i + 1) % K == 0 or i + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", ["GA012"]),
])
def test_big_files_keep_what_the_new_rules_read(source: str, expected: list[str]) -> None:
    """Big files with many unrelated definitions, checked as discovered files: what GA011 and GA012
    read outside the training loop counts (and a sync helper silences GA012)."""
    big = source + _PADDING
    rules = [RULES_BY_CODE[c]() for c in ("GA011", "GA012")]
    assert [d.code for d in check_source(big, "big.py", rules, prefilter=True).diagnostics] == expected
    if expected == ["GA012"]:
        helper = "\n\ndef maybe_no_sync(m, sync):\n    return m.no_sync()\n"
        assert check_source(big + helper, "big.py", rules, prefilter=True).diagnostics == []

"""The child process: `python -m gradlint.probe.child CONFIG.json`.

Installs the instrumentation before the script imports anything else (so `from torch.nn.functional
import cross_entropy` gets the wrapper), then runs the script as `python SCRIPT ARGS` would: same
`sys.argv`, `sys.path[0]` and `__main__`. Records go to a JSON-lines file as they happen, so a
killed child still leaves its rows behind."""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
from typing import Any

_PROBE_DIR = os.path.dirname(os.path.abspath(__file__))
_HIDDEN = (_PROBE_DIR + os.sep, os.path.join(os.path.dirname(runpy.__file__), "runpy.py"))


def _user_traceback(exc: BaseException) -> str:
    """The script's own traceback, without gradlint's or runpy's frames."""
    te = traceback.TracebackException.from_exception(exc)
    todo = [te]
    while todo:
        cur = todo.pop()
        cur.stack = traceback.StackSummary.from_list(
            [f for f in cur.stack if not (f.filename.startswith(_HIDDEN[0]) or f.filename == _HIDDEN[1]
                                          or f.filename.startswith("<frozen runpy"))])
        todo.extend(x for x in (cur.__cause__, cur.__context__) if x is not None)
    return "".join(te.format())


def _innermost_user_line(exc: BaseException) -> dict[str, Any] | None:
    """Where in the user's own code the exception came from (the line that called into torch)."""
    from gradlint.probe.sites import is_user_file

    found = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if is_user_file(filename) and not filename.startswith(_HIDDEN[0]):
            found = {"filename": filename, "row": tb.tb_lineno, "column": 1}
        tb = tb.tb_next
    return found


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as fh:
        config: dict[str, Any] = json.load(fh)
    out = open(config["results"], "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run

    def sink(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, default=str) + "\n")
        out.flush()

    try:
        import torch  # noqa: F401
    except ImportError:
        sink({"type": "error", "text": "the probe needs torch: pip install 'gradlint[probe]'"})
        return 3

    from gradlint.probe.crashes import explain
    from gradlint.probe.instrumentation import ProbeStop, Session
    from gradlint.probe.options import ProbeOptions

    options = ProbeOptions(**config["options"])
    session = Session(options, sink, hard_exit=True)
    script = os.path.abspath(config["script"])
    sys.argv = [config["script"], *config["args"]]
    sys.path[0] = os.path.dirname(script)
    try:
        session.install()
    except Exception as exc:  # an internal failure is ours to report, not the script's
        sink({"type": "error", "text": f"internal error while instrumenting torch: {type(exc).__name__}: {exc}"})
        return 3
    natural = False
    try:
        # the path as the user typed it: tracebacks and findings then name it the same way
        runpy.run_path(config["script"], run_name="__main__")
        natural = not session.stop_raised  # a swallowed stop is not a natural end
    except ProbeStop:
        pass
    except SystemExit as exc:
        if exc.code in (None, 0):
            natural = not session.stop_raised
        else:
            sink({"type": "crash", "text": f"SystemExit: {exc.code}", "steps": session.steps})
    except BaseException as exc:
        text = _user_traceback(exc)
        finding = explain(f"{type(exc).__name__}: {exc}", _innermost_user_line(exc), session.steps)
        if finding is not None:
            sink(finding)
        sink({"type": "crash", "text": text, "steps": session.steps, "explained": finding is not None})
    session.finish(natural_end=natural)
    out.close()
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: the script may have left non-daemon threads or DataLoader workers behind.
    os._exit(code)

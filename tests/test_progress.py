"""The progress line: on stderr, only on a terminal, only for runs longer than a second, erased at the end."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from gradlint.progress import Progress, wanted

from .conftest import FIXTURES, ROOT


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CI", "PRE_COMMIT", "GRADLINT_NO_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm")


def test_counter_is_rewritten_in_place_and_erased(interactive: None) -> None:
    out = Terminal()
    progress = Progress(3, out, delay=0)
    for _ in range(3):
        progress.advance()
    assert out.getvalue().startswith("\rchecked 1/3 files")
    assert "\rchecked 3/3 files" in out.getvalue()  # the last one is always drawn
    assert "\n" not in out.getvalue()
    progress.close()
    assert out.getvalue().endswith("\r" + " " * len("checked 3/3 files") + "\r")


def test_quick_runs_show_nothing(interactive: None) -> None:
    out = Terminal()
    progress = Progress(1000, out)  # the default delay: a second
    for _ in range(1000):
        progress.advance()
    progress.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize("env", [{"CI": "true"}, {"PRE_COMMIT": "1"}, {"TERM": "dumb"}, {"GRADLINT_NO_PROGRESS": "1"}])
def test_not_in_ci_pre_commit_or_dumb_terminals(interactive: None, monkeypatch: pytest.MonkeyPatch,
                                               env: dict[str, str]) -> None:
    assert wanted(Terminal())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert not wanted(Terminal())


def test_not_on_a_pipe_or_file(interactive: None, tmp_path: Path) -> None:
    assert not wanted(io.StringIO())
    with open(tmp_path / "log", "w") as handle:
        assert not wanted(handle)
    monkeypatch_free = Progress(5, io.StringIO(), delay=0)
    monkeypatch_free.advance()
    assert monkeypatch_free.stream.getvalue() == ""  # type: ignore[attr-defined]


def _slow_run_args() -> list[str]:
    """The command line run with no delay before the line appears (however fast the machine)."""
    start = "import gradlint.progress as p; p.DELAY_S = 0; from gradlint.cli import main; main()"
    return [sys.executable, "-c", start, "check", "--no-cache", "--jobs", "1", "--output-format", "concise",
            *sorted(str(p) for p in FIXTURES.rglob("*.py"))]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PRE_COMMIT", "GRADLINT_NO_PROGRESS")}
    return {**env, "TERM": "xterm", "PYTHONPATH": str(ROOT)}


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_on_a_pseudo_terminal_stderr_only(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    with open(tmp_path / "stdout", "wb") as stdout:
        proc = subprocess.Popen(_slow_run_args(), stdout=stdout, stderr=secondary, env=_env())
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    assert proc.wait(timeout=300) == 1
    terminal = seen.decode()
    assert "\rchecked " in terminal and f"/{len(list(FIXTURES.rglob('*.py')))} files" in terminal
    report = (tmp_path / "stdout").read_text()
    assert "checked" not in report and "\r" not in report and "GA001" in report
    # Erased at the end: the last thing on the line is blanks, then the cursor back at its start.
    last = terminal.rsplit("\r", 2)
    assert last[-1] == "" and last[-2].strip() == ""


def test_not_when_stderr_is_a_pipe() -> None:
    proc = subprocess.run(_slow_run_args(), capture_output=True, text=True, env=_env(), timeout=300, check=False)
    assert proc.returncode == 1
    assert "checked" not in proc.stderr and "\r" not in proc.stderr

"""No input crashes the checker: it returns findings or a clear per-file error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradlint.checker as checker
from gradlint.checker import check_path, check_source
from gradlint.rules import ALL_RULES

from .conftest import FIXTURES, ROOT

RULES = [rule() for rule in ALL_RULES]
CODES = [rule.code for rule in ALL_RULES]  # check_path and check_paths take codes

LOOP = textwrap.dedent("""\
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if (i + 1) % K == 0:
            scaler.step(optimizer)
            scaler.update()
""")


def _no_internal_error(source: str) -> None:
    result = check_source(source, "x.py", RULES)
    if result.error is not None:
        assert "internal error" not in result.error.reason, result.error.traceback


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_arbitrary_text(text: str) -> None:
    _no_internal_error(text + "\nloss.backward()\n")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(LOOP.splitlines()) - 1), max_size=4),
       st.sampled_from(["", "pass", "if x:", "else:", "    continue", "break", "return loss", "yield"]))
def test_mutated_training_loops(drop: list[int], insert: str) -> None:
    """Deleting lines and inserting statements gives odd but valid (or invalid) loops."""
    lines = [line for n, line in enumerate(LOOP.splitlines()) if n not in drop]
    lines.insert(len(lines) // 2, "    " + insert)
    _no_internal_error("\n".join(lines) + "\n")


def test_deeply_nested_code_is_an_error_not_a_crash() -> None:
    depth = 300
    source = "".join("    " * n + "if x:\n" for n in range(depth)) + "    " * depth + "loss.backward()\n"
    result = check_source(source, "deep.py", RULES)
    assert result.error is None or "internal error" not in result.error.reason


def test_deeply_nested_expression() -> None:
    source = "loss = " + "(" * 200 + "x" + ")" * 200 + "\nloss.backward()\n"
    result = check_source(source, "deep.py", RULES)
    assert result.error is None or "internal error" not in result.error.reason


def test_recursive_helpers_terminate() -> None:
    source = textwrap.dedent("""\
        def a(batch):
            b(batch)
            loss = model(batch)
            loss.backward()

        def b(batch):
            a(batch)

        for i, batch in enumerate(loader):
            a(batch)
            if (i + 1) % K == 0:
                optimizer.step()
    """)
    result = check_source(source, "rec.py", RULES)
    assert result.error is None
    assert [d.code for d in result.diagnostics] == ["GA002", "GA004"]


# -- generated input: bytes, token soup, mutated fixtures ----------------------------------------------

FIXTURE_TEXTS = [p.read_text(encoding="utf-8") for p in sorted(FIXTURES.rglob("*.py"))]
TOKENS = ["for", "in", "if", "else:", "while", "def", "class", "return", "with", "as", "lambda", "yield",
          "try:", "except", "finally:", "(", ")", "[", "]", "{", "}", ":", ",", ".", "=", "+=", "/=", "%", "==",
          "+", "*", "**", "@", "\n", "\n    ", "\n        ", "\t", "\\\n", "#", "'", '"', '"""', "x", "loss",
          "optimizer", "zero_grad()", "step()", "backward()", ".backward()", "scaler", "clip_grad_norm_", "K",
          "0", "1", "i", "enumerate(loader)", "accelerator", "accumulate", "no_sync", "noqa", "# noqa: GA001",
          "async", "await", "match", "case", "type", "f'", "{x}", ";", "$", "?", "\x0c", "\r\n", "\r"]


def _check_file(tmp_path: Path, data: bytes, name: str = "x.py", explicit: bool = True) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    result = check_path(str(path), explicit, CODES)  # must not raise
    if result.error is not None:
        assert "internal error" not in result.error.reason, result.error.traceback


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    _check_file(tmp_path, data + b"\nloss.backward()\noptimizer.step()\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=80).map(" ".join))
def test_token_soup(soup: str) -> None:
    _no_internal_error(soup + "\nloss.backward()\noptimizer.step()\n")


@st.composite
def mutated_fixture(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(FIXTURE_TEXTS)).splitlines()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not lines:
            break
        at = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "swap", "tabs"]))
        if action == "delete":
            del lines[at]
        elif action == "duplicate":
            lines.insert(at, lines[at])
        elif action == "indent":
            lines[at] = "    " + lines[at]
        elif action == "dedent":
            lines[at] = lines[at].removeprefix("    ")
        elif action == "swap" and at + 1 < len(lines):
            lines[at], lines[at + 1] = lines[at + 1], lines[at]
        elif action == "tabs":
            lines[at] = lines[at].replace("    ", "\t")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(mutated_fixture())
def test_mutated_fixtures(source: str) -> None:
    _no_internal_error(source)


# -- awkward files, through the command line in a subprocess (a crash of the parser must not take
# -- pytest down with it) ------------------------------------------------------------------------------

LOOP_TEXT = "for i, b in enumerate(loader):\n    optimizer.zero_grad()\n    loss = model(b)\n    loss.backward()\n" \
            "    if (i + 1) % K == 0:\n        optimizer.step()\n"


def _gradlint(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADLINT_NO_CACHE": "1"}
    return subprocess.run([sys.executable, "-m", "gradlint", "check", "--output-format", "concise", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False)


def _assert_clean_failure(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr


AWKWARD: dict[str, tuple[bytes, int, str]] = {
    # name: (content, exit code, what stderr says)
    "chain_10k.py": (("x = " + " + ".join(["a"] * 10_000) + "\n" + LOOP_TEXT).encode(), 2, "too deeply nested"),
    "method_chain_10k.py": (("x = a" + ".b()" * 10_000 + "\n" + LOOP_TEXT).encode(), 2, "too deeply nested"),
    "if_1000.py": ("".join(" " * n + "if x:\n" for n in range(1000)).encode() + b" " * 1000 + b"pass\n"
                   + LOOP_TEXT.encode(), 2, "too many levels of indentation"),
    "parens_1000.py": (("x = " + "(" * 1000 + "1" + ")" * 1000 + "\n" + LOOP_TEXT).encode(), 1, ""),
    "binary.py": (bytes(range(256)) * 8, 2, "not a text file"),
    "latin1.py": (b"s = '\xe9t\xe9'\n" + LOOP_TEXT.encode(), 2, "not valid UTF-8 (byte 0xe9 at line 1)"),
    "latin1_declared.py": (b"# -*- coding: latin-1 -*-\ns = '\xe9t\xe9'\n" + LOOP_TEXT.encode(), 1, ""),
    "py2.py": (b"print 'hello'\n" + LOOP_TEXT.encode(), 2, "Missing parentheses in call to 'print'"),
    "empty.py": (b"", 0, "empty file, nothing to check"),
}


def test_awkward_files(tmp_path: Path) -> None:
    for name, (data, _, _) in AWKWARD.items():
        (tmp_path / name).write_bytes(data)
    for name, (_, code, message) in AWKWARD.items():
        proc = _gradlint(name, cwd=tmp_path)
        _assert_clean_failure(proc)
        assert proc.returncode == code, (name, proc.stdout, proc.stderr)
        assert message in proc.stderr, (name, proc.stderr)
    # All of them in one run: each reported, none stops the others.
    proc = _gradlint(*AWKWARD, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.count("GA001") == 2  # parens_1000.py and latin1_declared.py


def test_line_endings_bom_and_tabs_change_nothing(tmp_path: Path) -> None:
    variants = {
        "lf.py": LOOP_TEXT.encode(),
        "crlf.py": LOOP_TEXT.replace("\n", "\r\n").encode(),
        "cr.py": LOOP_TEXT.replace("\n", "\r").encode(),
        "bom.py": b"\xef\xbb\xbf" + LOOP_TEXT.encode(),
        "tabs.py": LOOP_TEXT.replace("    ", "\t").encode(),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
    found = {}
    for name in variants:
        result = check_path(str(tmp_path / name), True, CODES)
        assert result.error is None, (name, result.error)
        found[name] = [(d.code, d.row, d.column if name != "tabs.py" else None) for d in result.diagnostics]
    expected = found["lf.py"]
    assert [code for code, _, _ in expected] == ["GA001", "GA002", "GA004"]
    for name, diagnostics in found.items():
        assert [(c, r) for c, r, _ in diagnostics] == [(c, r) for c, r, _ in expected], name
    assert found["crlf.py"] == found["bom.py"] == expected  # columns too


@pytest.mark.parametrize("warnings_filter", ["always", "error"])
def test_the_users_code_warnings_are_not_printed_nor_fatal(tmp_path: Path, warnings_filter: str) -> None:
    """CPython warns while it parses an invalid escape (printed by default from Python 3.12), `is`
    with a literal, a parenthesised assert; those are the checked file's, not gradlint's output. With
    `-W error` they would make the file's parse fail."""
    (tmp_path / "warns.py").write_text('PATTERN = "\\d+"\nassert (K, "K must be set")\nif K is 1:\n    pass\n'
                                       + LOOP_TEXT)
    plain = _gradlint("warns.py", cwd=tmp_path)
    env_run = subprocess.run([sys.executable, "-W", warnings_filter, "-m", "gradlint", "check", "--output-format",
                              "concise", "warns.py"], capture_output=True, text=True, cwd=tmp_path, check=False,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "GRADLINT_NO_CACHE": "1",
                                  "PYTHONWARNINGS": warnings_filter})
    assert plain.returncode == env_run.returncode == 1 and "GA001" in env_run.stdout
    assert env_run.stdout == plain.stdout
    assert env_run.stderr == "", env_run.stderr


@pytest.mark.slow
def test_fifty_thousand_lines(tmp_path: Path) -> None:
    """A generated module: 50,000 statements, then a training function."""
    body = "".join(f"value_{n} = compute({n}) + offset\n" for n in range(50_000))
    (tmp_path / "big.py").write_text(body + "def train():\n" + textwrap.indent(LOOP_TEXT, "    "))
    proc = _gradlint("big.py", cwd=tmp_path, timeout=600)
    _assert_clean_failure(proc)
    assert proc.returncode == 1 and "big.py:50003:9: GA001" in proc.stdout, proc.stdout


def test_tree_with_symlink_loop_fifo_directory_named_py_and_unreadable_file(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "pkg" / "dir.py").mkdir(parents=True)  # a directory with a .py name: searched, not read
    (tree / "pkg" / "dir.py" / "train.py").write_text(LOOP_TEXT)
    (tree / "pkg" / "loop").symlink_to("..")  # a symlink loop
    (tree / "pkg" / "self").symlink_to(".")
    os.mkfifo(tree / "pkg" / "pipe.py")  # reading it would block forever
    secret = tree / "secret.py"
    secret.write_text(LOOP_TEXT)
    secret.chmod(0)
    try:
        proc = _gradlint("tree", cwd=tmp_path, timeout=60)
    finally:
        secret.chmod(0o644)
    _assert_clean_failure(proc)
    assert proc.returncode == 2
    assert proc.stdout.count("GA001") == (1 if os.geteuid() != 0 else 2), proc.stdout  # found once, not per loop
    assert "pipe.py: not a regular file" in proc.stderr
    if os.geteuid() != 0:  # root reads anything
        assert "secret.py: cannot read: Permission denied" in proc.stderr


def test_unreadable_file_named_on_the_command_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    secret = tmp_path / "secret.py"
    secret.write_text(LOOP_TEXT)
    secret.chmod(0)
    try:
        proc = _gradlint("secret.py", cwd=tmp_path)
    finally:
        secret.chmod(0o644)
    assert proc.returncode == 2 and "cannot read: Permission denied" in proc.stderr


# -- one file's failure -------------------------------------------------------------------------------


def _explode_on(marker: str) -> Callable[..., object]:
    real = checker.build_model

    def build(module: object, *rest: object) -> object:
        if marker in module.code:  # type: ignore[attr-defined]
            raise KeyError("boom")
        return real(module, *rest)

    return build


@pytest.mark.parametrize("jobs", [1, 2])
def test_internal_error_in_one_file_leaves_the_others_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              jobs: int) -> None:
    """In the worker pool too: a forked worker inherits the patched model builder."""
    from gradlint import parallel

    for n in range(6):
        (tmp_path / f"train_{n}.py").write_text(LOOP_TEXT.replace("model(b)", f"model(b, {n})"))
    monkeypatch.setattr(checker, "build_model", _explode_on("model(b, 3)"))
    monkeypatch.setattr(parallel, "MIN_FILES_FOR_POOL", 1)
    items = [(str(p), False) for p in sorted(tmp_path.iterdir())]
    results = parallel.check_paths(items, CODES, False, jobs=jobs)
    assert [r.error is not None for r in results] == [False, False, False, True, False, False]
    error = results[3].error
    assert error is not None and "internal error while checking (KeyError: 'boom')" in error.reason
    assert checker.ISSUE_TRACKER in error.reason and "--verbose" in error.reason
    assert error.traceback is not None and "KeyError" in error.traceback
    assert all(len(r.diagnostics) == 3 for n, r in enumerate(results) if n != 3)


def test_failure_outside_the_analysis_is_an_internal_error_too(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.py").write_text(LOOP_TEXT)
    (tmp_path / "b.ipynb").write_text("{}")

    def broken(text: str) -> object:
        raise RuntimeError("notebook reader bug")

    import gradlint.notebooks as notebooks

    monkeypatch.setattr(notebooks, "parse", broken)
    result = check_path(str(tmp_path / "b.ipynb"), True, CODES)
    assert result.error is not None and "internal error while checking (RuntimeError" in result.error.reason
    assert check_path(str(tmp_path / "a.py"), True, CODES).error is None


# -- the real world -------------------------------------------------------------------------------------


def _trees() -> list[Path]:
    import torch

    return [Path(torch.__file__).parent, Path(sysconfig.get_paths()["stdlib"])]


# Files in these trees that are not valid on purpose (the stdlib's tests of its own tokenizer).
KNOWN_BAD = {"badsyntax_pep3120.py": "not valid UTF-8"}


@pytest.mark.slow
def test_torch_and_stdlib_have_no_internal_error() -> None:
    """Every .py file of the installed torch package and the standard library, as one run: ~20 s on two cores."""
    proc = _gradlint("--output-format", "json", "--exit-zero", *map(str, _trees()), timeout=600)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    unexpected = [line for line in errors
                  if not any(name in line and reason in line for name, reason in KNOWN_BAD.items())]
    assert not unexpected, unexpected
    assert proc.returncode == (2 if errors else 0), proc.stderr[-3000:]
    json.loads(proc.stdout)  # the report is complete and well-formed


def test_ctrl_c_stops_promptly_without_tracebacks() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADLINT_NO_CACHE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gradlint", "check", "--jobs", "2", *map(str, _trees())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode in (0, 1, 2):
        pytest.skip("the run finished before the signal")
    assert proc.returncode == 130
    assert "error: interrupted" in err and "Traceback" not in err and "KeyboardInterrupt" not in err

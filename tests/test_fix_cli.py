"""`--fix`, `--diff`, `--unsafe-fixes` on the command line: files written (atomically, or not at
all), exit codes, output, stdin, encodings and line endings, notebooks and `# noqa`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradlint.cli import main

BUGGY = """\
import torch


def train(model, loader, criterion, accum_steps):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()  # every batch
        loss = criterion(model(x), y)
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
"""

FIXED = """\
import torch


def train(model, loader, criterion, accum_steps):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        (loss / accum_steps).backward()
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()  # every batch
"""

# The zero_grad sits in a helper: its fix is unsafe (other callers may rely on it).
HELPER = """\
import torch


def forward_backward(model, batch, opt, k):
    opt.zero_grad()
    x, y = batch
    (torch.nn.functional.mse_loss(model(x), y) / k).backward()


def run(model, loader, optimizer, k):
    for i, batch in enumerate(loader):
        forward_backward(model, batch, optimizer, k)
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
"""


def run(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--isolated", *args] if args and args[0] != "check" else list(args),
                                input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def buggy(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(BUGGY, encoding="utf-8")
    return path


def test_fix_writes_the_file_and_exits_0_when_nothing_remains(buggy: Path) -> None:
    code, out, _ = run("--fix", str(buggy))
    assert code == 0
    assert buggy.read_text(encoding="utf-8") == FIXED
    assert out.strip().endswith("Found 3 problems (3 fixed, 0 remaining).")
    # idempotent: a second --fix changes nothing and finds nothing
    code, out, _ = run("--fix", str(buggy))
    assert (code, buggy.read_text(encoding="utf-8")) == (0, FIXED)
    assert out.strip() == "All checks passed."


def test_fix_exits_1_when_findings_remain_and_lists_them(tmp_path: Path) -> None:
    path = tmp_path / "helper.py"
    path.write_text(HELPER, encoding="utf-8")
    code, out, _ = run("--fix", str(path))
    assert code == 1
    assert path.read_text(encoding="utf-8") == HELPER  # only an unsafe fix exists
    assert "GA001 `opt.zero_grad()`" in out  # no [*]: not fixable without --unsafe-fixes
    assert "No fixes available (1 hidden fix can be enabled with the `--unsafe-fixes` option)." in out


def test_unsafe_fixes_apply_unsafe_fixes(tmp_path: Path) -> None:
    path = tmp_path / "helper.py"
    path.write_text(HELPER, encoding="utf-8")
    code, out, _ = run("--fix", "--unsafe-fixes", str(path))
    assert code == 0, out
    text = path.read_text(encoding="utf-8")
    assert "    opt.zero_grad()" not in text
    assert text.endswith("            optimizer.step()\n            optimizer.zero_grad()\n")
    assert "(1 fixed, 0 remaining)" in out


def test_fix_summary_counts_hidden_unsafe_fixes(tmp_path: Path) -> None:
    path = tmp_path / "helper.py"
    path.write_text(HELPER.replace(" or (i + 1) == len(loader)", ""), encoding="utf-8")  # + a safe GA004
    code, out, _ = run("--fix", str(path))
    assert code == 1
    assert out.strip().endswith("Found 2 problems (1 fixed, 1 remaining).\n"
                                "No fixes available (1 hidden fix can be enabled with the `--unsafe-fixes` option).")


def test_diff_prints_a_unified_diff_writes_nothing_and_exits_1(buggy: Path) -> None:
    mtime = buggy.stat().st_mtime_ns
    code, out, err = run("--diff", str(buggy))
    assert code == 1
    assert buggy.read_text(encoding="utf-8") == BUGGY and buggy.stat().st_mtime_ns == mtime
    assert out.startswith(f"--- a/{buggy}\n+++ b/{buggy}\n@@ ")
    assert "-        optimizer.zero_grad()  # every batch\n" in out
    assert "+        (loss / accum_steps).backward()\n" in out
    assert "+        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):\n" in out
    assert "+            optimizer.zero_grad()  # every batch\n" in out
    assert err.strip() == "Would fix 3 problems."


def test_diff_on_clean_code_is_empty_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "ok.py"
    path.write_text(FIXED, encoding="utf-8")
    code, out, err = run("--diff", str(path))
    assert (code, out) == (0, "")
    assert err.strip() == "Would fix 0 problems."


def test_diff_with_only_unfixable_findings_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "helper.py"
    path.write_text(HELPER, encoding="utf-8")
    code, out, err = run("--diff", str(path))
    assert (code, out) == (1, "")
    assert err.strip() == "Would fix 0 problems (1 remaining)."


def test_read_only_file_is_an_error_and_stays_untouched(buggy: Path) -> None:
    buggy.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        code, out, err = run("--fix", str(buggy))
    finally:
        buggy.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert code == 2
    assert "cannot write fixes" in err and "read-only" in err
    assert buggy.read_text(encoding="utf-8") == BUGGY
    assert "GA001" in out  # its findings are still reported: nothing was fixed
    assert [p.name for p in buggy.parent.iterdir()] == ["train.py"]  # no temporary file left


def test_a_failed_rename_leaves_the_file_whole(buggy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    code, _, err = run("--fix", str(buggy))
    assert code == 2
    assert "cannot write fixes: No space left on device" in err
    assert buggy.read_text(encoding="utf-8") == BUGGY
    assert [p.name for p in buggy.parent.iterdir()] == ["train.py"]


def test_fix_keeps_mode_crlf_and_declared_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    source = "# -*- coding: latin-1 -*-\n# caf\xe9\n" + BUGGY
    path.write_bytes(source.replace("\n", "\r\n").encode("latin-1"))
    path.chmod(0o640)
    code, _, _ = run("--fix", str(path))
    assert code == 0
    data = path.read_bytes()
    expected = ("# -*- coding: latin-1 -*-\n# caf\xe9\n" + FIXED).replace("\n", "\r\n").encode("latin-1")
    assert data == expected
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_fix_keeps_a_byte_order_mark_and_follows_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real.py"
    real.write_bytes(b"\xef\xbb\xbf" + BUGGY.encode())
    link = tmp_path / "link.py"
    link.symlink_to(real)
    code, _, _ = run("--fix", str(link))
    assert code == 0
    assert link.is_symlink()
    assert real.read_bytes() == b"\xef\xbb\xbf" + FIXED.encode()


def test_stdin_fix_prints_the_fixed_source(tmp_path: Path) -> None:
    code, out, err = run("--fix", "-", input=BUGGY.encode())
    assert code == 0
    assert out == FIXED
    assert "(3 fixed, 0 remaining)" in err


def test_stdin_fix_without_findings_echoes_the_source() -> None:
    code, out, _ = run("--fix", "-", input=FIXED.encode())
    assert (code, out) == (0, FIXED)


def test_json_fix_field_and_remaining_after_fix(tmp_path: Path) -> None:
    path = tmp_path / "helper.py"
    path.write_text(HELPER, encoding="utf-8")
    code, out, _ = run("--output-format", "json", str(path))
    assert code == 1
    [item] = json.loads(out)
    assert item["fix"]["applicability"] == "unsafe"
    assert item["fix"]["message"] == "Move `optimizer.zero_grad()` after the step"  # as the loop names it
    assert [e["location"]["row"] for e in item["fix"]["edits"]] == [5, 15]


def test_noqa_suppressed_findings_are_not_fixed(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    source = BUGGY.replace("loss.backward()", "loss.backward()  # noqa: GA002")
    path.write_text(source, encoding="utf-8")
    run("--fix", str(path))
    text = path.read_text(encoding="utf-8")
    assert "loss.backward()  # noqa: GA002" in text  # not divided
    assert "or (i + 1) == len(loader)" in text  # the others are fixed


def test_selection_limits_what_is_fixed(buggy: Path) -> None:
    code, _, _ = run("--fix", "--select", "GA004", str(buggy))
    assert code == 0
    text = buggy.read_text(encoding="utf-8")
    assert "or (i + 1) == len(loader)" in text
    assert "        optimizer.zero_grad()  # every batch\n        loss" in text  # GA001 not selected


def test_notebooks_are_reported_not_fixed(tmp_path: Path) -> None:
    notebook = tmp_path / "train.ipynb"
    cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
              "source": BUGGY.splitlines(keepends=True)}]
    text = json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    notebook.write_text(text, encoding="utf-8")
    code, out, _ = run("--fix", str(notebook))
    assert code == 1
    assert notebook.read_text(encoding="utf-8") == text
    assert "[*]" not in out


def test_a_file_named_twice_is_fixed_once(buggy: Path) -> None:
    other_name = str(buggy.parent / "." / buggy.name)
    code, out, err = run("--fix", str(buggy), other_name)
    assert (code, err) == (0, "")
    assert buggy.read_text(encoding="utf-8") == FIXED
    assert out.strip().endswith("(3 fixed, 0 remaining).")


def test_fix_in_a_directory_keeps_unrelated_definitions(tmp_path: Path) -> None:
    """Files found in a directory are parsed with unrelated definitions blanked; fixes are made on
    the whole text, so those definitions come out as they were."""
    unrelated = 'def describe(x):\n    """Not a training loop."""\n    return {"x": x,\n            "y": 2}\n\n\n'
    path = tmp_path / "train.py"
    path.write_text(unrelated + BUGGY, encoding="utf-8")
    code, _, _ = run("--fix", str(tmp_path))
    assert code == 0
    assert path.read_text(encoding="utf-8") == unrelated + FIXED


def test_directory_and_named_file_offer_the_same_fixes(tmp_path: Path) -> None:
    """A helper's clip reads the module's imports: its fix must not depend on how the file was
    found (a directory check parses a text with module-level code blanked)."""
    source = (Path(__file__).parent.parent / "fixtures" / "fixes" / "GA003" / "helper_method_clips.in.py")
    path = tmp_path / "trainer.py"
    path.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    _, named, _ = run("--unsafe-fixes", "--output-format", "json", str(path))
    _, found, _ = run("--unsafe-fixes", "--output-format", "json", str(tmp_path))
    assert json.loads(named)[0]["fix"] is not None
    assert json.loads(found)[0]["fix"] == json.loads(named)[0]["fix"]

"""The command line as users and CI see it: exit codes, formats, selection, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradlint.cli import main
from gradlint.rules import ALL_RULES

BUGGY = """\
import torch

def train(model, loader, optimizer, criterion, accum_steps):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = criterion(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
"""

CLEAN = """\
def train(model, loader, optimizer, criterion, accum_steps):
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
"""


CLEAN_WITH_IMPORT = "import torch\n\n" + CLEAN


def run(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def buggy(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(BUGGY, encoding="utf-8")
    return path


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    path = tmp_path / "clean.py"
    path.write_text(CLEAN, encoding="utf-8")
    return path


def test_findings_exit_1_with_text_lines_and_summary(buggy: Path) -> None:
    code, out, _ = run(str(buggy))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{buggy}:5:9: GA001 [*] `optimizer.zero_grad()` runs on every micro-batch")
    assert lines[-2:] == ["Found 1 problem in 1 file.", "[*] 1 fixable with the `--fix` option."]


def test_check_subcommand_is_the_same_as_shorthand(buggy: Path) -> None:
    assert run("check", str(buggy))[:2] == run(str(buggy))[:2]


def test_clean_exit_0(clean: Path) -> None:
    code, out, _ = run(str(clean))
    assert code == 0
    assert out == "All checks passed.\n"


def test_summary_does_not_say_all_passed_when_a_file_was_not_checked(tmp_path: Path, clean: Path,
                                                                     buggy: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n", encoding="utf-8")
    code, out, err = run(str(clean), str(broken))
    assert (code, out) == (2, "No problems found in the files checked; 1 file could not be checked.\n")
    assert f"error: {broken}:1:7: syntax error" in err
    code, out, _ = run("--output-format", "concise", str(buggy), str(broken))
    assert code == 2 and out.splitlines()[-1] == "1 file could not be checked."
    assert "Found 1 problem in 1 file." in out


def test_exit_zero(buggy: Path) -> None:
    code, out, _ = run("--exit-zero", str(buggy))
    assert code == 0
    assert "GA001" in out


def test_json_has_ruff_fields(buggy: Path) -> None:
    code, out, _ = run("--output-format", "json", str(buggy))
    assert code == 1
    [item] = json.loads(out)
    assert item["code"] == "GA001"
    assert item["filename"] == str(buggy)
    assert item["location"] == {"row": 5, "column": 9}
    assert item["end_location"] == {"row": 5, "column": 30}
    assert item["url"] == "https://github.com/gradlint/gradlint/blob/main/docs/rules/GA001.md"  # as ruff: the rule page
    # ruff's fix object: applicability, message, edits with 1-based locations
    assert item["fix"]["applicability"] == "safe"
    assert item["fix"]["message"] == "Move `optimizer.zero_grad()` after the step"
    assert item["fix"]["edits"] == [
        {"content": "", "location": {"row": 5, "column": 1}, "end_location": {"row": 6, "column": 1}},
        {"content": "            optimizer.zero_grad()\n", "location": {"row": 10, "column": 1},
         "end_location": {"row": 10, "column": 1}},
    ]
    assert "accumulated gradient is wiped" in item["message"]


def test_json_empty_array_when_clean(clean: Path) -> None:
    code, out, _ = run("--output-format", "json", str(clean))
    assert (code, json.loads(out)) == (0, [])


@pytest.mark.parametrize(
    ("args", "expected_codes"),
    [
        (["--select", "GA002"], []),
        (["--select", "GA001"], ["GA001"]),
        (["--select", "GA"], ["GA001"]),
        (["--select", "ALL"], ["GA001"]),
        (["--ignore", "GA001"], []),
        (["--select", "ALL", "--ignore", "GA00"], []),
        (["--select", "GA00", "--ignore", "GA"], ["GA001"]),  # the more specific selector wins
        (["--select", "ga001"], ["GA001"]),
        (["--select", "GA002,GA001"], ["GA001"]),
    ],
)
def test_selection(buggy: Path, args: list[str], expected_codes: list[str]) -> None:
    code, out, _ = run("--output-format", "json", *args, str(buggy))
    assert [d["code"] for d in json.loads(out)] == expected_codes
    assert code == (1 if expected_codes else 0)


def test_unknown_selector_is_a_usage_error(buggy: Path) -> None:
    code, _, err = run("--select", "GA999", str(buggy))
    assert code == 2
    assert "unknown rule selector `GA999`" in err


def test_missing_file_is_reported_and_others_still_checked(buggy: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    code, out, err = run(str(missing), str(buggy))
    assert code == 2
    assert f"error: {missing}: no such file or directory" in err
    assert "GA001" in out


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def f(:\n    loss.backward()\n", encoding="utf-8")
    code, _, err = run(str(path))
    assert code == 2
    assert f"error: {path}:1:" in err and "syntax error" in err
    assert "Traceback" not in err


def test_python2_syntax_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "py2.py"
    path.write_text('print "loss", loss\nloss.backward()\n', encoding="utf-8")
    code, _, err = run(str(path))
    assert code == 2 and "syntax error" in err


def test_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    path.write_bytes(b"# caf\xe9\nloss.backward()\n")
    code, _, err = run(str(path))
    assert code == 2
    assert "not valid UTF-8 (byte 0xe9 at line 1)" in err


def test_declared_encoding_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    path.write_bytes(b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + CLEAN.encode())
    assert run(str(path))[0] == 0


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "win.py"
    path.write_bytes(b"\xef\xbb\xbf" + BUGGY.replace("\n", "\r\n").encode())
    code, out, _ = run(str(path))
    assert code == 1
    assert f"{path}:5:9: GA001" in out


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.py"
    path.write_bytes(b"\x00\x01backward\x02")
    code, _, err = run(str(path))
    assert code == 2 and "not a text file" in err


def test_empty_file_named_explicitly_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.py"
    path.write_text("", encoding="utf-8")
    code, out, err = run(str(path))
    assert code == 0
    assert f"warning: {path}: empty file" in err
    assert out == "All checks passed.\n"


def test_directory_discovery_skips_venvs_hidden_and_build(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(BUGGY, encoding="utf-8")
    for skipped in (".git", "build", "dist", "__pycache__", "site-packages", ".hidden"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "train.py").write_text(BUGGY, encoding="utf-8")
    venv = tmp_path / "myenv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr\n", encoding="utf-8")
    (venv / "train.py").write_text(BUGGY, encoding="utf-8")
    (tmp_path / "notes.txt").write_text(BUGGY, encoding="utf-8")
    code, out, _ = run("--output-format", "json", str(tmp_path))
    assert code == 1
    assert [Path(d["filename"]).relative_to(tmp_path).as_posix() for d in json.loads(out)] == ["src/train.py"]


def test_directory_named_env_is_searched_unless_it_is_a_venv(tmp_path: Path) -> None:
    # RL code keeps environment packages in `env/` (verl): skipping the name would hide them.
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "train.py").write_text(BUGGY, encoding="utf-8")
    venv = tmp_path / "tools" / "env"
    venv.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr\n", encoding="utf-8")
    (venv / "train.py").write_text(BUGGY, encoding="utf-8")
    code, out, _ = run("--output-format", "json", str(tmp_path))
    assert code == 1
    assert [Path(d["filename"]).relative_to(tmp_path).as_posix() for d in json.loads(out)] == ["env/train.py"]


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train.py").write_text(BUGGY, encoding="utf-8")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    code, out, _ = run("--output-format", "json", str(tmp_path))
    assert code == 1
    assert len(json.loads(out)) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.py"
    path.write_text(BUGGY, encoding="utf-8")
    path.chmod(0)
    code, _, err = run(str(path))
    assert code == 2 and "cannot read" in err


def test_stdin_with_filename() -> None:
    code, out, _ = run("-", "--stdin-filename", "train.py", input=BUGGY.encode())
    assert code == 1
    assert out.startswith("train.py:5:9: GA001")


def test_stdin_without_filename_is_dash() -> None:
    code, out, _ = run("-", input=CLEAN.encode())
    assert (code, out) == (0, "All checks passed.\n")


def test_rule_command_prints_the_docstring() -> None:
    code, out, _ = run("rule", "GA004")
    assert code == 0
    assert out.startswith("# missing-remainder-step (GA004)")
    assert "## Why is this bad?" in out


def test_rule_command_unknown_code() -> None:
    code, _, err = run("rule", "GA404")
    assert code == 2 and "unknown rule" in err


def test_rules_json_lists_every_rule() -> None:
    code, out, _ = run("rules", "--output-format", "json")
    assert code == 0
    rules = json.loads(out)
    codes = [r["code"] for r in rules]
    assert codes == [rule.code for rule in ALL_RULES] and codes[:5] == ["GA001", "GA002", "GA003", "GA004", "GA005"]
    assert {r["code"] for r in rules if not r["default"]} == {"GA013"}
    assert {r["code"] for r in rules if r["severity"] == "warning"} == {"GA012"}


def test_python_dash_m_and_no_torch_import(buggy: Path) -> None:
    """The static path must never import torch, even with torch installed."""
    script = (
        "import sys, runpy\n"
        f"sys.argv = ['gradlint', {str(buggy)!r}]\n"
        "try:\n"
        "    runpy.run_module('gradlint', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert "GA001" in proc.stdout
    assert "exit 1" in proc.stdout
    assert "torch imported: False" in proc.stdout


def test_internal_error_is_reported_per_file(buggy: Path, clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gradlint.checker as checker

    real = checker.build_model

    def explode(module, *rest):
        if "zero_grad()\n        loss" in module.code:
            raise ValueError("boom")
        return real(module, *rest)

    monkeypatch.setattr(checker, "build_model", explode)
    code, _out, err = run(str(buggy), str(clean))
    assert code == 2
    assert "internal error while checking (ValueError: boom)" in err
    assert "Traceback" not in err
    code, _, err = run("--verbose", str(buggy))
    assert "Traceback" in err


def test_rule_knows_probe_only_codes() -> None:
    code, out, _ = run("rule", "GA100")
    assert code == 0 and "amp-step-skipped (GA100)" in out and "gradlint probe" in out
    code, _, err = run("rule", "GA999")
    assert code == 2 and "unknown rule" in err


# --quiet / --silent, as ruff's -q / -s


@pytest.mark.parametrize("output_format", ["text", "concise"])
def test_quiet_prints_the_findings_and_no_summary(buggy: Path, output_format: str) -> None:
    code, out, err = run("--quiet", "--no-cache", "--output-format", output_format, str(buggy))
    _, loud, _ = run("--no-cache", "--output-format", output_format, str(buggy))
    assert code == 1
    assert "GA001" in out and "Found 1 problem" in loud
    assert "Found" not in out and "fixable" not in out
    assert loud.startswith(out)  # the same findings, only the closing lines dropped
    assert err == ""


def test_quiet_on_clean_code_prints_nothing(clean: Path) -> None:
    assert run("-q", "--no-cache", str(clean)) == (0, "", "")
    assert "All checks passed." in run("--no-cache", str(clean))[1]


def test_quiet_drops_warnings_but_not_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("", encoding="utf-8")
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n", encoding="utf-8")
    assert "warning:" in run("--no-cache", str(empty))[2]
    assert run("-q", "--no-cache", str(empty)) == (0, "", "")
    code, out, err = run("-q", "--no-cache", str(broken))
    assert code == 2 and out == ""
    assert "error:" in err and "broken.py" in err


def test_silent_prints_nothing_and_keeps_the_exit_status(buggy: Path, clean: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n", encoding="utf-8")
    assert run("--silent", "--no-cache", str(buggy)) == (1, "", "")
    assert run("-s", "--no-cache", str(clean)) == (0, "", "")
    assert run("-s", "--no-cache", str(broken)) == (2, "", "")
    assert run("-s", "--no-cache", "--output-format", "json", str(buggy)) == (1, "", "")


def test_silent_still_writes_the_report_file(buggy: Path, tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    assert run("-s", "--no-cache", "--output-format", "json", "-o", str(report), str(buggy)) == (1, "", "")
    assert [d["code"] for d in json.loads(report.read_text(encoding="utf-8"))] == ["GA001"]


def test_quiet_diff_prints_the_diff_without_the_count(buggy: Path) -> None:
    code, out, err = run("-q", "--diff", str(buggy))
    assert code == 1 and out.startswith("---") and "+++" in out
    assert err == ""
    assert "Would fix" in run("--diff", str(buggy))[2]
    assert run("-s", "--diff", str(buggy)) == (1, "", "")
    assert buggy.read_text(encoding="utf-8") == BUGGY  # --diff changes nothing, quiet or not


def test_quiet_and_silent_together_is_a_usage_error(buggy: Path) -> None:
    code, _, err = run("-q", "-s", str(buggy))
    assert code == 2 and "--quiet and --silent" in err


def test_silent_still_says_why_the_run_could_not_happen(tmp_path: Path, buggy: Path) -> None:
    config = tmp_path / "gradlint.toml"
    config.write_text('select = "GA001"\n', encoding="utf-8")  # a string, not a list
    code, out, err = run("-s", "--config", str(config), str(buggy))
    assert code == 2 and out == "" and err.startswith("error:")


def test_silent_fix_of_standard_input_still_prints_the_fixed_source() -> None:
    loud = run("--fix", "-", "--stdin-filename", "train.py", input=BUGGY.encode())
    assert loud[2] == "Found 1 problem (1 fixed, 0 remaining).\n"
    assert run("-s", "--fix", "-", "--stdin-filename", "train.py", input=BUGGY.encode()) == (0, loud[1], "")
    assert loud[1] == CLEAN_WITH_IMPORT

"""Every output format, validated: SARIF against the official 2.1.0 schema, JSON and JSON Lines shape,
GitHub workflow-command syntax, JUnit XML parsing, GitLab Code Quality fields; text excerpts, colour
only on a terminal and never with NO_COLOR; --statistics and --output-file."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

from gradlint.cli import main
from gradlint.rules import ALL_RULES

ROOT = Path(__file__).resolve().parent.parent
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"

# GA001 at 5:9-5:30, GA002 at 7:9 (the loss is not divided by K).
BUGGY = """\
import torch

def train(model, loader, optimizer, criterion, accum_steps):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
"""
CLEAN = "def f():\n    return 1\n"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two buggy files, given relative to the working directory (as in CI)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a, b.py").write_text(BUGGY, encoding="utf-8")  # a comma, to test escaping
    (tmp_path / "train.py").write_text(BUGGY, encoding="utf-8")
    return ["src/a, b.py", "train.py"]


def test_text_has_excerpt_and_caret(files: list[str]) -> None:
    code, out, _ = run("train.py")
    assert code == 1
    block = out.split("\n\n")[0].splitlines()
    assert block[0].startswith("train.py:5:9: GA001 ")
    assert block[2] == "5 |         optimizer.zero_grad()"
    assert block[3] == "  |         " + "^" * 21 + " GA001"  # under columns 9..29, the call's span
    assert "\x1b[" not in out  # not a terminal: no colour
    assert out.endswith("Found 2 problems in 1 file.\n[*] 2 fixable with the `--fix` option.\n")


def test_concise_is_one_line_each(files: list[str]) -> None:
    code, out, _ = run("--output-format", "concise", *files)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 6
    assert all(re.fullmatch(r".+:\d+:\d+: GA00\d (\[\*\] )?.+", line) for line in lines[:4])
    assert lines[-2:] == ["Found 4 problems in 2 files.", "[*] 4 fixable with the `--fix` option."]


def _run_in_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run gradlint with stdout on a pseudo-terminal, as a user's shell would."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gradlint", *args], stdout=slave, stderr=subprocess.DEVNULL,
                            env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(master)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal_and_never_with_no_color(files: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["PYTHONPATH"] = str(ROOT)
    path = str(Path("train.py").absolute())
    assert "\x1b[" in _run_in_terminal([path], env)
    assert "\x1b[" not in _run_in_terminal([path], {**env, "NO_COLOR": "1"})
    assert "\x1b[" not in _run_in_terminal(["--output-format", "json", path], env)


def test_json_shape(files: list[str]) -> None:
    code, out, _ = run("--output-format", "json", *files)
    assert code == 1
    items = json.loads(out)
    assert len(items) == 4
    for item in items:
        assert set(item) == {"code", "message", "filename", "location", "end_location", "url", "fix",
                             "noqa_row", "cell"}
        assert set(item["location"]) == set(item["end_location"]) == {"row", "column"}
        assert item["cell"] is None
    assert [(i["filename"], i["code"], i["location"]["row"]) for i in items] == [
        ("src/a, b.py", "GA001", 5), ("src/a, b.py", "GA002", 7), ("train.py", "GA001", 5), ("train.py", "GA002", 7)]


def test_json_lines(files: list[str]) -> None:
    _, out, _ = run("--output-format", "json-lines", *files)
    lines = out.splitlines()
    assert len(lines) == 4
    assert [json.loads(line) for line in lines] == json.loads(run("--output-format", "json", *files)[1])
    assert run("--output-format", "json-lines", "--isolated", "--select", "GA003", *files)[1] == ""


# https://docs.github.com/actions/reference/workflow-commands-for-github-actions#setting-an-error-message
GITHUB = re.compile(r"::error file=(?P<file>[^,:]+),line=(?P<line>\d+),col=(?P<col>\d+),endLine=(?P<end_line>\d+),"
                    r"endColumn=(?P<end_col>\d+),title=(?P<title>GA\d{3})::(?P<message>[^\r\n]+)")


def test_github_annotations(files: list[str]) -> None:
    code, out, _ = run("--output-format", "github", *files)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 4
    matches = [GITHUB.fullmatch(line) for line in lines]
    assert all(matches), lines
    first = matches[0]
    assert first is not None
    assert first["file"] == "src/a%2C b.py"  # property values escape `,` and `:`
    assert (first["line"], first["col"], first["end_line"], first["end_col"]) == ("5", "9", "5", "30")
    assert first["title"] == "GA001"
    assert first["message"].startswith("src/a, b.py:5:9: GA001 `optimizer.zero_grad()`")


def test_sarif_is_valid_against_the_2_1_0_schema(files: list[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    code, out, _ = run("--output-format", "sarif", *files)
    assert code == 1
    log = json.loads(out)
    jsonschema.validate(log, schema, cls=jsonschema.Draft4Validator)
    _, clean_out, _ = run("--output-format", "sarif", "--isolated", "--select", "GA003", *files)
    jsonschema.validate(json.loads(clean_out), schema, cls=jsonschema.Draft4Validator)

    run_ = log["runs"][0]
    rules = run_["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [rule.code for rule in ALL_RULES if rule.default_enabled]
    for rule in rules:
        assert rule["shortDescription"]["text"] and rule["helpUri"].startswith("https://")
        assert "## Why is this bad?" in rule["help"]["markdown"]
    results = run_["results"]
    assert len(results) == 4
    first = results[0]
    assert rules[first["ruleIndex"]]["id"] == first["ruleId"] == "GA001"
    location = first["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "src/a%2C%20b.py", "uriBaseId": "%SRCROOT%"}
    assert location["region"] == {"startLine": 5, "startColumn": 9, "endLine": 5, "endColumn": 30}


def test_sarif_schema_check_is_not_vacuous() -> None:
    """The validator rejects a log that breaks the schema, so a pass above means something."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    broken = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, "results": [
        {"message": {"text": "m"}, "level": "fatal"}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft4Validator)


def test_junit_parses(files: list[str]) -> None:
    code, out, _ = run("--output-format", "junit", *files)
    assert code == 1
    root = ET.fromstring(out)
    assert root.tag == "testsuites" and root.get("failures") == "4"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == files
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["gradlint.GA001", "gradlint.GA002"] * 2
    failure = cases[0].find("failure")
    assert failure is not None and failure.get("type") == "GA001"
    assert failure.text is not None and failure.text.startswith("src/a, b.py:5:9: GA001")


def test_junit_when_clean_has_one_passing_case(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(CLEAN, encoding="utf-8")
    code, out, _ = run("--output-format", "junit", str(tmp_path / "ok.py"))
    root = ET.fromstring(out)
    assert code == 0 and root.get("failures") == "0"
    assert len(root.findall("./testsuite/testcase")) == 1 and root.find(".//failure") is None


def test_gitlab_code_quality(files: list[str]) -> None:
    _, out, _ = run("--output-format", "gitlab", *files)
    items = json.loads(out)
    assert len(items) == 4
    assert len({i["fingerprint"] for i in items}) == 4
    assert items[0]["location"] == {"path": "src/a, b.py", "lines": {"begin": 5}}
    assert items[0]["check_name"] == "GA001 zero-grad-every-micro-batch"
    assert all(i["severity"] == "major" and i["description"].startswith("GA00") for i in items)


def test_statistics(files: list[str], tmp_path: Path) -> None:
    scaled = BUGGY.replace("        loss.backward()", "        (loss / accum_steps).backward()")
    (tmp_path / "more.py").write_text(scaled, encoding="utf-8")
    code, out, _ = run("--statistics", *files, "more.py")
    assert code == 1
    assert out == "3\tGA001\tzero-grad-every-micro-batch\n2\tGA002\tloss-not-scaled\n"
    _, out, _ = run("--statistics", "--output-format", "json", *files)
    assert json.loads(out) == [{"code": "GA001", "name": "zero-grad-every-micro-batch", "count": 2},
                               {"code": "GA002", "name": "loss-not-scaled", "count": 2}]


def test_output_file(files: list[str], tmp_path: Path) -> None:
    target = tmp_path / "reports" / "gradlint.sarif"
    code, out, _ = run("--output-format", "sarif", "--output-file", str(target), *files)
    assert code == 1 and out == ""
    assert json.loads(target.read_text(encoding="utf-8"))["version"] == "2.1.0"

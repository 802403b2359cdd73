"""Notebooks: code cells in order as one program, magics neutralised without moving anything,
findings at `path:cell N:row:col` (and a `cell` field in JSON), malformed notebooks a clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradlint.cli import main
from gradlint.notebooks import NotebookError, parse


def notebook(*cells: tuple[str, str], language: str | None = "python") -> str:
    meta = {"kernelspec": {"name": "k", "language": language}} if language else {}
    return json.dumps({
        "nbformat": 4, "nbformat_minor": 5, "metadata": meta,
        "cells": [
            {"cell_type": kind, "metadata": {}, "source": src.splitlines(keepends=True),
             **({"outputs": [], "execution_count": None} if kind == "code" else {})}
            for kind, src in cells
        ],
    })


SETUP = """\
%matplotlib inline
!pip install -q torch
import torch
accum_steps = 4
"""
# The loop is split over two cells, with markdown between and magics inside.
LOOP = """\
for i, (x, y) in enumerate(loader):
    %time batch = x
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
        optimizer.step()
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def nb(tmp_path: Path) -> Path:
    path = tmp_path / "train.ipynb"
    path.write_text(notebook(("code", SETUP), ("markdown", "# Training\n"), ("code", LOOP)), encoding="utf-8")
    return path


def test_findings_are_located_by_cell(nb: Path) -> None:
    code, out, _ = run("--output-format", "concise", str(nb))
    assert code == 1
    lines = out.splitlines()
    assert [line.split(" `")[0] for line in lines[:2]] == [f"{nb}:cell 3:3:5: GA001", f"{nb}:cell 3:5:5: GA002"]
    assert lines[-1] == "Found 2 problems in 1 file."


def test_json_has_a_cell_field(nb: Path) -> None:
    _, out, _ = run("--output-format", "json", str(nb))
    first = json.loads(out)[0]
    assert (first["cell"], first["location"], first["end_location"]) == (
        3, {"row": 3, "column": 5}, {"row": 3, "column": 26})


def test_text_excerpt_shows_the_cell_line(nb: Path) -> None:
    _, out, _ = run(str(nb))
    assert "3 |     optimizer.zero_grad()" in out


def test_directories_include_notebooks_but_not_checkpoints(nb: Path) -> None:
    checkpoints = nb.parent / ".ipynb_checkpoints"
    checkpoints.mkdir()
    (checkpoints / "train-checkpoint.ipynb").write_text(nb.read_text(encoding="utf-8"), encoding="utf-8")
    _, out, _ = run("--output-format", "json", str(nb.parent))
    assert {d["filename"] for d in json.loads(out)} == {str(nb)}


def test_notebooks_can_be_excluded_and_get_per_file_ignores(nb: Path) -> None:
    assert run("--extend-exclude", "*.ipynb", str(nb.parent))[0] == 0
    _, out, _ = run("--output-format", "json", "--per-file-ignores", "*.ipynb:GA002", str(nb.parent))
    assert [d["code"] for d in json.loads(out)] == ["GA001"]


def test_noqa_in_a_cell(tmp_path: Path) -> None:
    path = tmp_path / "n.ipynb"
    path.write_text(notebook(("code", SETUP), ("code", LOOP.replace("zero_grad()", "zero_grad()  # noqa: GA001"))),
                    encoding="utf-8")
    _, out, _ = run("--output-format", "json", str(path))
    assert [d["code"] for d in json.loads(out)] == ["GA002"]


def test_magics_keep_rows_and_columns() -> None:
    source = "x = 1\n%time y = 2\nz = !ls\n  !echo\n"
    parsed = parse(notebook(("code", source)))
    lines = parsed.source.splitlines()
    assert lines == ["x = 1", "pass", "z = ...", "  pass"]
    assert parsed.rows == [(1, 1), (1, 2), (1, 3), (1, 4)]


def test_cell_magic_cell_is_skipped_entirely(tmp_path: Path) -> None:
    bash = "%%bash\nfor f in *; do\n  echo $f\ndone\n"
    path = tmp_path / "n.ipynb"
    path.write_text(notebook(("code", bash), ("code", SETUP), ("code", LOOP)), encoding="utf-8")
    code, out, err = run("--output-format", "concise", str(path))
    assert code == 1, err
    assert out.startswith(f"{path}:cell 3:3:5: GA001")


def test_percent_inside_brackets_is_not_a_magic() -> None:
    source = 'msg = ("%d items"\n       % n)\n'
    assert parse(notebook(("code", source))).source == source


def test_cells_form_one_program(tmp_path: Path) -> None:
    """K and the optimizer are set in one cell and used in another: the model sees both."""
    clean_loop = LOOP.replace("    optimizer.zero_grad()\n", "").replace(
        "model(x), y)", "model(x), y) / accum_steps").replace(
        "        optimizer.step()\n", "        optimizer.step()\n        optimizer.zero_grad()\n")
    path = tmp_path / "clean.ipynb"
    path.write_text(notebook(("code", SETUP), ("code", clean_loop)), encoding="utf-8")
    assert run(str(path))[:2] == (0, "All checks passed.\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ("[]", "the top level is not a JSON object"),
        ('{"nbformat": 4}', "no `cells` list"),
        ('{"cells": [{"source": "x"}]}', "cell 1 has no `cell_type`"),
        ('{"cells": [{"cell_type": "code", "source": 3}]}', "the source of cell 1 is not text"),
        ('{"worksheets": []}', "nbformat 3 notebooks are not supported"),
    ],
)
def test_malformed_notebook_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(NotebookError, match=re.escape(message)):
        parse(text)
    path = tmp_path / "bad.ipynb"
    path.write_text(text, encoding="utf-8")
    code, out, err = run(str(path))
    assert (code, out) == (2, "No problems found in the files checked; 1 file could not be checked.\n")
    assert f"error: {path}: " in err and message in err
    assert "Traceback" not in err


def test_syntax_error_is_located_in_its_cell(tmp_path: Path) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text(notebook(("code", SETUP), ("code", "loss.backward()\ndef broken(:\n")), encoding="utf-8")
    code, _, err = run(str(path))
    assert code == 2
    assert f"error: {path}:cell 2:2:" in err


def test_lines_a_syntax_error_names_are_relocated_too(tmp_path: Path) -> None:
    """CPython names the `def` line in its message ("... after function definition on line N"): N
    counts the joined program's lines; it is shown in the cell's own numbering, as the error's row."""
    path = tmp_path / "exercise.ipynb"
    template = "loss.backward()\nclass Policy:\n    def forward(self, x):\n        # fill in\n\nstep = 1\n"
    path.write_text(notebook(("code", SETUP), ("code", template)), encoding="utf-8")
    code, _, err = run(str(path))
    assert code == 2
    assert f"error: {path}:cell 2:6:1:" in err  # 1-based columns (CPython's offset there is 0)
    assert "after function definition on line 3" in err and "on line 7" not in err


def test_non_python_notebook_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "julia.ipynb"
    path.write_text(notebook(("code", "x = 1 % 2\nloss.backward()\n"), language="julia"), encoding="utf-8")
    code, _, err = run(str(path))
    assert code == 0
    assert "a julia notebook, not Python: skipped" in err


def test_notebook_on_stdin(nb: Path) -> None:
    result = CliRunner().invoke(main, ["--output-format", "concise", "-", "--stdin-filename", "x.ipynb"],
                                input=nb.read_bytes())
    assert result.exit_code == 1
    assert result.stdout.startswith("x.ipynb:cell 3:3:5: GA001")


def test_github_and_sarif_do_not_claim_json_rows_for_notebooks(nb: Path) -> None:
    _, out, _ = run("--output-format", "github", str(nb))
    first = out.splitlines()[0]
    assert "line=" not in first and "cell 3:3:5: GA001" in first
    _, out, _ = run("--output-format", "sarif", str(nb))
    result = json.loads(out)["runs"][0]["results"][0]
    assert "region" not in result["locations"][0]["physicalLocation"]
    assert result["properties"] == {"cell": 3, "row": 3, "column": 5}

"""`# noqa` comments, line- and file-level, as ruff reads them."""

from __future__ import annotations

import pytest

from gradlint.checker import check_source
from gradlint.rules import ALL_RULES
from gradlint.suppression import parse_suppressions

# GA001 (zero_grad every micro-batch) on line 5 and GA002 (undivided loss) on line 6.
LOOP = """\
def train(model, loader, optimizer, criterion, accum_steps):
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        optimizer.zero_grad(){zero}
        loss.backward(){backward}
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
"""


def codes(zero: str = "", backward: str = "", header: str = "") -> tuple[list[str], list[str]]:
    result = check_source(header + LOOP.format(zero=zero, backward=backward), "train.py",
                          [rule() for rule in ALL_RULES])
    return sorted(d.code for d in result.diagnostics), [w.reason for w in result.warnings]


def test_unsuppressed_baseline() -> None:
    assert codes() == (["GA001", "GA002"], [])


@pytest.mark.parametrize("comment, expected", [
    ("  # noqa: GA001", ["GA002"]),
    ("  # noqa:GA001", ["GA002"]),
    ("  # NOQA: GA001", ["GA002"]),
    ("  # noqa", ["GA002"]),
    ("  # noqa: GA002", ["GA001", "GA002"]),  # names another rule: GA001 stays
    ("  # noqa: E501, GA001", ["GA002"]),  # combined with another tool's code
    ("  # type: ignore  # noqa: GA001", ["GA002"]),
])
def test_line_level(comment: str, expected: list[str]) -> None:
    assert codes(zero=comment)[0] == expected


def test_several_codes_on_one_line() -> None:
    found, _ = codes(backward="  # noqa: GA001, GA002")
    assert found == ["GA001"]  # the comment is on the backward line: only GA002 is there


@pytest.mark.parametrize("header, expected", [
    ("# gradlint: noqa\n", []),
    ("# gradlint: noqa: GA001\n", ["GA002"]),
    ("# gradlint: noqa: GA001, GA002\n", []),
    ("# Gradlint:noqa:GA002\n", ["GA001"]),
])
def test_file_level(header: str, expected: list[str]) -> None:
    assert codes(header=header)[0] == expected


def test_noqa_inside_a_string_suppresses_nothing() -> None:
    assert codes(header='NOTE = "# gradlint: noqa"\n')[0] == ["GA001", "GA002"]


def test_unknown_ga_code_is_a_warning_and_other_tools_codes_are_not() -> None:
    found, warnings = codes(zero="  # noqa: GA999, E501")
    assert found == ["GA001", "GA002"]
    assert warnings == ["line 4: `# noqa` names unknown rule GA999"]


def test_probe_codes_are_known() -> None:
    assert codes(zero="  # noqa: GA000, GA100")[1] == []


def test_multi_line_call_noqa_on_its_last_line() -> None:
    source = LOOP.format(zero="", backward="").replace(
        "        optimizer.zero_grad()\n",
        "        optimizer.zero_grad(\n            set_to_none=True,\n        )  # noqa: GA001\n",
    )
    result = check_source(source, "train.py", [rule() for rule in ALL_RULES])
    assert [d.code for d in result.diagnostics] == ["GA002"]


def test_parse_keeps_rows() -> None:
    found = parse_suppressions("x = 1  # noqa: GA003\ny = 2\n# noqa\n")
    assert found.lines == {1: {"GA003"}, 3: {"*"}}


def test_cli_prints_the_warning_and_exit_reflects_what_remains(tmp_path) -> None:
    from click.testing import CliRunner

    from gradlint.cli import main

    path = tmp_path / "train.py"
    path.write_text("# gradlint: noqa: GA002\n" + LOOP.format(zero="  # noqa: GA001, GA123", backward=""))
    result = CliRunner().invoke(main, [str(path)])
    assert result.exit_code == 0
    assert "All checks passed." in result.output
    assert f"warning: {path}: line 5: `# noqa` names unknown rule GA123" in result.output

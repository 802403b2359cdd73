"""`# noqa` on the reported line (or the statement's last line), file-level `# gradlint: noqa`, and
warnings for suppressions that name unknown GA codes."""

from __future__ import annotations

import pytest

from gradlint.checker import check_source
from gradlint.rules import ALL_RULES
from gradlint.suppression import may_warn, scan

RULES = [rule() for rule in ALL_RULES]

# GA001 on line 5 (zero_grad), GA002 on line 7 (backward of an unscaled loss).
LOOP = """\
import torch

def train(model, loader, optimizer, criterion, accum_steps):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad(){zg}
        loss = criterion(model(x), y)
        loss.backward(){bw}
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
"""


def codes(source: str) -> list[tuple[int, str]]:
    result = check_source(source, "train.py", RULES)
    assert result.error is None
    return [(d.row, d.code) for d in result.diagnostics]


def warnings(source: str) -> list[str]:
    return [f"{w.row}: {w.reason}" for w in check_source(source, "train.py", RULES).warnings]


def test_unsuppressed_baseline() -> None:
    assert codes(LOOP.format(zg="", bw="")) == [(5, "GA001"), (7, "GA002")]


@pytest.mark.parametrize(
    ("zg", "bw", "expected"),
    [
        ("  # noqa: GA001", "", [(7, "GA002")]),
        ("  # noqa:GA001", "", [(7, "GA002")]),
        ("  # NOQA: ga001", "", [(7, "GA002")]),
        ("  # noqa: GA001, GA003", "", [(7, "GA002")]),
        ("  # noqa: GA003 GA001", "", [(7, "GA002")]),
        ("  # noqa: E501, GA001  we clear on purpose", "", [(7, "GA002")]),
        ("  # noqa", "  # noqa", []),
        ("  # noqa: GA002", "", [(5, "GA001"), (7, "GA002")]),  # another code on this line
        ("", "  # noqa: GA001", [(5, "GA001"), (7, "GA002")]),  # the right code on the wrong line
        ("  # noqa-ish", "", [(5, "GA001"), (7, "GA002")]),  # not the word noqa
        ("  # see the noqa docs", "", [(5, "GA001"), (7, "GA002")]),  # the word is not at the comment's start
        ("  # type: ignore  # noqa: GA001", "", [(7, "GA002")]),  # a second comment on the line
    ],
)
def test_line_noqa(zg: str, bw: str, expected: list[tuple[int, str]]) -> None:
    assert codes(LOOP.format(zg=zg, bw=bw)) == expected


def test_noqa_inside_a_string_is_not_a_comment() -> None:
    source = LOOP.format(zg='; note = "# noqa: GA001"', bw="")
    assert codes(source) == [(5, "GA001"), (7, "GA002")]


def test_noqa_in_a_multiline_string_does_not_count() -> None:
    source = LOOP.format(zg="", bw="").replace(
        "    for i", '    doc = """\n    # noqa\n    """\n    for i')
    assert [code for _, code in codes(source)] == ["GA001", "GA002"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("# gradlint: noqa\n", []),
        ("# gradlint: noqa: GA001\n", ["GA002"]),
        ("# gradlint: noqa: GA001, GA002\n", []),
        ("#gradlint:noqa:GA002\n", ["GA001"]),
        ("# Gradlint:noqa:GA002\n", ["GA001"]),
        ("# ruff: noqa\n", ["GA001", "GA002"]),  # another tool's file-level switch
        ('"""# gradlint: noqa"""\n', ["GA001", "GA002"]),  # a docstring, not a comment
    ],
)
def test_file_level(header: str, expected: list[str]) -> None:
    assert [code for _, code in codes(header + LOOP.format(zg="", bw=""))] == expected


def test_file_level_comment_may_sit_at_the_end() -> None:
    assert codes(LOOP.format(zg="", bw="") + "# gradlint: noqa: GA001, GA002\n") == []


def test_multiline_statement_accepts_noqa_on_its_last_line() -> None:
    source = LOOP.format(zg="", bw="").replace(
        "        optimizer.zero_grad()\n",
        "        optimizer.zero_grad(\n            set_to_none=True,\n        )  # noqa: GA001\n")
    assert codes(source) == [(9, "GA002")]


def test_multiline_noqa_on_the_middle_line_does_not_count() -> None:
    source = LOOP.format(zg="", bw="").replace(
        "        optimizer.zero_grad()\n",
        "        optimizer.zero_grad(\n            set_to_none=True,  # noqa: GA001\n        )\n")
    assert [code for _, code in codes(source)] == ["GA001", "GA002"]


def test_unknown_ga_code_is_a_warning_and_suppresses_nothing() -> None:
    source = LOOP.format(zg="  # noqa: GA099", bw="")
    assert codes(source) == [(5, "GA001"), (7, "GA002")]
    [warning] = warnings(source)
    assert warning.startswith("5: unknown rule code `GA099`")


def test_probe_codes_are_known() -> None:
    """The runtime probe's own codes (GA000, GA006...) may be named without a warning."""
    assert warnings(LOOP.format(zg="  # noqa: GA000, GA006", bw="")) == []


def test_other_tools_codes_are_not_warned_about() -> None:
    assert warnings(LOOP.format(zg="  # noqa: E501, F401, RUF100", bw="")) == []


@pytest.mark.parametrize("comment", ["  # noqa: set_linter", "  # noqa: no-untyped-def"])
def test_other_tools_directive_words_are_not_warned_about(comment: str) -> None:
    """`# noqa: set_linter` (torch's own linter) is not ours: no warning, and no GA code is suppressed."""
    source = LOOP.format(zg=comment, bw="")
    assert warnings(source) == []
    assert codes(source) == [(5, "GA001"), (7, "GA002")]
    assert not may_warn(source)


@pytest.mark.parametrize("comment", ["  # noqa:", "  # noqa: GA", "  # noqa: ga-one"])
def test_noqa_colon_without_a_code_warns(comment: str) -> None:
    source = LOOP.format(zg=comment, bw="")
    [warning] = warnings(source)
    assert "names no rule code" in warning
    assert may_warn(source)


def test_unknown_code_in_file_level_comment_warns() -> None:
    [warning] = warnings("# gradlint: noqa: GA404\n" + LOOP.format(zg="", bw=""))
    assert "GA404" in warning and "gradlint: noqa" in warning


def test_noqa_colon_without_codes_warns() -> None:
    source = LOOP.format(zg="  # noqa:", bw="")
    assert codes(source) == [(5, "GA001"), (7, "GA002")]
    [warning] = warnings(source)
    assert "names no rule code" in warning


def test_warnings_also_in_files_without_a_training_loop() -> None:
    # the file is never parsed (no `backward`), but a typo in its suppression is still reported
    [warning] = warnings("x = 1  # noqa: GA0001\n")
    assert "GA0001" in warning


def test_scan_is_cheap_without_noqa_text() -> None:
    found = scan("x = 1\n" * 1000)
    assert not found.lines and not found.warnings and found.file_codes == frozenset()


def test_cli_prints_the_warning_with_location(tmp_path) -> None:
    from click.testing import CliRunner

    from gradlint.cli import main

    path = tmp_path / "train.py"
    path.write_text(LOOP.format(zg="  # noqa: GA01", bw="  # noqa: GA002"), encoding="utf-8")
    result = CliRunner().invoke(main, ["--output-format", "concise", str(path)])
    assert result.exit_code == 1
    assert f"warning: {path}:5: unknown rule code `GA01`" in result.stderr
    assert "GA002" not in result.stdout
    # with everything suppressed, the warning stays and the exit status reflects what remains
    path.write_text("# gradlint: noqa: GA002\n" + LOOP.format(zg="  # noqa: GA001, GA123", bw=""), encoding="utf-8")
    result = CliRunner().invoke(main, [str(path)])
    assert (result.exit_code, result.stdout) == (0, "All checks passed.\n")
    assert f"warning: {path}:6: unknown rule code `GA123`" in result.stderr

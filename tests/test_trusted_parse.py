"""`parse_accepted_module`: the same tree as `cst.parse_module`, and validation back on afterwards."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest

from gradlint.trusted_parse import parse_accepted_module

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "fixtures").rglob("*.py")) + sorted((ROOT / "gradlint" / "model").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_same_tree_as_a_validated_parse(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    trusted = parse_accepted_module(source)
    assert trusted.deep_equals(cst.parse_module(source))
    assert trusted.code == source


def test_nodes_built_afterwards_are_validated() -> None:
    parse_accepted_module("x = 1\n")
    with pytest.raises(cst.CSTValidationError):
        cst.Name("1x")


def test_validation_is_back_after_a_parse_error() -> None:
    with pytest.raises(cst.ParserSyntaxError):
        parse_accepted_module("def broken(:\n")
    with pytest.raises(cst.CSTValidationError):
        cst.Name("not a name")

"""Programs generated from Python's grammar (hypothesmith), the generator the robustness issue names.

They hold every statement and expression kind, with layouts no person writes (backslashes joining
a body to its header, `;` after a continued line, form feeds, odd indentation), and almost never
a backward or a step. So they test what `tests/test_generated_programs.py` cannot: that the tree
built from CPython's is LibCST's parse of *any* program (two layouts it got wrong were found this
way), and that no program makes gradlint fail. Those in a training script's vocabulary, which
reach the model and the rules, are in `tests/test_generated_programs.py`.
"""

from __future__ import annotations

import ast
import os

import hypothesmith
import libcst as cst
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlint.checker import check_source
from gradlint.tree_from_ast import Unsupported, built_module, first_difference

from .test_generated_programs import RULES, _shown
from .test_tree_from_ast import assert_listed

# from_grammar: text from the grammar's tokens; from_node: LibCST nodes rendered to code. Both are
# slow to draw, so fewer examples than the vocabulary's programs; GRADLINT_GRAMMAR_EXAMPLES=1500
# runs a long search (9 minutes on the 2-core development machine).
PROGRAMS = st.one_of(hypothesmith.from_grammar(), hypothesmith.from_node())
GRAMMAR = settings(max_examples=int(os.environ.get("GRADLINT_GRAMMAR_EXAMPLES", "60")), deadline=None,
                   suppress_health_check=list(HealthCheck))
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")  # `"a"()`: valid code that CPython warns of


def _cpython_tree(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _libcsts(source: str) -> cst.Module | None:
    try:
        return cst.parse_module(source)
    except (cst.ParserSyntaxError, RecursionError):  # LibCST's tokenizer refuses a few odd layouts CPython takes
        return None


@GRAMMAR
@given(PROGRAMS)
def test_the_built_tree_is_libcsts_parse_of_any_program(source: str) -> None:
    tree, expected = _cpython_tree(source), _libcsts(source)
    if tree is None or expected is None:
        return
    try:
        built_module(source, tree)
    except (Unsupported, RecursionError):
        return  # left to LibCST's parser, which then decides
    difference = first_difference(expected, assert_listed(source))
    assert difference is None, difference


@GRAMMAR
@given(PROGRAMS)
def test_no_program_makes_an_internal_error_and_every_speed_up_agrees(source: str) -> None:
    whole = _shown(check_source(source, "generated.py", RULES))  # asserts no internal error
    staged = _shown(check_source(source, "generated.py", RULES, stages=True))
    discovered = _shown(check_source(source, "generated.py", RULES, prefilter=True))
    if _libcsts(source) is not None:
        assert staged == whole
        assert discovered == whole


"""`positions_of` must give exactly LibCST's `PositionProvider` ranges: it replaces the provider
when a file has findings (gradlint/checker.py), and every reported location and fix edit reads it.
Both ways it places nodes are checked: from the code of the whole module, and (given the source, as
checker does) from the code of the statement that holds each node."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from gradlint.model import traversal
from gradlint.positions import _by_statement, positions_of

from .conftest import every_node

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "fixtures").rglob("*.py"))

ODD = {
    "crlf": "import torch\r\n\r\nfor x in loader:\r\n    loss = f(x)  # note\r\n    loss.backward()\r\n",
    "lone_cr": "for x in loader:\r    loss = f(x)\r    loss.backward()\r",
    "mixed": "for x in loader:\r\n    a = (1 +\n         2)\r    b = [\r\n        3,\n    ]\n",
    "tabs": "if x:\n\tfor y in z:\n\t\tloss.backward()\n",
    "no_trailing_newline": "def f():\n    return g(\n        1)",
    "backslash": "x = 1 + \\\n    2\nif x: y = 3; z = 4\n",
    "decorated": ("@torch.no_grad()\n@other\ndef f(a, *, b=1):\n    '''doc'''\n    pass\n\n\n"
                  "class C(B):\n    x: int = 1\n"),
    "empty": "",
    "comments_only": "# a\n\n# b\n",
}


def _assert_same(source: str) -> None:
    module = cst.parse_module(source)
    expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    nodes = every_node(module)
    for given in (None, source):
        got = positions_of(module, nodes, given)
        assert len(got) == len(nodes)
        for node in nodes:
            assert got[node] == expected[node], (given is None, type(node).__name__, got[node], expected[node])


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_node_of_every_fixture(path: Path) -> None:
    _assert_same(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(ODD))
def test_line_ends_and_layouts(name: str) -> None:
    _assert_same(ODD[name])


def test_one_node_alone_gets_the_same_range_as_among_all() -> None:
    """Wanting a single node (what a finding asks) must not change its range: its syntactic range
    may come from children (an `if` ends where its body does) that were not asked for."""
    source = SCRIPTS[0].read_text(encoding="utf-8")
    module = cst.parse_module(source)
    expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    for node in every_node(module)[:400]:
        assert positions_of(module, [node]) == {node: expected[node]}
        assert positions_of(module, [node], source) == {node: expected[node]}


def test_nothing_wanted() -> None:
    assert positions_of(cst.parse_module("x = 1\n"), []) == {}


def _placed_by_statement(source: str, node_type: type[cst.CSTNode]) -> tuple[list[cst.CSTNode], dict[int, object]]:
    module = cst.parse_module(source)
    traversal.index(module)
    nodes = [n for n in every_node(module) if type(n) is node_type]
    return nodes, _by_statement(module, {id(n): n for n in nodes}, source)


def test_a_statement_repeated_is_placed_by_the_statement_around_it() -> None:
    """`optimizer.zero_grad()` in two loops: its own line occurs twice, each loop once."""
    source = ("for x in train:\n    loss(x).backward()\n    optimizer.zero_grad()\n\n"
              "for x in evaluation:\n    loss(x).backward()\n    optimizer.zero_grad()\n")
    calls, placed = _placed_by_statement(source, cst.Call)
    assert len(calls) == 6 and set(placed) == {id(c) for c in calls}
    _assert_same(source)


def test_what_no_statement_places_is_left_to_the_module() -> None:
    """A module-level statement written twice, and a last line without its newline: not placed by
    their statements (the second is generated with a newline the source lacks), still placed right."""
    for source in ("f(x)\nf(x)\n", "x = 1\ny = g(x)"):
        calls, placed = _placed_by_statement(source, cst.Call)
        assert calls and not placed, source
        _assert_same(source)


def test_a_statement_found_inside_a_deeper_line_is_not_taken_for_it() -> None:
    """`    g(1)` also occurs inside `        g(1)`: two occurrences, so the function around it places it."""
    source = "def f():\n    if a:\n        g(1)\n    g(1)\n"
    calls, placed = _placed_by_statement(source, cst.Call)
    assert sorted(placed[id(c)].start.line for c in calls) == [3, 4]
    _assert_same(source)


def test_a_finding_in_a_loop_is_placed_by_its_statement() -> None:
    """What checker asks for (a call in a training loop, inside a function, after comments and a
    decorator) comes from the statement's code, not the module's."""
    source = SCRIPTS[0].read_text(encoding="utf-8")
    calls, placed = _placed_by_statement(source, cst.Call)
    assert calls and len(placed) > len(calls) // 2

"""`positions_of` must give exactly LibCST's `PositionProvider` ranges: it replaces the provider
when a file has findings (gradlint/checker.py), and every reported location and fix edit reads it."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from gradlint.positions import positions_of

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
    got = positions_of(module, nodes)
    assert len(got) == len(nodes)
    for node in nodes:
        assert got[node] == expected[node], (type(node).__name__, got[node], expected[node])


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


def test_nothing_wanted() -> None:
    assert positions_of(cst.parse_module("x = 1\n"), []) == {}

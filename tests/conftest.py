from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import libcst as cst
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# Set GRADLINT_UPDATE_SNAPSHOTS=1 to rewrite the `.expected` files from the current output
# (then review the diff: the `# expect:` markers in each fixture stay the ground truth).
UPDATE_SNAPSHOTS = os.environ.get("GRADLINT_UPDATE_SNAPSHOTS") == "1"


def every_node(root: cst.CSTNode) -> list[cst.CSTNode]:
    """Every node under `root`, trivia included, read from the dataclass fields (no visitor)."""
    found: list[cst.CSTNode] = []
    stack: list[cst.CSTNode] = [root]
    while stack:
        node = stack.pop()
        found.append(node)
        for field in fields(node):
            value = getattr(node, field.name)
            stack.extend(c for c in (value if isinstance(value, list | tuple) else (value,))
                         if isinstance(c, cst.CSTNode))
    return found


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def _no_cache_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run without the cache (a result cached by one test would hide what another patches in);
    tests/test_cache.py turns it back on with its own directory."""
    monkeypatch.setenv("GRADLINT_NO_CACHE", "1")
    monkeypatch.delenv("GRADLINT_CACHE_DIR", raising=False)

"""Fixes: each rule's fix is built in gradlint/fixes/gaNNN.py from the model's data (events, gate,
K, the loss), as LibCST node edits; gradlint/fixing.py turns them into text and applies them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradlint.fixes.text import Applicability, TextEdit, TextFix

if TYPE_CHECKING:
    from gradlint.fixes.edits import EditKind, Fix, NodeEdit

_NODE_EDITS = ("EditKind", "Fix", "NodeEdit")


def __getattr__(name: str) -> Any:
    # The node edits import LibCST: loaded on first use, so that the cache can import
    # gradlint.fixes.text without it.
    if name in _NODE_EDITS:
        from gradlint.fixes import edits

        return getattr(edits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Applicability", "EditKind", "Fix", "NodeEdit", "TextEdit", "TextFix"]

"""Fixes: each rule's fix is built in gradlint/fixes/gaNNN.py from the model's data (events, gate,
K, the loss), as LibCST node edits; gradlint/fixing.py turns them into text and applies them."""

from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit, TextEdit, TextFix

__all__ = ["Applicability", "EditKind", "Fix", "NodeEdit", "TextEdit", "TextFix"]

"""LibCST's parse of source that CPython has already accepted, without LibCST's node validation.

Every LibCST node validates itself when built (`CSTNode.__post_init__` calls `_validate`: matching
parentheses, legal whitespace, identifier names). For a tree that comes out of the parser this only
re-checks what the grammar guarantees, and it is a quarter of `parse_module`'s time (1.26 s against
0.96 s on torch's three biggest training-loop files). LibCST's own comment on `__post_init__` says
as much. The one thing it catches that the parser does not (a name that is not an identifier) CPython
rejects too, so the check is skipped only for text CPython parsed: everything else, and every node
gradlint builds itself (fixes), is still validated.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libcst as cst
from libcst._nodes.base import CSTNode  # the hook is not public; without it, parsing just validates


def parse_accepted_module(source: str) -> cst.Module:
    """`cst.parse_module` for source CPython's own parser accepted."""
    with validation_off():
        return cst.parse_module(source)


@contextmanager
def validation_off() -> Iterator[None]:
    hook = CSTNode.__dict__.get("__post_init__")
    if hook is None:  # a LibCST that validates elsewhere: nothing to turn off
        yield
        return
    CSTNode.__post_init__ = _skip  # type: ignore[method-assign]
    try:
        yield
    finally:
        CSTNode.__post_init__ = hook  # type: ignore[method-assign]


def _skip(self: CSTNode) -> None:
    pass

"""CPython's parse of the user's code without its warnings.

CPython warns while it parses: an invalid escape such as `"\\d"` (a DeprecationWarning on 3.11, a
SyntaxWarning that is printed by default from 3.12), `x is 1`, `assert (a, b)`. Those are the
user's code's warnings, not gradlint's: printed, they would pollute gradlint's output (pre-commit
and CI logs); under `-W error` (PYTHONWARNINGS) they would turn valid code into a SyntaxError.
"""

from __future__ import annotations

import ast
import warnings
from typing import Any


def parse_quietly(source: str, filename: str = "<unknown>", mode: str = "exec") -> Any:
    """`ast.parse` (a Module, or an Expression in "eval" mode) with no inherited flags, warnings
    ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile(source, filename, mode, dont_inherit=True, flags=ast.PyCF_ONLY_AST)

"""Where in the user's code an event happened: the first frame outside torch, installed packages,
the standard library and the probe itself. For HF Trainer or Lightning that is the `.train()` /
`.fit()` line, which is the user's line that matters."""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from types import CodeType

_PROBE_DIR = os.path.dirname(os.path.abspath(__file__))


def _library_prefixes() -> tuple[str, ...]:
    prefixes = {_PROBE_DIR + os.sep}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            prefixes.add(os.path.abspath(path) + os.sep)
    try:
        import torch

        prefixes.add(os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)
    except ImportError:  # pragma: no cover - the probe always has torch
        pass
    return tuple(sorted(prefixes, key=len, reverse=True))


_PREFIXES: tuple[str, ...] | None = None
_USER_FILE_CACHE: dict[str, bool] = {}


def is_user_file(filename: str) -> bool:
    cached = _USER_FILE_CACHE.get(filename)
    if cached is None:
        global _PREFIXES
        if _PREFIXES is None:
            _PREFIXES = _library_prefixes()
        path = os.path.abspath(filename)
        cached = not (
            filename.startswith("<")
            or path.startswith(_PREFIXES)
            or f"{os.sep}site-packages{os.sep}" in path
            or f"{os.sep}dist-packages{os.sep}" in path
        )
        _USER_FILE_CACHE[filename] = cached
    return cached


@dataclass(frozen=True)
class Site:
    filename: str
    row: int
    code: CodeType | None = None
    lasti: int = -1

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.filename, self.row, self.lasti)

    @property
    def column(self) -> int:
        """1-based column of the call, from the code object's positions table (3.11+)."""
        if self.code is None or self.lasti < 0:
            return 1
        try:
            positions = list(self.code.co_positions())
            col = positions[self.lasti // 2][2]
        except (AttributeError, IndexError):
            return 1
        return col + 1 if col is not None else 1

    def short(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.row}"

    def as_dict(self) -> dict[str, object]:
        return {"filename": self.filename, "row": self.row, "column": self.column}


UNKNOWN = Site("<unknown>", 1)


def user_site(skip: int = 1) -> Site:
    frame = sys._getframe(skip)
    fallback = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if is_user_file(filename):
            return Site(filename, frame.f_lineno, frame.f_code, frame.f_lasti)
        if fallback is None and not filename.startswith(_PROBE_DIR):
            fallback = Site(filename, frame.f_lineno, frame.f_code, frame.f_lasti)
        frame = frame.f_back
    return fallback or UNKNOWN

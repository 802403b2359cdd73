"""Which files to check: explicit files as given, directories searched for `*.py`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

SKIPPED_DIRS = frozenset({
    "__pycache__", "site-packages", "node_modules", "build", "dist", "venv", "env",
    "__pypackages__", "_build", "buck-out",
})


def _skip_dir(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name in SKIPPED_DIRS:
        return True
    return (path / "pyvenv.cfg").exists()  # a virtual environment under any name


def discover(paths: list[str]) -> Iterator[tuple[str, bool]]:
    """Yield (path, explicit) for each file to check, in a stable order. Missing paths are
    yielded too (explicit), so that the caller reports them."""
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield raw, True
            continue
        found: list[str] = []
        seen_dirs: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:  # a symlink loop
                dirnames[:] = []
                continue
            seen_dirs.add(key)
            dirnames[:] = sorted(d for d in dirnames if not _skip_dir(Path(dirpath) / d))
            found.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".py"))
        for name in sorted(found):
            yield name, False

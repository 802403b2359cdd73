"""Which files to check: explicit files as given, directories searched for `*.py` and `*.ipynb`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

# ruff's default names, and `__pycache__`. Not `env`: reinforcement-learning code keeps its
# environments in `env/` packages (verl), and a virtual environment of that name is skipped by its
# `pyvenv.cfg` anyway.
SKIPPED_DIRS = frozenset({
    "__pycache__", "site-packages", "node_modules", "build", "dist", "venv",
    "__pypackages__", "_build", "buck-out",
})


# The default of `exclude` (configuration replaces it; `extend-exclude` adds to it): names of
# directories never searched. Hidden directories include `.git`, `.venv` and `.ipynb_checkpoints`.
DEFAULT_EXCLUDE = (".*", *sorted(SKIPPED_DIRS))
EXTENSIONS = (".py", ".ipynb")


def _skip_dir(directory: str, name: str) -> bool:
    if name.startswith(".") or name in SKIPPED_DIRS:
        return True
    return _is_venv(directory, name)


def _is_venv(directory: str, name: str) -> bool:
    # A virtual environment under any name. Strings, not `Path`s: this runs for every directory.
    return os.path.exists(os.path.join(directory, name, "pyvenv.cfg"))


def discover(paths: list[str], excluded: Callable[[str, str, bool], bool] | None = None) -> Iterator[tuple[str, bool]]:
    """Yield (path, explicit) for each file to check, in a stable order. Missing paths are
    yielded too (explicit), so that the caller reports them. `excluded(directory, name, is_dir)`
    (from the settings) replaces the default name-based skipping of directories; virtual
    environments are always skipped."""
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
            if excluded is None:
                dirnames[:] = sorted(d for d in dirnames if not _skip_dir(dirpath, d))
            else:
                dirnames[:] = sorted(d for d in dirnames
                                     if not excluded(dirpath, d, True) and not _is_venv(dirpath, d))
            found.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(EXTENSIONS)
                         and (excluded is None or not excluded(dirpath, f, False)))
        for name in sorted(found):
            yield name, False

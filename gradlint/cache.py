"""A content-keyed cache of per-file results, `.gradlint_cache/` in the project root (as ruff's `.ruff_cache/`).

An entry's key is everything a file's findings depend on: the analysed source text (so `# noqa` comments are
part of it and the stored findings are the suppressed ones), the rule codes enabled for that file (selection
and per-file-ignores already applied), whether the text test may skip the file, and the analyser itself
(gradlint's version, a hash of its own source files so that an edited rule invalidates every entry, and
LibCST's version). The file's name is not: a moved file still hits, and names are put back on load.

Only files that the text test lets through are stored; the others cost less to test again than to look up.
Files with an error are never stored: an internal error may be transient (memory) and its traceback is wanted
with `--verbose`, and unparsable files are rare.

Two runs may share a cache: an entry is written to a temporary file and renamed into place, an entry that
cannot be read or decoded is a miss, and a directory that cannot be written turns writing off silently.

Pruned at most once a day, after a run that analysed files (`Cache.prune`): entries unused for 30 days (a hit
renews an entry's time), other gradlint versions' directories and other analysers' clean indexes untouched
for 7 days, and temporary files a killed run left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from gradlint import __version__
from gradlint.diagnostics import Diagnostic, FileWarning
from gradlint.fixes.text import Applicability, TextEdit, TextFix

DEFAULT_DIR_NAME = ".gradlint_cache"
DIR_ENV = "GRADLINT_CACHE_DIR"
OFF_ENV = "GRADLINT_NO_CACHE"  # as RUFF_NO_CACHE
_FORMAT = 2  # bump when the entry layout changes
_DAY_S = 24 * 3600
ENTRY_MAX_AGE_S = 30 * _DAY_S  # an entry not written or hit for this long is removed
OTHER_MAX_AGE_S = 7 * _DAY_S  # another version's directory, another analyser's clean index
TEMP_MAX_AGE_S = _DAY_S  # a temporary file this old belongs to no live writer
PRUNE_EVERY_S = _DAY_S
_PRUNE_MARK = "last-prune"
_KEY_NAME = re.compile(r"[0-9a-f]{64}")
# https://bford.info/cachedir/: backup tools skip a directory holding this file.
CACHEDIR_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# This file is a cache directory tag created by gradlint.\n"
                "# For information about cache directory tags, see: https://bford.info/cachedir/\n")


def disabled_by_env() -> bool:
    return os.environ.get(OFF_ENV, "").strip().lower() not in ("", "0", "false", "no")


def resolve_dir(option: str | None, project_root: Path) -> Path:
    """`--cache-dir`, else `GRADLINT_CACHE_DIR`, else `.gradlint_cache` in the project root."""
    chosen = option or os.environ.get(DIR_ENV)
    return Path(chosen) if chosen else project_root / DEFAULT_DIR_NAME


@lru_cache(maxsize=1)
def analyser_fingerprint() -> str:
    digest = hashlib.sha256(f"gradlint {__version__} format {_FORMAT} libcst {_libcst_version()}".encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        if "probe" in path.relative_to(package).parts:
            continue  # the runtime probe does not touch static findings
        digest.update(path.relative_to(package).as_posix().encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"?")
    return digest.hexdigest()[:16]


def _libcst_version() -> str:
    """The text of LibCST's `_version.py`, found without importing LibCST or importlib.metadata (whose
    import alone costs a warm run 17 ms); its installed metadata when that file is not there."""
    try:
        spec = importlib.util.find_spec("libcst")
        if spec is not None and spec.origin is not None:
            return Path(spec.origin).with_name("_version.py").read_text(encoding="utf-8")
    except (ImportError, ValueError, OSError, UnicodeDecodeError):
        pass
    try:
        from importlib.metadata import version

        return version("libcst")
    except Exception:  # metadata missing in odd installs: the source hash still guards us
        return "?"


@dataclass
class Cache:
    directory: Path
    writable: bool = True
    _prepared: bool = field(default=False, repr=False)

    def key(self, source: str, codes: Iterable[str], prefilter: bool) -> str:
        digest = hashlib.sha256(analyser_fingerprint().encode())
        digest.update(f"|{','.join(sorted(codes))}|{int(prefilter)}|".encode())
        digest.update(source.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def _entry(self, key: str) -> Path:
        return self.directory / __version__ / key

    def load(self, key: str, filename: str) -> tuple[list[Diagnostic], list[FileWarning]] | None:
        """The stored result with `filename` put back, or None on a miss (absent, unreadable, damaged)."""
        try:
            data = json.loads(self._entry(key).read_bytes())
            if data["key"] != key:
                return None
            diagnostics = [Diagnostic(filename, int(row), int(col), str(code), str(message), int(end_row),
                                      int(end_col), fix=_fix_from(fix))
                           for row, col, code, message, end_row, end_col, fix in data["d"]]
            warnings = [FileWarning(filename, str(reason), None if row is None else int(row))
                        for reason, row in data["w"]]
        except (OSError, ValueError, TypeError, KeyError):
            return None  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        with contextlib.suppress(OSError):  # in use: pruning keeps it (a read-only cache stays as it is)
            os.utime(self._entry(key))
        return diagnostics, warnings

    def store(self, key: str, diagnostics: list[Diagnostic], warnings: list[FileWarning]) -> None:
        if not self.writable:
            return
        payload = json.dumps({
            "key": key,
            "d": [[d.row, d.column, d.code, d.message, d.end_row, d.end_column, _fix_to(d.fix)] for d in diagnostics],
            "w": [[w.reason, w.row] for w in warnings],
        }, separators=(",", ":")).encode()
        try:
            self._prepare()
            _write_atomically(self._entry(key), payload)
        except OSError:
            self.writable = False  # read-only checkout, full disk: checking goes on without the cache

    def prune(self, now: float | None = None) -> None:
        """Remove what no run can use any more, at most once every PRUNE_EVERY_S (called after a run
        that analysed files, and so may have written some): entries unused for ENTRY_MAX_AGE_S,
        other versions' directories and other analysers' clean indexes untouched for
        OTHER_MAX_AGE_S, temporary files older than TEMP_MAX_AGE_S. Only names of gradlint's own
        making are touched, and only in a directory holding gradlint's tag; a file another run
        removes first, or that cannot be removed, is left alone."""
        if not self.writable:
            return
        now = time.time() if now is None else now
        mark = self.directory / _PRUNE_MARK
        try:
            if now - mark.stat().st_mtime < PRUNE_EVERY_S:
                return
        except OSError:
            pass  # never pruned here
        try:
            if "created by gradlint" not in (self.directory / "CACHEDIR.TAG").read_text(encoding="utf-8"):
                return
            _write_atomically(mark, b"")
            os.utime(mark, (now, now))
        except (OSError, ValueError):
            return
        current = self.directory / __version__
        clean_index = f"clean-{analyser_fingerprint()}.json"
        for item in _listing(self.directory):
            if (item.is_dir(follow_symlinks=False) and item.name != __version__ and _VERSION_NAME.fullmatch(item.name)
                    and _older(item, now, OTHER_MAX_AGE_S) and _newest_inside(item) < now - OTHER_MAX_AGE_S):
                shutil.rmtree(item.path, ignore_errors=True)
        for item in _listing(current):
            name = item.name
            if _KEY_NAME.fullmatch(name):
                limit = ENTRY_MAX_AGE_S
            elif name.startswith("clean-") and name.endswith(".json") and name != clean_index:
                limit = OTHER_MAX_AGE_S
            elif name.startswith(".tmp-"):
                limit = TEMP_MAX_AGE_S
            else:
                continue
            if _older(item, now, limit):
                with contextlib.suppress(OSError):
                    os.unlink(item.path)

    def _prepare(self) -> None:
        if self._prepared:
            return
        (self.directory / __version__).mkdir(parents=True, exist_ok=True)
        for name, text in (("CACHEDIR.TAG", CACHEDIR_TAG), (".gitignore", "# Created by gradlint.\n*\n")):
            if not (self.directory / name).exists():
                _write_atomically(self.directory / name, text.encode())
        self._prepared = True


class CleanIndex:
    """Discovered files known to give nothing (no finding, warning or error) under given rule codes,
    by their stat: a warm run settles them with one `stat` instead of reading them, as ruff's cache
    does. Content changes always move the ctime, so (size, mtime, ctime, inode) equal means the same
    file; a file changed within the last two seconds is not recorded (its times may not have moved yet).
    One JSON file per analyser, rewritten whole (atomically) only when a run learnt something."""

    RACY_NS = 2_000_000_000

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.path = cache.directory / __version__ / f"clean-{analyser_fingerprint()}.json"
        self.started_ns = time.time_ns()
        self.changed = False
        try:
            data = json.loads(self.path.read_bytes())
            self.entries: dict[str, list[Any]] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def _stamp(st: os.stat_result, codes: tuple[str, ...]) -> list[Any]:
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, ",".join(codes)]

    def settles(self, path: str, st: os.stat_result, codes: tuple[str, ...]) -> bool:
        return self.entries.get(os.path.abspath(path)) == self._stamp(st, codes)

    def record(self, path: str, st: os.stat_result, codes: tuple[str, ...]) -> None:
        if max(st.st_mtime_ns, st.st_ctime_ns) > self.started_ns - self.RACY_NS:
            return
        self.entries[os.path.abspath(path)] = self._stamp(st, codes)
        self.changed = True

    def save(self) -> None:
        if not self.changed or not self.cache.writable:
            return
        try:
            self.cache._prepare()
            _write_atomically(self.path, json.dumps(self.entries, separators=(",", ":")).encode())
        except OSError:
            self.cache.writable = False


_VERSION_NAME = re.compile(r"\d+\.\d+[\w.+-]*")  # the directories `_entry` makes: gradlint's versions


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError:
        return []


def _older(item: os.DirEntry[str], now: float, limit: float) -> bool:
    try:
        return item.stat(follow_symlinks=False).st_mtime < now - limit
    except OSError:
        return False


def _newest_inside(directory: os.DirEntry[str]) -> float:
    """The latest modification time of the files in a version's directory (a hit renews one)."""
    newest = 0.0
    for item in _listing(Path(directory.path)):
        with contextlib.suppress(OSError):
            newest = max(newest, item.stat(follow_symlinks=False).st_mtime)
    return newest


def _fix_to(fix: TextFix | None) -> list[Any] | None:
    if fix is None:
        return None
    return [fix.applicability.value, fix.message,
            [[e.start, e.end, e.content, e.row, e.column, e.end_row, e.end_column] for e in fix.edits]]


def _fix_from(data: list[Any] | None) -> TextFix | None:
    if data is None:
        return None
    applicability, message, edits = data
    return TextFix(Applicability(applicability), str(message),
                   tuple(TextEdit(int(start), int(end), str(content), int(row), int(col), int(end_row), int(end_col))
                         for start, end, content, row, col, end_row, end_col in edits))


def _write_atomically(path: Path, data: bytes) -> None:
    """A reader sees the old file or the new one, never half of one."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class CleanError(Exception):
    pass


def clean(directory: Path) -> bool:
    """Remove a cache directory. False if there was none. Refuses a directory that gradlint did not
    create (no tag of ours inside), so that a mistyped `--cache-dir` cannot delete someone's files."""
    if not directory.exists() and not directory.is_symlink():
        return False
    if not directory.is_dir() or directory.is_symlink():
        raise CleanError(f"{directory} is not a directory; not removed")
    try:
        tag = (directory / "CACHEDIR.TAG").read_text(encoding="utf-8", errors="replace")
    except OSError:
        tag = ""
    if "created by gradlint" not in tag:
        raise CleanError(f"{directory} does not look like a gradlint cache (no CACHEDIR.TAG written by gradlint); "
                         "not removed")
    try:
        shutil.rmtree(directory)
    except OSError as exc:
        raise CleanError(f"cannot remove {directory}: {exc.strerror or exc}") from None
    return True

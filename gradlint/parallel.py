"""Checking many files on several cores. Results come back in the order the files were given,
so output does not depend on `--jobs`."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from gradlint.cache import Cache
from gradlint.checker import FileResult, check_path, internal_error
from gradlint.rules import RULES_BY_CODE, Rule

# Below this many files a pool costs more to start than it saves (most files are skipped by the
# text test in microseconds).
MIN_FILES_FOR_POOL = 200
_CHUNK = 4

_worker_rules: dict[tuple[str, ...], list[Rule]] = {}
_worker_verbose = False
_worker_cache: Cache | None = None


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init(verbose: bool, cache: Cache | None) -> None:
    global _worker_verbose, _worker_cache
    _worker_verbose, _worker_cache = verbose, cache
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no traceback per worker


def _check(item: tuple[str, bool, tuple[str, ...]]) -> FileResult:
    path, explicit, codes = item
    try:
        rules = _worker_rules.get(codes)
        if rules is None:
            rules = _worker_rules[codes] = [RULES_BY_CODE[code]() for code in codes]
        return check_path(path, explicit, rules, _worker_verbose, _worker_cache)
    except Exception as exc:  # an exception here would end pool.map, and with it every other file
        return FileResult(path, error=internal_error(path, exc))


def check_paths(items: Sequence[tuple[str, bool]], rules: Sequence[Rule], verbose: bool, jobs: int,
                rules_per_file: Sequence[Sequence[Rule]] | None = None, cache: Cache | None = None,
                on_result: Callable[[], None] | None = None) -> list[FileResult]:
    """`rules` for every file, or `rules_per_file[i]` for `items[i]` (configuration may differ per
    directory and file). `on_result` is called once per file checked (progress)."""
    per_file = rules_per_file if rules_per_file is not None else [rules] * len(items)
    if jobs > 1 and len(items) >= MIN_FILES_FOR_POOL:
        work = [(path, explicit, tuple(rule.code for rule in file_rules))
                for (path, explicit), file_rules in zip(items, per_file, strict=True)]
        try:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init, initargs=(verbose, cache)) as pool:
                try:
                    return _collect(pool.map(_check, work, chunksize=_CHUNK), on_result)
                except KeyboardInterrupt:
                    pool.shutdown(wait=False, cancel_futures=True)  # else leaving `with` runs every queued file
                    raise
        except (BrokenProcessPool, OSError):
            pass  # no processes on this machine (sandbox, memory): check them here instead
    return _collect((check_path(path, explicit, file_rules, verbose, cache)
                     for (path, explicit), file_rules in zip(items, per_file, strict=True)), on_result)


def _collect(results: Iterable[FileResult], on_result: Callable[[], None] | None) -> list[FileResult]:
    out = []
    for result in results:
        out.append(result)
        if on_result is not None:
            on_result()
    return out

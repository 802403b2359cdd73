"""Checking many files on several cores. Results come back in the order the files were given,
so output does not depend on `--jobs`."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from gradlint.cache import Cache
from gradlint.checker import FileResult, check_path, internal_error, screen_path
from gradlint.rules import RULES_BY_CODE, Rule

# Below this many files a pool costs more to start than it saves (most files are skipped by the
# text test in microseconds).
MIN_FILES_FOR_POOL = 200
# The text test settles ~199 files in 200 in microseconds each: they travel in big batches, since
# a round trip to a worker costs more than the test. The few left are parsed one per task, the
# largest first, so that no worker is left with a 400 kB file at the end.
_SCREEN_BATCH = 256

_worker_rules: dict[tuple[str, ...], list[Rule]] = {}
_worker_verbose = False
_worker_cache: Cache | None = None


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init(verbose: bool, cache: Cache | None) -> None:
    global _worker_verbose, _worker_cache
    _worker_verbose, _worker_cache = verbose, cache
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no traceback per worker


def _rules(codes: tuple[str, ...]) -> list[Rule]:
    rules = _worker_rules.get(codes)
    if rules is None:
        rules = _worker_rules[codes] = [RULES_BY_CODE[code]() for code in codes]
    return rules


def _check(item: tuple[str, bool, tuple[str, ...]]) -> FileResult:
    path, explicit, codes = item
    try:
        return check_path(path, explicit, _rules(codes), _worker_verbose, _worker_cache)
    except Exception as exc:  # an exception here would end pool.map, and with it every other file
        return FileResult(path, error=internal_error(path, exc))


def _screen(batch: list[tuple[int, str, tuple[str, ...]]]) -> list[tuple[int, FileResult | None]]:
    return [(index, _screen_one(path, codes)) for index, path, codes in batch]


def _screen_one(path: str, codes: tuple[str, ...]) -> FileResult | None:
    try:
        return screen_path(path, _rules(codes))
    except Exception as exc:  # as in _check
        return FileResult(path, error=internal_error(path, exc))


def check_paths(items: Sequence[tuple[str, bool]], rules: Sequence[Rule], verbose: bool, jobs: int,
                rules_per_file: Sequence[Sequence[Rule]] | None = None, cache: Cache | None = None,
                on_result: Callable[[], None] | None = None) -> list[FileResult]:
    """`rules` for every file, or `rules_per_file[i]` for `items[i]` (configuration may differ per
    directory and file). `on_result` is called once per file checked (progress)."""
    advance = on_result or (lambda: None)
    per_file = rules_per_file if rules_per_file is not None else [rules] * len(items)
    if jobs > 1 and len(items) >= MIN_FILES_FOR_POOL:
        work = [(path, explicit, tuple(rule.code for rule in file_rules))
                for (path, explicit), file_rules in zip(items, per_file, strict=True)]
        try:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init, initargs=(verbose, cache)) as pool:
                try:
                    return _pooled(pool, work, advance)
                except KeyboardInterrupt:
                    pool.shutdown(wait=False, cancel_futures=True)  # else leaving `with` runs every queued file
                    raise
        except (BrokenProcessPool, OSError):
            pass  # no processes on this machine (sandbox, memory): check them here instead
    results = []
    for (path, explicit), file_rules in zip(items, per_file, strict=True):
        results.append(check_path(path, explicit, file_rules, verbose, cache))
        advance()
    return results


def _pooled(pool: ProcessPoolExecutor, work: list[tuple[str, bool, tuple[str, ...]]],
            advance: Callable[[], None]) -> list[FileResult]:
    results: list[FileResult | None] = [None] * len(work)
    screenable = [(i, path, codes) for i, (path, explicit, codes) in enumerate(work)
                  if not explicit and path.endswith(".py")]
    batches = [screenable[i : i + _SCREEN_BATCH] for i in range(0, len(screenable), _SCREEN_BATCH)]
    for batch in pool.map(_screen, batches):
        for index, result in batch:
            results[index] = result
            if result is not None:
                advance()
    rest = sorted((i for i, result in enumerate(results) if result is None), key=lambda i: -_size(work[i][0]))
    for index, result in zip(rest, pool.map(_check, [work[i] for i in rest]), strict=True):
        results[index] = result
        advance()
    done = [result for result in results if result is not None]
    assert len(done) == len(work), "every file gets exactly one result"
    return done


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0

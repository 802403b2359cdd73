"""Checking many files on several cores. Results come back in the order the files were given,
so output does not depend on `--jobs`. Rules travel as codes: a worker makes the rule instances
(gradlint.checker.make_rules) only when one of its files needs analysis."""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gradlint.cache import Cache, CleanIndex
from gradlint.diagnostics import FileError
from gradlint.pipeline import (
    ISSUE_TRACKER,
    FileResult,
    answer_without_analysis,
    check_path,
    internal_error,
    screen_path,
)

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

# Below this many files a pool costs more to start than it saves (most files are skipped by the
# text test in microseconds).
MIN_FILES_FOR_POOL = 200
# The text test settles ~199 files in 200 in microseconds each: they travel in big batches, since
# a round trip to a worker costs more than the test. The few left are parsed one per task, the
# largest first, so that no worker is left with a 400 kB file at the end.
_SCREEN_BATCH = 256

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
        return check_path(path, explicit, codes, _worker_verbose, _worker_cache)
    except Exception as exc:  # an exception here would end pool.map, and with it every other file
        return FileResult(path, error=internal_error(path, exc))


def _screen(batch: list[tuple[int, str]]) -> list[tuple[int, FileResult | None]]:
    return [(index, _screen_one(path)) for index, path in batch]


def _screen_one(path: str) -> FileResult | None:
    try:
        return screen_path(path)
    except Exception as exc:  # as in _check
        return FileResult(path, error=internal_error(path, exc))


def check_paths(items: Sequence[tuple[str, bool]], codes: Sequence[str], verbose: bool, jobs: int,
                codes_per_file: Sequence[Sequence[str]] | None = None, cache: Cache | None = None,
                on_result: Callable[[], None] | None = None) -> list[FileResult]:
    """The rules `codes` names for every file, or `codes_per_file[i]` for `items[i]` (configuration
    may differ per directory and file). `on_result` is called once per file checked (progress)."""
    advance = on_result or (lambda: None)
    per_file = [tuple(c) for c in codes_per_file] if codes_per_file is not None else [tuple(codes)] * len(items)
    if cache is None:
        return _check_all(items, per_file, verbose, jobs, cache, advance)
    # Files the clean index settles are not read at all; the others are checked, and recorded when clean.
    index = CleanIndex(cache)
    settled: dict[int, FileResult] = {}
    stats: dict[int, os.stat_result] = {}
    for i, (path, explicit) in enumerate(items):
        if explicit or not path.endswith(".py"):
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if index.settles(path, st, per_file[i]):
            settled[i] = FileResult(path)
            advance()
        else:
            stats[i] = st
    rest = [i for i in range(len(items)) if i not in settled]
    if len(settled) >= len(rest):
        # A warm cache: the few files left are mostly entries to look up. Here, before any worker
        # starts (a pool costs more than the lookups); only what needs analysis goes on.
        for i in rest:
            answer = answer_without_analysis(items[i][0], items[i][1], per_file[i], cache)
            if answer is not None:
                settled[i] = answer
                advance()
                if i in stats and answer.error is None and not answer.diagnostics and not answer.warnings:
                    index.record(items[i][0], stats[i], per_file[i])
        rest = [i for i in rest if i not in settled]
    checked = _check_all([items[i] for i in rest], [per_file[i] for i in rest], verbose, jobs, cache, advance)
    results = dict(settled)
    for i, result in zip(rest, checked, strict=True):
        results[i] = result
        if i in stats and result.error is None and not result.diagnostics and not result.warnings:
            index.record(items[i][0], stats[i], per_file[i])
    index.save()
    if rest:  # files were analysed, so entries may have been written: a day's pruning is due, perhaps
        cache.prune()
    return [results[i] for i in range(len(items))]


def _check_all(items: Sequence[tuple[str, bool]], per_file: Sequence[tuple[str, ...]], verbose: bool, jobs: int,
               cache: Cache | None, advance: Callable[[], None]) -> list[FileResult]:
    if jobs > 1 and len(items) >= MIN_FILES_FOR_POOL:
        # Imported here: concurrent.futures and multiprocessing cost a run of a few files 13 ms.
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        work = [(path, explicit, codes) for (path, explicit), codes in zip(items, per_file, strict=True)]
        done: list[FileResult | None] = [None] * len(work)
        started = False
        try:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init, initargs=(verbose, cache)) as pool:
                started = True
                try:
                    return _pooled(pool, work, advance, done)
                except KeyboardInterrupt:
                    pool.shutdown(wait=False, cancel_futures=True)  # else leaving `with` runs every queued file
                    raise
        except BrokenProcessPool:
            if started:  # a worker died mid-run: keep what came back, isolate the rest
                return _one_by_one(work, done, verbose, cache, advance)
        except OSError:
            pass  # no processes on this machine (sandbox, memory): check them here instead
    results = []
    for (path, explicit), codes in zip(items, per_file, strict=True):
        results.append(check_path(path, explicit, codes, verbose, cache))
        advance()
    return results


def _one_by_one(work: list[tuple[str, bool, tuple[str, ...]]], done: list[FileResult | None], verbose: bool,
                cache: Cache | None, advance: Callable[[], None]) -> list[FileResult]:
    """After a worker died (a native crash, such as LibCST's parser on pathological input, or the
    out-of-memory killer): the files without a result, each in turn in a process of its own, so that
    the one that kills its process is reported as that file's error instead of ending the run (the
    main process would die on it too)."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pending = deque(i for i, result in enumerate(done) if result is None)
    while pending:
        with ProcessPoolExecutor(max_workers=1, initializer=_init, initargs=(verbose, cache)) as pool:
            try:
                while pending:
                    done[pending[0]] = pool.submit(_check, work[pending[0]]).result()
                    pending.popleft()
                    advance()
            except BrokenProcessPool:  # this file killed its process: its error, then a new process
                index = pending.popleft()
                path = work[index][0]
                done[index] = FileResult(path, error=FileError(
                    path, "internal error: the process checking this file died (a crash in native code, or out "
                    f"of memory); this is a bug in gradlint: please report it at {ISSUE_TRACKER} with this file"))
                advance()
    return [result for result in done if result is not None]


def _pooled(pool: ProcessPoolExecutor, work: list[tuple[str, bool, tuple[str, ...]]],
            advance: Callable[[], None], results: list[FileResult | None]) -> list[FileResult]:
    """Fills `results` as answers come back (a broken pool leaves the rest None)."""
    screenable = [(i, path) for i, (path, explicit, _) in enumerate(work) if not explicit and path.endswith(".py")]
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

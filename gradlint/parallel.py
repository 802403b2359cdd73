"""Checking many files on several cores. Results come back in the order the files were given,
so output does not depend on `--jobs`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from gradlint.checker import FileResult, check_path, screen_path
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


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init(verbose: bool) -> None:
    global _worker_verbose
    _worker_verbose = verbose


def _rules(codes: tuple[str, ...]) -> list[Rule]:
    rules = _worker_rules.get(codes)
    if rules is None:
        rules = _worker_rules[codes] = [RULES_BY_CODE[code]() for code in codes]
    return rules


def _check(item: tuple[str, bool, tuple[str, ...]]) -> FileResult:
    path, explicit, codes = item
    return check_path(path, explicit, _rules(codes), _worker_verbose)


def _screen(batch: list[tuple[int, str, tuple[str, ...]]]) -> list[tuple[int, FileResult | None]]:
    return [(index, screen_path(path, _rules(codes))) for index, path, codes in batch]


def check_paths(items: Sequence[tuple[str, bool]], rules: Sequence[Rule], verbose: bool, jobs: int,
                rules_per_file: Sequence[Sequence[Rule]] | None = None) -> list[FileResult]:
    """`rules` for every file, or `rules_per_file[i]` for `items[i]` (configuration may differ per
    directory and file)."""
    per_file = rules_per_file if rules_per_file is not None else [rules] * len(items)
    if jobs > 1 and len(items) >= MIN_FILES_FOR_POOL:
        work = [(path, explicit, tuple(rule.code for rule in file_rules))
                for (path, explicit), file_rules in zip(items, per_file, strict=True)]
        try:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init, initargs=(verbose,)) as pool:
                return _pooled(pool, work)
        except (BrokenProcessPool, OSError):
            pass  # no processes on this machine (sandbox, memory): check them here instead
    return [check_path(path, explicit, file_rules, verbose)
            for (path, explicit), file_rules in zip(items, per_file, strict=True)]


def _pooled(pool: ProcessPoolExecutor, work: list[tuple[str, bool, tuple[str, ...]]]) -> list[FileResult]:
    results: list[FileResult | None] = [None] * len(work)
    screenable = [(i, path, codes) for i, (path, explicit, codes) in enumerate(work)
                  if not explicit and path.endswith(".py")]
    batches = [screenable[i : i + _SCREEN_BATCH] for i in range(0, len(screenable), _SCREEN_BATCH)]
    for batch in pool.map(_screen, batches):
        for index, result in batch:
            results[index] = result
    rest = sorted((i for i, result in enumerate(results) if result is None), key=lambda i: -_size(work[i][0]))
    for index, result in zip(rest, pool.map(_check, [work[i] for i in rest]), strict=True):
        results[index] = result
    done = [result for result in results if result is not None]
    assert len(done) == len(work), "every file gets exactly one result"
    return done


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0

"""Checking many files on several cores. Results come back in the order the files were given,
so output does not depend on `--jobs`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from gradlint.checker import FileResult, check_path
from gradlint.rules import RULES_BY_CODE, Rule

# Below this many files a pool costs more to start than it saves (most files are skipped by the
# text test in microseconds).
MIN_FILES_FOR_POOL = 200
_CHUNK = 4

_worker_rules: list[Rule] = []
_worker_verbose = False


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init(codes: list[str], verbose: bool) -> None:
    global _worker_rules, _worker_verbose
    _worker_rules = [RULES_BY_CODE[code]() for code in codes]
    _worker_verbose = verbose


def _check(item: tuple[str, bool]) -> FileResult:
    return check_path(item[0], item[1], _worker_rules, _worker_verbose)


def check_paths(items: Sequence[tuple[str, bool]], rules: Sequence[Rule], verbose: bool, jobs: int) -> list[FileResult]:
    if jobs > 1 and len(items) >= MIN_FILES_FOR_POOL:
        codes = [rule.code for rule in rules]
        try:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init, initargs=(codes, verbose)) as pool:
                return list(pool.map(_check, items, chunksize=_CHUNK))
        except (BrokenProcessPool, OSError):
            pass  # no processes on this machine (sandbox, memory): check them here instead
    return [check_path(path, explicit, rules, verbose) for path, explicit in items]

"""Do the speed-ups lose findings? Every `.py` file of the trees checked twice: whole (no text test,
no tree built from CPython's, as `--fix` rounds check) and as a discovered file (every stage), all
rules on.

    python benchmarks/staged_equivalence.py [TREE ...] [--jobs N]

Prints the files checked, how many the text test skipped, the findings of each path and every file
where the two differ (exit 1 if any). Slow on purpose: the whole path parses every file with LibCST.
The default trees are those of benchmarks/lint_speed.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gradlint.checker import FileResult, check_source, read
from gradlint.files import discover
from gradlint.prefilter import may_have_training_loop
from gradlint.rules import ALL_RULES

RULES = [rule() for rule in ALL_RULES]


def _compare(path: str) -> tuple[str, bool, list[str], list[str]]:
    source, error = read(path, explicit=False)
    if source is None or error is not None or not source.strip():
        return path, False, [], []

    candidate = may_have_training_loop(source)

    def shown(result: FileResult) -> list[str]:
        found = [f"{d.row}:{d.column} {d.code} {d.message}" for d in result.diagnostics]
        # Syntax errors of files the text test skips are not reported, by design (README).
        return found + ([f"error: {result.error.reason}"] if result.error and candidate else [])

    whole = shown(check_source(source, path, RULES, prefilter=False, stages=False))
    staged = shown(check_source(source, path, RULES, prefilter=True))
    return path, candidate, whole, staged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lint_speed import default_trees

    trees = args.trees or default_trees()
    paths = [p for p, _ in discover([str(t) for t in trees]) if p.endswith(".py")]
    files = candidates = whole_count = staged_count = 0
    differ: list[tuple[str, list[str], list[str]]] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for path, candidate, whole, staged in pool.map(_compare, paths, chunksize=8):
            files += 1
            candidates += candidate
            whole_count += len(whole)
            staged_count += len(staged)
            if whole != staged:
                differ.append((path, whole, staged))
    print(f"files: {files}; text test keeps {candidates}")
    print(f"findings: whole files {whole_count}, every stage {staged_count}; files that differ: {len(differ)}")
    for path, whole, staged in differ:
        print(f"\n{path}\n  whole:  {whole}\n  staged: {staged}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a cold run's CPU goes: each stage of `gradlint.checker` timed over every candidate file.

    python benchmarks/stage_times.py [TREE ...] [--slowest N]

One process, no cache, all rules, the garbage collector set as `checker` sets it. For each `.py`
file: reading and the text test; for each candidate the text test keeps, the stages a discovered
file goes through: CPython's parse, the LibCST tree built from it, the model (listing the nodes,
the module's facts, the walk of each function that reaches a backward), the rules; and for a file
with findings, what is done again on LibCST's parse of the statements they need, or of the whole
file where those cannot be parsed apart (the parse, the model and rules again, the positions).
Prints the CPU seconds of each stage, the candidates grouped by what the model found in them
(with their bytes and the CPU of the first pass: CPython's parse to the rules), and the slowest
files. The default trees are those of benchmarks/lint_speed.py.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import libcst as cst

from gradlint.checker import _YOUNG_THRESHOLD, _needed, make_rules, reported_nodes
from gradlint.files import discover
from gradlint.model import ModuleModel, traversal, walk_loops
from gradlint.model.facts import collect_facts
from gradlint.model.scopes import ScopeCache
from gradlint.model.syntax import recording_layout
from gradlint.partial_parse import splice
from gradlint.pipeline import cpython_tree, read
from gradlint.positions import positions_of
from gradlint.prefilter import may_have_training_loop
from gradlint.rules import RULES_BY_CODE, Finding, Rule
from gradlint.tree_from_ast import Unsupported, built_module
from gradlint.trusted_parse import parse_accepted_module

clock = time.process_time


def model_in_steps(module: cst.Module, listed: traversal.Preorder | None = None,
                   ) -> tuple[ModuleModel, tuple[float, float, float]]:
    """`gradlint.model.build_model`, step by step: the model and the CPU of its three steps."""
    start = clock()
    traversal.index(module, listed)
    listed = clock()
    facts = collect_facts(module)
    collected = clock()
    scopes = ScopeCache()
    loops = walk_loops(module, facts, scopes)
    walked = clock()
    return ModuleModel(module, facts, scopes, loops), (listed - start, collected - listed, walked - collected)


def findings_of(model: ModuleModel, rules: Sequence[Rule]) -> list[Finding]:
    return [finding for rule in rules for finding in rule.check(model)]


class Report:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.files = 0
        self.left_to_libcst = 0
        self.parsed_whole = 0  # files with findings whose statements could not be parsed apart
        # group -> [files, bytes, first-pass CPU]
        self.groups: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
        self.per_file: list[tuple[float, int, str, str]] = []  # (first pass, bytes, group, path)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


def measure(trees: Sequence[Path], rules: Sequence[Rule]) -> Report:
    report = Report()
    for path, _ in discover([str(t) for t in trees]):
        if path.endswith(".py"):
            report.files += 1
            _measure_file(path, rules, report)
    return report


def _measure_file(path: str, rules: Sequence[Rule], report: Report) -> None:
    start = clock()
    source, _error = read(path, explicit=False)
    candidate = source is not None and may_have_training_loop(source)
    report.add("read and text test (every file)", clock() - start)
    if source is None or not candidate:
        return
    start = clock()
    tree = cpython_tree(source, path)
    parsed = clock()
    report.add("CPython's parse", parsed - start)
    if tree is None:
        return  # a syntax error, reported from LibCST's parse: not a stage of interest here
    try:
        module, origins, listed = built_module(source, tree)
    except (Unsupported, RecursionError):
        report.left_to_libcst += 1  # checked on LibCST's parse alone; not timed
        return
    built = clock()
    report.add("building the LibCST tree", built - parsed)
    with recording_layout() as layout_read:
        model, steps = model_in_steps(module, listed)
        for name, seconds in zip(("model: listing the nodes", "model: facts", "model: walk and loops"), steps,
                                 strict=True):
            report.add(name, seconds)
        modelled = clock()
        found = findings_of(model, rules)
        checked = clock()
    report.add("rules", checked - modelled)
    if not model.facts.reaches_backward:
        group = "no function reaches a backward"
    elif not model.loops:
        group = "no training loop"
    elif not found:
        group = "training loops, no finding"
    else:
        group = "findings"
        again = clock()
        spliced = splice(source, tree, module, origins, model.parents, _needed(found, layout_read))
        if spliced is None:
            report.parsed_whole += 1
        exact = spliced.module if spliced is not None else parse_accepted_module(source)
        reparsed = clock()
        second = findings_of(model_in_steps(exact)[0], rules)
        redone = clock()
        positions_of(exact, reported_nodes(second), source, spliced.roots if spliced is not None else None)
        located = clock()
        report.add("findings: LibCST's parse of their statements (or of the file)", reparsed - again)
        report.add("findings: model and rules again", redone - reparsed)
        report.add("findings: positions", located - redone)
    first_pass = checked - start
    stats = report.groups[group]
    stats[0] += 1
    stats[1] += len(source)
    stats[2] += first_pass
    report.per_file.append((first_pass, len(source), group, path))


def print_report(report: Report, slowest: int) -> None:
    print(f"{report.files} .py files, {len(report.per_file)} candidates modelled"
          f" ({report.left_to_libcst} left to LibCST's parse, not timed); of those with findings,"
          f" {report.parsed_whole} parsed whole\n")
    print("| stage | CPU s |\n|---|---|")
    for stage, seconds in report.seconds.items():
        print(f"| {stage} | {seconds:.2f} |")
    print(f"| **total** | **{sum(report.seconds.values()):.2f}** |\n")
    print("| candidates | files | MB | first pass CPU s |\n|---|---|---|---|")
    for group, (files, size, seconds) in sorted(report.groups.items()):
        print(f"| {group} | {files} | {size / 1e6:.1f} | {seconds:.2f} |")
    if slowest:
        print("\nslowest first passes:")
        for seconds, size, group, path in sorted(report.per_file, reverse=True)[:slowest]:
            print(f"  {seconds:.3f} s  {size:>8} B  {group:<30} {path}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path)
    parser.add_argument("--slowest", type=int, default=10, help="list this many slowest files (0: none)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lint_speed import default_trees

    rules = make_rules(sorted(RULES_BY_CODE))
    gc.set_threshold(_YOUNG_THRESHOLD, *gc.get_threshold()[1:])  # as checker runs a file
    print_report(measure(args.trees or default_trees(), rules), args.slowest)


if __name__ == "__main__":
    main()

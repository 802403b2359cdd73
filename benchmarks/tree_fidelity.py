"""Is the tree built from CPython's LibCST's own? Every `.py` file of the trees, both ways.

    python benchmarks/tree_fidelity.py [TREE ...]

For each file CPython and LibCST both parse: LibCST's tree of the source against
`tree_from_ast.module_from_ast`'s. Prints the files compared, how many
are the same, left to LibCST (`Unsupported`, by reason) or different (each with the first place
they differ; exit 1 if any), and the CPU time of LibCST's parse and of the build. Slow on purpose:
it parses every file with LibCST. The default trees are those of benchmarks/lint_speed.py.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import libcst as cst

from gradlint.files import discover
from gradlint.tree_from_ast import Unsupported, first_difference, module_from_ast
from gradlint.trusted_parse import parse_accepted_module


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lint_speed import default_trees

    trees = args.trees or default_trees()
    compared = same = 0
    unsupported: Counter[str] = Counter()
    differ: list[str] = []
    libcst_time = build_time = 0.0
    for path, _ in discover([str(t) for t in trees]):
        if not path.endswith(".py"):
            continue
        try:
            source = Path(path).read_bytes().decode("utf-8")
            tree = ast.parse(source)
            start = time.process_time()
            expected = parse_accepted_module(source)
            libcst_time += time.process_time() - start
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, cst.ParserSyntaxError):
            continue  # not a file both parsers take
        compared += 1
        start = time.process_time()
        try:
            built = module_from_ast(source, tree)
        except Unsupported as exc:
            unsupported[str(exc).split(":")[0]] += 1
            continue
        except RecursionError:
            unsupported["too deeply nested"] += 1
            continue
        finally:
            build_time += time.process_time() - start
        difference = first_difference(expected, built)
        if difference is None:
            same += 1
        else:
            differ.append(f"{path}: {difference}")
    print(f"trees: {', '.join(map(str, trees))}")
    print(f"files compared: {compared}; same: {same}; left to LibCST: {sum(unsupported.values())}; "
          f"different: {len(differ)}")
    for reason, count in unsupported.most_common():
        print(f"  left to LibCST ({reason}): {count}")
    for line in differ:
        print(f"  DIFFERENT {line}")
    print(f"CPU: LibCST's parse {libcst_time:.2f} s, the build from CPython's tree {build_time:.2f} s")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

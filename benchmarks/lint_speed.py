"""Lint speed: gradlint beside ruff (and TorchFix / Fixit when installed) on a real tree.

    python benchmarks/lint_speed.py [TREE ...] [--runs 3]

The default trees are ones every machine with the test extra has: the installed torch package
and the Python standard library (thousands of real files). Runs alternate between tools so that
machine noise hits each equally; the table shows medians. Wall time is what a user waits; CPU is
user+system time of the tool's processes; peak memory is the largest RSS among them.

gradlint runs twice per round with its own cache directory: cold (the directory emptied first, so the
run pays for writing the entries too) and then warm (every entry there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def default_trees() -> list[Path]:
    trees = [Path(sysconfig.get_paths()["stdlib"])]
    try:
        import importlib.util

        spec = importlib.util.find_spec("torch")
        if spec and spec.origin:
            trees.insert(0, Path(spec.origin).parent)
    except (ImportError, ValueError):
        pass
    return trees


def count_files(trees: Sequence[Path]) -> int:
    """What gradlint checks (and ruff too): `site-packages` under the stdlib tree and the like are skipped."""
    from gradlint.files import discover

    return sum(1 for path, _ in discover([str(t) for t in trees]) if path.endswith(".py"))


def measure(command: list[str]) -> tuple[float, float, float, int]:
    """(wall s, cpu s, peak RSS MiB, exit code) of one run. `wait4` gives this child's own
    resource use (with the worker processes it waited for), not a running total over children."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, proc.returncode


# Python may keep gradlint's compiled bytecode, as it does for any installed package (`pip install`
# compiles it): a PYTHONDONTWRITEBYTECODE set in the shell would otherwise charge every run for
# compiling gradlint's own modules (0.2-0.3 s on the 2-core machine), a cost no installed gradlint has.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def tools(trees: Sequence[Path], cache_dir: Path) -> dict[str, list[str]]:
    paths = [str(t) for t in trees]
    gradlint = [sys.executable, "-m", "gradlint", "check", "--exit-zero", "--cache-dir", str(cache_dir), *paths]
    found = {"gradlint (cold)": gradlint, "gradlint (warm)": gradlint}
    if shutil.which("ruff"):
        found["ruff (defaults, no cache)"] = ["ruff", "check", "--isolated", "--no-cache", "--exit-zero", *paths]
    if shutil.which("torchfix"):
        found["torchfix"] = ["torchfix", *paths]
    if shutil.which("fixit"):
        found["fixit"] = ["fixit", "lint", *paths]
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    trees = args.trees or default_trees()
    cache_dir = Path(tempfile.mkdtemp(prefix="gradlint-bench-")) / "cache"
    commands = tools(trees, cache_dir)
    print(f"trees: {', '.join(map(str, trees))}")
    print(f"files: {count_files(trees)} *.py checked; {os.cpu_count()} cores; {args.runs} runs each, alternating")
    samples: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in commands}
    subprocess.run([sys.executable, "-c", "import gradlint.cli"], check=True, env=_ENV)  # bytecode, once
    for _ in range(args.runs):
        for name, command in commands.items():
            if name == "gradlint (cold)":
                shutil.rmtree(cache_dir, ignore_errors=True)
            samples[name].append(measure(command))
    shutil.rmtree(cache_dir.parent, ignore_errors=True)
    ruff = next((n for n in samples if n.startswith("ruff")), None)
    ruff_wall = statistics.median(s[0] for s in samples[ruff]) if ruff else None
    print("\n| tool | wall (median) | CPU | peak RSS | vs ruff | exit |")
    print("|---|---|---|---|---|---|")
    for name, runs in samples.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        rss = max(r[2] for r in runs)
        ratio = f"{wall / ruff_wall:.2f}x" if ruff_wall else "n/a"
        print(f"| {name} | {wall:.2f} s | {cpu:.2f} s | {rss:.0f} MiB | {ratio} | {runs[-1][3]} |")
    cold = statistics.median(r[0] for r in samples["gradlint (cold)"])
    warm = statistics.median(r[0] for r in samples["gradlint (warm)"])
    print(f"\ngradlint warm / cold: {warm / cold:.2f}x (target: at most 0.2x)")


if __name__ == "__main__":
    main()

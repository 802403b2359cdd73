"""What fixes cost: checking the bug fixtures with the fix builders on and stubbed out (the
difference is the price of offering fixes), and `fix_source` to a stable result per file.

    python benchmarks/fix_overhead.py [REPEATS]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import gradlint.fixes.ga001
import gradlint.fixes.ga002
import gradlint.fixes.ga003
import gradlint.fixes.ga004
import gradlint.fixes.ga005
from gradlint.checker import check_source
from gradlint.fixing import fix_source
from gradlint.rules import (
    ALL_RULES,
    ga001_zero_grad_every_micro_batch,
    ga002_loss_not_scaled,
    ga003_clip_before_accumulation_complete,
    ga004_missing_remainder_step,
    ga005_clip_without_unscale,
)

ROOT = Path(__file__).resolve().parent.parent
RULE_MODULES = {
    ga001_zero_grad_every_micro_batch: ("ga001", gradlint.fixes.ga001),
    ga002_loss_not_scaled: ("ga002", gradlint.fixes.ga002),
    ga003_clip_before_accumulation_complete: ("ga003", gradlint.fixes.ga003),
    ga004_missing_remainder_step: ("ga004", gradlint.fixes.ga004),
    ga005_clip_without_unscale: ("ga005", gradlint.fixes.ga005),
}


class _NoFix:
    @staticmethod
    def fix(*_args: object) -> None:
        return None


def _time(sources: list[str], action) -> float:
    start = time.perf_counter()
    for source in sources:
        action(source)
    return time.perf_counter() - start


def main(repeats: int) -> None:
    rules = [rule() for rule in ALL_RULES]
    sources = [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("fixtures/GA00*/*.py"))]
    with_fixes, without, fixing = [], [], []
    for _ in range(repeats):
        for module, (name, _fixes) in RULE_MODULES.items():
            setattr(module, name, _NoFix)
        without.append(_time(sources, lambda s: check_source(s, "x.py", rules)))
        for module, (name, fixes) in RULE_MODULES.items():
            setattr(module, name, fixes)
        with_fixes.append(_time(sources, lambda s: check_source(s, "x.py", rules)))
        fixing.append(_time(sources, lambda s: fix_source(s, "x.py", rules, unsafe=True)))
    n = len(sources)
    print(f"{n} bug fixtures, best of {repeats}:")
    print(f"  check, fix builders stubbed: {min(without) * 1000 / n:6.1f} ms/file")
    print(f"  check, with fixes:           {min(with_fixes) * 1000 / n:6.1f} ms/file "
          f"(+{(min(with_fixes) / min(without) - 1) * 100:.0f}%)")
    print(f"  fix_source to a stable text: {min(fixing) * 1000 / n:6.1f} ms/file (check, fix, re-check rounds)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)

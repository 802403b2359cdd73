"""`--jobs`: the same results, in the same order, as checking file by file."""

from __future__ import annotations

import pytest

from gradlint import parallel
from gradlint.files import discover
from gradlint.rules import ALL_RULES

from .conftest import FIXTURES


def test_pool_matches_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    items = list(discover([str(FIXTURES)]))
    rules = [rule() for rule in ALL_RULES]
    serial = parallel.check_paths(items, rules, False, jobs=1)
    monkeypatch.setattr(parallel, "MIN_FILES_FOR_POOL", 1)
    pooled = parallel.check_paths(items, rules, False, jobs=2)
    assert [r.filename for r in pooled] == [path for path, _ in items]
    assert [r.diagnostics for r in pooled] == [r.diagnostics for r in serial]
    assert sum(len(r.diagnostics) for r in serial) > 20


def test_jobs_must_be_positive() -> None:
    from click.testing import CliRunner

    from gradlint.cli import main

    result = CliRunner().invoke(main, ["check", "--jobs", "0", str(FIXTURES)])
    assert result.exit_code == 2 and "--jobs" in result.output

"""`--jobs`: the same results, in the same order, as checking file by file."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from gradlint import parallel
from gradlint.files import discover
from gradlint.rules import ALL_RULES

from .conftest import FIXTURES


def test_pool_matches_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    items = list(discover([str(FIXTURES)]))
    codes = [rule.code for rule in ALL_RULES]
    serial = parallel.check_paths(items, codes, False, jobs=1)
    monkeypatch.setattr(parallel, "MIN_FILES_FOR_POOL", 1)
    pooled = parallel.check_paths(items, codes, False, jobs=2)
    assert [r.filename for r in pooled] == [path for path, _ in items]
    assert [r.diagnostics for r in pooled] == [r.diagnostics for r in serial]
    assert sum(len(r.diagnostics) for r in serial) > 20


def test_screened_files_match_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the text test settles in the pool's batches (errors, warnings, nothing) give what the
    serial path gives, and the parsed ones keep their place in the order."""
    shutil.copytree(FIXTURES, tmp_path / "fixtures")
    (tmp_path / "empty.py").write_text("", encoding="utf-8")
    (tmp_path / "latin1.py").write_bytes(b"x = '\xe9'\n")
    (tmp_path / "typo.py").write_text("import os  # noqa: GA999\n", encoding="utf-8")
    for i in range(30):
        (tmp_path / f"plain_{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n", encoding="utf-8")
    items = list(discover([str(tmp_path)]))
    codes = [rule.code for rule in ALL_RULES]
    serial = parallel.check_paths(items, codes, False, jobs=1)
    monkeypatch.setattr(parallel, "MIN_FILES_FOR_POOL", 1)
    monkeypatch.setattr(parallel, "_SCREEN_BATCH", 7)
    pooled = parallel.check_paths(items, codes, False, jobs=2)
    assert [r.filename for r in pooled] == [path for path, _ in items]
    for got, want in zip(pooled, serial, strict=True):
        assert (got.diagnostics, got.error, got.warnings) == (want.diagnostics, want.error, want.warnings)
    assert any(r.error for r in serial) and any(r.warnings for r in serial)
    assert sum(len(r.diagnostics) for r in serial) > 20


def test_jobs_must_be_positive() -> None:
    from click.testing import CliRunner

    from gradlint.cli import main

    result = CliRunner().invoke(main, ["check", "--jobs", "0", str(FIXTURES)])
    assert result.exit_code == 2 and "--jobs" in result.output


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the simulated crash reaches workers by fork")
def test_a_file_that_kills_its_worker_is_that_files_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A native crash in a worker (simulated: the process exits on one file) breaks the pool: the
    results already back are kept, the rest are checked one process each, and the file that kills
    its process is reported as an internal error of its own. The run goes on and ends."""
    items = list(discover([str(FIXTURES)]))
    codes = [rule.code for rule in ALL_RULES]
    serial = parallel.check_paths(items, codes, False, jobs=1)
    victim = next(path for path, _ in items if path.endswith("plain_argparse_no_division.py"))
    real = parallel.check_path

    def dying(path: str, *args: object) -> object:
        if path == victim:
            os._exit(70)  # what a segfault in LibCST's native parser looks like to the pool
        return real(path, *args)

    monkeypatch.setattr(parallel, "check_path", dying)  # the workers are forked: they inherit it
    monkeypatch.setattr(parallel, "MIN_FILES_FOR_POOL", 1)
    pooled = parallel.check_paths(items, codes, False, jobs=2)
    assert [r.filename for r in pooled] == [path for path, _ in items]
    for got, want in zip(pooled, serial, strict=True):
        if got.filename == victim:
            assert got.error is not None and "the process checking this file died" in got.error.reason
            assert not got.diagnostics
        else:
            assert (got.diagnostics, got.error) == (want.diagnostics, want.error)

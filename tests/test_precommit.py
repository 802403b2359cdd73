"""The pre-commit hook, run for real through `pre-commit try-repo` in a temporary git repository.

pre-commit builds the hook's virtual environment with pip, so this needs `pre-commit` (in the test extra) and
a package index (or a pip configuration that points at a local one) for libcst and click. Without
either, the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BUGGY = """\
import torch

def train(model, loader, optimizer, criterion, accum_steps):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = criterion(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
"""


def test_hook_manifest() -> None:
    """The manifest's fields, read without pre-commit (yaml is not a dependency: a small subset parser)."""
    text = (ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert entries[0] == "- id: gradlint"
    fields = dict(e.removeprefix("- ").split(": ", 1) for e in entries)
    assert fields["entry"].split()[:2] == ["gradlint", "check"]
    assert "--force-exclude" in fields["entry"].split()
    assert fields["language"] == "python"
    assert fields["types_or"] == "[python, jupyter]"
    assert fields["require_serial"] == "true"


def _notebook(source: str) -> str:
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                       "cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                                  "source": source.splitlines(keepends=True)}]})


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})


def _pre_commit() -> list[str]:
    try:
        import pre_commit  # noqa: F401
    except ImportError:
        pytest.skip("pre-commit is not installed (pip install pre-commit)")
    return [sys.executable, "-m", "pre_commit"]


_OFFLINE = ("Could not find a version", "No matching distribution", "Failed to establish a new connection",
            "Temporary failure in name resolution", "Network is unreachable")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_try_repo(tmp_path: Path) -> None:
    pre_commit = _pre_commit()
    if not (ROOT / ".git").exists():
        pytest.skip("gradlint's source is not a git checkout, which `pre-commit try-repo` needs")
    repo = tmp_path / "project"
    repo.mkdir()
    (repo / "train.py").write_text(BUGGY, encoding="utf-8")
    (repo / "explore.ipynb").write_text(_notebook(BUGGY), encoding="utf-8")
    (repo / "vendor").mkdir()
    (repo / "vendor" / "upstream.py").write_text(BUGGY, encoding="utf-8")
    (repo / "pyproject.toml").write_text('[tool.gradlint]\nextend-exclude = ["vendor"]\n', encoding="utf-8")
    (repo / "README.md").write_text("notes\n", encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "NO_COLOR": "1"}

    def try_repo(*files: str) -> subprocess.CompletedProcess[str]:
        args = ["--files", *files] if files else ["--all-files"]
        proc = subprocess.run([*pre_commit, "try-repo", str(ROOT), "gradlint", *args, "--color", "never"],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode not in (0, 1) or ("An error has occurred" in proc.stdout
                                             and any(s in proc.stdout + proc.stderr for s in _OFFLINE)):
            log = tmp_path / "cache" / "pre-commit.log"
            detail = log.read_text(encoding="utf-8") if log.exists() else proc.stdout + proc.stderr
            if any(s in detail for s in _OFFLINE):
                pytest.skip("pre-commit could not install the hook's environment (no package index reachable)")
            raise AssertionError(detail)
        return proc

    proc = try_repo()
    assert proc.returncode == 1, proc.stdout
    out = proc.stdout
    assert "train.py:5:9: GA001" in out
    assert "explore.ipynb:cell 1:5:9: GA001" in out  # notebooks are passed (types_or: jupyter)
    assert "vendor/upstream.py" not in out  # extend-exclude holds for files pre-commit passes
    assert "Found 2 problems in 2 files." in out

    # Only files the hook does not take: pre-commit runs nothing and succeeds.
    proc = try_repo("README.md")
    assert proc.returncode == 0, proc.stdout
    assert "(no files to check)Skipped" in proc.stdout

    # Only excluded files: gradlint runs, checks nothing, exits 0.
    proc = try_repo("vendor/upstream.py")
    assert proc.returncode == 0, proc.stdout
    assert "Passed" in proc.stdout

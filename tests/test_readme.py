"""The README's example output is real: re-run the command it shows and compare."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradlint.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = re.compile(r"## Example\n\n```text\n\$ (gradlint [^\n]*)\n(.*?)```", re.S)


def test_readme_example_output_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    found = EXAMPLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found, "README has no `## Example` block starting with `$ gradlint ...`"
    command, shown = found.groups()
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")
    result = CliRunner().invoke(main, shlex.split(command)[1:])
    assert result.output == shown

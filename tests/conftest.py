from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# Set GRADLINT_UPDATE_SNAPSHOTS=1 to rewrite the `.expected` files from the current output
# (then review the diff: the `# expect:` markers in each fixture stay the ground truth).
UPDATE_SNAPSHOTS = os.environ.get("GRADLINT_UPDATE_SNAPSHOTS") == "1"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES

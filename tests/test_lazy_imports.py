"""A run whose files need no analysis imports no LibCST (nor the model and the rule classes): a warm
run answered by the cache or the clean index, files without a training loop, `--version`, `rules`.
pre-commit runs gradlint on a few files per commit, usually cache hits: LibCST's import was most of
what it waited for. Each case runs in a fresh interpreter, since this one has imported everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

LOOP = """\
for i, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss = criterion(model(x), y) / K
    loss.backward()
    if (i + 1) % K == 0:
        optimizer.step()
"""
CLEAN_LOOP = """\
for i, (x, y) in enumerate(loader):
    loss = criterion(model(x), y) / K
    loss.backward()
    if (i + 1) % K == 0 or i + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
"""
LIBRARY = "import os  # noqa: GA999\n\n\ndef helper(x):\n    return os.path.join(x, 'y')\n"
HEAVY = ("libcst", "gradlint.checker", "gradlint.rules", "gradlint.model", "torch")
_SCRIPT = """\
import json, sys
from gradlint.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "loaded": [name for name in %r if name in sys.modules]}), file=sys.stderr)
"""


def gradlint(*args: str, cwd: Path, watch: tuple[str, ...] = HEAVY) -> tuple[int, str, list[str]]:
    """(exit code, stdout, which of `watch` were imported) of `gradlint ARGS` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRADLINT_NO_CACHE", "GRADLINT_CACHE_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # this checkout
    env["NO_COLOR"] = "1"
    proc = subprocess.run([sys.executable, "-c", _SCRIPT % (watch,), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["exit"], proc.stdout, report["loaded"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.gradlint]\n", encoding="utf-8")
    (tmp_path / "train.py").write_text(LOOP, encoding="utf-8")
    (tmp_path / "train_ok.py").write_text(CLEAN_LOOP, encoding="utf-8")
    (tmp_path / "lib.py").write_text(LIBRARY, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["rules"], ["check", "--help"],
                                  ["check", "--show-settings", "train.py"], ["rule", "GA100"]])
def test_commands_that_analyse_nothing(project: Path, args: list[str]) -> None:
    code, out, loaded = gradlint(*args, cwd=project)
    assert code == 0 and out
    assert loaded == []


def test_files_without_a_training_loop(project: Path) -> None:
    """Named (their syntax checked by CPython) and discovered; the noqa typo in lib.py still warns."""
    (project / "train.py").unlink()
    (project / "train_ok.py").unlink()
    for args in (["--no-cache", "lib.py"], ["--no-cache", "."], ["lib.py"]):
        code, out, loaded = gradlint(*args, cwd=project)
        assert (code, out, loaded) == (0, "All checks passed.\n", []), args


@pytest.mark.parametrize("named", [True, False], ids=["named", "discovered"])
def test_warm_run(project: Path, named: bool) -> None:
    """The cold run analyses (and imports LibCST); the warm one gives the same output from the cache
    (named files) or from the cache and the clean index (discovered files), without it."""
    args = ["--output-format", "concise", *(["train.py", "train_ok.py", "lib.py"] if named else ["."])]
    old = 1_600_000_000_000_000_000  # the clean index does not record files changed in the last seconds
    for path in project.glob("*.py"):
        os.utime(path, ns=(old, old))
    cold = gradlint(*args, cwd=project)
    assert cold[0] == 1 and "GA001" in cold[1] and "libcst" in cold[2]
    warm = gradlint(*args, cwd=project)
    assert warm == (*cold[:2], [])


@pytest.mark.parametrize("output_format", ["text", "json", "json-lines", "github", "junit", "gitlab"])
def test_warm_run_in_every_format_but_sarif(project: Path, output_format: str) -> None:
    """SARIF embeds each rule's whole docstring, which only the rule classes hold."""
    args = ["--output-format", output_format, "train.py"]
    gradlint(*args, cwd=project)
    code, out, loaded = gradlint(*args, cwd=project)
    assert code == 1 and "GA001" in out and loaded == []
    code, out, loaded = gradlint("--statistics", *args, cwd=project)
    assert code == 1 and "GA001" in out and loaded == []


def test_analysis_still_happens_on_a_miss(project: Path) -> None:
    """A changed file is analysed again: LibCST is loaded then, and the new finding is reported."""
    gradlint("train.py", cwd=project)
    (project / "train.py").write_text(LOOP.replace(" / K", ""), encoding="utf-8")
    code, out, loaded = gradlint("--output-format", "concise", "train.py", cwd=project)
    assert code == 1 and "GA002" in out and "libcst" in loaded


# Modules only some runs need: the probe's command and data model, JUnit's XML writer, the TOML reader
# (no configuration file here), the configuration-typo hint, tracebacks of internal errors.
OCCASIONAL = ("gradlint.probe", "xml.etree", "tomllib", "difflib", "traceback")


def test_warm_run_without_configuration_imports_only_what_it_uses(tmp_path: Path) -> None:
    """Every warm run pays for the command line's imports (pre-commit's runs are mostly warm)."""
    (tmp_path / "train.py").write_text(LOOP, encoding="utf-8")
    (tmp_path / "lib.py").write_text(LIBRARY.replace("  # noqa: GA999", ""), encoding="utf-8")
    gradlint(".", cwd=tmp_path)
    code, out, loaded = gradlint(".", cwd=tmp_path, watch=HEAVY + OCCASIONAL)
    assert code == 1 and "GA001" in out and loaded == []
    code, out, loaded = gradlint("probe", "--help", cwd=tmp_path, watch=("gradlint.probe.cli", "torch"))
    assert code == 0 and "SCRIPT" in out and loaded == ["gradlint.probe.cli"]

"""The cache (`.gradlint_cache/`): identical results with and without it, keyed by content and settings,
safe when damaged, read-only or shared, and removable with `gradlint clean`."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import gradlint.checker as checker
import gradlint.pipeline as pipeline
from gradlint.cache import DEFAULT_DIR_NAME, Cache, CleanIndex
from gradlint.cli import main

from .conftest import FIXTURES

MARKER = re.compile(r"#\s*expect:\s*(GA\d{3})")


@pytest.fixture(autouse=True)
def _cache_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADLINT_NO_CACHE", raising=False)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _notebook(source: str) -> str:
    """A fixture as a notebook: a cell per top-level block, with a markdown cell and a magic between."""
    blocks = re.split(r"\n\n(?=(?:def|class|for|import|from|with|if|while|@)\b)", source)
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# notes\n"]}]
    for block in blocks:
        cells.append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                      "source": ("%time\n" + block).splitlines(keepends=True)})
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "cells": cells,
                       "metadata": {"kernelspec": {"name": "python3", "language": "python"}}})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every fixture as it is; every bug fixture with its markers turned into `# noqa` comments (every
    other one naming an unknown code, which warns); every third fixture as a notebook."""
    root = tmp_path_factory.mktemp("corpus")
    for n, path in enumerate(sorted(FIXTURES.rglob("*.py"))):
        name = f"{path.parent.name}_{path.stem}"
        text = path.read_text(encoding="utf-8")
        (root / f"{name}.py").write_text(text, encoding="utf-8")
        if n % 3 == 0:
            (root / f"{name}.ipynb").write_text(_notebook(text), encoding="utf-8")
        if MARKER.search(text):
            code = "GA999" if n % 2 else r"\1"
            (root / f"{name}_noqa.py").write_text(MARKER.sub(f"# noqa: {code}", text), encoding="utf-8")
    return root


def _report(*args: str) -> tuple[int, list[dict], str]:
    code, out, err = run("check", "--output-format", "json", *args)
    return code, json.loads(out), err


def test_same_results_with_and_without_cache(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir = tmp_path / "cache"
    files = sorted(str(p) for p in corpus.iterdir())
    # The same findings whether the files are discovered (the text test on: part of the key) or named.
    without = _report("--no-cache", str(corpus))
    real = checker.check_source
    analysed: list[str] = []

    def counting(source: str, *a: object, **k: object) -> object:
        analysed.append(source)
        return real(source, *a, **k)

    for args in ([str(corpus)], files):
        cold = _report("--cache-dir", str(cache_dir), *args)
        assert len(list((cache_dir / checker_version()).iterdir())) > 50
        analysed.clear()
        monkeypatch.setattr(checker, "check_source", counting)
        warm = _report("--cache-dir", str(cache_dir), *args)
        monkeypatch.setattr(checker, "check_source", real)
        assert cold == without and warm == without
        code, diagnostics, err = without
        assert code == 1 and len(diagnostics) > 40 and "error" not in err
        assert any(d["cell"] for d in diagnostics) and "GA999" in err  # notebooks and noqa warnings are in it
        # The warm run analysed nothing that has a training loop: only what the text test skips.
        assert not [s for s in analysed if "backward" in s]


def checker_version() -> str:
    from gradlint import __version__

    return __version__


BUGGY = """\
for i, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss = criterion(model(x), y) / K
    loss.backward()
    if (i + 1) % K == 0:
        optimizer.step()
"""


def _codes(*args: str) -> list[str]:
    _, diagnostics, _ = _report(*args)
    return [d["code"] for d in diagnostics]


def test_key_follows_content_and_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.py"
    script.write_text(BUGGY)
    assert _codes("train.py") == ["GA001", "GA004"]
    assert _codes("train.py", "--ignore", "GA004") == ["GA001"]
    assert _codes("train.py", "--per-file-ignores", "train.py:GA001") == ["GA004"]
    (tmp_path / "pyproject.toml").write_text('[tool.gradlint]\nignore = ["GA001"]\n')
    assert _codes("train.py") == ["GA004"]
    (tmp_path / "pyproject.toml").unlink()
    script.write_text(BUGGY.replace("optimizer.zero_grad()", "optimizer.zero_grad()  # noqa: GA001"))
    assert _codes("train.py") == ["GA004"]
    script.write_text(BUGGY)
    assert _codes("train.py") == ["GA001", "GA004"]
    # A moved file hits the same entry (the name is not part of the key) and reports its new name.
    shutil.move(script, tmp_path / "moved.py")
    _, diagnostics, _ = _report("moved.py")
    assert {d["filename"] for d in diagnostics} == {"moved.py"}
    entries = list((tmp_path / DEFAULT_DIR_NAME / checker_version()).iterdir())
    # The defaults, --ignore GA004, GA001 off (by option or by configuration: the same codes), the noqa text.
    assert len(entries) == 4


def test_cache_dir_layout_option_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[tool.gradlint]\n")
    (project / "src" / "train.py").write_text(BUGGY)
    monkeypatch.chdir(project / "src")
    run("check", "train.py")  # the project root is the configuration's directory, as in ruff
    cache_dir = project / DEFAULT_DIR_NAME
    assert (cache_dir / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (cache_dir / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    assert not (project / "src" / DEFAULT_DIR_NAME).exists()
    monkeypatch.setenv("GRADLINT_CACHE_DIR", str(tmp_path / "from-env"))
    run("check", "train.py")
    assert (tmp_path / "from-env" / "CACHEDIR.TAG").exists()
    run("check", "--cache-dir", str(tmp_path / "from-option"), "train.py")  # the option beats the variable
    assert (tmp_path / "from-option" / "CACHEDIR.TAG").exists()
    shutil.rmtree(tmp_path / "from-option")
    run("check", "--no-cache", "--cache-dir", str(tmp_path / "from-option"), "train.py")
    monkeypatch.setenv("GRADLINT_NO_CACHE", "1")
    run("check", "--cache-dir", str(tmp_path / "from-option"), "train.py")
    assert not (tmp_path / "from-option").exists()


@pytest.mark.parametrize("damage", [b"", b"{", b'{"key": 1}', b"\xff\xfe garbage",
                                    b'{"key": "K", "d": [[1]], "w": []}'])
def test_damaged_entry_is_a_miss(tmp_path: Path, damage: bytes) -> None:
    script = tmp_path / "train.py"
    script.write_text(BUGGY)
    args = ["--cache-dir", str(tmp_path / "c"), str(script)]
    first = _report(*args)
    (entry,) = (tmp_path / "c" / checker_version()).iterdir()
    entry.write_bytes(damage.replace(b"K", entry.name.encode()))
    assert _report(*args) == first
    assert json.loads(entry.read_bytes())["key"] == entry.name  # rewritten whole


def test_entry_that_cannot_be_read_is_a_miss(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(BUGGY)
    args = ["--cache-dir", str(tmp_path / "c"), str(script)]
    first = _report(*args)
    (entry,) = (tmp_path / "c" / checker_version()).iterdir()
    entry.unlink()
    entry.mkdir()  # a directory where the entry should be: reading and replacing it both fail
    assert _report(*args) == first


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_cache_dir_silently_disables_writing(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(BUGGY)
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    cache_dir.chmod(0o555)
    try:
        code, out, err = run("check", "--cache-dir", str(cache_dir), str(script))
    finally:
        cache_dir.chmod(0o755)
    assert code == 1 and "GA001" in out and err == ""
    assert list(cache_dir.iterdir()) == []


def test_unwritable_cache_location_silently_disables_writing(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(BUGGY)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, out, err = run("check", "--cache-dir", str(blocker / "cache"), str(script))  # works for root too
    assert code == 1 and "GA001" in out and err == ""


def test_store_is_atomic_and_tolerates_a_concurrent_writer(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    key = cache.key("source", ["GA001"], True)
    other = Cache(tmp_path / "c")
    cache.store(key, [], [])
    other.store(key, [], [])  # a second run writing the same entry replaces it whole
    assert cache.load(key, "x.py") == ([], [])
    names = [p.name for p in (tmp_path / "c" / checker_version()).iterdir()]
    assert names == [key]  # no temporary files left behind


def test_fingerprint_holds_the_installed_libcst_version() -> None:
    """Read from LibCST's own files without importing importlib.metadata: still its real version."""
    from importlib.metadata import version

    from gradlint.cache import _libcst_version

    assert version("libcst") in _libcst_version()


def test_errors_are_not_cached(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("for b in loader:\n    loss.backward(\n    optimizer.step()\n")
    code, _, err = run("check", "--cache-dir", str(tmp_path / "c"), str(script))
    assert code == 2 and "syntax error" in err
    assert not (tmp_path / "c" / checker_version()).exists() or not any((tmp_path / "c" / checker_version()).iterdir())


def test_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(BUGGY)
    run("check", "train.py")
    assert (tmp_path / DEFAULT_DIR_NAME).is_dir()
    code, _, err = run("clean")
    assert code == 0 and err.strip() == f"Removed {tmp_path / DEFAULT_DIR_NAME}"
    assert not (tmp_path / DEFAULT_DIR_NAME).exists()
    code, _, err = run("clean")
    assert code == 0 and "No cache at" in err
    # Never removes a directory gradlint did not make, whatever --cache-dir says.
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...")
    code, _, err = run("clean", "--cache-dir", str(precious))
    assert code == 2 and "does not look like a gradlint cache" in err
    assert (precious / "thesis.tex").exists()


# -- the clean index: discovered files known to give nothing are not even read -----------------------

CLEAN_LIBRARY = "def helper(x):\n    return x + 1\n"  # no training loop: the text test settles it


def _old(path: Path) -> None:
    """Times well outside the two seconds in which a file counts as possibly still changing."""
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test's files were all written (ctime) just now: let the index record them anyway."""
    monkeypatch.setattr(CleanIndex, "RACY_NS", 0)


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for n in range(5):
        (tree / f"lib_{n}.py").write_text(CLEAN_LIBRARY.replace("1", str(n)))
        _old(tree / f"lib_{n}.py")
    (tree / "train.py").write_text(BUGGY)
    _old(tree / "train.py")
    return tree


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = pipeline.read

    def counting(path: str, *args: object) -> object:
        seen.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(pipeline, "read", counting)
    return seen


def test_clean_index_skips_unchanged_clean_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 no_racy_window: None) -> None:
    tree = _tree(tmp_path)
    args = ("--cache-dir", str(tmp_path / "c"), str(tree))
    first = _report(*args)
    reads = _reads(monkeypatch)
    assert _report(*args) == first
    assert reads == ["train.py"]  # the file with findings is read (and hits the content cache)
    reads.clear()
    assert _report("--select", "GA001", *args)[1] == [d for d in first[1] if d["code"] == "GA001"]
    assert len(reads) == 6  # other codes: nothing is settled by the index


def test_clean_index_notices_a_change_of_the_same_size_and_mtime(tmp_path: Path, no_racy_window: None) -> None:
    tree = _tree(tmp_path)
    args = ("--cache-dir", str(tmp_path / "c"), str(tree))
    code, diagnostics, _ = _report(*args)
    assert code == 1 and {d["filename"] for d in diagnostics} == {str(tree / "train.py")}
    lib = tree / "lib_0.py"
    shutil.copy(tree / "train.py", lib)  # now buggy, then given back its old times: the ctime still moves
    _old(lib)
    code, diagnostics, _ = _report(*args)
    assert {d["filename"] for d in diagnostics} == {str(tree / "train.py"), str(lib)}


def test_clean_index_does_not_record_files_changed_just_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _tree(tmp_path)  # every file's ctime is now, whatever its mtime says
    args = ("--cache-dir", str(tmp_path / "c"), str(tree))
    _report(*args)
    reads = _reads(monkeypatch)
    _report(*args)
    assert len(reads) == 6


def test_damaged_clean_index_is_ignored(tmp_path: Path, no_racy_window: None) -> None:
    tree = _tree(tmp_path)
    args = ("--cache-dir", str(tmp_path / "c"), str(tree))
    first = _report(*args)
    (index,) = (tmp_path / "c" / checker_version()).glob("clean-*.json")
    for damage in (b"", b"[1, 2]", b'{"x": 1}', b"\xff"):
        index.write_bytes(damage)
        assert _report(*args) == first


def test_warm_tree_is_answered_before_any_worker_starts(corpus: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, no_racy_window: None) -> None:
    """With a warm cache, what the clean index leaves (files with findings, notebooks, files changed
    since) is looked up in the parent: no pool starts for cache hits, and the report is the same."""
    import gradlint.parallel as parallel

    tree = tmp_path / "tree"
    shutil.copytree(corpus, tree)
    for n in range(300):  # enough clean files that the clean index settles the majority
        (tree / f"plain_{n}.py").write_text(f"def f{n}(x):\n    return x * {n}\n", encoding="utf-8")
    for path in tree.iterdir():
        _old(path)
    monkeypatch.setattr(parallel, "MIN_FILES_FOR_POOL", 1)
    args = ("--cache-dir", str(tmp_path / "c"), "--jobs", "2", str(tree))
    cold = _report(*args)
    handed: list[int] = []
    real = parallel._check_all

    def recording(items: list, *rest: object) -> object:
        handed.append(len(items))
        return real(items, *rest)

    monkeypatch.setattr(parallel, "_check_all", recording)
    assert _report(*args) == cold
    assert handed == [0]  # every file answered by the clean index or a cache entry
    (tree / "plain_0.py").write_text(BUGGY, encoding="utf-8")  # a change: analysed, in the pool path
    handed.clear()
    code, diagnostics, _ = _report(*args)
    assert code == 1 and handed == [1] and any(d["filename"].endswith("plain_0.py") for d in diagnostics)


# Pruning: what no run can use any more goes, at most once a day.

DAY = 24 * 3600


def _aged(path: Path, now: float, days: float) -> Path:
    os.utime(path, (now - days * DAY, now - days * DAY))
    return path


def _filled_cache(tmp_path: Path, now: float) -> tuple[Cache, dict[str, Path]]:
    """A cache with something of every kind pruning judges, each as old as its name says."""
    cache = Cache(tmp_path / "c")
    keys = [cache.key(f"x = {n}\n", ["GA001"], True) for n in range(3)]
    for key in keys:
        cache.store(key, [], [])
    version = tmp_path / "c" / checker_version()
    other_old, other_new = tmp_path / "c" / "0.0.9", tmp_path / "c" / "0.0.8"
    for directory, days in ((other_old, 8), (other_new, 2)):
        directory.mkdir()
        (directory / ("a" * 64)).write_bytes(b"{}")
        _aged(directory / ("a" * 64), now, days)
        _aged(directory, now, days)
    paths = {
        "entry unused 31 days": _aged(version / keys[0], now, 31),
        "entry unused 29 days": _aged(version / keys[1], now, 29),
        "entry just written": version / keys[2],
        "other analyser's index, 8 days": version / "clean-0123456789abcdef.json",
        "other analyser's index, 2 days": version / "clean-fedcba9876543210.json",
        "temporary file, 2 days": version / ".tmp-dead",
        "temporary file, just now": version / ".tmp-live",
        "someone's file": tmp_path / "c" / "notes.txt",
        "someone's directory": tmp_path / "c" / "mine",
        "older version, 8 days": other_old,
        "older version, 2 days": other_new,
    }
    for name in ("other analyser's index, 8 days", "other analyser's index, 2 days", "temporary file, 2 days",
                 "temporary file, just now", "someone's file"):
        paths[name].write_text("{}")
    paths["someone's directory"].mkdir()
    for name, path in paths.items():
        days = re.search(r"(\d+) days", name)
        if days and not name.startswith(("entry", "older")):
            _aged(path, now, int(days.group(1)))
    _aged(paths["someone's file"], now, 400)
    _aged(paths["someone's directory"], now, 400)
    return cache, paths


def test_prune_removes_only_what_no_run_can_use(tmp_path: Path) -> None:
    now = time.time()
    cache, paths = _filled_cache(tmp_path, now)
    cache.prune(now)
    gone = {name for name, path in paths.items() if not path.exists()}
    assert gone == {"entry unused 31 days", "other analyser's index, 8 days", "temporary file, 2 days",
                    "older version, 8 days"}
    assert (tmp_path / "c" / "CACHEDIR.TAG").exists() and (tmp_path / "c" / ".gitignore").exists()


def test_prune_runs_at_most_once_a_day(tmp_path: Path) -> None:
    now = time.time()
    cache, paths = _filled_cache(tmp_path, now)
    cache.prune(now)
    stale = _aged(paths["entry unused 29 days"], now, 40)
    cache.prune(now + 3600)
    assert stale.exists()  # pruned an hour ago: not yet
    cache.prune(now + 1.5 * DAY)
    assert not stale.exists()


def test_a_hit_keeps_an_entry(tmp_path: Path) -> None:
    now = time.time()
    cache = Cache(tmp_path / "c")
    key = cache.key("x = 1\n", ["GA001"], True)
    cache.store(key, [], [])
    entry = _aged(tmp_path / "c" / checker_version() / key, now, 31)
    assert cache.load(key, "train.py") == ([], [])
    cache.prune(now)
    assert entry.exists()


def test_prune_leaves_a_directory_without_our_tag_alone(tmp_path: Path) -> None:
    now = time.time()
    cache, paths = _filled_cache(tmp_path, now)
    (tmp_path / "c" / "CACHEDIR.TAG").unlink()
    cache.prune(now)
    assert all(path.exists() for path in paths.values())


def test_a_run_that_analyses_files_prunes(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(BUGGY)
    cache_dir = tmp_path / "c"
    run("check", "--cache-dir", str(cache_dir), str(script))
    (entry,) = (cache_dir / checker_version()).iterdir()
    (cache_dir / "last-prune").unlink()
    _aged(entry, time.time(), 31)
    script.write_text(BUGGY + "\n# edited\n")  # analysed again: a new entry, and the old one pruned
    run("check", "--cache-dir", str(cache_dir), str(script))
    assert not entry.exists()
    assert len(list((cache_dir / checker_version()).iterdir())) == 1

"""Configuration: discovery of the nearest file, precedence (CLI over file), per-file-ignores and
exclusion globs, and clear errors (exit 2, naming the key) for bad configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradlint.cli import main
from gradlint.config import glob_regex
from gradlint.rules import ALL_RULES

# GA001 on line 5; GA002 on line 7 (the loss is not divided by K).
BUGGY = """\
import torch

def train(model, loader, optimizer, criterion, accum_steps):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
"""


def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def found(*args: str) -> list[tuple[str, str]]:
    """(file name, code) pairs reported, via the JSON output."""
    code, out, err = run("--output-format", "json", *args)
    assert code in (0, 1), err
    return [(Path(d["filename"]).name, d["code"]) for d in json.loads(out)]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "train.py", BUGGY)
    return tmp_path


def test_defaults_without_configuration(project: Path) -> None:
    assert found(str(project)) == [("train.py", "GA001"), ("train.py", "GA002")]


def test_pyproject_ignore(project: Path) -> None:
    write(project / "pyproject.toml", '[project]\nname = "x"\n\n[tool.gradlint]\nignore = ["GA002"]\n')
    assert found(str(project)) == [("train.py", "GA001")]


def test_select_replaces_the_defaults(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.gradlint]\nselect = ["GA002"]\n')
    assert found(str(project)) == [("train.py", "GA002")]


def test_nearest_configuration_wins_and_files_are_not_merged(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.gradlint]\nignore = ["GA002"]\n')
    write(project / "sub" / "pyproject.toml", '[tool.gradlint]\nignore = ["GA001"]\n')
    write(project / "sub" / "train.py", BUGGY)
    assert sorted(found(str(project))) == [("train.py", "GA001"), ("train.py", "GA002")]
    assert found(str(project / "sub")) == [("train.py", "GA002")]  # only sub's ignore applies


def test_pyproject_without_our_table_is_skipped(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.gradlint]\nignore = ["GA002"]\n')
    write(project / "pkg" / "pyproject.toml", '[project]\nname = "pkg"\n[tool.ruff]\nline-length = 99\n')
    write(project / "pkg" / "train.py", BUGGY)
    assert found(str(project / "pkg")) == [("train.py", "GA001")]


def test_gradlint_toml_beats_pyproject_in_the_same_directory(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.gradlint]\nignore = ["GA002"]\n')
    write(project / "gradlint.toml", 'ignore = ["GA001"]\n')
    assert found(str(project)) == [("train.py", "GA002")]


def test_explicit_config_and_isolated(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    write(project / "pyproject.toml", '[tool.gradlint]\nignore = ["GA002"]\n')
    elsewhere = write(tmp_path_factory.mktemp("cfg") / "gradlint.toml", 'ignore = ["GA001"]\n')
    assert found("--config", str(elsewhere), str(project)) == [("train.py", "GA002")]
    assert found("--isolated", str(project)) == [("train.py", "GA001"), ("train.py", "GA002")]


@pytest.mark.parametrize(
    ("config", "args", "expected"),
    [
        ('ignore = ["GA002"]', ["--select", "GA002"], ["GA002"]),  # CLI select starts afresh
        ('select = ["GA001"]', ["--extend-select", "GA002"], ["GA001", "GA002"]),
        ('select = ["GA001", "GA002"]', ["--ignore", "GA001"], ["GA002"]),
        ('extend-select = ["GA"]\nignore = ["GA00"]', [], []),  # more specific ignore wins in a layer
        ('ignore = ["GA"]', ["--extend-select", "GA001"], ["GA001"]),
    ],
)
def test_command_line_overrides_the_file(project: Path, config: str, args: list[str], expected: list[str]) -> None:
    write(project / "pyproject.toml", f"[tool.gradlint]\n{config}\n")
    assert [code for _, code in found(*args, str(project))] == expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("tests/*.py", "tests/train.py", True),
        ("tests/*.py", "tests/deep/train.py", False),
        ("tests/**/*.py", "tests/deep/train.py", True),
        ("tests/**/*.py", "tests/train.py", True),
        ("**/notebooks/*", "a/b/notebooks/n.ipynb", True),
        ("train_?.py", "train_a.py", True),
        ("train_[ab].py", "train_c.py", False),
    ],
)
def test_glob(pattern: str, path: str, expected: bool) -> None:
    assert (glob_regex(pattern).fullmatch(path) is not None) is expected


def test_per_file_ignores(project: Path) -> None:
    write(project / "pyproject.toml",
          '[tool.gradlint.per-file-ignores]\n"scripts/**/*.py" = ["GA002"]\n"legacy_*.py" = ["GA"]\n')
    write(project / "scripts" / "a" / "run.py", BUGGY)
    write(project / "deep" / "legacy_train.py", BUGGY)
    assert sorted(found(str(project))) == [("run.py", "GA001"), ("train.py", "GA001"), ("train.py", "GA002")]
    # the command line replaces the file's per-file-ignores
    assert sorted(found("--per-file-ignores", "train.py:GA001", str(project))) == [
        ("legacy_train.py", "GA001"), ("legacy_train.py", "GA002"), ("run.py", "GA001"), ("run.py", "GA002"),
        ("train.py", "GA002")]


def test_exclude_and_extend_exclude(project: Path) -> None:
    write(project / "vendor" / "train.py", BUGGY)
    write(project / "build" / "train.py", BUGGY)
    write(project / "experiments" / "old_train.py", BUGGY)
    names = lambda *args: sorted({f"{p}" for p, _ in found(*args, str(project))})  # noqa: E731
    assert names() == ["old_train.py", "train.py"]  # build/ is excluded by default
    write(project / "pyproject.toml", '[tool.gradlint]\nextend-exclude = ["vendor", "experiments/old_*.py"]\n')
    assert names() == ["train.py"]
    assert len(found(str(project))) == 2  # only the top-level train.py
    write(project / "pyproject.toml", '[tool.gradlint]\nexclude = ["vendor"]\n')  # replaces the defaults
    assert len(found(str(project))) == 6  # train.py, build/train.py, experiments/old_train.py


def test_force_exclude_applies_to_files_named_on_the_command_line(project: Path) -> None:
    path = write(project / "vendor" / "train.py", BUGGY)
    write(project / "pyproject.toml", '[tool.gradlint]\nextend-exclude = ["vendor"]\n')
    assert len(found(str(path))) == 2  # named explicitly: checked, as ruff does
    code, out, _ = run("--force-exclude", str(path))
    assert (code, out) == (0, "All checks passed.\n")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('selct = ["GA"]', "unknown key `selct` in [tool.gradlint]; did you mean `select`?"),
        ('extend_select = ["GA"]', "unknown key `extend_select` in [tool.gradlint]; did you mean `extend-select`?"),
        ('select = "GA001"', "`select` must be a list of strings, got str"),
        ("ignore = [1]", "`ignore` must be a list of strings"),
        ('select = ["GA999"]', "`select`: unknown rule selector `GA999`"),
        ('per-file-ignores = ["x"]', "`per-file-ignores` must be a table"),
        ('per-file-ignores = { "t.py" = ["XX1"] }', '`per-file-ignores."t.py"`: unknown rule selector `XX1`'),
        ("exclude = 3", "`exclude` must be a list of strings"),
        ("select = [", "invalid TOML"),
    ],
)
def test_bad_configuration_is_a_clear_error(project: Path, config: str, message: str) -> None:
    write(project / "pyproject.toml", f"[tool.gradlint]\n{config}\n")
    code, out, err = run(str(project))
    assert code == 2
    assert out == ""
    assert f"error: {project / 'pyproject.toml'}: " in err
    assert message in err
    assert "Traceback" not in err


def test_missing_config_file_is_an_error(project: Path) -> None:
    code, _, err = run("--config", str(project / "nope.toml"), str(project))
    assert code == 2 and "no such file" in err


def test_bad_command_line_per_file_ignores(project: Path) -> None:
    code, _, err = run("--per-file-ignores", "nocolon", str(project))
    assert code == 2 and "PATTERN:CODES" in err


def test_show_settings(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.gradlint]\nignore = ["GA002"]\n'
                                      '[tool.gradlint.per-file-ignores]\n"tests/*" = ["GA001"]\n')
    code, out, _ = run("--show-settings", "--extend-select", "GA002", str(project / "train.py"))
    assert code == 0
    assert f'config-file = "{project / "pyproject.toml"}"' in out
    enabled = ", ".join(f'"{rule.code}"' for rule in ALL_RULES if rule.default_enabled)
    assert f"enabled-rules = [{enabled}]" in out
    assert 'command-line = ["--extend-select=GA002"]' in out
    assert '"tests/*" = ["GA001"]' in out
    code, out, _ = run("--show-settings", "--isolated", str(project / "train.py"))
    assert 'config-file = "none (--isolated)"' in out


def test_codes_by_file_path_string_are_the_resolved_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The discovery-path lookup the CLI uses gives what `enabled_codes` gives: nested configurations,
    per-file-ignores by name and by path, a directory without its own file, relative and absolute paths."""
    from gradlint.config import Overrides, Resolver
    from gradlint.files import discover

    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradlint]\nignore = ["GA013"]\n[tool.gradlint.per-file-ignores]\n"eval_*.py" = ["GA001"]\n'
        '"pkg/sub/*.py" = ["GA00"]\n', encoding="utf-8")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "gradlint.toml").write_text('select = ["GA002"]\n', encoding="utf-8")
    for name in ("train.py", "eval_a.py", "pkg/sub/x.py", "pkg/y.py", "other/z.py", "other/eval_b.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for target in (".", str(tmp_path)):
        resolver = Resolver(Overrides())
        paths = [p for p, _ in discover([target], resolver.excluded_entry)]
        assert len(paths) == 6
        by_string = {p: resolver.enabled_codes_of_file(p) for p in paths}
        assert by_string == {p: Resolver(Overrides()).enabled_codes(Path(p)) for p in paths}
        names = {Path(p).name: codes for p, codes in by_string.items()}
        assert "GA001" not in names["eval_a.py"] and "GA001" in names["train.py"] and "GA013" not in names["train.py"]
        assert not any(c.startswith("GA00") for c in names["x.py"]) and names["z.py"] == ["GA002"]
    assert Resolver(Overrides()).enabled_codes_of_file("train.py") == (
        Resolver(Overrides()).enabled_codes(Path("train.py")))


@pytest.mark.parametrize("path", [".", "./pkg", "pkg/./sub", "pkg//sub/", "pkg/../other", "..", "/", "/abs/dir/",
                                  "rel"])
def test_directories_are_spelt_as_pathlib_spells_them(path: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings are looked up per directory by string; the strings must be `Path.absolute()`'s."""
    from gradlint.config import _absolute

    monkeypatch.chdir(tmp_path)
    assert _absolute(path) == str(Path(path).absolute())

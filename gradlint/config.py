"""Settings: `[tool.gradlint]` in the nearest `pyproject.toml` above each file (or a `gradlint.toml`,
whose keys sit at the top level), `--config PATH`, `--isolated`, and command-line overrides.

As in ruff: the nearest configuration wins and files are not merged; command-line selections are
stacked on top of the file's; globs in `per-file-ignores` and `exclude` are relative to the directory
of the file that declares them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlint.catalog import RuleInfo
from gradlint.files import DEFAULT_EXCLUDE
from gradlint.selection import SelectionError, parse_selectors, resolve_layers

if TYPE_CHECKING:
    from gradlint.rules import Rule

CONFIG_FILES = ("gradlint.toml", "pyproject.toml")  # in this order, per directory, as ruff.toml beats pyproject
KNOWN_KEYS = ("select", "ignore", "extend-select", "per-file-ignores", "exclude", "extend-exclude")


class ConfigError(ValueError):
    """A configuration that cannot be used: reported as `error: ...`, exit 2."""


@dataclass(frozen=True)
class Selection:
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)

    def layer(self) -> tuple[list[str] | None, list[str], list[str]]:
        return self.select, self.ignore, self.extend_select


@dataclass(frozen=True)
class Settings:
    """One configuration source (a file, or none) with the command line applied."""

    path: Path | None  # the configuration file, None for defaults
    root: Path  # globs are relative to this directory
    selection: Selection = Selection()
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    extend_exclude: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Overrides:
    """What the command line says; None/empty means 'as the file says'."""

    selection: Selection = Selection()
    per_file_ignores: dict[str, list[str]] | None = None
    exclude: list[str] | None = None
    extend_exclude: list[str] = field(default_factory=list)


def load(path: Path) -> Settings:
    """Read one configuration file. Raises ConfigError naming the file and key."""
    # Imported here: a tree without configuration files (and a warm run of one) never needs them.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("gradlint", {})
        where = "[tool.gradlint]"
    else:
        table, where = data, path.name
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    return _from_table(table, path, where)


def _from_table(table: dict[str, Any], path: Path, where: str) -> Settings:
    unknown = sorted(set(table) - set(KNOWN_KEYS))
    if unknown:
        hint = _hint(unknown[0])
        raise ConfigError(f"{path}: unknown key `{unknown[0]}` in {where}{hint} (known keys: {', '.join(KNOWN_KEYS)})")

    def codes(key: str) -> list[str] | None:
        if key not in table:
            return None
        return _codes(_strings(table[key], key, path), key, path)

    pfi: dict[str, list[str]] = {}
    raw_pfi = table.get("per-file-ignores", {})
    if not isinstance(raw_pfi, dict):
        raise ConfigError(f'{path}: `per-file-ignores` must be a table of glob = ["CODE", ...], '
                          f'e.g. "tests/*.py" = ["GA002"]')
    for pattern, value in raw_pfi.items():
        key = f'per-file-ignores."{pattern}"'
        pfi[pattern] = _codes(_strings(value, key, path), key, path)
    exclude = table.get("exclude")
    return Settings(
        path=path,
        root=path.parent.resolve(),
        selection=Selection(codes("select"), codes("ignore") or [], codes("extend-select") or []),
        per_file_ignores=pfi,
        exclude=_strings(exclude, "exclude", path) if exclude is not None else list(DEFAULT_EXCLUDE),
        extend_exclude=_strings(table.get("extend-exclude", []), "extend-exclude", path),
    )


def _hint(key: str) -> str:
    import difflib  # only for a configuration error

    close = difflib.get_close_matches(key.replace("_", "-").lower(), KNOWN_KEYS, n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def _strings(value: object, key: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: `{key}` must be a list of strings, got {type(value).__name__} "
                          f"`{value!r}`")
    return list(value)


def _codes(values: list[str], key: str, path: Path) -> list[str]:
    try:
        return parse_selectors(values)
    except SelectionError as exc:
        raise ConfigError(f"{path}: `{key}`: {exc}") from None


def parse_per_file_ignores(values: Sequence[str]) -> dict[str, list[str]]:
    """`--per-file-ignores 'tests/*.py:GA002,GA003'` (repeatable)."""
    out: dict[str, list[str]] = {}
    for value in values:
        pattern, sep, codes = value.rpartition(":")
        if not sep or not pattern or not codes:
            raise ConfigError(f"--per-file-ignores: expected PATTERN:CODES, got `{value}`")
        try:
            out.setdefault(pattern, []).extend(parse_selectors([codes]))
        except SelectionError as exc:
            raise ConfigError(f"--per-file-ignores: {exc}") from None
    return out


@lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as ruff and gitignore read it: `*` and `?` stay within one path segment, `**` crosses them."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


class ExcludeMatcher:
    """Many `exclude` patterns tested as one: the name-only ones (most of them: `.*`, `build`) as a
    single regex over the file or directory name, without building a `Path` per file."""

    def __init__(self, patterns: Sequence[str], root: Path) -> None:
        cleaned = [p.rstrip("/") for p in patterns]
        names = [glob_regex(p).pattern for p in cleaned if p and "/" not in p]
        self._names = re.compile("|".join(f"(?:{n})" for n in names)) if names else None
        self._paths = [p for p in cleaned if p and "/" in p]
        self._root = root

    def excludes(self, directory: str, name: str) -> bool:
        """Whether the file or directory `name` in `directory` is excluded; the path is built only
        when a pattern with a `/` needs it (this runs once per file of a tree)."""
        if self._names is not None and self._names.fullmatch(name) is not None:
            return True
        return bool(self._paths) and any(matches(p, Path(directory, name), self._root) for p in self._paths)


def matches(pattern: str, path: Path, root: Path) -> bool:
    """A pattern without `/` matches a file or directory name anywhere; one with `/` matches the path
    relative to `root` (or the absolute path)."""
    pattern = pattern.rstrip("/")
    if not pattern:
        return False
    regex = glob_regex(pattern.removeprefix("./"))
    if "/" not in pattern:
        return regex.fullmatch(path.name) is not None
    absolute = path.absolute()
    candidates = [absolute.as_posix()]
    if absolute.is_relative_to(root):
        candidates.append(absolute.relative_to(root).as_posix())
    return any(regex.fullmatch(c) for c in candidates)


class Resolver:
    """Which settings apply to which file; caches per directory, since every file asks."""

    def __init__(self, overrides: Overrides, config: str | None = None, isolated: bool = False) -> None:
        self.overrides = overrides
        self.isolated = isolated
        self._fixed: Settings | None = None
        if config is not None:
            path = Path(config)
            if not path.is_file():
                raise ConfigError(f"--config: no such file `{config}`")
            self._fixed = load(path)
        elif isolated:
            self._fixed = Settings(path=None, root=Path.cwd().resolve())
        self._by_dir: dict[str, Settings] = {}
        self._layered: dict[int, list[RuleInfo]] = {}  # by id() of Settings kept alive in _by_dir/_fixed
        self._excluders: dict[int, ExcludeMatcher] = {}  # the same
        self._dir_settings: dict[str, Settings] = {}  # by directory as discovery spells it
        self._dir_excluders: dict[str, ExcludeMatcher] = {}  # the same

    def settings_for(self, path: Path) -> Settings:
        if self._fixed is not None:
            return self._fixed
        return self._settings_for_dir(str(path.absolute().parent))

    def _settings_for_dir(self, directory: str) -> Settings:
        """`directory`: absolute, as `Path.absolute()` or `_absolute` spells it. Strings, not `Path`s:
        this runs for every directory of a tree, and a warm run is mostly this."""
        cached = self._by_dir.get(directory)
        if cached is not None:
            return cached
        found = _config_in(directory)
        parent = os.path.dirname(directory)
        if found is not None:
            settings = load(found)
        elif parent != directory:
            settings = self._settings_for_dir(parent)
        else:
            settings = Settings(path=None, root=Path.cwd().resolve())
        self._by_dir[directory] = settings
        return settings

    def enabled_codes(self, path: Path) -> list[str]:
        return self._enabled(self.settings_for(path), path)

    def enabled_codes_of_file(self, path: str) -> list[str]:
        """`enabled_codes` for a file path as discovery spells it: its directory's settings come from
        the lookup `excluded_entry` already made (no `Path` per file: a warm run checks thousands)."""
        settings = self._fixed
        if settings is None:
            directory = os.path.dirname(path) or os.curdir
            settings = self._dir_settings.get(directory)
            if settings is None:
                settings = self._dir_settings[directory] = self._settings_for_dir(_absolute(directory))
        return self._enabled(settings, path)

    def _enabled(self, settings: Settings, path: Path | str) -> list[str]:
        key = id(settings)
        rules = self._layered.get(key)  # once per configuration, not per file (warm runs feel it)
        if rules is None:
            try:
                rules = resolve_layers([settings.selection.layer(), self.overrides.selection.layer()])
            except SelectionError as exc:  # validated earlier; kept for safety
                raise ConfigError(str(exc)) from None
            self._layered[key] = rules
        pfi = self.overrides.per_file_ignores if self.overrides.per_file_ignores is not None \
            else settings.per_file_ignores
        if not pfi:
            return [rule.code for rule in rules]
        ignored = [code for pattern, codes in pfi.items() if matches(pattern, Path(path), settings.root)
                   for code in codes]
        return [rule.code for rule in rules
                if not any(sel == "ALL" or rule.code.startswith(sel) for sel in ignored)]

    def rules_for(self, path: Path) -> list[Rule]:
        """Rule instances, for the analysis itself (checking a file needs only `enabled_codes`)."""
        from gradlint.checker import make_rules  # LibCST and the rules: only where a file is analysed

        return make_rules(self.enabled_codes(path))

    def excluded(self, path: Path) -> bool:
        settings = self.settings_for(path if not path.is_dir() else path / "_")
        return self._excluder(settings).excludes(str(path.parent), path.name)

    def excluded_entry(self, directory: str, name: str, is_dir: bool) -> bool:
        """`excluded` for what discovery finds: a file or subdirectory `name` of `directory`. Runs
        once per file of the tree, so it works on strings until a pattern needs the whole path."""
        where = os.path.join(directory, name) if is_dir else directory
        excluder = self._dir_excluders.get(where)
        if excluder is None:
            settings = self._fixed
            if settings is None:
                settings = self._dir_settings.get(where)
                if settings is None:
                    settings = self._dir_settings[where] = self._settings_for_dir(_absolute(where))
            excluder = self._dir_excluders[where] = self._excluder(settings)
        return excluder.excludes(directory, name)

    def _excluder(self, settings: Settings) -> ExcludeMatcher:
        found = self._excluders.get(id(settings))
        if found is None:
            exclude = self.overrides.exclude if self.overrides.exclude is not None else settings.exclude
            patterns = [*exclude, *settings.extend_exclude, *self.overrides.extend_exclude]
            found = self._excluders[id(settings)] = ExcludeMatcher(patterns, settings.root)
        return found

    def excluded_explicit(self, path: Path) -> bool:
        """For `--force-exclude`: the file, or any directory between it and its project root, is excluded."""
        absolute = path.absolute()
        root = self.settings_for(absolute).root
        candidates = [absolute]
        if absolute.is_relative_to(root):
            candidates += [parent for parent in absolute.parents if parent.is_relative_to(root) and parent != root]
        return any(self.excluded(candidate) for candidate in candidates)

    def describe(self, path: Path) -> str:
        """`--show-settings`: what applies to `path`, in TOML-like lines."""
        settings = self.settings_for(path if not path.is_dir() else path / "_")
        source = str(settings.path) if settings.path else ("none (--isolated)" if self.isolated else "none")
        pfi = self.overrides.per_file_ignores if self.overrides.per_file_ignores is not None \
            else settings.per_file_ignores
        exclude = self.overrides.exclude if self.overrides.exclude is not None else settings.exclude
        lines = [
            f"# settings for {path}",
            f"config-file = {_toml(source)}",
            f"project-root = {_toml(str(settings.root))}",
            f"enabled-rules = {_toml(self.enabled_codes(path if not path.is_dir() else path / '_.py'))}",
            f"select = {_toml(settings.selection.select)}  # from the file",
            f"ignore = {_toml(settings.selection.ignore)}",
            f"extend-select = {_toml(settings.selection.extend_select)}",
            f"command-line = {_toml(_cli_summary(self.overrides))}",
            f"exclude = {_toml(exclude)}",
            f"extend-exclude = {_toml([*settings.extend_exclude, *self.overrides.extend_exclude])}",
            "[per-file-ignores]",
            *(f"{_toml(pattern)} = {_toml(codes)}" for pattern, codes in pfi.items()),
        ]
        return "\n".join(lines) + "\n"


def _cli_summary(overrides: Overrides) -> list[str]:
    sel = overrides.selection
    out = []
    if sel.select is not None:
        out.append("--select=" + ",".join(sel.select))
    if sel.ignore:
        out.append("--ignore=" + ",".join(sel.ignore))
    if sel.extend_select:
        out.append("--extend-select=" + ",".join(sel.extend_select))
    return out


def _toml(value: object) -> str:
    if value is None:
        return '"(not set)"'
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _absolute(path: str) -> str:
    """`str(Path(path).absolute())` without the `Path` (joined to the working directory, `.` and
    empty parts dropped, `..` kept, not resolved): it runs for every directory of a tree."""
    joined = os.path.join(os.getcwd(), path)
    if os.name != "posix" or joined.startswith("//"):  # drives, or POSIX's implementation-defined `//`
        return str(Path(path).absolute())
    return "/" + "/".join(part for part in joined.split("/") if part not in ("", "."))


def _config_in(directory: str) -> Path | None:
    # os.path on strings: this runs once per directory of the tree, where `Path` costs more than the stat.
    candidate = os.path.join(directory, "gradlint.toml")
    if os.path.isfile(candidate):
        return Path(candidate)
    candidate = os.path.join(directory, "pyproject.toml")
    if os.path.isfile(candidate):
        try:
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            return None
        # A pyproject.toml without our table is someone else's: keep looking upwards (as ruff does).
        if re.search(r"^\s*\[\s*tool\s*\.\s*gradlint\s*[\].]", text, re.MULTILINE):
            return Path(candidate)
    return None

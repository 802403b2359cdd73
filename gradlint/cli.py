"""Command line: `gradlint check`, the `gradlint PATH` shorthand, `rule`/`rules`, and `probe`.

LibCST, the model and the rule classes (gradlint.checker, gradlint.rules) are imported only where a
file is analysed or a rule's documentation is printed: a warm run never loads them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from gradlint import __version__, catalog
from gradlint.cache import Cache, CleanError, clean, disabled_by_env, resolve_dir
from gradlint.config import ConfigError, Overrides, Resolver, Selection, parse_per_file_ignores
from gradlint.files import discover
from gradlint.formats import FORMATS, Report, render, render_statistics
from gradlint.pipeline import FileResult, check_notebook, decode
from gradlint.selection import SelectionError, parse_selectors

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


# Subcommands imported when named (or listed by --help): the probe's command line and its data model
# are not needed by a check, and every warm run pays for what the command line imports.
_LAZY_COMMANDS = {"probe": ("gradlint.probe.cli", "probe_command")}


class _DefaultToCheck(click.Group):
    """`gradlint train.py` means `gradlint check train.py`, as users will type it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if (args and args[0] not in self.commands and args[0] not in _LAZY_COMMANDS
                and args[0] not in ("--help", "-h", "--version")):
            args = ["check", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _LAZY_COMMANDS:
            import importlib

            module, attribute = _LAZY_COMMANDS[cmd_name]
            # gradlint.probe.cli must not import torch at import time: the static path never does.
            self.add_command(getattr(importlib.import_module(module), attribute), name=cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_DefaultToCheck, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradlint")
def main() -> None:
    """Find silent gradient-accumulation bugs in PyTorch training loops.

    `gradlint train.py` is short for `gradlint check train.py`.
    """


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--output-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="How findings are printed (text shows a source excerpt; concise one line each).")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False), metavar="PATH",
              help="Write the report to PATH instead of standard output.")
@click.option("--statistics", is_flag=True, help="Print the number of findings per code instead of the findings.")
@click.option("--select", multiple=True, metavar="CODES",
              help="Rule codes or prefixes to enable (comma-separated or repeated; ALL for every rule).")
@click.option("--ignore", multiple=True, metavar="CODES", help="Rule codes or prefixes to disable.")
@click.option("--extend-select", multiple=True, metavar="CODES", help="Rule codes or prefixes to enable as well.")
@click.option("--per-file-ignores", multiple=True, metavar="GLOB:CODES",
              help="Disable codes in matching files (replaces the configuration's per-file-ignores).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Paths to skip (replaces the default list).")
@click.option("--extend-exclude", multiple=True, metavar="GLOB", help="Paths to skip, besides the defaults.")
@click.option("--force-exclude", is_flag=True, help="Apply the exclusions to files named on the command line too "
              "(for pre-commit, which passes every changed file).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="Use this configuration file (pyproject.toml or gradlint.toml) for every file.")
@click.option("--isolated", is_flag=True, help="Ignore all configuration files.")
@click.option("--show-settings", is_flag=True, help="Print the settings that apply to the first path, and exit.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when problems are found (errors still exit 2).")
@click.option("--stdin-filename", metavar="PATH", help="The name to report for source read from `-`.")
@click.option("--fix", is_flag=True, help="Apply safe fixes in place (with `-`: print the fixed source).")
@click.option("--unsafe-fixes", is_flag=True, help="Apply unsafe fixes too (review them), and mark them fixable.")
@click.option("--diff", is_flag=True, help="Print the fixes as a unified diff and change no file.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of internal errors and skipped files.")
@click.option("-q", "--quiet", is_flag=True, help="Print the findings (and errors), nothing else: no summary, "
              "warnings or progress.")
@click.option("-s", "--silent", is_flag=True, help="Print nothing about the files checked (the exit status still "
              "says what was found); a report asked for with -o is still written.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Files checked in parallel [default: the number of cores].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache (also GRADLINT_NO_CACHE=1).")
@click.option("--cache-dir", type=click.Path(file_okay=False), metavar="PATH",
              help="Where the cache lives [env: GRADLINT_CACHE_DIR; default: .gradlint_cache in the project root].")
def check(paths: tuple[str, ...], output_format: str, output_file: str | None, statistics: bool,
          select: tuple[str, ...], ignore: tuple[str, ...], extend_select: tuple[str, ...],
          per_file_ignores: tuple[str, ...], exclude: tuple[str, ...], extend_exclude: tuple[str, ...],
          force_exclude: bool, config_path: str | None, isolated: bool, show_settings: bool, exit_zero: bool,
          stdin_filename: str | None, fix: bool, unsafe_fixes: bool, diff: bool, verbose: bool, quiet: bool,
          silent: bool, jobs: int | None, no_cache: bool, cache_dir: str | None) -> None:
    """Check training scripts, notebooks and directories (default: the current directory).

    Settings come from `[tool.gradlint]` in the nearest pyproject.toml (or gradlint.toml) above
    each file; command-line options override them.

    Exit status: 0 no problems, 1 problems found, 2 usage error, bad configuration, unreadable or
    unparsable input, or an internal error.
    """
    if quiet and silent:
        raise click.UsageError("--quiet and --silent cannot be used together")
    quiet = quiet or silent
    try:
        overrides = Overrides(
            selection=Selection(_codes(select, "--select"), _codes(ignore, "--ignore") or [],
                                _codes(extend_select, "--extend-select") or []),
            per_file_ignores=parse_per_file_ignores(per_file_ignores) if per_file_ignores else None,
            exclude=list(exclude) or None,
            extend_exclude=list(extend_exclude),
        )
        resolver = Resolver(overrides, config_path, isolated)
        targets = list(paths) or ["."]
        if show_settings:
            first = stdin_filename if targets[0] == "-" and stdin_filename else targets[0]
            click.echo(resolver.describe(Path(first)), nl=False)
            sys.exit(EXIT_CLEAN)
        # Fixing works from a fresh analysis: the cache stays out of its way.
        use_cache = not (no_cache or fix or diff or disabled_by_env())
        cache = Cache(resolve_dir(cache_dir, _project_root(resolver))) if use_cache else None
        results = _check_all(targets, resolver, force_exclude, stdin_filename, verbose, jobs, cache,
                             progress=not quiet)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)  # 128 + SIGINT, as shells report it
    outcome = None
    if fix or diff:
        from gradlint.fixing import fix_results

        outcome = fix_results(results, lambda name: resolver.rules_for(Path(name)), unsafe_fixes, write=not diff)

    diagnostics = sorted((d for r in results for d in r.diagnostics),
                         key=lambda d: (d.filename, d.cell or 0, d.row, d.column, d.code, d.message))
    errors = [r.error for r in results if r.error is not None]
    for r in results if not quiet else ():
        for warning in r.warnings:
            click.echo(f"warning: {warning.describe()}", err=True)
    for error in errors if not silent else ():  # what exit status 2 is about: shown unless --silent
        click.echo(f"error: {error.describe()}", err=True)
        if verbose and error.traceback:
            click.echo(error.traceback, err=True)

    color = (output_file is None and output_format in ("text", "concise") and "NO_COLOR" not in os.environ
             and sys.stdout.isatty())
    report = Report(diagnostics, files_checked=len(results), color=color,
                    sources={r.filename: r.source for r in results if r.source is not None},
                    notebooks={r.filename: r.notebook for r in results if r.notebook is not None},
                    unsafe_fixes=unsafe_fixes, fixed=outcome.fixed if outcome is not None and not diff else None,
                    files_with_errors=len(errors), summary=not quiet)
    rendered = render_statistics(output_format, report) if statistics else render(output_format, report)
    if diff and outcome is not None:
        # As ruff: the diff on standard output, a count on standard error.
        if not silent:
            click.echo(outcome.diff, nl=False)
        if not quiet:
            remaining = f" ({len(diagnostics)} remaining)" if diagnostics else ""
            click.echo(f"Would fix {outcome.fixed} {'problem' if outcome.fixed == 1 else 'problems'}{remaining}.",
                       err=True)
        if errors:
            sys.exit(EXIT_ERROR)
        sys.exit(EXIT_FINDINGS if (outcome.diff or diagnostics) and not exit_zero else EXIT_CLEAN)
    source_out = outcome is not None and outcome.stdin_text is not None
    if source_out:  # `--fix -`: the fixed source on standard output, the report on standard error
        click.echo(outcome.stdin_text, nl=False)  # type: ignore[union-attr]
    if output_file is not None:
        try:
            Path(output_file).parent.mkdir(parents=True, exist_ok=True)
            Path(output_file).write_text(rendered, encoding="utf-8")
        except OSError as exc:
            click.echo(f"error: cannot write {output_file}: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_ERROR)
    elif not silent:
        click.echo(rendered, nl=False, color=color, err=source_out)

    if errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_FINDINGS if diagnostics and not exit_zero else EXIT_CLEAN)


def _codes(values: tuple[str, ...], option: str) -> list[str] | None:
    if not values:
        return None
    try:
        return parse_selectors(values)
    except SelectionError as exc:
        raise click.UsageError(f"{option}: {exc}") from None


def _project_root(resolver: Resolver) -> Path:
    """As ruff: the directory of the configuration file that applies to the current directory, else it."""
    return resolver.settings_for(Path.cwd() / "_").root


def _check_all(targets: list[str], resolver: Resolver, force_exclude: bool, stdin_filename: str | None,
               verbose: bool, jobs: int | None, cache: Cache | None = None, progress: bool = True) -> list[FileResult]:
    from gradlint.parallel import check_paths, default_jobs
    from gradlint.progress import Progress

    items = [(path, explicit) for path, explicit in discover([p for p in targets if p != "-"], resolver.excluded_entry)
             if not (explicit and force_exclude and resolver.excluded_explicit(Path(path)))]
    # Settings are resolved here, once per directory; workers only get each file's rule codes.
    codes = [tuple(resolver.enabled_codes_of_file(path)) for path, _ in items]
    shown = Progress(len(items), enabled=None if progress else False)
    try:
        results = check_paths(items, [], verbose, jobs or default_jobs(), codes_per_file=codes, cache=cache,
                              on_result=shown.advance)
    finally:
        shown.close()
    if "-" in targets:
        name = stdin_filename or "-"
        source, error = decode(sys.stdin.buffer.read(), name)
        if error or source is None:
            results.append(FileResult(name, error=error))
        elif name.endswith(".ipynb"):
            results.append(check_notebook(source, name, True, resolver.enabled_codes(Path(name)), verbose))
        else:
            from gradlint.checker import check_source  # standard input is always analysed whole

            result = check_source(source, name, resolver.rules_for(Path(name)), verbose)
            result.stdin, result.source = True, source
            results.append(result)
    return results


@main.command(name="clean")
@click.option("--cache-dir", type=click.Path(file_okay=False), metavar="PATH",
              help="The cache to remove [env: GRADLINT_CACHE_DIR; default: .gradlint_cache in the project root].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="The configuration file whose directory is the project root.")
@click.option("--isolated", is_flag=True, help="Ignore configuration files: the project root is the current directory.")
def clean_command(cache_dir: str | None, config_path: str | None, isolated: bool) -> None:
    """Remove the cache that `gradlint check` run here would use."""
    try:
        directory = resolve_dir(cache_dir, _project_root(Resolver(Overrides(), config_path, isolated)))
        removed = clean(directory)
    except (ConfigError, CleanError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"Removed {directory}" if removed else f"No cache at {directory}", err=True)


@main.command()
@click.argument("code")
def rule(code: str) -> None:
    """Print the documentation of a rule, e.g. `gradlint rule GA001`."""
    if code.upper() not in catalog.BY_CODE:
        from gradlint.probe.model import RULE_NAMES as PROBE_CODES

        name = PROBE_CODES.get(code.upper())
        if name is None:
            raise click.UsageError(f"unknown rule `{code}` (see `gradlint rules`)")
        click.echo(f"# {name} ({code.upper()})\n\nReported by the runtime probe only (`gradlint probe`); "
                   "see docs/probe.md for what it measures.")
        return
    from gradlint.rules import RULES_BY_CODE  # the documentation is the rule class's docstring

    found = RULES_BY_CODE[code.upper()]
    click.echo(f"# {found.name} ({found.code})\n\n{found.documentation()}")


@main.command(name="rules")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def list_rules(output_format: str) -> None:
    """List every rule."""
    if output_format == "json":
        from gradlint.rules import RULES_BY_CODE  # the explanation is the rule class's docstring

        click.echo(json.dumps([
            {"code": r.code, "name": r.name, "summary": r.summary, "default": r.default_enabled,
             "severity": r.severity, "explanation": RULES_BY_CODE[r.code].documentation()}
            for r in catalog.RULES
        ], indent=2))
        return
    for r in catalog.RULES:
        click.echo(f"{r.code}  {r.name:<36} {r.summary}")

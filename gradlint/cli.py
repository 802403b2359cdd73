"""Command line: `gradlint check`, the `gradlint PATH` shorthand, `rule`/`rules`, and `probe`."""

from __future__ import annotations

import json
import sys

import click

from gradlint import __version__
from gradlint.checker import FileResult, check_source, decode
from gradlint.output import render_json, render_text
from gradlint.rules import ALL_RULES, RULES_BY_CODE
from gradlint.selection import SelectionError, select_rules

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _DefaultToCheck(click.Group):
    """`gradlint train.py` means `gradlint check train.py`, as users will type it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["check", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultToCheck, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradlint")
def main() -> None:
    """Find silent gradient-accumulation bugs in PyTorch training loops.

    `gradlint train.py` is short for `gradlint check train.py`.
    """


def _selectors(values: tuple[str, ...]) -> list[str] | None:
    return list(values) if values else None


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="How findings are printed.")
@click.option("--select", multiple=True, metavar="CODES",
              help="Rule codes or prefixes to enable (comma-separated or repeated; ALL for every rule).")
@click.option("--ignore", multiple=True, metavar="CODES", help="Rule codes or prefixes to disable.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when problems are found (errors still exit 2).")
@click.option("--stdin-filename", metavar="PATH", help="The name to report for source read from `-`.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of internal errors and skipped files.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Files checked in parallel [default: the number of cores].")
def check(paths: tuple[str, ...], output_format: str, select: tuple[str, ...], ignore: tuple[str, ...],
          exit_zero: bool, stdin_filename: str | None, verbose: bool, jobs: int | None) -> None:
    """Check training scripts and directories (default: the current directory).

    Exit status: 0 no problems, 1 problems found, 2 usage error, unreadable or unparsable input,
    or an internal error.
    """
    try:
        rules = [rule() for rule in select_rules(_selectors(select), ignore)]
    except SelectionError as exc:
        raise click.UsageError(str(exc)) from None

    from gradlint.files import discover
    from gradlint.parallel import check_paths, default_jobs

    targets = list(paths) or ["."]
    items = list(discover([p for p in targets if p != "-"]))
    results: list[FileResult] = check_paths(items, rules, verbose, jobs or default_jobs())
    if "-" in targets:
        name = stdin_filename or "-"
        source, error = decode(sys.stdin.buffer.read(), name)
        results.append(FileResult(name, error=error) if error or source is None
                       else check_source(source, name, rules, verbose))

    diagnostics = sorted(d for r in results for d in r.diagnostics)
    errors = [r.error for r in results if r.error is not None]
    for r in results:
        for warning in r.warnings:
            click.echo(f"warning: {warning.filename}: {warning.reason}", err=True)
    for error in errors:
        click.echo(f"error: {error.describe()}", err=True)
        if verbose and error.traceback:
            click.echo(error.traceback, err=True)

    if output_format == "json":
        click.echo(render_json(diagnostics), nl=False)
    else:
        files = len({d.filename for d in diagnostics})
        click.echo(render_text(diagnostics, files), nl=False)

    if errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_FINDINGS if diagnostics and not exit_zero else EXIT_CLEAN)


@main.command()
@click.argument("code")
def rule(code: str) -> None:
    """Print the documentation of a rule, e.g. `gradlint rule GA001`."""
    found = RULES_BY_CODE.get(code.upper())
    if found is None:
        from gradlint.probe.model import RULE_NAMES as PROBE_CODES

        name = PROBE_CODES.get(code.upper())
        if name is None:
            raise click.UsageError(f"unknown rule `{code}` (see `gradlint rules`)")
        click.echo(f"# {name} ({code.upper()})\n\nReported by the runtime probe only (`gradlint probe`); "
                   "see docs/probe.md for what it measures.")
        return
    click.echo(f"# {found.name} ({found.code})\n\n{found.documentation()}")


@main.command(name="rules")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def list_rules(output_format: str) -> None:
    """List every rule."""
    if output_format == "json":
        click.echo(json.dumps([
            {"code": r.code, "name": r.name, "summary": r.summary(), "default": r.default_enabled,
             "explanation": r.documentation()}
            for r in ALL_RULES
        ], indent=2))
        return
    for r in ALL_RULES:
        click.echo(f"{r.code}  {r.name:<36} {r.summary()}")


def _register_probe() -> None:
    # gradlint.probe.cli must not import torch at import time: the static path never does.
    from gradlint.probe.cli import probe_command

    main.add_command(probe_command, name="probe")


_register_probe()

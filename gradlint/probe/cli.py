"""`gradlint probe SCRIPT [-- SCRIPT_ARGS...]`. Imports no torch: the child process does."""

from __future__ import annotations

import sys

import click

from gradlint.probe.model import EXIT_COULD_NOT_RUN, EXIT_MISMATCH


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--steps", default=4, show_default=True, type=click.IntRange(min=1),
              help="Optimizer steps to judge (at least; see --until-epoch-end).")
@click.option("--until-epoch-end/--no-until-epoch-end", default=True, show_default=True,
              help="Keep going past --steps until one step after the first epoch end, so the remainder is seen.")
@click.option("--max-steps", default=100, show_default=True, type=click.IntRange(min=1),
              help="Stop after this many optimizer steps even if no epoch ended.")
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds before the probe stops the script.")
@click.option("--sample", default=4096, show_default=True, type=click.IntRange(min=1),
              help="Gradient elements sampled per parameter tensor.")
@click.option("--full", is_flag=True, help="Compare every gradient element instead of a sample.")
@click.option("--allow-compile", is_flag=True,
              help="Do not set TORCHDYNAMO_DISABLE=1 (compiled regions then hide token counts).")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too (e.g. GA013 token mean-of-means).")
@click.option("-q", "--quiet", is_flag=True, help="Hide the script's own output (still shown if it fails).")
def probe_command(script: str, script_args: tuple[str, ...], steps: int, until_epoch_end: bool, max_steps: int,
                  timeout: float, sample: int, full: bool, allow_compile: bool, output_format: str,
                  strict: bool, quiet: bool) -> None:
    """Run SCRIPT for a few optimizer steps, as `python SCRIPT SCRIPT_ARGS` would, and check at each
    step that the gradient equals the large-batch gradient. Put the script's own arguments after
    `--`: `gradlint probe train.py -- --lr 3e-4`.

    Exit status: 0 every step matched, 1 a mismatch was found, 2 the probe could not run.
    """
    from gradlint.probe.options import ProbeOptions
    from gradlint.probe.report import render_json, render_text
    from gradlint.probe.runner import TORCH_MISSING, run_script, torch_available

    if not torch_available():
        click.echo(f"error: {TORCH_MISSING}", err=True)
        sys.exit(EXIT_COULD_NOT_RUN)
    options = ProbeOptions(steps=steps, max_steps=max(max_steps, steps), until_epoch_end=until_epoch_end,
                           timeout=timeout, sample=None if full else sample)
    # Script output goes to stderr so the report on stdout stays parseable.
    capture = quiet or output_format == "json"
    report = run_script(script, list(script_args), options, capture_output=capture,
                        disable_dynamo=not allow_compile)
    if report.error is not None and report.script_output and output_format == "text":
        click.echo(report.script_output.rstrip(), err=True)
        report.script_output = ""
    if output_format == "json":
        click.echo(render_json(report), nl=False)
    else:
        click.echo(render_text(report), nl=False)
    code = report.exit_code
    if strict and code == 0 and report.warnings:
        code = EXIT_MISMATCH
    sys.exit(code)

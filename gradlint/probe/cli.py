"""`gradlint probe` (being built)."""

import click


@click.command()
@click.argument("script")
def probe_command(script: str) -> None:
    """Run SCRIPT for a few steps and check each optimizer step's gradient."""
    raise SystemExit(2)

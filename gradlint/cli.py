"""Command line: `gradlint check`, the `gradlint PATH` shorthand, and `gradlint probe`."""

from __future__ import annotations

import click

from gradlint import __version__


class _DefaultToCheck(click.Group):
    """`gradlint train.py` means `gradlint check train.py`, as users will type it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["check", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultToCheck, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradlint")
def main() -> None:
    """Find silent gradient-accumulation bugs in PyTorch training loops."""


@main.command()
@click.argument("paths", nargs=-1)
def check(paths: tuple[str, ...]) -> None:
    """Check training scripts (placeholder, being built)."""
    raise SystemExit(0)


def _register_probe() -> None:
    # gradlint.probe.cli must not import torch at import time: the static path never does.
    from gradlint.probe.cli import probe_command

    main.add_command(probe_command, name="probe")


_register_probe()

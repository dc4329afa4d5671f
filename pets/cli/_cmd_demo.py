"""``pets demo``: the whole mission end to end on embedded defaults."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from pets.cli._common import emit, json_option


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the demo's files (default: a new temporary directory).")
@click.option("--users", type=click.IntRange(min=100), default=5_000, show_default=True)
@click.option("--events", type=click.IntRange(min=100), default=50_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
def demo(workdir: Path | None, users: int, events: int, seed: int, as_json: bool) -> None:
    """Run the end-to-end demo on synthetic EU users."""
    from pets._demo import run_demo

    wd = workdir or Path(tempfile.mkdtemp(prefix="pets-demo-"))
    summary = run_demo(wd, users=users, events=events, seed=seed,
                       echo=(lambda s: None) if as_json else click.echo)
    if as_json:
        emit(summary, True)


COMMANDS = [demo]

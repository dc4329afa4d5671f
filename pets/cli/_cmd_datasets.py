"""``pets datasets``: generate the synthetic EU user data."""

from __future__ import annotations

from pathlib import Path

import click

from pets.cli._common import emit, json_option


@click.group()
def datasets() -> None:
    """Synthetic EU user data for demos, tests and benchmarks."""


@datasets.command()
@click.option("--users", "n_users", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Number of users.")
@click.option("--events", "n_events", type=click.IntRange(min=0), default=None,
              help="Also write an events table with this many rows (to OUT with '-events').")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Parquet file to write (atomically).")
@json_option
def generate(n_users: int, n_events: int | None, seed: int, out: Path, as_json: bool) -> None:
    """Write seeded synthetic users (and optionally events) to Parquet."""
    from pets._io import write_parquet
    from pets.datasets import synthetic_events, synthetic_users

    users = synthetic_users(n_users, seed=seed)
    write_parquet(users, out)
    result: dict[str, object] = {"users": str(out), "rows": len(users), "seed": seed}
    if n_events is not None:
        ev_path = out.with_name(out.stem + "-events" + out.suffix)
        events = synthetic_events(n_events, n_users=n_users, seed=seed)
        write_parquet(events, ev_path)
        result.update(events=str(ev_path), event_rows=len(events))
    emit(result, as_json, lambda: "\n".join(f"{k}: {v}" for k, v in result.items()))


COMMANDS = [datasets]

"""``pets datasets``: generate the synthetic EU user data."""

from __future__ import annotations

from pathlib import Path

import click

from pets.cli._common import check_out, emit, json_option, overwrite_option

_MAX_ROWS = 10**9  # beyond this the tables would not fit in memory anyway


@click.group()
def datasets() -> None:
    """Synthetic EU user data for demos, tests and benchmarks."""


@datasets.command()
@click.option("--users", "n_users", type=click.IntRange(min=1, max=_MAX_ROWS),
              default=10_000, show_default=True,
              help="Number of users.")
@click.option("--events", "n_events", type=click.IntRange(min=0, max=_MAX_ROWS),
              default=None,
              help="Also write an events table with this many rows (to OUT with '-events').")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Parquet file to write (atomically; not in the keyring or .pets).")
@overwrite_option
@json_option
def generate(n_users: int, n_events: int | None, seed: int, out: Path, overwrite: bool,
             as_json: bool) -> None:
    """Write seeded synthetic users (and optionally events) to Parquet."""
    from pets._io import write_parquet
    from pets.datasets import synthetic_events, synthetic_users

    target = check_out(out, overwrite=overwrite)
    ev_path = out.with_name(out.stem + "-events" + out.suffix)
    ev_target = None if n_events is None else check_out(ev_path, option="--out (events)",
                                                        overwrite=overwrite)
    users = synthetic_users(n_users, seed=seed)
    events = None if n_events is None else synthetic_events(n_events, n_users=n_users, seed=seed)
    write_parquet(users, target)
    result: dict[str, object] = {"users": str(out), "rows": len(users), "seed": seed}
    if events is not None and ev_target is not None:
        write_parquet(events, ev_target)
        result.update(events=str(ev_path), event_rows=len(events))
    emit(result, as_json, lambda: "\n".join(f"{k}: {v}" for k, v in result.items()))


COMMANDS = [datasets]

"""The end-to-end demo behind ``make demo`` / ``pets demo``.

It runs on embedded defaults only: a synthetic EU dataset and keys created in a fresh working
directory. Each step prints what it did; the last lines are a one-screen summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["run_demo"]


def run_demo(workdir: Path, *, users: int = 5_000, events: int = 50_000, seed: int = 0,
             echo: Callable[[str], None] = print) -> dict[str, object]:
    """Run the demo in ``workdir`` and return its summary as a dict."""
    from pets._io import write_parquet
    from pets.datasets import synthetic_events, synthetic_users

    workdir.mkdir(parents=True, exist_ok=True)
    echo(f"== 1. Synthetic EU data ({users} users, {events} events, seed {seed})")
    u = synthetic_users(users, seed=seed)
    e = synthetic_events(events, n_users=users, seed=seed)
    write_parquet(u, workdir / "users.parquet")
    write_parquet(e, workdir / "events.parquet")
    echo(f"   users.parquet  columns: {', '.join(u.columns)}")
    echo(f"   events.parquet columns: {', '.join(e.columns)}")
    top = u["country"].value_counts().head(5)
    echo("   top countries: " + ", ".join(f"{c} {n}" for c, n in top.items()))
    per_user = e.groupby("user_id").size()
    echo(f"   events per user: median {per_user.median():.0f}, max {per_user.max()}")
    summary: dict[str, object] = {
        "workdir": str(workdir),
        "users": len(u),
        "events": len(e),
        "countries": int(u["country"].nunique()),
    }
    echo("== Summary")
    for k, v in summary.items():
        echo(f"   {k:>10}: {v}")
    return summary

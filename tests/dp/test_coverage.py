"""Stated 95 % intervals cover the truth of the bounded data 93–97 % of the time (sums and
counts; exact discrete-Laplace intervals), and at least 95 % for means (union bound: sound but
conservative)."""

import pandas as pd
import pytest

from pets.datasets import synthetic_events
from pets.dp import Budget, Session

RELEASES = 150


@pytest.mark.slow
def test_interval_coverage_over_many_releases():
    ev = synthetic_events(30_000, n_users=6_000, seed=11)
    ev = ev[ev.groupby("user_id").cumcount() < 3].reset_index(drop=True)  # no sampling: fixed truth
    keys = sorted(ev["country"].unique())
    x = ev["watch_seconds"].clip(0, 3600)
    truth = pd.DataFrame({"count": ev.groupby("country").size(),
                          "sum": x.groupby(ev["country"]).sum(),
                          "mean": x.groupby(ev["country"]).mean()}).loc[keys]
    s = Session(ev, privacy_unit="user_id", budget=Budget.pure(1e9))
    q = (s.query(by="country", keys=keys, max_groups=1, max_rows=3).count()
         .sum("watch_seconds", bounds=(0, 3600)).mean("watch_seconds", bounds=(0, 3600)))
    hits = {"count": 0, "sum": 0, "mean": 0}
    for _ in range(RELEASES):
        f = q.release(epsilon=1.0, level=0.95).to_frame()
        for stat in hits:
            part = f[f["statistic"] == stat].set_index("country").loc[keys]
            t = truth[stat].to_numpy()
            hits[stat] += int(((part["ci_low"] <= t) & (t <= part["ci_high"])).sum())
    n = RELEASES * len(keys)
    cover = {k: v / n for k, v in hits.items()}
    assert 0.93 <= cover["count"] <= 0.97, cover
    assert 0.93 <= cover["sum"] <= 0.97, cover
    assert cover["mean"] >= 0.95, cover

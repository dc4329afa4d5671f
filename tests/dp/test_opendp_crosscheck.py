"""pets' noise scale against the scale OpenDP's Polars Context picks for the same query.

Same data (already bounded: ≤ C rows per user, one country per user), same bounds, same ε
(pure DP: Laplace) or ρ (zCDP: Gaussian).
The Context is told the same contribution bounds (``Bound(by=[country], per_group=C,
num_groups=G)``) and splits ε evenly over its two aggregates, as pets does. Tolerance: 0.1 %
relative (the Context finds its scale by binary search; pets solves and checks with the map).
"""

import numpy as np
import pytest

from pets.datasets import synthetic_events
from pets.dp import Budget, Session

pl = pytest.importorskip("polars")

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def bounded():
    ev = synthetic_events(6000, n_users=800, seed=3)
    ev = ev[ev.groupby("user_id").cumcount() < 3].reset_index(drop=True)
    ev["w"] = np.floor(ev["watch_seconds"]).astype("int64")
    return ev


@pytest.mark.parametrize(("C", "G", "loss"), [
    (3, 1, {"epsilon": 1.0}),
    # zCDP: Gaussian noise with L2 sensitivity √G·C (√3 exercises the rounding of d_in)
    (2, 3, {"rho": 0.5}),
    pytest.param(2, 3, {"epsilon": 0.5}, marks=pytest.mark.slow)])
def test_count_and_sum_scales_match_the_polars_context(bounded, C, G, loss):
    from pets.dp._opendp import opendp

    dp = opendp()
    keys = sorted(bounded["country"].unique())
    df = pl.from_pandas(bounded[["user_id", "country", "w"]])
    ctx = dp.Context.compositor(
        data=df.lazy(),
        privacy_unit=dp.unit_of(contributions=[
            dp.polars.Bound(by=["country"], per_group=C, num_groups=G)]),
        privacy_loss=dp.loss_of(**loss),
        split_evenly_over=1,
        margins=[dp.polars.Margin(by=["country"], max_length=100_000)],
    )
    q = (ctx.query().group_by("country")
         .agg(dp.len(signed=False), pl.col("w").fill_null(0).dp.sum((0, 7200)))
         .with_keys(pl.DataFrame({"country": keys})))
    theirs = q.summarize()
    their = dict(zip(theirs["column"].to_list(), theirs["scale"].to_list(), strict=True))
    their_dist = dict(zip(theirs["column"].to_list(), theirs["distribution"].to_list(),
                          strict=True))

    zcdp = "rho" in loss
    s = Session(bounded, privacy_unit="user_id",
                budget=Budget.zcdp(10.0) if zcdp else Budget.pure(10.0))
    r = (s.query(by="country", keys=keys, max_groups=G, max_rows=C).count()
         .sum("w", bounds=(0, 7200)).release(**loss))
    ours = r.to_frame().groupby("statistic")["scale"].first()
    assert (their_dist["len"] == "Integer Gaussian") == zcdp
    assert ("Gaussian" in r.to_frame()["mechanism"].iloc[0]) == zcdp
    assert ours["count"] == pytest.approx(their["len"], rel=TOLERANCE)
    assert ours["sum"] == pytest.approx(their["w"], rel=TOLERANCE)

"""Empirical privacy: a release on neighbouring datasets must not tell them apart beyond e^ε.

D has 40 users; D' adds one user with 5 rows (contribution bound 3 rows). A count and a
bounded sum are released many times on each; the outputs are histogrammed into a few events
and, for every event with enough mass, ``P[D ∈ E] <= e^ε · P[D' ∈ E]`` (and the reverse) must
hold up to a 4.5-sigma statistical margin. The test also checks it has power: the largest
observed ratio must exceed e^(ε/2), so a mechanism with half the noise would be caught.
"""

import math

import numpy as np
import pandas as pd
import pytest

from pets.dp import Budget, Session

EPS = 1.0
RUNS = 2000


def _runs(df):
    out = []
    rng = np.random.default_rng(0)
    for _ in range(RUNS // 250):  # a fresh in-memory ledger now and then keeps spends cheap
        s = Session(df, privacy_unit="user_id", budget=Budget.pure(1e9), rng=rng)
        q = s.query(max_rows=3).count()
        out += [q.release(epsilon=EPS).to_frame()["estimate"].iloc[0] for _ in range(250)]
    return np.array(out)


def _check(a, b, edges):
    worst = 0.0
    ia, ib = np.digitize(a, edges), np.digitize(b, edges)
    for e in range(len(edges) + 1):
        pa, pb = np.mean(ia == e), np.mean(ib == e)
        if min(pa, pb) < 0.03:
            continue
        for p, q in ((pa, pb), (pb, pa)):
            se = math.sqrt(p * (1 - p) / RUNS + math.exp(2 * EPS) * q * (1 - q) / RUNS)
            assert p <= math.exp(EPS) * q + 4.5 * se, (e, p, q)
            worst = max(worst, p / q)
    return worst


@pytest.mark.slow
def test_count_is_epsilon_indistinguishable_on_neighbours():
    base = pd.DataFrame({"user_id": [f"u{i}" for i in range(40)], "v": 1.0})
    extra = pd.DataFrame({"user_id": ["x"] * 5, "v": 1.0})
    a = _runs(base)
    b = _runs(pd.concat([base, extra], ignore_index=True))
    # the neighbour adds 3 (bounded) rows: events around both means and in the tails
    worst = _check(a, b, edges=[35.5, 38.5, 41.5, 44.5, 47.5])
    assert worst > math.exp(EPS / 2)

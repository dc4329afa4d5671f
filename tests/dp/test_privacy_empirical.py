"""Empirical privacy: a release on neighbouring datasets must not tell them apart beyond e^ε.

D has 40 users with one row each; D' adds one user with 5 rows of a large value (contribution
bound: 3 rows, values clipped to [0, 10]). A count and a bounded sum are released together many
times on each (ε = 2, so ε = 1 each); each output is histogrammed into a few events and, for every
event with enough mass, ``P[D ∈ E] <= e^ε_i · P[D' ∈ E]`` (and the reverse) must hold up to a
4.5-sigma statistical margin. The test also checks it has power: the largest observed ratio
must exceed e^(ε_i/2), so a mechanism with half the noise (or a missed clip) would be caught.
"""

import math

import numpy as np
import pandas as pd
import pytest

from pets.dp import Budget, Session

EPS = 2.0
EPS_EACH = 1.0
RUNS = 1500


def _runs(df):
    counts, sums = [], []
    rng = np.random.default_rng(0)
    for _ in range(RUNS // 250):  # a fresh in-memory ledger now and then keeps spends cheap
        s = Session(df, privacy_unit="user_id", budget=Budget.pure(1e9), rng=rng)
        q = s.query(max_rows=3).count().sum("v", bounds=(0, 10))
        for _ in range(250):
            est = q.release(epsilon=EPS).to_frame()["estimate"].to_numpy()
            counts.append(est[0])
            sums.append(est[1])
    return np.array(counts), np.array(sums)


def _check(a, b, edges):
    worst = 0.0
    ia, ib = np.digitize(a, edges), np.digitize(b, edges)
    for e in range(len(edges) + 1):
        pa, pb = np.mean(ia == e), np.mean(ib == e)
        if min(pa, pb) < 0.03:
            continue
        for p, q in ((pa, pb), (pb, pa)):
            se = math.sqrt(p * (1 - p) / RUNS + math.exp(2 * EPS_EACH) * q * (1 - q) / RUNS)
            assert p <= math.exp(EPS_EACH) * q + 4.5 * se, (e, p, q)
            worst = max(worst, p / q)
    return worst


@pytest.mark.slow
def test_count_and_sum_are_epsilon_indistinguishable_on_neighbours():
    base = pd.DataFrame({"user_id": [f"u{i}" for i in range(40)], "v": 1.0})
    extra = pd.DataFrame({"user_id": ["x"] * 5, "v": 1000.0})
    ca, sa = _runs(base)
    cb, sb = _runs(pd.concat([base, extra], ignore_index=True))
    # the neighbour adds 3 (bounded) rows and 30 (clipped) to the sum
    assert _check(ca, cb, edges=[35.5, 38.5, 41.5, 44.5, 47.5]) > math.exp(EPS_EACH / 2)
    assert _check(sa, sb, edges=[10.0, 40.0, 55.0, 70.0, 100.0]) > math.exp(EPS_EACH / 2)

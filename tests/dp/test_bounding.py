import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pets.dp._bounding import bound_contributions, fixed_point


def _check(users, groups, keep, G, C):
    df = pd.DataFrame({"u": users[keep], "g": groups[keep]})
    assert (df.groupby(["u", "g"]).size() <= C).all()
    assert (df.groupby("u")["g"].nunique() <= G).all()


class TestBoundContributions:
    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), min_size=1, max_size=80),
           st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**32))
    def test_caps_hold_and_rows_within_caps_are_kept(self, pairs, G, C, seed):
        users = np.array([p[0] for p in pairs])
        groups = np.array([p[1] for p in pairs])
        keep = bound_contributions(users, groups, max_groups=G, max_rows=C,
                                   rng=np.random.default_rng(seed))
        _check(users, groups, keep, G, C)
        # nothing is dropped from a user within both caps
        df = pd.DataFrame({"u": users, "g": groups})
        per_pair = df.groupby(["u", "g"])["g"].transform("size")
        n_groups = df.groupby("u")["g"].transform("nunique")
        within = (per_pair <= C) & (n_groups <= G)
        assert keep[within.to_numpy()].all()
        # every user keeps min(G, its groups) groups
        kept_groups = pd.Series(groups[keep]).groupby(users[keep]).nunique()
        want = df.groupby("u")["g"].nunique().clip(upper=G)
        assert kept_groups.reindex(want.index, fill_value=0).equals(want)

    def test_rows_are_sampled_uniformly_not_first_k(self):
        users = np.zeros(10, dtype=np.int64)
        groups = np.zeros(10, dtype=np.int64)
        rng = np.random.default_rng(1)
        kept = sum(bound_contributions(users, groups, max_groups=1, max_rows=2, rng=rng)
                   for _ in range(4000))
        freq = kept / 4000  # each row kept with probability 0.2
        assert np.all(np.abs(freq - 0.2) < 0.04)

    def test_groups_are_sampled_uniformly_not_first_k(self):
        users = np.zeros(5, dtype=np.int64)
        groups = np.arange(5)
        rng = np.random.default_rng(2)
        kept = sum(bound_contributions(users, groups, max_groups=1, max_rows=1, rng=rng)
                   for _ in range(4000))
        assert np.all(np.abs(kept / 4000 - 0.2) < 0.04)

    def test_tied_priorities_never_let_other_users_decide_the_sample(self):
        # With every priority tied, an unstable sort picked rows by where *other* users' rows
        # sat (so one user's sample depended on the rest of the data and the coupling behind
        # the sensitivity argument broke). Ties must fall back to each user's own row order.
        class Tied:
            def integers(self, low, high, size, dtype=np.int64):
                return np.zeros(size, dtype=dtype)

        users = np.random.default_rng(3).integers(0, 5, 20_000)
        groups = np.zeros(users.size, dtype=np.int64)
        keep = bound_contributions(users, groups, max_groups=1, max_rows=3, rng=Tied())
        want = np.concatenate([np.flatnonzero(users == u)[:3] for u in range(5)])
        assert np.flatnonzero(keep).tolist() == sorted(want.tolist())

    def test_mixed_single_and_multi_group_users(self):
        users = np.array([0, 0, 0, 1, 1, 1, 1, 2])
        groups = np.array([3, 3, 3, 0, 1, 1, 2, 5])
        keep = bound_contributions(users, groups, max_groups=1, max_rows=2,
                                   rng=np.random.default_rng(4))
        _check(users, groups, keep, 1, 2)
        assert keep[users == 0].sum() == 2 and keep[users == 2].all()
        assert 1 <= keep[users == 1].sum() <= 2

    def test_sparse_codes_are_densified_and_still_bounded(self):
        users = np.array([0, 0, 0, 10**9, 10**9])
        groups = np.array([0, 5 * 10**9, 5 * 10**9, 1, 1])
        keep = bound_contributions(users, groups, max_groups=1, max_rows=1,
                                   rng=np.random.default_rng(0))
        _check(users, groups, keep, 1, 1)
        assert keep.sum() == 2


class TestFixedPoint:
    @given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(1e-3, 1e6))
    def test_values_within_bound_and_half_a_step(self, xs, mag):
        x = np.clip(np.array(xs), -mag, mag)
        fp = fixed_point(x, mag)
        assert np.all(np.abs(fp.values) <= fp.bound)
        assert fp.bound * fp.step >= mag
        assert np.all(np.abs(fp.values * fp.step - x) <= fp.step / 2 + 1e-12 * mag)
        assert fp.bound <= 2**24

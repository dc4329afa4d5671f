"""The utility metrics (error, coverage, released share) on known inputs, and the summaries."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import privacy_utility as pu


def _dataset(raw: pd.DataFrame, keys: tuple[str, ...], k: int = 2,
             bounds: tuple[float, float] = (0.0, 10.0)) -> pu.Dataset:
    return pu.Dataset(name="t", description="test", raw=raw,
                      bounded=pu.bound_contributions(raw, "user_id", k), keys=keys,
                      bounds=bounds, max_rows_per_user=k)


class TestDoctests:
    def test_module_examples_run(self):
        failed, attempted = doctest.testmod(pu, optionflags=doctest.ELLIPSIS)
        assert attempted > 0
        assert failed == 0


class TestBoundContributions:
    def test_keeps_first_k_rows_of_each_user_in_order(self):
        df = pd.DataFrame({"user_id": list("aabab"), "v": [1, 2, 3, 4, 5]})
        out = pu.bound_contributions(df, "user_id", 2)
        assert out["v"].tolist() == [1, 2, 3, 5]

    def test_rejects_k_below_one(self):
        with pytest.raises(ValueError, match="k must be"):
            pu.bound_contributions(pd.DataFrame({"user_id": ["a"]}), "user_id", 0)

    @given(st.lists(st.sampled_from("abcd"), max_size=40), st.integers(1, 5))
    def test_no_user_exceeds_k_rows(self, users, k):
        df = pd.DataFrame({"user_id": users, "v": range(len(users))})
        out = pu.bound_contributions(df, "user_id", k)
        counts = out["user_id"].value_counts()
        assert (counts <= k).all()
        assert len(out) == sum(min(c, k) for c in df["user_id"].value_counts())


class TestTrueStatistics:
    df = pd.DataFrame({"group": ["a", "a", "a", "b"], "value": [1.0, 2.0, 30.0, 4.0]})

    @pytest.mark.parametrize(("query", "expected"), [
        ("count", {"a": 3.0, "b": 1.0, "z": 0.0}),
        ("sum", {"a": 33.0, "b": 4.0, "z": 0.0}),
        ("mean", {"a": 11.0, "b": 4.0, "z": math.nan}),
        ("median", {"a": 2.0, "b": 4.0, "z": math.nan}),
    ])
    def test_known_values(self, query, expected):
        got = pu.true_statistics(self.df, ["a", "b", "z"], query)
        for k, v in expected.items():
            assert (math.isnan(v) and math.isnan(got[k])) or got[k] == v

    def test_clip_applies_to_values(self):
        got = pu.true_statistics(self.df, ["a"], "sum", clip=(0.0, 10.0))
        assert got == {"a": 13.0}


class TestErrors:
    def test_absolute_errors_skip_unreleased_and_nonfinite(self):
        est = {"a": 12.0, "b": float("nan"), "d": 5.0}
        truth = {"a": 10.0, "b": 3.0, "c": 1.0, "d": 5.0}
        assert pu.absolute_errors(est, truth).tolist() == [2.0, 0.0]

    def test_relative_errors_skip_zero_truth(self):
        est = {"a": 15.0, "b": 3.0}
        truth = {"a": 10.0, "b": 0.0}
        assert pu.relative_errors(est, truth).tolist() == [0.5]

    def test_relative_error_uses_magnitude_of_negative_truth(self):
        assert pu.relative_errors({"a": -6.0}, {"a": -4.0}).tolist() == [0.5]

    def test_relative_mae_weights_groups_by_their_size(self):
        est = {"big": 1010.0, "tiny": 3.0}
        truth = {"big": 1000.0, "tiny": 1.0}
        assert pu.relative_mae(est, truth) == pytest.approx(12 / 1001)
        assert pu.relative_errors(est, truth).tolist() == [0.01, 2.0]

    def test_relative_mae_nan_without_comparable_groups(self):
        assert math.isnan(pu.relative_mae({}, {"a": 1.0}))
        assert math.isnan(pu.relative_mae({"a": 2.0}, {"a": 0.0}))

    def test_nothing_released_gives_empty(self):
        assert pu.absolute_errors({}, {"a": 1.0}).size == 0
        assert pu.relative_errors({}, {"a": 1.0}).size == 0


class TestCoverage:
    def test_counts_inclusive_bounds(self):
        ci = {"a": [1.0, 2.0], "b": [0.0, 1.0], "c": [5.0, 6.0], "d": [0.0, 9.0]}
        target = {"a": 2.0, "b": 0.0, "c": 4.0, "d": 10.0}
        assert pu.coverage(ci, target) == 0.5

    def test_ignores_groups_without_finite_target(self):
        assert pu.coverage({"a": [0.0, 1.0], "b": [0.0, 1.0]},
                           {"a": 0.5, "b": math.nan}) == 1.0

    def test_no_interval_is_nan_not_zero(self):
        assert math.isnan(pu.coverage({}, {"a": 1.0}))

    def test_laplace_intervals_reach_nominal_level(self):
        # 95 % intervals est ± b·ln(1/0.05) around Laplace(b) noise cover 95 % of targets.
        rng = np.random.default_rng(1)
        target = {str(i): 100.0 for i in range(20_000)}
        b = 3.0
        w = b * math.log(1 / 0.05)
        noisy = {k: v + rng.laplace(0, b) for k, v in target.items()}
        ci = {k: [v - w, v + w] for k, v in noisy.items()}
        assert abs(pu.coverage(ci, target) - 0.95) < 0.01


class TestReleasedShare:
    def test_missing_and_nan_are_not_released(self):
        assert pu.released_share({"a": 1.0, "b": math.nan}, ["a", "b", "c", "d"]) == 0.25

    def test_empty_keys_is_nan(self):
        assert math.isnan(pu.released_share({}, []))


class TestSummarize:
    raw = pd.DataFrame({"user_id": ["u1", "u1", "u1", "u2", "u3"],
                        "group": ["a", "a", "a", "a", "b"],
                        "value": [1.0, 2.0, 20.0, 4.0, 5.0]})

    def test_exact_estimates_of_the_bounded_statistic(self):
        ds = _dataset(self.raw, ("a", "b"))
        # bounded: u1 keeps 2 rows -> a: 1+2+4 = 7, b: 5; raw: a: 27, b: 5
        results = [{"query": "sum", "epsilon": 1.0, "trial": t, "seconds": 0.5,
                    "estimates": {"a": 7.0, "b": 5.0},
                    "ci": {"a": [6.0, 8.0], "b": [6.0, 7.0]}} for t in range(2)]
        (row,) = pu.summarize(ds, "lib", results)
        assert row["mae_vs_bounded"] == 0.0
        assert row["mae"] == pytest.approx((27 - 7) / 2)
        assert row["mre"] == pytest.approx((20 / 27) / 2)
        assert row["rel_mae"] == pytest.approx(20 / 32)
        assert row["ci_coverage"] == 0.5
        assert row["released"] == 1.0
        assert row["trials"] == 2

    def test_one_row_per_query_and_epsilon_in_query_order(self):
        ds = _dataset(self.raw, ("a", "b"))
        results = [{"query": q, "epsilon": e, "trial": 0, "seconds": 0.1,
                    "estimates": {"a": 1.0}} for q in ("median", "count") for e in (1.0, 0.1)]
        rows = pu.summarize(ds, "lib", results)
        assert [(r["query"], r["epsilon"]) for r in rows] == [
            ("count", 0.1), ("count", 1.0), ("median", 0.1), ("median", 1.0)]
        assert all(r["released"] == 0.5 for r in rows)
        assert all(math.isnan(r["ci_coverage"]) for r in rows)


class TestDatasets:
    def test_events_respects_the_contribution_bound(self):
        ds = pu.events_dataset(3_000, 300, k=5)
        assert ds.bounded.groupby("user_id").size().max() <= 5
        assert ds.bounded.groupby("user_id")["group"].nunique().max() == 1
        assert set(ds.bounded["group"]) <= set(ds.keys)
        assert len(ds.keys) == 27

    def test_census_has_one_row_per_person_and_skewed_groups(self):
        ds = pu.census_dataset(5_000)
        assert ds.raw["user_id"].is_unique
        sizes = ds.raw.groupby("group").size()
        assert len(ds.keys) == 60
        assert sizes.max() > 20 * sizes.min()

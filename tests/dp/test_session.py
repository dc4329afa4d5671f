import json
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pets import BudgetExhausted, InputError
from pets.dp import Budget, Ledger, Release, Session

KEYS = ["DE", "FR", "IT"]


def session(df, budget=None, **kw):
    return Session(df, privacy_unit="user_id", budget=budget or Budget.pure(10.0), **kw)


class TestPrivacyAccounting:
    def test_pure_loss_and_scales_follow_the_sensitivity_argument(self, small_events):
        s = session(small_events)
        G, C = 2, 3
        r = (s.query(by="country", keys=KEYS, max_groups=G, max_rows=C).count()
             .sum("watch", bounds=(0, 100)).mean("watch", bounds=(0, 100)).release(epsilon=0.9))
        f = r.to_frame()
        share = 0.3  # three measurements: count, sum, centred sum
        scales = f.groupby("statistic")["scale"].first()
        assert scales["count"] == pytest.approx(G * C / share)
        assert scales["sum"] == pytest.approx(G * C * 100 / share)
        assert scales["mean"] == pytest.approx(G * C * 50 / share)  # centred: half the range
        assert r.loss.epsilon <= 0.9 and r.loss.epsilon == pytest.approx(0.9)
        assert s.budget.spent.epsilon == r.loss.epsilon
        eps = f.groupby("statistic")["epsilon"].first()
        assert eps["mean"] == pytest.approx(eps["count"] + eps["sum"])

    def test_zcdp_uses_gaussian_with_l2_sensitivity(self, small_events):
        s = session(small_events, Budget.zcdp(1.0))
        r = s.query(by="country", keys=KEYS, max_groups=4, max_rows=2).count().release(rho=0.5)
        f = r.to_frame()
        # sigma = sqrt(G) * C / sqrt(2 rho)
        assert f["scale"].iloc[0] == pytest.approx(math.sqrt(4) * 2 / math.sqrt(1.0))
        assert "Gaussian" in f["mechanism"].iloc[0]
        assert r.loss.rho == pytest.approx(0.5) and r.loss.epsilon == 0

    def test_a_release_never_spends_more_than_requested(self, small_events):
        # 1.89 / 5 rounds up: five maps at that share added to 1.8900000000000001, so a
        # release asking for the whole remaining budget was refused
        s = session(small_events, Budget.pure(1.89))
        q = s.query().count()
        for hi in (10, 20, 30, 40):
            q = q.sum("watch", bounds=(0, hi))
        r = q.release(epsilon=1.89)
        assert r.loss.epsilon <= 1.89 and s.budget.releases == 1

    def test_gaussian_d_in_is_never_rounded_down(self, small_events, monkeypatch):
        import pets.dp._session as session_module

        seen = []
        real = session_module.gaussian_vector

        def spy(**kw):
            seen.append(kw["l2"])
            return real(**kw)

        monkeypatch.setattr(session_module, "gaussian_vector", spy)
        session(small_events, Budget.zcdp(1.0)).query(
            by="country", keys=KEYS, max_groups=3, max_rows=1).count().release(rho=0.5)
        assert Fraction(seen[0]) ** 2 >= 3  # math.sqrt(3) * 1 is below √3

    def test_zcdp_private_keys_and_quantiles_spend_rho_and_delta(self, small_events):
        s = session(small_events, Budget.zcdp(1.0, 1e-5))
        r = s.query(by="country", keys="private", max_rows=4).count().median(
            "watch", bounds=(0, 100)).release(rho=0.5, delta=1e-6)
        f = r.to_frame()
        assert set(f["country"]) == set(KEYS)
        assert "make_gaussian_threshold" in f["mechanism"].iloc[0]
        assert r.loss.epsilon == 0 and r.loss.rho == pytest.approx(0.5)
        assert 0 < r.loss.delta <= 1e-6 and s.budget.spent.delta == r.loss.delta

    def test_no_grouping_means_one_group_whatever_max_groups(self, small_events):
        r = session(small_events).query(max_groups=5, max_rows=1).count().release(epsilon=1.0)
        assert len(r.to_frame()) == 1
        assert r.to_frame()["scale"].iloc[0] == pytest.approx(1.0)

    def test_overspend_is_refused_and_nothing_spent(self, small_events):
        s = session(small_events, Budget.pure(1.0))
        q = s.query(by="country", keys=KEYS).count()
        q.release(epsilon=0.75)
        with pytest.raises(BudgetExhausted):
            q.release(epsilon=0.5)
        assert s.budget.spent.epsilon == pytest.approx(0.75) and s.budget.releases == 1

    def test_ledger_is_shared_between_sessions(self, small_events, tmp_path):
        led = tmp_path / "l.db"
        a = session(small_events, Budget.pure(1.0), ledger=Ledger(led), dataset_id="ev")
        a.query().count().release(epsilon=0.6)
        b = session(small_events, Budget.pure(1.0), ledger=Ledger(led), dataset_id="ev")
        assert b.budget.spent.epsilon == pytest.approx(0.6)
        with pytest.raises(BudgetExhausted):
            b.query().count().release(epsilon=0.6)


class TestEstimates:
    def test_high_epsilon_recovers_the_bounded_truth(self, small_events):
        s = session(small_events, Budget.pure(1e6))
        r = (s.query(by="country", keys=KEYS, max_groups=1, max_rows=4).count()
             .sum("watch", bounds=(0, 100)).mean("watch", bounds=(0, 100))
             .variance("watch", bounds=(0, 100)).release(epsilon=1e5))
        est = r.estimates().set_index("country")
        truth = small_events.groupby("country")["watch"].agg(["size", "sum", "mean", "var"])
        n = truth["size"]
        assert np.allclose(est["count"], n, atol=1)
        assert np.allclose(est["sum(watch)"], truth["sum"], rtol=1e-3)
        assert np.allclose(est["mean(watch)"], truth["mean"], rtol=1e-3)
        assert np.allclose(est["variance(watch)"], truth["var"] * (n - 1) / n, rtol=1e-2)
        f = r.to_frame()
        assert (f["ci_low"] <= f["estimate"]).all() and (f["estimate"] <= f["ci_high"]).all()

    def test_missing_keys_are_noise_only_and_unlisted_groups_dropped(self, small_events):
        s = session(small_events, Budget.pure(1e6))
        r = s.query(by="country", keys=["DE", "XX"], max_rows=4).count().release(epsilon=1e5)
        est = r.estimates().set_index("country")["count"]
        assert list(est.index) == ["DE", "XX"]
        assert abs(est["XX"]) < 1 and est["DE"] == pytest.approx(
            (small_events["country"] == "DE").sum(), abs=1)

    def test_multi_column_grouping_with_tuple_keys(self, small_events):
        df = small_events.assign(kind=np.where(small_events["watch"] > 50, "long", "short"))
        s = session(df, Budget.pure(1e6))
        keys = [("DE", "long"), ("DE", "short"), ("FR", "long")]
        r = s.query(by=["country", "kind"], keys=keys, max_groups=2, max_rows=4).count(
            ).release(epsilon=1e5)
        f = r.to_frame()
        assert list(zip(f["country"], f["kind"], strict=True)) == keys
        truth = df.groupby(["country", "kind"]).size()
        assert f["estimate"].tolist() == pytest.approx([truth[k] for k in keys], abs=1)

    def test_quantiles_come_without_interval_and_within_bounds(self, small_events):
        s = session(small_events, Budget.pure(1e6))
        r = s.query(by="country", keys=KEYS, max_rows=4).median("watch", bounds=(0, 100)).quantile(
            "watch", [0.1, 0.9], bounds=(0, 100), candidates=201).release(epsilon=1e4)
        f = r.to_frame()
        assert f["ci_low"].isna().all() and f["ci_high"].isna().all()
        de = small_events.loc[small_events["country"] == "DE", "watch"]
        got = f[f["country"] == "DE"].set_index("param")["estimate"]
        for a in ("0.1", "0.5", "0.9"):
            assert got[a] == pytest.approx(de.quantile(float(a)), abs=3)

    def test_histogram_cells_sum_to_the_count(self, small_events):
        s = session(small_events, Budget.pure(1e6))
        r = s.query(by="country", keys=KEYS, max_rows=4).histogram(
            "watch", [0, 25, 50, 100]).release(epsilon=1e5)
        f = r.to_frame()
        assert f["param"].tolist()[:3] == ["[0, 25)", "[25, 50)", "[50, 100]"]
        per = f.groupby("country")["estimate"].sum()
        assert per.to_dict() == pytest.approx(
            small_events.groupby("country").size().to_dict(), abs=3)

    def test_private_keys_release_common_keys_sorted_and_never_a_lone_user(self, small_events):
        lone = pd.DataFrame({"user_id": ["lone"], "country": ["ZZ"], "watch": [1.0]})
        df = pd.concat([small_events, lone], ignore_index=True)
        s = session(df, Budget.approx(100.0, 1e-3))
        for _ in range(5):
            r = s.query(by="country", keys="private", max_rows=4).count().release(
                epsilon=5.0, delta=1e-5)
            f = r.to_frame()
            assert "ZZ" not in set(f["country"])
            assert f["country"].tolist() == sorted(f["country"])
            assert set(f["country"]) == set(KEYS)
            assert "threshold" in f["mechanism"].iloc[0]
        assert 0 < s.budget.spent.delta <= 5e-5

    @pytest.mark.parametrize("histogram", [False, True])
    def test_private_keys_of_a_categorical_column_leak_no_unselected_category(
            self, small_events, histogram):
        # a categorical key column carries *every* category in its dtype: released as is, the
        # release (and its Parquet dictionary) listed the keys the threshold had withheld —
        # here "ZZ", held by one user — and ordered the keys by category (data) order
        import pyarrow as pa

        lone = pd.DataFrame({"user_id": ["lone"], "country": ["ZZ"], "watch": [1.0]})
        df = pd.concat([small_events, lone], ignore_index=True)
        df["country"] = pd.Categorical(df["country"], categories=["ZZ", "IT", "FR", "DE"])
        s = session(df, Budget.approx(100.0, 1e-3))
        q = s.query(by="country", keys="private", max_rows=4).count()
        if histogram:
            q = q.histogram("watch", [0, 50, 100])
        f = q.release(epsilon=5.0, delta=1e-5).to_frame()
        assert set(f["country"]) == set(KEYS)
        assert not isinstance(f["country"].dtype, pd.CategoricalDtype)
        assert f["country"].drop_duplicates().tolist() == sorted(KEYS)  # value order
        col = pa.Table.from_pandas(f, preserve_index=False).column("country")
        assert not pa.types.is_dictionary(col.type) and "ZZ" not in col.to_pylist()

    def test_session_is_a_snapshot_of_the_frame(self, small_events):
        df = small_events.copy()
        s = session(df, Budget.pure(1e6))
        df["user_id"] = "same-user"  # would collapse all users if the session saw it
        df.loc[0, "country"] = "FR"
        r = s.query(by="country", keys=KEYS, max_rows=4).count().release(epsilon=1e5)
        est = r.estimates().set_index("country")["count"]
        assert est.to_dict() == pytest.approx(
            small_events.groupby("country").size().to_dict(), abs=1)

    def test_private_keys_of_mixed_types_are_released_not_an_error(self):
        # sorting the selected keys runs after the noise is drawn: an error there would depend
        # on which keys were selected (a noisy output) — it must not happen
        df = pd.DataFrame({"user_id": [f"u{i}" for i in range(400)],
                           "k": pd.Series(["x" if i % 2 else 7 for i in range(400)],
                                          dtype=object)})
        s = session(df, Budget.approx(100.0, 1e-3))
        r = s.query(by="k", keys="private").count().release(epsilon=5.0, delta=1e-6)
        assert r.to_frame()["k"].tolist() == [7, "x"]  # int:7 < str:'x'
        assert s.budget.releases == 1

    def test_a_failure_after_the_noise_is_drawn_still_spends(self, small_events, monkeypatch):
        import pets.dp._session as session_module

        def fails_after_noise(*args, **kwargs):
            raise RuntimeError("failed while assembling the release")

        monkeypatch.setattr(session_module, "_execute", fails_after_noise)
        s = session(small_events, Budget.pure(1.0))
        with pytest.raises(RuntimeError, match="assembling"):
            s.query().count().release(epsilon=0.75)
        assert s.budget.spent.epsilon == pytest.approx(0.75) and s.budget.releases == 1
        with pytest.raises(BudgetExhausted):  # retrying is not free
            s.query().count().release(epsilon=0.75)

    def test_private_keys_may_release_no_group_at_all(self):
        df = pd.DataFrame({"user_id": ["a", "b"], "country": ["DE", "FR"], "watch": [1.0, 2.0]})
        s = session(df, Budget.approx(10.0, 1e-5))
        r = s.query(by="country", keys="private").count().mean("watch", bounds=(0, 10)).median(
            "watch", bounds=(0, 10)).release(epsilon=1.0, delta=1e-6)
        assert r.to_frame().empty and r.estimates().empty
        assert json.dumps(r.to_dict()) and "0 rows" in repr(r)
        assert s.budget.releases == 1

    def test_parquet_input_defaults_dataset_id_to_the_path(self, small_events, tmp_path):
        p = tmp_path / "ev.parquet"
        small_events.to_parquet(p)
        s = Session(p, privacy_unit="user_id", budget=Budget.pure(1.0), ledger=Ledger())
        assert s.dataset_id == str(p.resolve())
        r = s.query(by="country", keys=KEYS).count().release(epsilon=0.5)
        assert r.dataset_id == str(p.resolve()) and len(r.to_frame()) == 3


class TestAudit:
    def test_release_event_carries_privacy_spent_and_no_data(self, small_events):
        seen = []
        s = session(small_events, audit=seen.append, dataset_id="ev")
        r = s.query(by="country", keys=KEYS, max_rows=2).count().mean(
            "watch", bounds=(0, 100)).release(epsilon=1.0)
        assert [e.kind for e in seen] == ["dp.release"]
        fields = seen[0].fields
        assert fields["epsilon"] == r.loss.epsilon and fields["dataset_id"] == "ev"
        blob = json.dumps(fields, default=str)
        assert not re.search(r"u\d{3}", blob)  # no user ids
        assert str(round(small_events["watch"].iloc[0], 3)) not in blob

    def test_no_event_when_refused(self, small_events):
        seen = []
        s = session(small_events, Budget.pure(0.5), audit=seen.append)
        with pytest.raises(BudgetExhausted):
            s.query().count().release(epsilon=1.0)
        assert seen == []


class TestBadInput:
    def test_missing_privacy_unit_column(self, small_events):
        with pytest.raises(InputError, match="privacy unit column 'uid'"):
            Session(small_events, privacy_unit="uid", budget=Budget.pure(1.0))

    def test_missing_parquet_file(self, tmp_path):
        with pytest.raises(InputError, match="does not exist"):
            Session(tmp_path / "nope.parquet", privacy_unit="user_id", budget=Budget.pure(1.0))

    def test_frame_with_ledger_needs_a_dataset_id(self, small_events):
        with pytest.raises(InputError, match="dataset_id"):
            Session(small_events, privacy_unit="user_id", budget=Budget.pure(1.0),
                    ledger=Ledger())

    @pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, None])
    def test_nan_inf_or_null_in_a_measured_column(self, small_events, value):
        df = small_events.astype({"watch": "Float64"})
        df.loc[3, "watch"] = value
        s = session(df)
        with pytest.raises(InputError, match="column 'watch' contains NaN"):
            s.query().sum("watch", bounds=(0, 100)).release(epsilon=1.0)
        assert s.budget.releases == 0

    @pytest.mark.parametrize("agg", ["sum", "mean", "variance"])
    def test_huge_bounds_are_refused_not_overflowing(self, small_events, agg):
        # (-1e308, 1e308): the width overflowed (OverflowError) or the sum came out inf/NaN
        s = session(small_events)
        with pytest.raises(InputError, match="within"):
            getattr(s.query(), agg)("watch", bounds=(-1e308, 1e308)).release(epsilon=1.0)
        assert s.budget.releases == 0

    def test_absurd_contribution_bounds_are_an_input_error(self, small_events):
        s = session(small_events)  # 10**12 rows × 2**24 grid steps does not fit OpenDP's i64
        with pytest.raises(InputError, match="max_rows"):
            s.query(max_rows=10**12).sum("watch", bounds=(0, 10)).release(epsilon=1.0)
        assert s.budget.releases == 0

    def test_non_numeric_measured_column(self, small_events):
        s = session(small_events)
        with pytest.raises(InputError, match="not numeric"):
            s.query().sum("country", bounds=(0, 1)).release(epsilon=1.0)

    def test_null_privacy_unit(self, small_events):
        df = small_events.astype({"user_id": "string"})
        df.loc[0, "user_id"] = None
        s = session(df)
        with pytest.raises(InputError, match="null"):
            s.query().count().release(epsilon=1.0)
        assert s.budget.releases == 0

    @pytest.mark.parametrize("bounds", [(100, 0), (5, 5), (0, math.inf), (math.nan, 1),
                                        ("a", 1), (1,), (-1e308, 1e308), (0, 1e200)])
    def test_bad_bounds(self, small_events, bounds):
        with pytest.raises(InputError, match="bounds"):
            session(small_events).query().mean("watch", bounds=bounds)

    @pytest.mark.parametrize(("bounds", "candidates"), [
        ((1.0, 1.0 + 4 * 2.0**-52), 11), ((0.0, 3 * 5e-324), 5), ((1e15, 1e15 + 1.0), 100),
    ], ids=["4-ulps", "subnormal", "large-magnitude"])
    def test_bounds_with_fewer_floats_than_candidates_are_refused_when_built(
            self, small_events, bounds, candidates):
        # linspace would repeat candidates, which OpenDP refuses with its own exception type
        # (and, on Dask, only after the cluster has bounded and counted every row)
        s = session(small_events)
        with pytest.raises(InputError, match=r"'watch'.*distinct candidates"):
            s.query().quantile("watch", 0.5, bounds=bounds, candidates=candidates)
        q = s.query().median("watch", bounds=(1e15, 1e15 + 1.0), candidates=9)  # 9 floats fit
        assert q.release(epsilon=1.0).to_frame()["estimate"].between(1e15, 1e15 + 1).all()

    @pytest.mark.parametrize("eps", [0, -1.0, math.nan, math.inf, None, "1"])
    def test_bad_epsilon_spends_nothing(self, small_events, eps):
        s = session(small_events)
        with pytest.raises(InputError, match="epsilon"):
            s.query().count().release(epsilon=eps)
        assert s.budget.releases == 0

    def test_rho_on_a_pure_budget(self, small_events):
        with pytest.raises(InputError, match="rho"):
            session(small_events).query().count().release(rho=0.1)

    def test_unknown_group_column(self, small_events):
        with pytest.raises(InputError, match="unknown group column 'region'"):
            session(small_events).query(by="region", keys=["x"])

    def test_unknown_measured_column(self, small_events):
        s = session(small_events)
        with pytest.raises(InputError, match="unknown column 'spend'"):
            s.query().sum("spend", bounds=(0, 1)).release(epsilon=1.0)

    def test_huge_inline_key_set(self, small_events):
        s = session(small_events, max_keys=1000)
        with pytest.raises(InputError, match="exceed the limit of 1000"):
            s.query(by="country", keys=[str(i) for i in range(1001)])

    def test_histogram_cells_count_towards_the_key_limit(self, small_events):
        s = session(small_events, max_keys=10)
        q = s.query(by="country", keys=KEYS).histogram("watch", list(range(0, 101, 25)))
        with pytest.raises(InputError, match="exceed the limit"):
            q.release(epsilon=1.0)
        assert s.budget.releases == 0

    def test_duplicate_keys(self, small_events):
        with pytest.raises(InputError, match="duplicate"):
            session(small_events).query(by="country", keys=["DE", "DE"])

    def test_grouping_without_keys_is_explained(self, small_events):
        with pytest.raises(InputError, match="keys='private'"):
            session(small_events).query(by="country")

    def test_private_keys_need_delta_and_a_non_pure_budget(self, small_events):
        with pytest.raises(InputError, match=r"Budget\.approx"):
            session(small_events).query(by="country", keys="private").count().release(
                epsilon=1.0, delta=1e-6)
        s = session(small_events, Budget.approx(1.0, 1e-5))
        with pytest.raises(InputError, match="delta="):
            s.query(by="country", keys="private").count().release(epsilon=1.0)
        z = session(small_events, Budget.zcdp(1.0))  # no δ in the budget: say so up front
        with pytest.raises(InputError, match=r"Budget\.zcdp\(rho, delta\)"):
            z.query(by="country", keys="private").count().release(rho=0.5, delta=1e-6)
        assert z.budget.releases == 0

    def test_delta_with_public_keys(self, small_events):
        s = session(small_events, Budget.approx(1.0, 1e-5))
        with pytest.raises(InputError, match="only spent by private key selection"):
            s.query(by="country", keys=KEYS).count().release(epsilon=0.5, delta=1e-6)

    @pytest.mark.parametrize("kw", [{"max_groups": 0}, {"max_rows": -1}, {"max_rows": 1.5}])
    def test_bad_contribution_bounds(self, small_events, kw):
        with pytest.raises(InputError):
            session(small_events).query(by="country", keys=KEYS, **kw)

    @pytest.mark.parametrize("edges", [[1], [0, 0], [3, 2, 1], [0, math.inf]])
    def test_bad_histogram_edges(self, small_events, edges):
        with pytest.raises(InputError, match="edges"):
            session(small_events).query().histogram("watch", edges)

    @pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
    def test_bad_quantile_level(self, small_events, alpha):
        with pytest.raises(InputError, match="alpha"):
            session(small_events).query().quantile("watch", alpha, bounds=(0, 1))

    def test_empty_query_and_bad_level(self, small_events):
        s = session(small_events)
        with pytest.raises(InputError, match="no aggregates"):
            s.query().release(epsilon=1.0)
        with pytest.raises(InputError, match="level"):
            s.query().count().release(epsilon=1.0, level=1.0)
        assert s.budget.releases == 0

    def test_group_column_clashing_with_release_columns(self, small_events):
        df = small_events.rename(columns={"country": "estimate"})
        with pytest.raises(InputError, match="clash"):
            session(df).query(by="estimate", keys=["DE"])


class TestNoiseSource:
    def test_no_numpy_noise_sampler_in_the_dp_package(self):
        src = Path(__file__).resolve().parents[2] / "pets" / "dp"
        for path in src.glob("*.py"):
            text = path.read_text()
            for sampler in (".laplace(", ".normal(", ".gumbel(", ".exponential(",
                            ".geometric("):
                assert sampler not in text, f"{path.name} calls {sampler}"


class TestReleaseObject:
    def test_to_dict_is_json_and_has_metadata(self, small_events):
        r = session(small_events, dataset_id="ev").query(by="country", keys=KEYS).count(
            ).median("watch", bounds=(0, 100)).release(epsilon=1.0)
        d = json.loads(json.dumps(r.to_dict()))
        assert d["dataset_id"] == "ev" and d["privacy_unit"] == "user_id"
        assert d["loss"]["epsilon"] == r.loss.epsilon
        assert d["query"]["aggregates"][1]["kind"] == "quantile"
        assert any(row["ci_low"] is None for row in d["rows"])

    def test_postprocessing_clamps_and_widens_but_keeps_the_loss(self, small_events):
        r = session(small_events).query(by="country", keys=["XX"]).count().sum(
            "watch", bounds=(0, 100)).release(epsilon=0.01)
        p = r.postprocess(nonnegative=True, decimals=0)
        f, g = r.to_frame(), p.to_frame()
        assert (g["estimate"] >= 0).all() and (g["ci_low"] >= 0).all()
        assert (g["ci_high"] >= f["ci_high"].clip(lower=0)).all()
        assert p.loss == r.loss and p.postprocessing == ("nonnegative", "round(0)")

    def test_estimates_keep_two_sums_of_one_column(self, small_events):
        r = session(small_events, Budget.pure(1e6)).query(by="country", keys=KEYS, max_rows=4).sum(
            "watch", bounds=(0, 10)).sum("watch", bounds=(0, 100)).release(epsilon=1e5)
        wide = r.estimates().set_index("country")
        assert list(wide.columns) == ["sum(watch)", "sum(watch)#2"]  # was one, the other lost
        assert (wide["sum(watch)"] < wide["sum(watch)#2"]).all()

    def test_nonnegative_leaves_sums_that_may_be_negative_alone(self, small_events):
        df = small_events.assign(watch=-50.0)
        r = session(df, Budget.pure(1e6)).query(by="country", keys=["DE"], max_rows=4).sum(
            "watch", bounds=(0, 100)).sum("watch", bounds=(-100, 100)).release(epsilon=1e5)
        f = r.postprocess(nonnegative=True).to_frame()
        # the second sum's truth is negative: clamping it at 0 would make its interval wrong
        assert f["estimate"].iloc[1] < 0 and f["ci_low"].iloc[1] < 0
        only = r.postprocess(nonnegative=False).to_frame()
        assert f["ci_low"].tolist() == only["ci_low"].tolist()  # rows do not name bounds

    def test_html_repr_escapes_and_summarises(self, small_events):
        df = small_events.assign(country=small_events["country"].replace("DE", "<b>DE</b>"))
        r = session(df).query(by="country", keys=["<b>DE</b>"]).count().release(epsilon=1.0)
        html = r._repr_html_()
        assert "&lt;b&gt;DE&lt;/b&gt;" in html and "<b>DE</b>" not in html
        assert "ε=1" in html and isinstance(r, Release)
        assert "ε=1" in repr(r)


def _exact(df, q, keys=KEYS):
    """The exact aggregates of ``df`` when the caps do not bind (one country per user)."""
    from pets.dp._bounding import fixed_point

    sub = df[df["country"].isin(keys)]
    out = {}
    for key in q.measurements:
        if key[0] == "count":
            v = sub.groupby("country").size()
        else:
            _, col, lo, hi = key
            x = np.clip(sub[col].to_numpy(), lo, hi)
            c, h = (lo + hi) / 2, (hi - lo) / 2
            fp = (fixed_point(x, max(abs(lo), abs(hi))) if key[0] == "sum"
                  else fixed_point(np.clip(x - c, -h, h), h) if key[0] == "csum"
                  else fixed_point(np.clip(x - c, -h, h) ** 2 - h * h / 2, h * h / 2))
            v = pd.Series(fp.values, index=sub.index).groupby(sub["country"]).sum()
        out[key] = np.array([int(v.get(k, 0)) for k in keys], dtype=np.int64)
    return out


def _exact_cells(df, q, keys=KEYS):
    """Histogram and quantile cell counts of ``df`` (caps do not bind), plus the counts."""
    from pets.dp._session import histogram_bins, quantile_candidates, quantile_cells

    sub = df[df["country"].isin(keys)] if keys else df
    g = (pd.Categorical(sub["country"], categories=keys).codes.astype(np.int64) if keys
         else np.zeros(len(sub), dtype=np.int64))
    n = len(keys) if keys else 1
    out = {}
    for key in q.measurements:
        if key[0] == "count":
            out[key] = np.bincount(g, minlength=n)
        elif key[0] == "hist":
            _, col, edges = key
            b = histogram_bins(sub[col].to_numpy(), edges)
            out[key] = np.bincount(g * (len(edges) - 1) + b,
                                   minlength=n * (len(edges) - 1)).reshape(n, -1)
        else:
            _, col, lo, hi, _alpha, nc = key
            cells = quantile_cells(np.clip(sub[col].to_numpy(), lo, hi),
                                   quantile_candidates(lo, hi, nc))
            out[key] = np.bincount(g * (2 * nc + 1) + cells,
                                   minlength=n * (2 * nc + 1)).reshape(n, -1)
    return out


class TestReleaseAggregates:
    """``Session.release_aggregates``: the noise-and-release step shared with other engines."""

    SAME = ("country", "statistic", "column", "param", "mechanism", "scale", "epsilon",
            "delta", "rho")

    @pytest.mark.parametrize("budget", [Budget.pure(10.0), Budget.zcdp(10.0)],
                             ids=["pure", "zcdp"])
    def test_same_release_as_query_release_for_the_same_aggregates(self, small_events, budget):
        def build(s):
            return (s.query(by="country", keys=KEYS, max_groups=3, max_rows=10).count()
                    .sum("watch", bounds=(0, 100)).variance("watch", bounds=(0, 100)))

        spend = {"rho" if budget.kind == "zcdp" else "epsilon": 1.89}
        a, b = session(small_events, budget), session(small_events, budget)
        ref = build(a).release(**spend)
        q = build(b)
        got = b.release_aggregates(q, _exact(small_events, q), **spend)
        pd.testing.assert_frame_equal(ref.to_frame()[list(self.SAME)],
                                      got.to_frame()[list(self.SAME)])
        assert got.loss == ref.loss and b.budget.spent == a.budget.spent
        # the estimates are the exact counts plus noise of the stated scale
        f = got.to_frame().query("statistic == 'count'")
        exact = small_events.groupby("country").size().reindex(KEYS).to_numpy()
        assert (np.abs(f["estimate"].to_numpy() - exact) < 20 * f["scale"].to_numpy()).all()

    def test_audit_event_and_description_carry_the_engine(self, small_events):
        seen = []
        s = session(small_events, audit=seen.append)
        q = s.query(by="country", keys=KEYS, max_rows=4).count()
        r = s.release_aggregates(q, _exact(small_events, q), epsilon=0.5, engine="test")
        (event,) = seen
        assert event.kind == "dp.release" and event.fields["engine"] == "test"
        assert event.fields["epsilon"] == r.loss.epsilon and r.query["engine"] == "test"

    def test_private_keys_need_the_key_set_and_release_only_passing_keys(self, small_events):
        s = session(small_events, Budget.approx(5.0, 1e-5))
        q = s.query(by="country", keys="private", max_rows=4).count()
        with pytest.raises(InputError, match="keys="):
            s.release_aggregates(q, {("count",): np.array([500, 500, 1])}, epsilon=1.0,
                                 delta=1e-6)
        frame = pd.DataFrame({"country": ["DE", "FR", "ZZ"]})
        r = s.release_aggregates(q, {("count",): np.array([500, 500, 1])}, keys=frame,
                                 epsilon=1.0, delta=1e-6)
        assert r.to_frame()["country"].tolist() == ["DE", "FR"] and s.budget.releases == 1
        assert 0 < r.loss.delta <= 1e-6

    @pytest.mark.parametrize(("aggregates", "match"), [
        ({}, "no aggregate"),
        ({("count",): np.array([1, 2])}, "3 entries"),
        ({("count",): np.array([1.0, 2.0, 3.0])}, "integer vector"),
        ({("count",): np.array([[1, 2, 3]])}, "integer vector"),
        ({("count",): np.array([True, False, True])}, "integer vector"),
        ({("count",): np.array([1, 2, 3], dtype=object)}, "integer vector"),
        ({("count",): np.array([5, -1, 2])}, "negative counts"),
        # 2**64 - 1 as uint64 would wrap to -1 in int64: refused, not reinterpreted
        ({("count",): np.array([2**64 - 1, 0, 0], dtype=np.uint64)}, "int64"),
    ], ids=["missing", "short", "float", "2-d", "bool", "object", "negative", "uint64-wrap"])
    def test_malformed_aggregates_are_refused_and_nothing_is_spent(self, small_events,
                                                                    aggregates, match):
        s = session(small_events)
        q = s.query(by="country", keys=KEYS).count()
        with pytest.raises(InputError, match=match):
            s.release_aggregates(q, aggregates, epsilon=1.0)
        assert s.budget.spent.epsilon == 0

    @pytest.mark.parametrize("budget", [Budget.pure(10.0), Budget.zcdp(10.0)],
                             ids=["pure", "zcdp"])
    def test_histograms_and_quantiles_from_cell_counts_release_as_query_release(
            self, small_events, budget):
        def build(s):
            return (s.query(by="country", keys=KEYS, max_groups=1, max_rows=10).count()
                    .histogram("watch", [0, 25, 50, 100]).median("watch", bounds=(10, 90),
                                                                 candidates=41)
                    .quantile("watch", [0.1, 0.9], bounds=(10, 90), candidates=41))

        spend = {"rho" if budget.kind == "zcdp" else "epsilon": 1.89}
        a, b = session(small_events, budget), session(small_events, budget)
        ref = build(a).release(**spend)
        q = build(b)
        got = b.release_aggregates(q, _exact_cells(small_events, q), **spend)
        pd.testing.assert_frame_equal(ref.to_frame()[list(self.SAME)],
                                      got.to_frame()[list(self.SAME)])
        assert got.loss == ref.loss and b.budget.spent == a.budget.spent
        f = got.to_frame()
        assert set(f.loc[f["statistic"] == "quantile", "estimate"]) <= set(
            np.linspace(10, 90, 41))

    def test_quantile_from_cell_counts_finds_the_exact_quantile_under_tiny_noise(self):
        rng = np.random.default_rng(1)
        df = pd.DataFrame({"user_id": np.arange(4_000), "x": rng.uniform(0, 100, 4_000)})
        s = session(df, Budget.pure(1e7))
        q = s.query().quantile("x", [0.25, 0.5], bounds=(0, 100), candidates=101)
        r = s.release_aggregates(q, _exact_cells(df, q, keys=None), epsilon=1e6)
        est = r.to_frame()["estimate"].tolist()
        # at ε = 1e6 the exponential mechanism picks the best-scoring candidate
        exact = [np.linspace(0, 100, 101)[np.abs(np.linspace(0, 100, 101) - np.quantile(
            df["x"], a)).argmin()] for a in (0.25, 0.5)]
        assert est == pytest.approx(exact, abs=1.0 + 1e-9)

    def test_private_keys_release_histogram_cells_of_selected_keys_only(self, small_events):
        s = session(small_events, Budget.approx(5.0, 1e-5))
        q = s.query(by="country", keys="private", max_rows=4).histogram("watch", [0, 50, 100])
        frame = pd.DataFrame({"country": ["FR", "ZZ", "DE"]})
        hist = np.array([[250, 250], [1, 0], [300, 200]])
        r = s.release_aggregates(q, {("count",): hist.sum(axis=1), q.measurements[1]: hist},
                                 keys=frame, epsilon=1.0, delta=1e-6)
        f = r.to_frame()
        assert f["country"].tolist() == ["DE", "DE", "FR", "FR"]
        assert f["param"].tolist() == ["[0, 50)", "[50, 100]"] * 2
        assert (np.abs(f["estimate"].to_numpy() - [300, 200, 250, 250])
                < 30 * f["scale"].to_numpy()).all()

    @pytest.mark.parametrize(("which", "value", "match"), [
        ("hist", np.array([1, 2, 3]), "integer matrix of 3 keys × 2 bins"),
        ("hist", np.ones((3, 3), dtype=np.int64), "3 keys × 2 bins"),
        ("hist", np.ones((3, 2)), "integer matrix"),
        ("hist", np.array([[1, 1], [1, -1], [1, 1]]), "negative counts"),
        ("quantile", np.ones((3, 5), dtype=np.int64), r"3 keys × 7 cells"),
        ("quantile", np.eye(3, 7, k=0, dtype=np.int64), "outside the bounds"),
        ("quantile", np.eye(3, 7, k=6, dtype=np.int64)[[2, 1, 0]], "outside the bounds"),
    ], ids=["vector", "bins", "float", "negative", "cells", "below", "above"])
    def test_malformed_cell_counts_are_refused_and_nothing_is_spent(self, small_events, which,
                                                                     value, match):
        s = session(small_events)
        q = (s.query(by="country", keys=KEYS).histogram("watch", [0, 50, 100])
             .median("watch", bounds=(0, 100), candidates=3))
        ok = _exact_cells(small_events, q)
        bad = {k: (value if k[0] == which else v) for k, v in ok.items()}
        with pytest.raises(InputError, match=match):
            s.release_aggregates(q, bad, epsilon=1.0)
        assert s.budget.spent.epsilon == 0

    def test_sums_beyond_int64_are_refused_not_wrapped(self, small_events):
        s = session(small_events)
        q = s.query(by="country", keys=KEYS).sum("watch", bounds=(0, 100))
        with pytest.raises(InputError, match="int64"):
            s.release_aggregates(q, {q.measurements[0]: np.array([2**63, 0, 0],
                                                                 dtype=np.uint64)},
                                 epsilon=1.0)
        assert s.budget.spent.epsilon == 0

    @pytest.mark.parametrize("count", [2**40, 2**62], ids=["huge", "int64-overflow"])
    def test_impossible_quantile_row_counts_are_refused_before_spending(self, small_events,
                                                                        count):
        # the driver rebuilds one value per row of a key: a count it cannot hold would fail
        # inside the ledger's spend (MemoryError after the budget is recorded), so refuse first
        s = session(small_events)
        q = s.query(by="country", keys=KEYS).median("watch", bounds=(0, 100), candidates=3)
        cells = np.zeros((3, 7), dtype=np.int64)
        cells[0, 3] = count
        cells[0, 5] = count  # two cells: their per-key total must not wrap either
        with pytest.raises(InputError, match="rows of one key"):
            s.release_aggregates(q, {q.measurements[0]: cells}, epsilon=1.0)
        assert s.budget.spent.epsilon == 0 and s.budget.releases == 0

    def test_arguments_are_checked_as_release_checks_them(self, small_events):
        s, other = session(small_events), session(small_events)
        q = s.query().count()
        ok = {("count",): np.array([3])}
        for kw, match in (({"rho": 1.0}, "epsilon="), ({"epsilon": 1.0, "level": 1.5}, "level"),
                          ({"epsilon": 1.0, "delta": 1e-6}, "delta")):
            with pytest.raises(InputError, match=match):
                s.check_release(q, **kw)
            with pytest.raises(InputError, match=match):
                s.release_aggregates(q, ok, **kw)
        with pytest.raises(InputError, match="keys="):  # public keys come from the query
            s.release_aggregates(q, ok, keys=pd.DataFrame(), epsilon=1.0)
        with pytest.raises(InputError, match="another session"):
            other.release_aggregates(q, ok, epsilon=1.0)
        with pytest.raises(InputError, match="no aggregates"):
            s.check_release(s.query(), epsilon=1.0)
        with pytest.raises(BudgetExhausted):
            s.release_aggregates(q, ok, epsilon=11.0)
        assert s.budget.spent.epsilon == 0 and other.budget.spent.epsilon == 0


class TestMeasurements:
    def test_shared_measurements_appear_once_in_query_order(self, small_events):
        q = (session(small_events).query().variance("watch", bounds=(0, 10))
             .mean("watch", bounds=(0, 10)).sum("watch", bounds=(0, 10)))
        assert q.measurements == (("count",), ("csum", "watch", 0.0, 10.0),
                                  ("csq", "watch", 0.0, 10.0), ("sum", "watch", 0.0, 10.0))

    def test_private_keys_always_measure_the_count(self, small_events):
        s = session(small_events, Budget.approx(1.0, 1e-5))
        q = s.query(by="country", keys="private").sum("watch", bounds=(0, 10))
        assert q.measurements == (("count",), ("sum", "watch", 0.0, 10.0))


def _scores(x, candidates, alpha):
    """OpenDP's own quantile scores (the input of make_private_quantile's noisy max)."""
    from pets.dp._opendp import opendp

    dp = opendp()
    t = dp.t.make_quantile_score_candidates(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                                            dp.symmetric_distance(),
                                            candidates=[float(c) for c in candidates],
                                            alpha=float(alpha))
    return list(t(np.asarray(x, dtype=np.float64)))


@st.composite
def _quantile_inputs(draw):
    """Bounds, candidates and values: on candidates, at and beyond the bounds, in between."""
    lo = draw(st.floats(-1e4, 1e4, allow_nan=False))
    hi = lo + draw(st.floats(1e-3, 1e4))
    n = draw(st.integers(2, 25))
    from pets.dp._session import quantile_candidates

    cands = quantile_candidates(lo, hi, n)
    assume(bool((np.diff(cands) > 0).all()))
    value = st.one_of(st.sampled_from(cands.tolist()), st.just(lo), st.just(hi),
                      st.floats(lo - 10, hi + 10), st.floats(-1e300, 1e300),
                      st.sampled_from([-math.inf, math.inf, -0.0]))
    x = np.array(draw(st.lists(value, max_size=80)), dtype=np.float64)
    alpha = draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)))
    return lo, hi, cands, x, alpha


class TestQuantileCells:
    """Cell counts carry everything OpenDP's quantile score reads: the Dask quantile argument."""

    @settings(max_examples=150, deadline=None)
    @given(_quantile_inputs())
    def test_rebuilt_vector_has_the_same_opendp_scores_as_the_clipped_values(self, case):
        from pets.dp._session import quantile_cell_values, quantile_cells

        lo, hi, cands, x, alpha = case
        clipped = np.clip(x, lo, hi)  # what the pandas path hands make_private_quantile
        counts = np.bincount(quantile_cells(clipped, cands), minlength=2 * cands.size + 1)
        assert counts[0] == counts[-1] == 0  # clipping empties the outer cells
        vals, ok = quantile_cell_values(cands)
        rebuilt = np.repeat(vals, counts)
        assert rebuilt.size == clipped.size and ok[counts > 0].all()
        assert _scores(rebuilt, cands, alpha) == _scores(clipped, cands, alpha)

    @settings(max_examples=100, deadline=None)
    @given(_quantile_inputs())
    def test_each_cell_compares_with_every_candidate_as_its_values_do(self, case):
        from pets.dp._session import quantile_cell_values, quantile_cells

        _, _, cands, x, _ = case
        cells = quantile_cells(x, cands)
        vals, _ = quantile_cell_values(cands)
        rep = vals[cells][:, None]
        xs, c = x[:, None], cands[None, :]
        assert ((rep < c) == (xs < c)).all() and ((rep == c) == (xs == c)).all()

    def test_open_cells_between_adjacent_floats_cannot_hold_values(self):
        from pets.dp._session import quantile_cell_values

        c = np.array([1.0, np.nextafter(1.0, 2.0), 2.0])
        vals, ok = quantile_cell_values(c)
        assert ok.tolist() == [True, True, False, True, True, True, True]
        assert c[1] < vals[4] < c[2]

    def test_histogram_bins_put_outside_values_in_the_end_bins(self):
        from pets.dp._session import histogram_bins

        x = np.array([-np.inf, -1.0, 0.0, 0.999, 1.0, 3.0, 3.5, np.inf])
        assert histogram_bins(x, (0.0, 1.0, 2.0, 3.0)).tolist() == [0, 0, 0, 0, 1, 2, 2, 2]

"""DP aggregates on Dask: bounding per user after a shuffle, exact reduction, noise once."""

from __future__ import annotations

from tests.engines.conftest import require_dask

require_dask()

import dataclasses  # noqa: E402
import math  # noqa: E402
import threading  # noqa: E402
from fractions import Fraction  # noqa: E402

import dask  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pets import BudgetExhausted, InputError  # noqa: E402
from pets.datasets import synthetic_events  # noqa: E402
from pets.dp import Budget, Session  # noqa: E402
from pets.dp._bounding import fixed_point  # noqa: E402
from pets.engines import _dp  # noqa: E402
from pets.engines._dp import BoundingSpec, DaskSession, bound_partition, bounded_aggregates  # noqa: E402

COUNTRIES = ["DE", "FR", "IT", "ES", "PL", "NL"]


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return synthetic_events(6_000, n_users=400, seed=5)


@pytest.fixture(autouse=True)
def _sync():
    with dask.config.set(scheduler="synchronous"):
        yield


def _spec(plan, *, G=1, C=1, seed=1, keys=COUNTRIES, by=("country",)) -> BoundingSpec:
    kt = tuple((k,) for k in keys) if by else ((),)
    return BoundingSpec("user_id", tuple(by), kt, tuple(plan), G, C, seed)


SUM = ("sum", "watch_seconds", 0.0, 3600.0)
_INSIDE = threading.local()


class _Flagging:
    """Wraps the partition function and flags the thread while it runs."""

    def __init__(self, real):
        self.real = real

    def __call__(self, *args, **kw):
        _INSIDE.flag = True
        try:
            return self.real(*args, **kw)
        finally:
            _INSIDE.flag = False

    def __dask_tokenize__(self):
        return "flagging-bound-partition"


class TestBoundedAggregates:
    def test_equal_to_pandas_groupby_when_caps_do_not_bind(self, events):
        spec = _spec([("count",), SUM], G=1, C=10_000)
        got = bounded_aggregates(dd.from_pandas(events, npartitions=5), spec)
        sub = events[events["country"].isin(COUNTRIES)]
        fp = fixed_point(np.clip(sub["watch_seconds"].to_numpy(), 0, 3600), 3600.0)
        exp_sum = pd.Series(fp.values, index=sub.index).groupby(sub["country"]).sum()
        exp_count = sub.groupby("country").size()
        assert got.vectors[("count",)].tolist() == [int(exp_count.get(c, 0)) for c in COUNTRIES]
        assert got.vectors[SUM].tolist() == [int(exp_sum.get(c, 0)) for c in COUNTRIES]

    def test_each_user_keeps_at_most_C_rows_whatever_the_partitioning(self, events):
        # every user lives in one country, so G never binds: a user keeps min(rows, C)
        C = 3
        per_user = events[events["country"].isin(COUNTRIES)].groupby(
            ["country", "user_id"]).size().clip(upper=C).groupby("country").sum()
        expected = [int(per_user.get(c, 0)) for c in COUNTRIES]
        for nparts in (1, 4, 9):
            got = bounded_aggregates(dd.from_pandas(events, npartitions=nparts),
                                     _spec([("count",)], C=C))
            assert got.vectors[("count",)].tolist() == expected

    def test_groups_per_user_are_capped(self):
        frame = pd.DataFrame({"user_id": ["u"] * 6, "country": COUNTRIES,
                              "watch_seconds": [1.0] * 6})
        out = bound_partition(frame, _spec([("count",)], G=2, C=1))
        assert out["_n"].sum() == 2 and len(out) == 2 and set(out["_cell"]) == {0}

    def test_same_seed_same_rows_so_retries_agree(self, events):
        ddf = dd.from_pandas(events, npartitions=4)
        spec = _spec([("count",), SUM], G=1, C=2, seed=42)
        a = bounded_aggregates(ddf, spec)
        b = bounded_aggregates(ddf, spec)
        assert all((a.vectors[k] == b.vectors[k]).all() for k in spec.plan)

    def test_kept_rows_do_not_depend_on_the_order_the_shuffle_delivers(self, events):
        spec = _spec([("count",), SUM, ("hist", "watch_seconds", (0.0, 100.0, 1000.0))],
                     G=2, C=1, seed=7)
        frame = events[spec.columns]
        a = bound_partition(frame, spec, {"number": 3})
        for state in range(3):
            b = bound_partition(frame.sample(frac=1.0, random_state=state), spec, {"number": 3})
            pd.testing.assert_frame_equal(a, b)
        # the seed (and partition number) does decide which rows are kept
        other = bound_partition(frame, spec, {"number": 4})
        assert not a.equals(other)

    def test_a_known_seed_lets_one_user_change_which_rows_others_keep(self):
        # Why the seed must stay secret (docs/scale-out.md): priorities are drawn by position,
        # so with the seed known, adding a user who sorts first shifts every other user's
        # priorities. The sum of the *other* users' kept values then moves by far more than
        # the added user's own contribution (at most C·D): only a seed unknown to the analyst
        # gives the other users' kept rows the same distribution with or without the user.
        rng = np.random.default_rng(0)
        others = pd.DataFrame({"user_id": np.repeat([f"u{i:03d}" for i in range(200)], 4),
                               "country": "DE", "watch_seconds": rng.uniform(0, 3600, 800)})
        added = pd.DataFrame({"user_id": ["a", "a"], "country": "DE",  # over the cap too
                              "watch_seconds": [0.0, 0.0]})
        spec = _spec([SUM], C=1, seed=12345, keys=["DE"])
        without = bound_partition(others, spec)["_n"].sum()
        with_a = bound_partition(pd.concat([added, others], ignore_index=True), spec)["_n"].sum()
        step = fixed_point(np.zeros(0), 3600.0).step
        assert abs(with_a - without) * step > 10 * 3600  # ≫ one user's C·D = 3600

    def test_rows_outside_the_public_keys_are_dropped(self, events):
        got = bounded_aggregates(dd.from_pandas(events, npartitions=2),
                                 _spec([("count",)], C=10_000, keys=["DE"]))
        assert got.vectors[("count",)].tolist() == [int((events["country"] == "DE").sum())]

    @pytest.mark.parametrize("ids", [[1, 1.0], [0.0, -0.0], [1, True]],
                             ids=["int-float", "signed-zero", "int-bool"])
    def test_object_units_that_equal_each_other_but_hash_apart_are_refused(self, ids):
        # pandas counts 1 and 1.0 as one user; Dask hashes object values by their text
        # ("1" / "1.0"), so the shuffle can send one user's rows to two partitions, each
        # bounded on its own: up to 2·C rows for that user. Refuse instead of splitting.
        n = 400
        frame = pd.DataFrame({"user_id": pd.Series([ids[i % 2] for i in range(n)],
                                                   dtype=object),
                              "country": "DE", "watch_seconds": 1.0})
        with dask.config.set({"dataframe.convert-string": False}):
            ddf = dd.from_pandas(frame, npartitions=4)
            assert ddf["user_id"].dtype == object
            with pytest.raises(InputError, match=r"user_id.*one type"):
                bounded_aggregates(ddf, _spec([("count",)], C=1, keys=["DE"]))

    def test_object_units_of_one_type_are_accepted(self):
        frame = pd.DataFrame({"user_id": pd.Series([i % 7 for i in range(70)], dtype=object),
                              "country": "DE", "watch_seconds": 1.0})
        with dask.config.set({"dataframe.convert-string": False}):
            got = bounded_aggregates(dd.from_pandas(frame, npartitions=3),
                                     _spec([("count",)], C=1, keys=["DE"]))
        assert got.vectors[("count",)].tolist() == [7]

    @settings(max_examples=60, deadline=None)
    @given(st.data())
    def test_rows_find_their_key_as_multiindex_matching_does(self, data):
        # _group_codes avoids rebuilding a MultiIndex of every key in every partition; it must
        # match what MultiIndex.get_indexer matched (missing to missing, 1 to 1.0, absent: -1;
        # bools mixed with numbers in one column are left out: there the MultiIndex did not
        # follow Python equality, False == 0, which the new matching and the pandas path do)
        value = st.sampled_from(["a", "b", "c", 1, 1.0, 2, None, math.nan, pd.NA, -0.0, 0.0,
                                 2.5, np.int64(2)])
        ncols = data.draw(st.integers(1, 3))
        by = tuple(f"g{i}" for i in range(ncols))
        rows = data.draw(st.lists(st.tuples(*[value] * ncols), min_size=0, max_size=40))
        keys = data.draw(st.lists(st.tuples(*[value] * ncols), min_size=1, max_size=12))
        keys = list(pd.DataFrame(keys, columns=list(by), dtype=object).drop_duplicates()
                    .itertuples(index=False, name=None))
        ref_index = pd.MultiIndex.from_tuples(keys, names=list(by))
        assume(ref_index.is_unique)
        frame = pd.DataFrame(rows, columns=list(by), dtype=object)
        spec = BoundingSpec("user_id", by, tuple(keys), (("count",),), 1, 1, 1)
        expected = ref_index.get_indexer(pd.MultiIndex.from_frame(frame.astype(object))) \
            if len(frame) else np.zeros(0, dtype=np.int64)
        np.testing.assert_array_equal(_dp._group_codes(frame, spec), expected)

    def test_nan_in_a_measured_column_is_refused(self, events):
        bad = events.assign(watch_seconds=events["watch_seconds"].where(events.index != 7))
        with pytest.raises(InputError, match="watch_seconds"):
            bounded_aggregates(dd.from_pandas(bad, npartitions=2), _spec([SUM]))


class TestDaskSession:
    def test_release_matches_the_pandas_release_in_everything_but_noise(self, events):
        q = dict(by="country", keys=COUNTRIES, max_groups=1, max_rows=5)
        ref = (Session(events, privacy_unit="user_id", budget=Budget.pure(2.0)).query(**q)
               .count().mean("watch_seconds", bounds=(0, 3600)).release(epsilon=1.0))
        ds = DaskSession(dd.from_pandas(events, npartitions=3), privacy_unit="user_id",
                         budget=Budget.pure(2.0))
        got = (ds.query(**q).count().mean("watch_seconds", bounds=(0, 3600))
               .release(epsilon=1.0, progress=False))
        a, b = ref.to_frame(), got.to_frame()
        same = ["country", "statistic", "column", "param", "mechanism", "scale", "epsilon",
                "delta", "rho"]
        pd.testing.assert_frame_equal(a[same], b[same])
        assert got.loss == ref.loss and ds.budget.spent.epsilon == pytest.approx(1.0)
        assert got.query["engine"] == "dask"

    def test_noise_is_drawn_once_per_measurement_on_the_driver(self, events, monkeypatch):
        from pets.dp import _session

        draws: list[bool] = []
        real_noisy = _session._noisy

        def noisy(m, vec):
            draws.append(getattr(_INSIDE, "flag", False))
            return real_noisy(m, vec)

        monkeypatch.setattr(_dp, "bound_partition", _Flagging(_dp.bound_partition))
        monkeypatch.setattr(_session, "_noisy", noisy)
        ds = DaskSession(dd.from_pandas(events, npartitions=4), privacy_unit="user_id",
                         budget=Budget.zcdp(1.0))
        ds.query(by="country", keys=COUNTRIES, max_rows=3).count().variance(
            "watch_seconds", bounds=(0, 3600)).release(rho=0.5, progress=False)
        assert draws == [False, False, False]  # count, centred sum, centred squares: once each

    @pytest.mark.parametrize("max_keys", [0, -5, 2.5])
    def test_bad_max_keys_is_refused_as_by_the_pandas_session(self, events, max_keys):
        # 0 used to fall back silently to the default limit
        with pytest.raises(InputError, match="max_keys"):
            DaskSession(dd.from_pandas(events, npartitions=2), privacy_unit="user_id",
                        budget=Budget.pure(1.0), max_keys=max_keys)

    def test_budget_is_enforced_and_nothing_spent_on_refusal(self, events):
        ds = DaskSession(dd.from_pandas(events, npartitions=2), privacy_unit="user_id",
                         budget=Budget.pure(1.0))
        ds.query().count().release(epsilon=0.8, progress=False)
        with pytest.raises(BudgetExhausted):
            ds.query().count().release(epsilon=0.5, progress=False)
        assert ds.budget.spent.epsilon == pytest.approx(0.8)

    def test_private_keys_release_only_keys_past_the_threshold(self, events):
        ds = DaskSession(dd.from_pandas(events, npartitions=3), privacy_unit="user_id",
                         budget=Budget.approx(2.0, 1e-5))
        r = ds.query(by="country", keys="private", max_rows=5).count().release(
            epsilon=1.0, delta=1e-6, progress=False)
        out = r.to_frame()
        present = set(events["country"])
        assert set(out["country"]) <= present and len(out) >= 1
        assert out["country"].tolist() == sorted(out["country"])  # value order, not data order
        assert "threshold" in out["mechanism"].iloc[0]
        ref = Session(events, privacy_unit="user_id", budget=Budget.approx(2.0, 1e-5)).query(
            by="country", keys="private", max_rows=5).count().release(epsilon=1.0, delta=1e-6)
        assert r.loss == ref.loss and 0 < r.loss.delta <= 1e-6  # same OpenDP calibration
        assert out["scale"].iloc[0] == ref.to_frame()["scale"].iloc[0]
        # a key held by a single user is (with overwhelming probability) not released
        lone = events.assign(country=np.where(events["user_id"] == events["user_id"].iloc[0],
                                              "ZZ", events["country"]))
        ds2 = DaskSession(dd.from_pandas(lone, npartitions=3), privacy_unit="user_id",
                          budget=Budget.approx(2.0, 1e-5))
        r2 = ds2.query(by="country", keys="private", max_rows=5).count().release(
            epsilon=1.0, delta=1e-6, progress=False)
        assert "ZZ" not in set(r2.to_frame()["country"])

    def test_private_keys_of_a_categorical_column_leak_no_unselected_category(self, events):
        # the keys found on the cluster keep the column's categorical dtype, whose categories
        # are every key present — including ones the threshold withholds
        lone = events.assign(country=np.where(events["user_id"] == events["user_id"].iloc[0],
                                              "ZZ", events["country"]))
        lone["country"] = lone["country"].astype("category")
        ds = DaskSession(dd.from_pandas(lone, npartitions=3), privacy_unit="user_id",
                         budget=Budget.approx(2.0, 1e-5))
        f = ds.query(by="country", keys="private", max_rows=5).count().median(
            "watch_seconds", bounds=(0, 3600), candidates=11).release(
            epsilon=1.0, delta=1e-6, progress=False).to_frame()
        assert "ZZ" not in set(f["country"]) and len(f) >= 2
        assert not isinstance(f["country"].dtype, pd.CategoricalDtype)
        released = f["country"].drop_duplicates().tolist()
        assert released == sorted(released)

    def test_noise_is_drawn_on_the_driver_for_histograms_and_quantiles(self, events,
                                                                        monkeypatch):
        from pets.dp import _session

        draws: list[tuple[str, bool]] = []
        real_noisy, real_qm = _session._noisy, _session.quantile_mechanism

        def noisy(m, vec):
            draws.append((m.name, getattr(_INSIDE, "flag", False)))
            return real_noisy(m, vec)

        def quantile_mechanism(**kw):
            m = real_qm(**kw)

            def measure(x):
                draws.append(("quantile", getattr(_INSIDE, "flag", False)))
                return m.measurement(x)

            return dataclasses.replace(m, measurement=measure)

        monkeypatch.setattr(_dp, "bound_partition", _Flagging(_dp.bound_partition))
        monkeypatch.setattr(_session, "_noisy", noisy)
        monkeypatch.setattr(_session, "quantile_mechanism", quantile_mechanism)
        ds = DaskSession(dd.from_pandas(events, npartitions=4), privacy_unit="user_id",
                         budget=Budget.pure(1.0))
        ds.query(by="country", keys=COUNTRIES[:2], max_rows=3).histogram(
            "watch_seconds", [0, 600, 3600]).median("watch_seconds", bounds=(0, 3600),
                                                    candidates=37).release(
            epsilon=0.5, progress=False)
        # one histogram measurement; the exponential mechanism once per key
        assert sorted(draws) == [("histogram", False), ("quantile", False), ("quantile", False)]


def _five(q):
    """A count and four sums: five measurements, one per statistic."""
    for hi in (900, 1800, 3600, 7200):
        q = q.sum("watch_seconds", bounds=(0, hi))
    return q.count()


class TestEncoding:
    def test_partitions_use_the_pandas_paths_encoder(self):
        # release_aggregates' d_in assumes the pandas path's clipping and grid: one encoder
        from pets.dp._session import _encode

        assert _dp._encode is _encode
        x = np.random.default_rng(3).uniform(-5_000, 9_000, 1_000)
        fp = _dp._encode(("csum", "x", -7.5, 2.25), x)
        assert np.abs(fp.values).max() * fp.step <= 4.875 + fp.step


class TestSameAccountingAsPandas:
    """Both engines go through one noise-and-release step: same loss, same noise scales."""

    SAME = ("country", "statistic", "column", "param", "mechanism", "scale", "epsilon",
            "delta", "rho")

    @pytest.mark.parametrize(("budget", "spend"), [
        (Budget.pure(5.0), {"epsilon": 1.89}),
        (Budget.zcdp(5.0), {"rho": 1.89}),
    ], ids=["pure", "zcdp"])
    def test_an_uneven_split_spends_the_same_and_never_more_than_asked(self, events, budget,
                                                                        spend):
        # 1.89 / 5 rounds up (5 · fl(1.89/5) > 1.89) and, under zCDP, √3 rounds down: the
        # shared step must use the rounded-down share and the rounded-up L2 sensitivity
        q = {"by": "country", "keys": COUNTRIES, "max_groups": 3, "max_rows": 2}
        s = Session(events, privacy_unit="user_id", budget=budget)
        ref = _five(s.query(**q)).release(**spend)
        ds = DaskSession(dd.from_pandas(events, npartitions=3), privacy_unit="user_id",
                         budget=budget)
        got = _five(ds.query(**q)).release(**spend, progress=False)
        pd.testing.assert_frame_equal(ref.to_frame()[list(self.SAME)],
                                      got.to_frame()[list(self.SAME)])
        assert got.loss == ref.loss
        assert ds.budget.spent == s.budget.spent
        (name, asked), = spend.items()
        one_key = got.to_frame().query("country == 'DE'")
        assert len(one_key) == 5  # one measurement per statistic: the exact sum of their losses
        assert 0 < sum(map(Fraction, one_key[name])) <= Fraction(asked)
        assert got.loss.delta == 0

    def test_private_keys_under_zcdp_spend_the_same_rho_and_delta(self, events):
        q = {"by": "country", "keys": "private", "max_groups": 3, "max_rows": 2}
        budget = Budget.zcdp(5.0, 1e-5)
        s = Session(events, privacy_unit="user_id", budget=budget)
        ref = s.query(**q).count().mean("watch_seconds", bounds=(0, 3600)).release(
            rho=1.89, delta=1e-6)
        ds = DaskSession(dd.from_pandas(events, npartitions=3), privacy_unit="user_id",
                         budget=budget)
        got = ds.query(**q).count().mean("watch_seconds", bounds=(0, 3600)).release(
            rho=1.89, delta=1e-6, progress=False)
        assert got.loss == ref.loss and ds.budget.spent == s.budget.spent
        assert 0 < got.loss.delta <= 1e-6
        a, b = ref.to_frame(), got.to_frame()
        for stat in ("count", "mean"):
            assert (a.loc[a["statistic"] == stat, "scale"].iloc[0]
                    == b.loc[b["statistic"] == stat, "scale"].iloc[0])


HIST = ("hist", "watch_seconds", (100.0, 600.0, 1200.0, 2400.0))  # values fall outside too
EDGES = list(HIST[2])


def _capture(monkeypatch):
    """Record what reaches the shared noise step (``_execute``) of either engine."""
    from pets.dp import _session

    seen: list[dict] = []
    real = _session._execute

    def execute(q, keys, mechs, data, fps, values, rows, g, level):
        seen.append({"keys": keys, "data": data, "values": values, "rows": rows, "g": g})
        return real(q, keys, mechs, data, fps, values, rows, g, level)

    monkeypatch.setattr(_session, "_execute", execute)
    return seen


def _unbounded(events):
    """Caps that never bind: every user lives in one country; C >= any user's rows."""
    return {"by": "country", "keys": COUNTRIES, "max_groups": 1,
            "max_rows": int(events.groupby("user_id").size().max())}


def _scores(x, cands, alpha):
    from pets.dp._opendp import opendp

    dp = opendp()
    t = dp.t.make_quantile_score_candidates(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                                            dp.symmetric_distance(), candidates=cands.tolist(),
                                            alpha=alpha)
    return list(t(np.asarray(x, dtype=np.float64)))


class TestHistogramsOnDask:
    @pytest.mark.parametrize("nparts", [1, 3, 7])
    def test_cell_counts_equal_the_pandas_paths(self, events, monkeypatch, nparts):
        seen = _capture(monkeypatch)
        q = _unbounded(events)
        Session(events, privacy_unit="user_id", budget=Budget.pure(1.0)).query(**q).histogram(
            "watch_seconds", EDGES).release(epsilon=0.5)
        g, b, nb = seen[0]["data"][HIST]
        expected = np.bincount(g * nb + b, minlength=len(COUNTRIES) * nb).reshape(-1, nb)
        assert expected[:, 0].sum() and expected[:, -1].sum()  # outside values were counted
        got = bounded_aggregates(dd.from_pandas(events, npartitions=nparts),
                                 _spec([HIST], C=q["max_rows"]))
        np.testing.assert_array_equal(got.vectors[HIST], expected)
        assert got.vectors[HIST].dtype == np.int64

    def test_release_matches_the_pandas_release_but_for_noise(self, events):
        q = {"by": "country", "keys": COUNTRIES, "max_groups": 2, "max_rows": 3}
        s = Session(events, privacy_unit="user_id", budget=Budget.zcdp(2.0))
        ref = s.query(**q).count().histogram("watch_seconds", EDGES).release(rho=0.7)
        ds = DaskSession(dd.from_pandas(events, npartitions=3), privacy_unit="user_id",
                         budget=Budget.zcdp(2.0))
        got = ds.query(**q).count().histogram("watch_seconds", EDGES).release(
            rho=0.7, progress=False)
        pd.testing.assert_frame_equal(ref.to_frame()[list(TestSameAccountingAsPandas.SAME)],
                                      got.to_frame()[list(TestSameAccountingAsPandas.SAME)])
        assert got.loss == ref.loss and ds.budget.spent == s.budget.spent
        f = got.to_frame().query("statistic == 'histogram'")
        assert f["param"].tolist()[:3] == ["[100, 600)", "[600, 1200)", "[1200, 2400]"]

    def test_private_keys_release_the_cells_of_selected_keys_only(self, events, monkeypatch):
        lone = events.assign(country=np.where(events["user_id"] == events["user_id"].iloc[0],
                                              "ZZ", events["country"]))
        seen = _capture(monkeypatch)
        ds = DaskSession(dd.from_pandas(lone, npartitions=3), privacy_unit="user_id",
                         budget=Budget.approx(2.0, 1e-5))
        r = ds.query(by="country", keys="private", max_rows=5).histogram(
            "watch_seconds", EDGES).release(epsilon=1.0, delta=1e-6, progress=False)
        out = r.to_frame()
        assert "ZZ" not in set(out["country"]) and "ZZ" in set(seen[0]["keys"]["country"])
        released = out["country"].unique().tolist()
        assert released == sorted(released) and len(out) == 3 * len(released)
        assert (out.groupby("country").size() == 3).all()
        ref = Session(lone, privacy_unit="user_id", budget=Budget.approx(2.0, 1e-5)).query(
            by="country", keys="private", max_rows=5).histogram("watch_seconds", EDGES).release(
            epsilon=1.0, delta=1e-6)
        assert r.loss == ref.loss and out["scale"].iloc[0] == ref.to_frame()["scale"].iloc[0]


class TestQuantilesOnDask:
    KEY = ("quantile", "watch_seconds", 0.0, 3600.0, 0.5, 61)

    def test_rebuilt_vectors_have_the_pandas_paths_opendp_scores(self, events, monkeypatch):
        from pets.dp._session import quantile_candidates, quantile_cell_values

        seen = _capture(monkeypatch)
        q = _unbounded(events)
        Session(events, privacy_unit="user_id", budget=Budget.pure(1.0)).query(**q).quantile(
            "watch_seconds", [0.1, 0.5], bounds=(0, 3600), candidates=61).release(epsilon=0.5)
        pandas = seen[0]
        x = np.clip(pandas["values"]["watch_seconds"][pandas["rows"]], 0, 3600)
        got = bounded_aggregates(dd.from_pandas(events, npartitions=4),
                                 _spec([self.KEY], C=q["max_rows"]))
        cands = quantile_candidates(0.0, 3600.0, 61)
        vals, _ = quantile_cell_values(cands)
        cells = got.vectors[self.KEY]
        assert cells.shape == (len(COUNTRIES), 123) and cells.dtype == np.int64
        for k in range(len(COUNTRIES)):
            mine = x[pandas["g"] == k]
            rebuilt = np.repeat(vals, cells[k])
            assert rebuilt.size == mine.size
            for alpha in (0.1, 0.5):
                assert _scores(rebuilt, cands, alpha) == _scores(mine, cands, alpha)

    def test_alphas_of_one_column_share_one_cell_matrix(self, events):
        keys = [self.KEY, (*self.KEY[:4], 0.9, 61)]
        got = bounded_aggregates(dd.from_pandas(events, npartitions=2), _spec(keys, C=5))
        assert got.vectors[keys[0]] is got.vectors[keys[1]]
        assert len(got.spec.families) == 1

    @pytest.mark.parametrize(("budget", "spend"), [
        (Budget.pure(5.0), {"epsilon": 1.89}), (Budget.zcdp(5.0), {"rho": 1.89}),
    ], ids=["pure", "zcdp"])
    def test_release_spends_exactly_as_pandas(self, events, budget, spend):
        q = {"by": "country", "keys": COUNTRIES, "max_groups": 3, "max_rows": 2}

        def build(x):
            return (x.query(**q).count().median("watch_seconds", bounds=(0, 3600),
                                                candidates=101)
                    .quantile("watch_seconds", [0.1, 0.9], bounds=(0, 3600), candidates=101))

        s = Session(events, privacy_unit="user_id", budget=budget)
        ref = build(s).release(**spend)
        ds = DaskSession(dd.from_pandas(events, npartitions=3), privacy_unit="user_id",
                         budget=budget)
        got = build(ds).release(**spend, progress=False)
        same = list(TestSameAccountingAsPandas.SAME)
        pd.testing.assert_frame_equal(ref.to_frame()[same], got.to_frame()[same])
        assert got.loss == ref.loss and ds.budget.spent == s.budget.spent
        f = got.to_frame().query("statistic == 'quantile'")
        assert set(f["estimate"]) <= set(np.linspace(0, 3600, 101).tolist())
        assert f["ci_low"].isna().all()

    def test_private_keys_and_no_grouping(self, events):
        for q, spend in (({"by": "country", "keys": "private", "max_rows": 4},
                          {"epsilon": 1.0, "delta": 1e-6}),
                         ({"max_rows": 4}, {"epsilon": 1.0})):
            s = Session(events, privacy_unit="user_id", budget=Budget.approx(3.0, 1e-5))
            ref = s.query(**q).median("watch_seconds", bounds=(0, 3600), candidates=91).release(
                **spend)
            ds = DaskSession(dd.from_pandas(events, npartitions=3), privacy_unit="user_id",
                             budget=Budget.approx(3.0, 1e-5))
            got = ds.query(**q).median("watch_seconds", bounds=(0, 3600),
                                       candidates=91).release(**spend, progress=False)
            a, b = ref.to_frame(), got.to_frame()
            assert got.loss == ref.loss and ds.budget.spent == s.budget.spent
            assert set(b["scale"]) == set(a["scale"]) and len(set(a["scale"])) == 1
            if "by" in q:  # selected keys only (in value order), one median each
                assert set(b["country"]) <= set(events["country"]) and len(b) >= 1
                assert b["country"].tolist() == sorted(set(b["country"]))
                assert set(b["statistic"]) == {"quantile"}
            else:
                assert b["statistic"].tolist() == ["quantile"]

    def test_median_of_a_known_distribution_lands_near_the_truth(self):
        rng = np.random.default_rng(11)
        n = 3_000
        frame = pd.DataFrame({"user_id": np.arange(n),
                              "country": rng.choice(["DE", "FR"], n),
                              "x": rng.normal(50.0, 10.0, n)})
        ds = DaskSession(dd.from_pandas(frame, npartitions=3), privacy_unit="user_id",
                         budget=Budget.pure(1.0))
        r = ds.query(by="country", keys=["DE", "FR"]).median(
            "x", bounds=(0, 100), candidates=201).release(epsilon=1.0, progress=False)
        # ~1500 values per key; the exponential mechanism at ε = 1 lands within ~0.5 of the
        # median of N(50, 10) (its sampling error alone is ~0.3)
        assert np.abs(r.to_frame()["estimate"].to_numpy() - 50.0).max() < 1.5


class TestRefusedBeforeAnyWork:
    """Bad arguments fail before the cluster computes anything, and nothing is spent."""

    @pytest.fixture
    def never(self, monkeypatch):
        def boom(*a, **kw):
            raise AssertionError("the cluster was asked to compute")

        monkeypatch.setattr(_dp, "bound_partition", boom)
        monkeypatch.setattr(_dp, "_data_keys", boom)
        monkeypatch.setattr(_dp, "bounded_aggregates", boom)
        monkeypatch.setattr(_dp, "MAX_QUANTILE_CELLS", 100_000)

    @pytest.mark.parametrize(("build", "spend", "match"), [
        (lambda q: q.histogram("watch_seconds", EDGES), {"rho": 0.5}, "epsilon="),
        (lambda q: q.median("watch_seconds", bounds=(0, 10)), {"epsilon": 0.5, "level": 2},
         "level"),
        (lambda q: q.histogram("no_such", EDGES), {"epsilon": 0.5}, "no_such"),
        (lambda q: q.histogram("watch_seconds", list(range(12))), {"epsilon": 0.5},
         "6 keys × 11 bins exceed the limit of 60"),
        (lambda q: q.median("watch_seconds", bounds=(0, 10), candidates=99_999),
         {"epsilon": 0.5}, "cell counts on the driver"),
        (lambda q: q.median("watch_seconds", bounds=(1.0, 1.0 + 4 * 2.0**-52), candidates=11),
         {"epsilon": 0.5}, "distinct candidates"),
    ], ids=["rho-on-pure", "level", "unknown-column", "too-many-bins", "too-many-cells",
            "bounds-narrower-than-candidates"])
    def test_public_keys(self, events, never, build, spend, match):
        ds = DaskSession(dd.from_pandas(events, npartitions=2), privacy_unit="user_id",
                         budget=Budget.pure(1.0), max_keys=60)
        with pytest.raises(InputError, match=match):
            build(ds.query(by="country", keys=COUNTRIES)).release(**spend, progress=False)
        assert ds.budget.spent.epsilon == 0

    def test_private_keys_need_delta_before_keys_are_searched(self, events, never):
        ds = DaskSession(dd.from_pandas(events, npartitions=2), privacy_unit="user_id",
                         budget=Budget.approx(1.0, 1e-5))
        q = ds.query(by="country", keys="private").histogram("watch_seconds", EDGES)
        with pytest.raises(InputError, match="delta="):
            q.release(epsilon=0.5, progress=False)
        assert ds.budget.spent.epsilon == 0

    def test_too_many_private_quantile_cells_refused_before_bounding(self, events,
                                                                      monkeypatch):
        monkeypatch.setattr(_dp, "MAX_QUANTILE_CELLS", 1000)
        monkeypatch.setattr(_dp, "bounded_aggregates", lambda *a, **kw: pytest.fail("bounded"))
        ds = DaskSession(dd.from_pandas(events, npartitions=2), privacy_unit="user_id",
                         budget=Budget.approx(1.0, 1e-5))
        q = ds.query(by="country", keys="private").median("watch_seconds", bounds=(0, 10),
                                                          candidates=101)
        with pytest.raises(InputError, match="keys present in the data × 101 candidates") as err:
            q.release(epsilon=0.5, delta=1e-6, progress=False)
        assert ds.budget.spent.epsilon == 0 and ds.budget.spent.delta == 0
        # a data-dependent refusal: it need not also print how many keys the data holds
        assert str(events["country"].nunique()) not in str(err.value)


class TestOnTheCluster:
    """Last in this module: once the module's LocalCluster exists, computes go through it."""

    def test_every_statistic_on_two_worker_processes_spends_as_pandas(self, events,
                                                                      dask_client):
        def build(x):
            return (x.query(by="country", keys=COUNTRIES, max_groups=2, max_rows=3).count()
                    .variance("watch_seconds", bounds=(0, 3600))
                    .histogram("watch_seconds", EDGES)
                    .quantile("watch_seconds", [0.25, 0.75], bounds=(0, 3600), candidates=73))

        s = Session(events, privacy_unit="user_id", budget=Budget.pure(3.0))
        ref = build(s).release(epsilon=2.0)
        ds = DaskSession(dd.from_pandas(events, npartitions=4), privacy_unit="user_id",
                         budget=Budget.pure(3.0))
        got = build(ds).release(epsilon=2.0, progress=False)
        same = list(TestSameAccountingAsPandas.SAME)
        pd.testing.assert_frame_equal(ref.to_frame()[same], got.to_frame()[same])
        assert got.loss == ref.loss and ds.budget.spent == s.budget.spent
        assert len(dask_client.scheduler_info()["workers"]) == 2

    @pytest.mark.parametrize("dtype", ["int64", "str", "category"])
    def test_each_user_is_bounded_once_after_the_clusters_shuffle(self, dask_client, dtype):
        # users straddle all input partitions; with C = 1 and no grouping, the exact count is
        # the number of distinct users iff every user's rows met in one partition
        rng = np.random.default_rng(3)
        users = rng.integers(0, 1_500, 12_000)
        ids = pd.Series(users).astype(dtype) if dtype != "str" else pd.Series(
            [f"u{u}" for u in users], dtype="str")
        frame = pd.DataFrame({"user_id": ids, "watch_seconds": 1.0})
        ddf = dd.from_pandas(frame, npartitions=6, sort=False)
        if dtype == "category":  # each partition with its own categories (as Parquet parts)
            ddf = ddf.map_partitions(lambda p: p.assign(
                user_id=p["user_id"].astype(str).astype("category")))
        got = bounded_aggregates(ddf, _spec([("count",)], by=(), C=1), progress=False)
        assert got.vectors[("count",)].tolist() == [len(np.unique(users))]

    def test_workers_cut_the_same_candidates_bit_for_bit(self, dask_client):
        # the cells are counted against the workers' candidates and rebuilt against the
        # driver's: they must be the same floats
        from pets.dp._session import quantile_candidates

        for args in ((0.0, 3600.0, 1001), (-1e150, 1e150, 99_999), (0.1, 0.7, 3),
                     (1e15, 1e15 + 1.0, 9)):
            remote = dask_client.submit(quantile_candidates, *args, pure=False).result()
            assert remote.tobytes() == quantile_candidates(*args).tobytes()

"""Anonymity report and enforce_k, checked against a plain per-class reference computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pets import InputError, PolicyError
from pets.pseudo import (
    AgeBand,
    Bucket,
    PostcodePrefix,
    Suppress,
    anonymity_report,
    enforce_k,
)


def _reference(df, qis, sensitive, k):
    """Per-class Python loops: slow and obvious."""
    classes: dict[tuple, list] = {}
    for _, row in df.iterrows():
        key = tuple("<null>" if pd.isna(row[q]) else row[q] for q in qis)
        classes.setdefault(key, []).append(
            None if sensitive is None else ("<null>" if pd.isna(row[sensitive])
                                            else row[sensitive]))
    sizes = [len(v) for v in classes.values()]
    n = len(df)
    out = {"k": min(sizes), "classes": len(classes), "uniques": sizes.count(1),
           "below": sum(s for s in sizes if s < k), "risk_mean": len(classes) / n}
    if sensitive is not None:
        overall = pd.Series([v for vs in classes.values() for v in vs]).value_counts(
            normalize=True)
        ld, le, t = [], [], []
        for vs in classes.values():
            p = pd.Series(vs).value_counts(normalize=True)
            ld.append(len(p))
            le.append(math.exp(-(p * np.log(p)).sum()))
            t.append(0.5 * sum(abs(p.get(s, 0.0) - q) for s, q in overall.items()))
        out.update(l_distinct=min(ld), l_entropy=min(le), t=max(t))
    return out


frames = st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n),
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
    st.lists(st.sampled_from(["flu", "cold", "none", None]), min_size=n, max_size=n)))


class TestAnonymityReport:
    @settings(max_examples=60, deadline=None)
    @given(frames, st.integers(1, 5))
    def test_matches_the_reference(self, cols, k):
        df = pd.DataFrame({"zip": pd.Series(cols[0], dtype=object),
                           "age": pd.Series(cols[1], dtype="Int64"),
                           "dx": pd.Series(cols[2], dtype=object)})
        r = anonymity_report(df, ["zip", "age"], sensitive="dx", k=k)
        ref = _reference(df, ["zip", "age"], "dx", k)
        assert (r.k, r.classes, r.uniques, r.records_below_k) == (
            ref["k"], ref["classes"], ref["uniques"], ref["below"])
        assert r.risk_max == pytest.approx(1 / ref["k"])
        assert r.risk_mean == pytest.approx(ref["risk_mean"])
        assert r.l_distinct == ref["l_distinct"]
        assert r.l_entropy == pytest.approx(ref["l_entropy"])
        assert r.t_closeness == pytest.approx(ref["t"], abs=1e-12)
        assert r.satisfies() == (ref["k"] >= k)
        assert sum(s * c for s, c in r.class_sizes.items()) <= len(df)

    def test_categorical_and_datetime_quasi_identifiers(self):
        df = pd.DataFrame({
            "c": pd.Categorical(["x", "y", "x", None]),
            "d": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-01", None]),
        })
        r = anonymity_report(df, ["c", "d"], k=2)
        assert (r.k, r.classes, r.uniques) == (1, 3, 2)

    def test_k_anonymous_table(self):
        df = pd.DataFrame({"a": ["x"] * 4 + ["y"] * 3, "s": ["p", "q"] * 3 + ["p"]})
        r = anonymity_report(df, ["a"], sensitive="s", k=3)
        assert r.satisfies() and r.satisfies(l=2) and not r.satisfies(l=3)
        assert r.satisfies(t=0.5) and not r.satisfies(t=0.01)
        assert r.share_below_k == 0.0

    def test_empty_frame(self):
        r = anonymity_report(pd.DataFrame({"a": pd.Series([], dtype="string")}), ["a"], k=3)
        assert (r.rows, r.k, r.classes) == (0, 0, 0) and r.satisfies()

    def test_bad_arguments(self):
        df = pd.DataFrame({"a": [1]})
        with pytest.raises(InputError, match="unknown column"):
            anonymity_report(df, ["b"])
        with pytest.raises(InputError, match="k must be"):
            anonymity_report(df, ["a"], k=0)

    def test_html_and_dict_views(self):
        import json

        df = pd.DataFrame({"zip<script>": ["1", "1", "2"], "s": ["a", "b", "a"]})
        r = anonymity_report(df, ["zip<script>"], sensitive="s", k=2)
        html = r._repr_html_()
        assert "not k-anonymous" in html and "<script>" not in html
        assert "prosecutor risk" in html
        d = json.loads(json.dumps(r.to_dict()))
        assert d["k"] == 1 and d["satisfies_k"] is False
        assert "k=1" in str(r)

    def test_many_high_cardinality_columns_do_not_overflow(self):
        rng = np.random.default_rng(0)
        df = pd.DataFrame({f"c{i}": rng.integers(0, 10**6, 2000) for i in range(5)})
        r = anonymity_report(df, list(df.columns), k=2)
        assert r.classes == len(df.drop_duplicates())


@pytest.fixture
def people():
    rng = np.random.default_rng(5)
    n = 3000
    return pd.DataFrame({
        "birth": pd.to_datetime("1950-01-01") + pd.to_timedelta(rng.integers(0, 50 * 365, n),
                                                                  unit="D"),
        "zip": pd.Series(rng.integers(10000, 99999, n).astype(str), dtype="string"),
        "sex": rng.choice(["f", "m"], n),
        "dx": rng.choice(["flu", "cold", "none"], n),
    })


HIER = {
    "birth": [AgeBand("2025-01-01", width=5), AgeBand("2025-01-01", width=20), Suppress("*")],
    "zip": [PostcodePrefix(3), PostcodePrefix(2), PostcodePrefix(1), Suppress("*")],
}


class TestEnforceK:
    def test_reaches_k_with_the_lowest_total_level(self, people):
        res = enforce_k(people, ["birth", "zip", "sex"], 5, HIER, sensitive="dx")
        assert res.report.k >= 5 and res.rows_suppressed == 0
        assert len(res.frame) == len(people)
        total = sum(res.levels.values())
        # no combination with a smaller total level reaches k
        import itertools

        for node in itertools.product(range(4), range(5)):
            if sum(node) < total:
                gen = people.copy()
                for c, lv in zip(["birth", "zip"], node, strict=True):
                    if lv:
                        gen[c] = HIER[c][lv - 1].apply(people[c])
                assert anonymity_report(gen, ["birth", "zip", "sex"], k=5).k < 5
        assert res.level_names["sex"] == "original"
        assert res.report.l_distinct is not None

    def test_suppression_budget_allows_lower_levels(self, people):
        strict = enforce_k(people, ["birth", "zip", "sex"], 5, HIER)
        loose = enforce_k(people, ["birth", "zip", "sex"], 5, HIER, max_suppression=0.2)
        assert sum(loose.levels.values()) <= sum(strict.levels.values())
        assert loose.rows_suppressed <= 0.2 * len(people)
        assert loose.report.k >= 5 and len(loose.frame) == len(people) - loose.rows_suppressed
        assert set(loose.frame.index) <= set(people.index)

    def test_discernibility_is_reported(self, people):
        res = enforce_k(people, ["birth", "zip", "sex"], 5, HIER, max_suppression=0.05)
        sizes = res.frame.groupby(["birth", "zip", "sex"], dropna=False).size()
        assert res.discernibility == int((sizes**2).sum()) + res.rows_suppressed * len(people)
        assert res.nodes_evaluated >= 1
        assert "suppressed" in res._repr_html_()
        assert res.to_dict()["levels"] == dict(res.levels)

    def test_impossible_k_is_a_policy_error(self):
        df = pd.DataFrame({"a": ["x", "y", "z"]})
        with pytest.raises(PolicyError, match="k=2 cannot be met"):
            enforce_k(df, ["a"], 2, {})

    def test_callables_work_as_levels_and_bad_ones_are_caught(self):
        df = pd.DataFrame({"age": [31, 33, 47, 49]})
        res = enforce_k(df, ["age"], 2, {"age": [lambda s: s // 10 * 10]})
        assert res.frame["age"].tolist() == [30, 30, 40, 40]
        with pytest.raises(InputError, match="changed the length"):
            enforce_k(df, ["age"], 2, {"age": [lambda s: s.iloc[:2]]})
        with pytest.raises(InputError, match="not quasi-identifiers"):
            enforce_k(df, ["age"], 2, {"other": [Bucket(width=10)]})


def _ordered_reference(df, qis, sensitive):
    """EMD with ordered distance, literally: Σ_i |Σ_{j<=i} (p_j - q_j)| / (m - 1) per class."""
    vals = df[sensitive]
    order = sorted(vals.dropna().unique().tolist()) + ([None] if vals.isna().any() else [])
    m = len(order)
    if m <= 1:
        return 0.0

    def dist(sub):
        out = []
        for v in order:
            out.append(sub.isna().mean() if v is None else (sub == v).fillna(False).mean())
        return np.array(out)

    q = dist(vals)
    worst = 0.0
    for _, g in df.groupby(list(qis), dropna=False):
        r = dist(g[sensitive]) - q
        worst = max(worst, float(np.abs(np.cumsum(r)).sum() / (m - 1)))
    return worst


class TestOrderedTCloseness:
    def test_worked_example(self):
        df = pd.DataFrame({"g": ["a", "a", "b", "b", "b"], "sal": [3, 4, 5, 6, 11]})
        r = anonymity_report(df, ["g"], "sal", k=2)
        # class a: CDF (.5, 1, 1, 1) vs (.2, .4, .6, .8): (.3+.6+.4+.2)/4
        assert r.t_closeness_ordered == pytest.approx(0.375)

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 50).flatmap(lambda n: st.tuples(
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n),
        st.lists(st.one_of(st.none(), st.integers(0, 6)), min_size=n, max_size=n))))
    def test_matches_the_literal_definition(self, cols):
        df = pd.DataFrame({"g": cols[0], "v": pd.Series(cols[1], dtype="Float64")})
        r = anonymity_report(df, ["g"], "v", k=1)
        assert r.t_closeness_ordered == pytest.approx(_ordered_reference(df, ["g"], "v"),
                                                      abs=1e-12)

    def test_categorical_sensitive_has_no_ordered_distance(self):
        df = pd.DataFrame({"g": ["a", "b"], "s": ["x", "y"]})
        assert anonymity_report(df, ["g"], "s").t_closeness_ordered is None


def _brute_force_enforce(df, qis, k, hier, max_suppression):
    """Every level combination, generalized and counted with a plain groupby."""
    import itertools

    n = len(df)
    budget = math.floor(max_suppression * n + 1e-9)
    feasible = []
    for node in itertools.product(*[range(len(hier.get(c, [])) + 1) for c in qis]):
        gen = df.copy()
        for c, lv in zip(qis, node, strict=True):
            if lv:
                gen[c] = hier[c][lv - 1].apply(df[c])
        size = gen.groupby(list(qis), dropna=False)[qis[0]].transform("size") if n else \
            pd.Series([], dtype=int)
        small = (size < k).to_numpy()
        if small.sum() <= budget:
            sizes = gen[~small].groupby(list(qis), dropna=False).size()
            dm = int((sizes**2).sum()) + int(small.sum()) * n
            feasible.append((sum(node), dm, node, gen[~small]))
    return feasible


class TestReviewHardening:
    """Findings of the adversarial review (issue 4), each with the attack tried."""

    @settings(max_examples=40, deadline=None)
    @given(st.integers(1, 40).flatmap(lambda n: st.tuples(
        st.lists(st.integers(0, 99), min_size=n, max_size=n),
        st.lists(st.sampled_from(["75011", "75012", "13001", "69003", None]), min_size=n,
                 max_size=n),
        st.lists(st.sampled_from(["f", "m"]), min_size=n, max_size=n))),
        st.integers(1, 4), st.sampled_from([0.0, 0.1, 0.3]))
    def test_enforce_k_matches_a_brute_force_search(self, cols, k, max_suppression):
        df = pd.DataFrame({"age": pd.Series(cols[0], dtype="Int64"),
                           "zip": pd.Series(cols[1], dtype=object), "sex": cols[2]},
                          index=np.arange(len(cols[0])) * 3 + 7)
        hier = {"age": [Bucket(width=10), Bucket(width=50), Suppress("*")],
                "zip": [PostcodePrefix(2), Suppress("*")]}
        qis = ("age", "zip", "sex")
        feasible = _brute_force_enforce(df, qis, k, hier, max_suppression)
        if not feasible:
            with pytest.raises(PolicyError):
                enforce_k(df, qis, k, hier, max_suppression=max_suppression)
            return
        res = enforce_k(df, qis, k, hier, max_suppression=max_suppression)
        best_total = min(f[0] for f in feasible)
        best_dm = min(f[1] for f in feasible if f[0] == best_total)
        assert sum(res.levels.values()) == best_total
        assert res.discernibility == best_dm
        assert res.rows_suppressed <= math.floor(max_suppression * len(df) + 1e-9)
        # the chosen node's kept rows, exactly: same index, same generalized values
        chosen = next(f for f in feasible if f[2] == tuple(res.levels[c] for c in qis))
        pd.testing.assert_frame_equal(res.frame, chosen[3], check_dtype=False)
        assert len(res.frame) + res.rows_suppressed == len(df)
        assert res.frame.empty or res.report.k >= k

    def test_suppressed_rows_leave_no_trace_in_any_column(self):
        df = pd.DataFrame({"zip": ["750", "750", "131", "750"],
                           "secret": ["a", "b", "LEAK", "c"]}, index=[10, 11, 12, 13])
        res = enforce_k(df, ["zip"], 2, {}, max_suppression=0.25)
        assert res.rows_suppressed == 1 and 12 not in res.frame.index
        assert "LEAK" not in res.frame.to_string() and "131" not in res.frame.to_string()

    def test_levels_that_reindex_are_refused_and_arrays_are_positional(self):
        # before: a level returning a fresh RangeIndex was aligned by label -> all NaN
        df = pd.DataFrame({"a": [1, 2, 3, 4]}, index=[5, 6, 7, 8])
        with pytest.raises(InputError, match="changed the index of column 'a'"):
            enforce_k(df, ["a"], 2, {"a": [lambda s: pd.Series([0, 0, 1, 1])]})
        with pytest.raises(InputError, match="changed the index"):
            enforce_k(df, ["a"], 2, {"a": [lambda s: s.sort_values(ascending=False)]})
        res = enforce_k(df, ["a"], 2, {"a": [lambda s: (s.to_numpy() > 2).astype(int)]})
        assert res.frame["a"].tolist() == [0, 0, 1, 1] and res.report.k == 2

    def test_a_search_space_too_large_is_refused_before_any_work(self):
        df = pd.DataFrame({f"c{i}": [1, 2] for i in range(8)})
        hier = {c: [Suppress("*")] * 6 for c in df.columns}  # 7^8 = 5.7M combinations
        with pytest.raises(InputError, match="level combinations"):
            enforce_k(df, list(df.columns), 2, hier)

    def test_a_sensitive_column_named_with_the_empty_string_is_measured(self):
        # before: `if sensitive` treated "" as no sensitive column
        df = pd.DataFrame({"a": [1, 1], "": ["x", "y"]})
        assert anonymity_report(df, ["a"], "", k=1).l_distinct == 2

    @settings(max_examples=40, deadline=None)
    @given(frames)
    def test_prosecutor_risk_is_the_mean_and_max_of_one_over_class_size(self, cols):
        df = pd.DataFrame({"zip": pd.Series(cols[0], dtype=object),
                           "age": pd.Series(cols[1], dtype="Int64")})
        r = anonymity_report(df, ["zip", "age"], k=2)
        size = df.groupby(["zip", "age"], dropna=False)["zip"].transform("size")
        assert r.risk_max == pytest.approx(float((1 / size).max()))
        assert r.risk_mean == pytest.approx(float((1 / size).mean()))
        assert r.records_below_k == int((size < 2).sum())

    @pytest.mark.parametrize("qis,sensitive", [(["a"], None), (["q"], "a")])
    def test_unhashable_cells_are_refused_naming_the_column(self, qis, sensitive):
        # before: a bare TypeError from pandas
        df = pd.DataFrame({"q": [1, 1, 2], "a": [[1], [1], [2]]})
        with pytest.raises(InputError, match="column 'a': values must be hashable"):
            anonymity_report(df, qis, sensitive)

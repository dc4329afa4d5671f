"""k-anonymity, l-diversity and t-closeness: measure them, and enforce k by generalizing.

Records with equal quasi-identifier values form an *equivalence class*. Everything here is
computed from integer class ids (each quasi-identifier factorized, combined in mixed radix, then
counted with ``bincount``), so 1M rows × 4 quasi-identifiers take a fraction of a second and no
Python loop runs per row or per class. Nulls are a value like any other.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pets._errors import InputError, PolicyError
from pets.pseudo._base import Transform

__all__ = ["AnonymityReport", "Enforcement", "anonymity_report", "enforce_k"]

Level = Transform | Callable[[pd.Series], pd.Series]
#: Most level combinations enforce_k tries (each costs a pass over the table).
MAX_NODES = 100_000


def _codes(series: pd.Series) -> tuple[np.ndarray, int]:
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy(dtype=np.int64)
        card = len(series.cat.categories)
        if (codes < 0).any():
            codes = np.where(codes < 0, card, codes)
            card += 1
        return codes, max(card, 1)
    try:
        codes, uniq = pd.factorize(series, use_na_sentinel=False)
    except TypeError:  # unhashable cells (lists, dicts): no equality classes to count
        raise InputError(f"column {series.name!r}: values must be hashable scalars to form "
                         "equivalence classes (convert lists or dicts first)") from None
    return np.asarray(codes, dtype=np.int64), max(len(uniq), 1)


def _combine(columns: Sequence[tuple[np.ndarray, int]], n: int) -> tuple[np.ndarray, int]:
    """Class id per row from per-column codes (mixed radix, refactorized when it would overflow)."""
    if not columns:
        return np.zeros(n, dtype=np.int64), (1 if n else 0)
    key = np.zeros(n, dtype=np.int64)
    span = 1
    for codes, card in columns:
        if span * card >= 2**62:
            key, uniq = pd.factorize(key)
            key = np.asarray(key, dtype=np.int64)
            span = max(len(uniq), 1)
        key = key * card + codes
        span *= card
    ids, uniq = pd.factorize(key)
    return np.asarray(ids, dtype=np.int64), len(uniq)


def _check_columns(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"unknown column(s) {missing}; the frame has {list(df.columns)}")


@dataclass(frozen=True)
class AnonymityReport:
    """Re-identification risk of a table with respect to its quasi-identifiers.

    Attributes:
        rows: Number of records.
        quasi_identifiers: The columns an attacker may know.
        sensitive: The sensitive column, if given.
        k_target: The k the table is checked against.
        k: Size of the smallest equivalence class (0 for an empty table): the table is
            k-anonymous for every k up to this.
        classes: Number of equivalence classes.
        uniques: Records that are alone in their class (class size 1).
        records_below_k: Records in classes smaller than ``k_target``.
        share_below_k: ``records_below_k / rows``.
        risk_max: Prosecutor re-identification risk of the most exposed record (``1/k``).
        risk_mean: Average prosecutor risk over records (``classes / rows``).
        class_sizes: Histogram ``{class size: number of classes}`` (sizes above 50 grouped as 51).
        l_distinct: Fewest distinct sensitive values in a class (distinct l-diversity).
        l_entropy: ``exp`` of the smallest per-class entropy of the sensitive value (entropy
            l-diversity; equals ``l_distinct`` when values are uniform).
        t_closeness: Largest distance between a class's sensitive distribution and the whole
            table's — the Earth Mover's Distance with equal ground distance, i.e. the total
            variation distance (categorical t-closeness).
        t_closeness_ordered: For a numeric sensitive column only: the largest EMD with the
            *ordered* ground distance ``|i - j| / (m - 1)`` over the m sorted distinct values
            (Li et al. 2007), which also weighs how far apart the values are. Nulls count as
            the largest value.
    """

    rows: int
    quasi_identifiers: tuple[str, ...]
    sensitive: str | None
    k_target: int
    k: int
    classes: int
    uniques: int
    records_below_k: int
    share_below_k: float
    risk_max: float
    risk_mean: float
    class_sizes: Mapping[int, int] = field(default_factory=dict)
    l_distinct: int | None = None
    l_entropy: float | None = None
    t_closeness: float | None = None
    t_closeness_ordered: float | None = None

    def satisfies(self, k: int | None = None, l: int | float | None = None,  # noqa: E741
                  t: float | None = None) -> bool:
        """True when the table meets every given target (``k`` defaults to ``k_target``)."""
        k = self.k_target if k is None else k
        ok = self.rows == 0 or self.k >= k
        if l is not None:
            ok = ok and self.l_distinct is not None and self.l_distinct >= l
        if t is not None:
            ok = ok and self.t_closeness is not None and self.t_closeness <= t
        return ok

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "rows": self.rows, "quasi_identifiers": list(self.quasi_identifiers),
            "sensitive": self.sensitive, "k_target": self.k_target, "k": self.k,
            "classes": self.classes, "uniques": self.uniques,
            "records_below_k": self.records_below_k, "share_below_k": self.share_below_k,
            "risk_max": self.risk_max, "risk_mean": self.risk_mean,
            "class_sizes": {str(s): c for s, c in self.class_sizes.items()},
            "l_distinct": self.l_distinct, "l_entropy": self.l_entropy,
            "t_closeness": self.t_closeness,
            "t_closeness_ordered": self.t_closeness_ordered, "satisfies_k": self.satisfies(),
        }

    def __str__(self) -> str:
        parts = [f"k={self.k} (target {self.k_target}: "
                 f"{'met' if self.satisfies() else 'NOT met'})",
                 f"rows={self.rows}", f"classes={self.classes}", f"uniques={self.uniques}",
                 f"below k={self.share_below_k:.2%}", f"risk max={self.risk_max:.3g}",
                 f"mean={self.risk_mean:.3g}"]
        if self.sensitive is not None:
            parts += [f"l-distinct={self.l_distinct}", f"l-entropy={self.l_entropy:.3g}",
                      f"t={self.t_closeness:.3g}"]
        return "AnonymityReport(" + ", ".join(parts) + ")"

    def _repr_html_(self) -> str:
        ok = self.satisfies()
        colour = "#1b7f3b" if ok else "#b3261e"
        rows = [
            ("k (smallest class)", f"{self.k:,}"),
            ("target k", f"{self.k_target:,}"),
            ("records", f"{self.rows:,}"),
            ("equivalence classes", f"{self.classes:,}"),
            ("unique records", f"{self.uniques:,}"),
            ("records in classes below k", f"{self.records_below_k:,} ({self.share_below_k:.2%})"),
            ("prosecutor risk: max", f"{self.risk_max:.4g}"),
            ("prosecutor risk: mean", f"{self.risk_mean:.4g}"),
        ]
        if self.sensitive is not None:
            rows += [
                (f"distinct l-diversity ({self.sensitive})", f"{self.l_distinct}"),
                ("entropy l-diversity", f"{self.l_entropy:.4g}"),
                ("t-closeness (total variation)", f"{self.t_closeness:.4g}"),
            ]
            if self.t_closeness_ordered is not None:
                rows.append(("t-closeness (ordered EMD)", f"{self.t_closeness_ordered:.4g}"))
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(a)}</th>"
                       f"<td style='text-align:right'>{html.escape(b)}</td></tr>"
                       for a, b in rows)
        top = max(self.class_sizes.values(), default=1)
        bars = "".join(
            f"<tr><td style='text-align:right'>{'≥51' if s == 51 else s}</td><td>"
            f"<div style='background:{'#b3261e' if s < self.k_target else '#1b7f3b'};"
            f"height:0.8em;width:{max(1, int(120 * c / top))}px'></div></td>"
            f"<td style='text-align:right'>{c:,}</td></tr>"
            for s, c in sorted(self.class_sizes.items())[:25])
        qis = ", ".join(html.escape(q) for q in self.quasi_identifiers)
        return (
            "<div class='pets-anonymity-report'>"
            f"<p><b>Anonymity report</b> on <code>{qis}</code>: "
            f"<span style='color:{colour};font-weight:bold'>"
            f"{'k-anonymous' if ok else 'not k-anonymous'} for k={self.k_target}</span></p>"
            f"<table>{body}</table>"
            "<p>Class sizes (classes per size; red = below target k)</p>"
            f"<table>{bars}</table></div>")


def anonymity_report(df: pd.DataFrame, quasi_identifiers: Sequence[str],
                     sensitive: str | None = None, *, k: int = 5) -> AnonymityReport:
    """Measure k-anonymity, l-diversity, t-closeness and prosecutor risk.

    Args:
        df: The table.
        quasi_identifiers: Columns an attacker may know (age band, postcode, …).
        sensitive: Optional sensitive column for l-diversity and t-closeness (categorical:
            every distinct value, null included, is a category).
        k: The target k (for ``records_below_k``, ``satisfies()`` and the HTML view).

    Raises:
        InputError: Unknown columns or ``k < 1``.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"zip": ["750", "750", "750", "131"],
        ...                    "age": ["30s", "30s", "30s", "40s"],
        ...                    "dx": ["flu", "flu", "cold", "flu"]})
        >>> r = anonymity_report(df, ["zip", "age"], sensitive="dx", k=2)
        >>> r.k, r.classes, r.uniques, r.records_below_k, r.risk_max, r.risk_mean
        (1, 2, 1, 1, 1.0, 0.5)
        >>> r.l_distinct, round(r.t_closeness, 3)
        (1, 0.25)
    """
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    qis = tuple(quasi_identifiers)
    _check_columns(df, [*qis, *([sensitive] if sensitive is not None else [])])
    n = len(df)
    ids, n_classes = _combine([_codes(df[c]) for c in qis], n)
    sens = df[sensitive] if sensitive is not None else None
    return _report(ids, n_classes, n, qis, sens, sensitive, k)


def _report(ids: np.ndarray, n_classes: int, n: int, qis: tuple[str, ...],
            sens: pd.Series | None, sensitive: str | None, k: int) -> AnonymityReport:
    if n == 0:
        return AnonymityReport(0, qis, sensitive, k, 0, 0, 0, 0, 0.0, 0.0, 0.0, {},
                               0 if sens is not None else None,
                               0.0 if sens is not None else None,
                               0.0 if sens is not None else None)
    sizes = np.bincount(ids, minlength=n_classes)
    kmin = int(sizes.min())
    below = int(sizes[sizes < k].sum())
    hist_sizes = np.minimum(sizes, 51)
    hist = np.bincount(hist_sizes)
    class_sizes = {int(s): int(c) for s, c in enumerate(hist) if c}
    l_distinct: int | None = None
    l_entropy: float | None = None
    t_close: float | None = None
    t_ordered: float | None = None
    if sens is not None:
        s_codes, n_s = _codes(sens)
        pair = ids * n_s + s_codes
        pcodes, puniq = pd.factorize(pair)
        cnt = np.bincount(pcodes).astype(np.float64)
        puniq = np.asarray(puniq, dtype=np.int64)
        pclass = puniq // n_s
        ps = puniq % n_s
        l_distinct = int(np.bincount(pclass, minlength=n_classes).min())
        p = cnt / sizes[pclass]
        entropy = -np.bincount(pclass, weights=p * np.log(p), minlength=n_classes)
        l_entropy = float(math.exp(max(float(entropy.min()), 0.0)))
        q = np.bincount(s_codes, minlength=n_s) / n
        dist = 0.5 * (1.0 + np.bincount(pclass, weights=np.abs(p - q[ps]) - q[ps],
                                        minlength=n_classes))
        t_close = float(max(dist.max(), 0.0))
        if _is_numeric(sens):
            t_ordered = _ordered_emd(sens, ids, n_classes, sizes)
    return AnonymityReport(
        rows=n, quasi_identifiers=qis, sensitive=sensitive, k_target=k, k=kmin,
        classes=n_classes, uniques=int((sizes == 1).sum()), records_below_k=below,
        share_below_k=below / n, risk_max=1.0 / kmin, risk_mean=n_classes / n,
        class_sizes=class_sizes, l_distinct=l_distinct, l_entropy=l_entropy,
        t_closeness=t_close, t_closeness_ordered=t_ordered)


def _is_numeric(series: pd.Series) -> bool:
    return (pd.api.types.is_numeric_dtype(series.dtype)
            and not pd.api.types.is_bool_dtype(series.dtype))


def _ordered_emd(sens: pd.Series, ids: np.ndarray, n_classes: int, sizes: np.ndarray) -> float:
    """Largest per-class EMD with ordered ground distance, without a loop over classes.

    With the m distinct values sorted, EMD(P, Q) = Σ_i |F_c(i) - F(i)| / (m - 1) where F is the
    table's CDF and F_c the class's. F_c is a step function that changes only at values present
    in the class, so the sum splits into segments of constant F_c = a; on a segment
    Σ |a - F(i)| follows from prefix sums of F and the point where F (non-decreasing) crosses a.
    """
    codes, uniq = pd.factorize(sens, sort=True, use_na_sentinel=False)
    s = np.asarray(codes, dtype=np.int64)
    m = len(uniq)
    if m <= 1:
        return 0.0
    n = len(s)
    q = np.bincount(s, minlength=m) / n
    f = np.cumsum(q)                                   # F(i), i = 0..m-1
    pref = np.concatenate([[0.0], np.cumsum(f)])       # pref[i] = Σ_{k<i} F(k)
    pair = ids * m + s
    keys, cnt = np.unique(pair, return_counts=True)    # sorted by class, then value
    pc = keys // m
    pj = keys % m
    p = cnt / sizes[pc]
    csum = np.cumsum(p)
    first = np.r_[True, pc[1:] != pc[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
    a = csum - np.where(start > 0, csum[start - 1], 0.0)   # F_c on [j_k, next_j)
    last = np.r_[pc[1:] != pc[:-1], True]
    nxt = np.where(last, m - 1, np.r_[pj[1:], m - 1])        # exclusive end (i <= m-2)
    lo, hi1 = pj, np.maximum(nxt, pj)
    mid = np.clip(np.searchsorted(f, a, side="right"), lo, hi1)
    seg = (a * (mid - lo) - (pref[mid] - pref[lo])
           + (pref[hi1] - pref[mid]) - a * (hi1 - mid))
    total = np.bincount(pc, weights=seg, minlength=n_classes)
    lead = pref[pj[first]]                               # F_c = 0 before the first value
    total[pc[first]] += lead
    return float(max(total.max() / (m - 1), 0.0))


@dataclass(frozen=True)
class Enforcement:
    """What :func:`enforce_k` did, and what it cost in utility.

    Attributes:
        frame: The generalized table with suppressed rows removed (whole rows: no column of
            a suppressed record remains). The index is kept: reset it first if it identifies
            people.
        levels: Generalization level chosen per quasi-identifier (0 = unchanged).
        level_names: The transform applied per quasi-identifier (``"original"`` at level 0).
        rows_suppressed: Rows removed because their class stayed below k.
        suppression_rate: ``rows_suppressed / rows``.
        discernibility: Discernibility metric: the sum of squared class sizes of kept rows plus
            ``rows_suppressed × rows`` (lower is better).
        nodes_evaluated: Level combinations tried.
        report: :func:`anonymity_report` of the output.
    """

    frame: pd.DataFrame
    levels: Mapping[str, int]
    level_names: Mapping[str, str]
    rows_suppressed: int
    suppression_rate: float
    discernibility: int
    nodes_evaluated: int
    report: AnonymityReport

    def to_dict(self) -> dict[str, Any]:
        return {"levels": dict(self.levels), "level_names": dict(self.level_names),
                "rows_suppressed": self.rows_suppressed,
                "suppression_rate": self.suppression_rate,
                "discernibility": self.discernibility,
                "nodes_evaluated": self.nodes_evaluated, "report": self.report.to_dict()}

    def _repr_html_(self) -> str:
        lv = "".join(f"<tr><th style='text-align:left'>{html.escape(c)}</th>"
                     f"<td>{self.levels[c]}</td><td>{html.escape(self.level_names[c])}</td></tr>"
                     for c in self.levels)
        return ("<div><p><b>enforce_k</b>: "
                f"{self.rows_suppressed:,} rows suppressed ({self.suppression_rate:.2%}), "
                f"discernibility {self.discernibility:,}</p>"
                f"<table><tr><th>column</th><th>level</th><th>transform</th></tr>{lv}</table>"
                f"{self.report._repr_html_()}</div>")


def _level_name(level: Level) -> str:
    if isinstance(level, Transform):
        return repr(level)
    return getattr(level, "__name__", type(level).__name__)


def enforce_k(df: pd.DataFrame, quasi_identifiers: Sequence[str], k: int,
              hierarchies: Mapping[str, Sequence[Level]], *,
              max_suppression: float = 0.0, sensitive: str | None = None) -> Enforcement:
    """Generalize quasi-identifiers along hierarchies until every class has at least k records.

    Each quasi-identifier has levels ``0`` (unchanged) and ``1..L`` = ``hierarchies[col]`` (most
    specific first, each applied to the *original* column). Level combinations are tried in
    order of total level; among the feasible ones at the lowest total level, the one with the
    smallest discernibility wins. A combination is feasible when the records left in classes
    below k are at most ``max_suppression`` of the table; those records are removed.

    Args:
        df: The table.
        quasi_identifiers: Columns to make k-anonymous.
        k: Minimum class size.
        hierarchies: Per column, a list of generalizers (Transforms or Series -> Series
            functions). Columns without a hierarchy are never generalized.
        max_suppression: Largest share of rows that may be removed (0..1).
        sensitive: Passed to the final :func:`anonymity_report`.

    Returns:
        An :class:`Enforcement` with the new frame and its utility cost.

    Raises:
        InputError: Unknown columns, bad k or max_suppression, a level that changes the
            column's length or index, or more than ``MAX_NODES`` level combinations.
        PolicyError: k cannot be met even at the most general levels.

    Examples:
        >>> import pandas as pd
        >>> from pets.pseudo import Bucket, PostcodePrefix
        >>> df = pd.DataFrame({"age": [31, 33, 35, 38, 52, 57],
        ...                    "zip": ["75011", "75012", "75013", "75014", "13001", "13002"]})
        >>> res = enforce_k(df, ["age", "zip"], 2,
        ...                 {"age": [Bucket(width=10), Bucket(width=50)],
        ...                  "zip": [PostcodePrefix(3), PostcodePrefix(1)]})
        >>> dict(res.levels), res.rows_suppressed, res.report.k
        ({'age': 1, 'zip': 1}, 0, 2)
    """
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if not 0.0 <= max_suppression <= 1.0:
        raise InputError("max_suppression must be between 0 and 1")
    qis = tuple(quasi_identifiers)
    extra = set(hierarchies) - set(qis)
    if extra:
        raise InputError(f"hierarchies for columns that are not quasi-identifiers: {sorted(extra)}")
    _check_columns(df, qis)
    n = len(df)
    # Every level of every column, generalized once and factorized once.
    versions: dict[str, list[pd.Series]] = {}
    codes: dict[str, list[tuple[np.ndarray, int]]] = {}
    for c in qis:
        series = [df[c]]
        for level in hierarchies.get(c, ()):
            gen = level(df[c]) if not isinstance(level, Transform) else level.apply(df[c])
            if len(gen) != n:
                raise InputError(f"hierarchy level {_level_name(level)} changed the length of "
                                 f"column {c!r}")
            if isinstance(gen, pd.Series):
                # classes are counted by position but the frame is assembled by label: a level
                # that reorders or re-indexes would put values on the wrong rows
                if not gen.index.equals(df.index):
                    raise InputError(f"hierarchy level {_level_name(level)} changed the index "
                                     f"of column {c!r}")
            else:
                gen = pd.Series(gen, index=df.index, name=c)
            series.append(gen)
        versions[c] = series
        codes[c] = [_codes(s) for s in series]
    budget = math.floor(max_suppression * n + 1e-9)
    ranges = [range(len(versions[c])) for c in qis]
    if math.prod(len(r) for r in ranges) > MAX_NODES:
        raise InputError(f"enforce_k would try {math.prod(len(r) for r in ranges):,} level "
                         f"combinations (at most {MAX_NODES:,}): fewer levels or columns")
    nodes = sorted(itertools.product(*ranges), key=lambda node: (sum(node), node))
    evaluated = 0
    best: tuple[int, tuple[int, ...], np.ndarray, np.ndarray, int] | None = None
    for _total, group in itertools.groupby(nodes, key=sum):
        for node in group:
            evaluated += 1
            ids, n_classes = _combine([codes[c][lv] for c, lv in zip(qis, node, strict=True)], n)
            sizes = np.bincount(ids, minlength=n_classes) if n else np.zeros(0, np.int64)
            small = sizes < k
            suppressed = int(sizes[small].sum())
            if suppressed > budget:
                continue
            dm = int((sizes[~small].astype(np.int64) ** 2).sum()) + suppressed * n
            if best is None or dm < best[0]:
                best = (dm, node, ids, small, suppressed)
        if best is not None:
            break
    if best is None:
        raise PolicyError(
            f"k={k} cannot be met on {list(qis)} even at the most general levels with at most "
            f"{max_suppression:.2%} of rows suppressed: add coarser levels or allow more "
            "suppression")
    dm, node, ids, small, suppressed = best
    out = df.copy()
    for c, lv in zip(qis, node, strict=True):
        out[c] = versions[c][lv]
    keep = ~small[ids] if n else np.zeros(0, dtype=bool)
    out = out.take(np.flatnonzero(keep))
    names = {c: ("original" if lv == 0 else _level_name(hierarchies[c][lv - 1]))
             for c, lv in zip(qis, node, strict=True)}
    report = anonymity_report(out, qis, sensitive, k=k)
    return Enforcement(frame=out, levels=dict(zip(qis, node, strict=True)), level_names=names,
                       rows_suppressed=suppressed, suppression_rate=suppressed / n if n else 0.0,
                       discernibility=dm, nodes_evaluated=evaluated, report=report)

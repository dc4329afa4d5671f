"""Differentially private aggregates on Dask: bound per user on the workers, noise once on the driver.

The pipeline, and why it carries the pandas path's guarantee (``docs/scale-out.md``):

1. **Shuffle by the privacy unit** (``ddf.shuffle(on=privacy_unit)``): afterwards all rows of
   a user are in one partition.
2. **Contribution bounding per partition** with :func:`pets.dp._bounding.bound_contributions`,
   the function the pandas :class:`~pets.dp.Session` uses: each user keeps at most
   ``max_groups`` groups and ``max_rows`` rows per group, chosen by uniform random priorities
   from a numpy ``Generator`` seeded with ``(seed, partition number)``; ``seed`` is 128 bits
   from the OS CSPRNG, drawn once on the driver per release and never revealed. Over that
   seed, each user's kept rows are a uniform sample of the user's own rows, independent of
   the other users', so the other users' kept rows have the same distribution with or without
   one user, who changes the bounded data by at most ``G`` groups × ``C`` rows — the
   stability the pandas path's sensitivity rests on. (For a *fixed* seed this fails:
   priorities are drawn by position, and one added user shifts the others'.) A retried
   partition recomputes the same rows.
3. **Exact partial aggregates per partition**, with the pandas path's own row functions:
   counts and integer sums on the fixed-point grid (:func:`pets.dp._session._encode`) per
   key; counts per (key, bin) of :func:`pets.dp._session.histogram_bins`; counts per
   (key, cell) of :func:`pets.dp._session.quantile_cells` for quantiles. Integer sums are
   exact and associative, so the tree reduction to the driver gives exactly the arrays a
   single machine would compute from the same bounded rows.
4. **Noise once, on the driver**: the reduced arrays go to
   :meth:`pets.dp.Session.release_aggregates`, the step the pandas path runs after its own
   bounding — the same measurements, budget shares, ``d_in``, ledger spend, audit event and
   release assembly, with no second copy to drift. No partition function draws noise, so a
   retried or speculative task can never produce a second noisy answer.

Privacy:
    **Histograms** are counts over (key × bin) cells: the driver receives exactly the cell
    vector the pandas path builds from the same bounded rows, and ``make_laplace`` /
    ``make_gaussian`` noise it with the same ``d_in`` (``G·C`` in L1, ``√G·C`` in L2); with
    private keys, only the cells of the keys that pass the threshold are measured.

    **Quantiles** need no rows on the driver. OpenDP 0.16's ``make_private_quantile`` is
    ``make_quantile_score_candidates`` followed by report-noisy-max on the scores (then the
    index → candidate map), and the score of candidate ``c`` reads the data only through
    ``#(x < c)`` and ``#(x > c)`` (``n`` is their sum plus ``#(x = c)``). Values in one cell of
    :func:`~pets.dp._session.quantile_cells` — strictly between two adjacent candidates,
    exactly on one, or below the first / above the last — compare identically with *every*
    candidate. So the per-key counts over the ``2n + 1`` cells determine every score, and a
    vector rebuilt with one representative value per cell repeated by its count (the
    candidate for a point cell, the midpoint for an open one,
    :func:`~pets.dp._session.quantile_cell_values`) has exactly the scores of the clipped
    values. The driver runs the *same* OpenDP measurement on it: the output distribution is
    that of the pandas path on the same bounded rows, with the same ``d_in`` (``C`` per key,
    ``G`` keys). Values are clipped to ``[lo, hi]`` first and the candidates start at ``lo``
    and end at ``hi``, so the outer cells are empty. Tested by a hypothesis property test
    (``tests/dp/test_session.py::TestQuantileCells``) against OpenDP's own score function.

    Memory: the cluster returns a ``keys × (2n + 1)`` count matrix (``n`` = candidates; the
    engine refuses more than ``MAX_QUANTILE_CELLS`` cells). The rebuilt vector has one entry
    per bounded row of a key — no cheaper input gives the same scores, since the scores grow
    with the counts — and is built one key at a time, so the driver holds the largest group's
    values (8 bytes a row), never the whole column as the pandas path does. A key with more
    rows than ``pets.dp._session.MAX_QUANTILE_ROWS`` (or than the driver can allocate) is
    refused before the spend, not by a ``MemoryError`` inside it.

Supported on Dask: ``count``, ``sum``, ``mean``, ``variance``, ``histogram``, ``quantile``
and ``median``, over public keys, keys selected privately (OpenDP's threshold mechanism on
the reduced counts, on the driver), or no grouping.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pets._errors import InputError
from pets.dp._session import _encode, histogram_bins, quantile_candidates, quantile_cells

if TYPE_CHECKING:
    import dask.dataframe as dd

    from pets.dp import Budget, Ledger, Release
    from pets.dp._session import Query

__all__ = ["MAX_QUANTILE_CELLS", "BoundedAggregates", "BoundingSpec", "DaskQuery",
           "DaskSession", "bound_partition", "bounded_aggregates"]

PlanKey = tuple[Any, ...]
_KINDS = ("count", "sum", "csum", "csq", "hist", "quantile")

#: Largest ``keys × (2 · candidates + 1)`` quantile count matrix the driver accepts
#: (int64: 256 MiB); beyond it, use fewer candidates or keys.
MAX_QUANTILE_CELLS = 2**25


def _family(key: PlanKey) -> PlanKey:
    """The partial aggregate a plan key reads: quantiles at several alphas share their cells."""
    return ("quantile", *key[1:4], key[5]) if key[0] == "quantile" else key


def _width(family: PlanKey) -> int:
    """Cells per key of a partial aggregate (1 for counts and sums)."""
    if family[0] == "hist":
        return len(family[2]) - 1
    if family[0] == "quantile":
        return 2 * int(family[4]) + 1
    return 1


@dataclass(frozen=True)
class BoundingSpec:
    """Everything a partition needs to bound and aggregate: picklable, holds no secret.

    ``seed`` only chooses which rows are kept (sampling, not noise), but it must stay unknown
    to whoever sees the releases: with a known seed, adding one user shifts the other users'
    priorities in its partition, which voids the stability argument.
    """

    privacy_unit: str
    by: tuple[str, ...]
    keys: tuple[tuple[Any, ...], ...]
    plan: tuple[PlanKey, ...]
    max_groups: int
    max_rows: int
    seed: int

    def __post_init__(self) -> None:
        if self.max_groups < 1 or self.max_rows < 1:
            raise InputError("max_groups and max_rows must be >= 1")
        for key in self.plan:
            if key[0] not in _KINDS:
                raise InputError(f"the Dask engine cannot compute {key[0]!r} aggregates")

    @property
    def columns(self) -> list[str]:
        measured = [k[1] for k in self.plan if len(k) > 1]
        return list(dict.fromkeys([self.privacy_unit, *self.by, *measured]))

    @property
    def families(self) -> tuple[PlanKey, ...]:
        """The distinct partial aggregates of the plan, in plan order (``_m`` indexes it)."""
        return tuple(dict.fromkeys(_family(k) for k in self.plan))


def _nan_for_missing(values: Any) -> pd.Index:
    """``values`` as an object Index with every missing value (None, NaN, NA, NaT) as NaN:
    a ``MultiIndex`` matches any missing value with any other, a flat Index only NaN."""
    idx = pd.Index(values, dtype=object)
    missing = np.asarray(idx.isna(), dtype=bool)
    out: pd.Index = idx.where(~missing, np.nan) if missing.any() else idx
    return out


@functools.lru_cache(maxsize=2)
def _key_lookup(keys: tuple[tuple[Any, ...], ...],
                ncols: int) -> tuple[tuple[pd.Index, ...], pd.Index] | None:
    """Per grouping column, the Index of the values its keys take; and, per key, its code
    ``Σ code_i · radix_i`` over those levels, as an Index (``None``: the radix product would
    overflow int64). Cached per process: every partition of a release asks for the same keys.
    """
    levels: list[pd.Index] = []
    codes: list[np.ndarray] = []
    for i in range(ncols):
        code, uniq = pd.factorize(_nan_for_missing([k[i] for k in keys]),
                                  use_na_sentinel=False)
        levels.append(pd.Index(uniq, dtype=object))
        codes.append(np.asarray(code, dtype=np.int64))
    if math.prod(max(len(lv), 1) for lv in levels) > 2**62:
        return None
    combined = np.zeros(len(keys), dtype=np.int64)
    for lv, code in zip(levels, codes, strict=True):
        combined = combined * max(len(lv), 1) + code
    return tuple(levels), pd.Index(combined)


def _group_codes(frame: pd.DataFrame, spec: BoundingSpec) -> np.ndarray:
    """Index of each row's group in ``spec.keys`` (``-1``: not a public key, dropped).

    Matches as ``MultiIndex.get_indexer`` would (Python equality on object values, NaN to
    NaN), per column against the values the keys take, so a partition costs O(its rows)
    after the first (building a ``MultiIndex`` of every key per partition cost O(keys)).
    """
    if not spec.by:
        return np.zeros(len(frame), dtype=np.int64)
    lookup = _key_lookup(spec.keys, len(spec.by))
    if lookup is None or not lookup[1].is_unique:  # huge radix or keys that compare equal
        key_index = pd.MultiIndex.from_tuples(list(spec.keys), names=list(spec.by))
        rows = pd.MultiIndex.from_frame(frame[list(spec.by)].astype(object))
        return np.asarray(key_index.get_indexer(rows), dtype=np.int64)
    levels, key_codes = lookup
    combined = np.zeros(len(frame), dtype=np.int64)
    found = np.ones(len(frame), dtype=bool)
    for lv, col in zip(levels, spec.by, strict=True):
        rc = np.asarray(lv.get_indexer(_nan_for_missing(frame[col])), dtype=np.int64)
        found &= rc >= 0
        combined = combined * max(len(lv), 1) + np.where(rc >= 0, rc, 0)
    out = np.asarray(key_codes.get_indexer(pd.Index(combined)), dtype=np.int64)
    out[~found] = -1
    return out


def _empty_partial(spec: BoundingSpec) -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0, np.int64) for c in ("_m", "_group", "_cell", "_n")})


#: Kinds of object columns (``pandas.api.types.infer_dtype``) whose equal values also hash
#: equal in Dask's shuffle: one user is never split between partitions.
_SAFE_OBJECT_UNITS = frozenset({"string", "integer", "bytes", "boolean", "empty"})


def _check_unit_types(unit: pd.Series, name: str) -> None:
    """Refuse an object privacy-unit column whose equal values may hash apart.

    ``pandas.factorize`` (the pandas path's notion of one user) takes ``1``, ``1.0`` and
    ``True`` — or ``0.0`` and ``-0.0`` — as one value; Dask's shuffle hashes object values in
    a way that can send them to different partitions, where each would be bounded on its own
    (up to ``2·C`` rows for one user). Typed columns (int, float, string, categorical) hash
    consistently.
    """
    if unit.dtype != object:
        return
    kind = pd.api.types.infer_dtype(unit, skipna=False)
    if kind not in _SAFE_OBJECT_UNITS:
        raise InputError(f"privacy unit column {name!r} is an object column of {kind} values: "
                         "equal ids of different types (1 and 1.0) could be split between "
                         "Dask partitions; cast it to one type first (e.g. .astype(str))")


def bound_partition(frame: pd.DataFrame, spec: BoundingSpec,
                    partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    """Bound one partition's users and return its exact partial aggregates.

    The partition must hold *all* rows of each of its users (shuffle by the unit first).
    Returns one row per non-zero (aggregate, key, cell): ``_m`` (index into
    ``spec.families``), ``_group`` (index into ``spec.keys``), ``_cell`` (0 for counts and
    sums; the bin of a histogram; the :func:`~pets.dp._session.quantile_cells` cell of the
    value clipped to the bounds for quantiles) and ``_n`` (int64: the row count, or the sum
    of fixed-point values for ``sum``/``csum``/``csq``).

    Privacy:
        Not a release: exact bounded partial aggregates that only the driver sees, where
        noise is added once. Over a secret ``spec.seed``, each user's kept rows are a uniform
        sample of that user's rows, independent of the other users' (a retry with the same
        seed and partition number keeps the same rows); no noise is drawn here.
    """
    from pets.dp._bounding import bound_contributions, measured_column

    number = int((partition_info or {}).get("number", 0))
    frame = frame[spec.columns]
    unit = frame[spec.privacy_unit]
    if unit.isna().any():
        raise InputError(f"privacy unit column {spec.privacy_unit!r} has null values")
    _check_unit_types(unit, spec.privacy_unit)
    measured = sorted({k[1] for k in spec.plan if len(k) > 1})
    values = {c: measured_column(frame, c) for c in measured}
    groups = _group_codes(frame, spec)
    # A canonical row order — by unit (codes of the sorted distinct units), key, then the
    # measured values — so the kept rows depend on the partition's rows as a multiset (which
    # the shuffle fixes) and the seed, not on the order a shuffle delivered them in; rows
    # equal in all of these contribute alike. Sorting integer codes is several times cheaper
    # than sorting the frame by its (string) columns.
    ucodes = np.asarray(pd.factorize(unit, sort=True)[0], dtype=np.int64)
    order = np.lexsort((*(values[c] for c in reversed(measured)), groups, ucodes))
    values = {c: v[order] for c, v in values.items()}
    groups = groups[order]
    sel = groups >= 0
    users = ucodes[order][sel]
    rng = np.random.default_rng([spec.seed, number])
    keep = bound_contributions(users, groups[sel], max_groups=spec.max_groups,
                               max_rows=spec.max_rows, rng=rng)
    rows = np.flatnonzero(sel)[keep]
    g = groups[rows]
    ones = np.ones(g.size, dtype=np.int64)
    zeros = np.zeros(g.size, dtype=np.int64)
    parts = []
    for m, fam in enumerate(spec.families):
        kind = fam[0]
        cell, n = zeros, ones
        if kind in ("sum", "csum", "csq"):
            n = _encode(fam, values[fam[1]][rows]).values
        elif kind == "hist":
            cell = histogram_bins(values[fam[1]][rows], fam[2])
        elif kind == "quantile":
            _, col, lo, hi, ncand = fam
            cell = quantile_cells(np.clip(values[col][rows], lo, hi),
                                  quantile_candidates(lo, hi, ncand))
        parts.append(pd.DataFrame({"_m": np.full(g.size, m, dtype=np.int64), "_group": g,
                                   "_cell": cell.astype(np.int64), "_n": n}))
    if not parts or not g.size:
        return _empty_partial(spec)
    out: pd.DataFrame = (pd.concat(parts, ignore_index=True)
                         .groupby(["_m", "_group", "_cell"], sort=True)["_n"].sum()
                         .reset_index())
    return out


@dataclass(frozen=True)
class BoundedAggregates:
    """Exact aggregates of the bounded data per public key, ready for noise on the driver.

    Attributes:
        spec: The bounding used (keys, caps, plan, seed).
        vectors: Plan key -> int64 array over ``spec.keys`` (zeros for empty keys): a vector
            for counts and sums, a ``keys × bins`` matrix for ``hist``, a ``keys × cells``
            matrix for ``quantile`` (one matrix shared by the alphas of a column) — the
            arrays :meth:`pets.dp.Session.release_aggregates` takes.
    """

    spec: BoundingSpec
    vectors: dict[PlanKey, np.ndarray] = field(default_factory=dict)

    def real(self, key: PlanKey) -> np.ndarray:
        """The array in the column's units (counts as they are; sums times the grid step)."""
        vec: np.ndarray = self.vectors[key].astype(np.float64)
        if key[0] in ("sum", "csum", "csq"):
            vec = vec * float(_encode(key, np.zeros(0)).step)
        return vec


def bounded_aggregates(
    data: dd.DataFrame | pd.DataFrame,
    spec: BoundingSpec,
    *,
    shuffle: bool = True,
    progress: bool | None = None,
) -> BoundedAggregates:
    """Shuffle by user, bound, clip and reduce: the exact inputs of the noise step.

    Args:
        data: The data (Dask; pandas runs the same partition function on one partition).
        spec: Keys, caps, plan and sampling seed.
        shuffle: Shuffle by the privacy unit first (turn off only when the data are already
            partitioned by user).
        progress: Show progress (default: when interactive).

    Returns:
        The exact bounded aggregates (small; computed).

    Raises:
        InputError: A missing column, null privacy units, non-numeric or non-finite measured
            values, or a part file the workers cannot read.
    """
    cols = spec.columns
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise InputError(f"column(s) {sorted(set(missing))} not in the frame")
    if isinstance(data, pd.DataFrame):
        partial = bound_partition(data[cols], spec)
    else:
        from pets.engines._progress import compute

        frame = data[cols]
        if shuffle:
            frame = frame.shuffle(on=spec.privacy_unit)
        parts = frame.map_partitions(bound_partition, spec, meta=_empty_partial(spec))
        with _reading():
            (partial,) = compute(parts.groupby(["_m", "_group", "_cell"])["_n"].sum(),
                                 progress=progress)
        partial = partial.reset_index()
    n = len(spec.keys)
    m = partial["_m"].to_numpy(dtype=np.int64)
    gi = partial["_group"].to_numpy(dtype=np.int64)
    ci = partial["_cell"].to_numpy(dtype=np.int64)
    vals = partial["_n"].to_numpy(dtype=np.int64)
    arrays: dict[PlanKey, np.ndarray] = {}
    for i, fam in enumerate(spec.families):
        width = _width(fam)
        arr = np.zeros((n, width), dtype=np.int64)
        sel = m == i
        arr[gi[sel], ci[sel]] = vals[sel]  # (aggregate, key, cell) rows are unique
        arrays[fam] = arr if fam[0] in ("hist", "quantile") else arr[:, 0]
    return BoundedAggregates(spec, {k: arrays[_family(k)] for k in spec.plan})


class DaskSession:
    """A :class:`pets.dp.Session` whose data is a Dask DataFrame.

    The budget, ledger, audit event, mechanisms and release format are the pandas session's
    own (a :class:`~pets.dp.Session` over an empty frame with the same columns keeps the
    budget); only the bounding and aggregation run on the cluster.

    Args:
        data: The Dask DataFrame.
        privacy_unit: Column identifying the unit protected (all rows of one value).
        budget: Total budget of this dataset and unit.
        ledger: A persistent :class:`~pets.dp.Ledger` (``None``: in memory).
        dataset_id: Name in the ledger (required with a ledger).
        audit: Hook receiving ``dp.release``.
        max_keys: Largest key set a query may use.

    Privacy:
        As :mod:`pets.dp._session`: user-level ε-DP / (ε, δ)-DP / ρ-zCDP per the budget,
        unit = all rows of one ``privacy_unit`` value; noise from OpenDP only, added once on
        the driver to the reduced exact aggregates; public: bounds, caps, keys. See
        :mod:`pets.engines._dp` for why the Dask path has the same sensitivity.

    Examples:
        >>> import dask.dataframe as dd
        >>> from pets.datasets import synthetic_events
        >>> from pets.dp import Budget
        >>> ddf = dd.from_pandas(synthetic_events(2_000, n_users=200, seed=1), npartitions=2)
        >>> s = DaskSession(ddf, privacy_unit="user_id", budget=Budget.pure(1.0))
        >>> r = s.query(by="country", keys=["DE", "FR"], max_rows=5).count().release(
        ...     epsilon=0.5, progress=False)
        >>> r.to_frame()["country"].tolist(), s.budget.spent.epsilon
        (['DE', 'FR'], 0.5)
    """

    def __init__(self, data: dd.DataFrame, *, privacy_unit: str, budget: Budget,
                 ledger: Ledger | None = None, dataset_id: str | None = None,
                 audit: Any = None, max_keys: int | None = None) -> None:
        from pets.dp import Session
        from pets.dp._session import DEFAULT_MAX_KEYS

        self.data = data
        self.session = Session(data._meta, privacy_unit=privacy_unit, budget=budget,
                               ledger=ledger, dataset_id=dataset_id, audit=audit,
                               max_keys=DEFAULT_MAX_KEYS if max_keys is None else max_keys)

    @property
    def budget(self) -> Any:
        """Total, spent and remaining budget (from the ledger)."""
        return self.session.budget

    def query(self, by: str | Sequence[str] | None = None, *, keys: Any = None,
              max_groups: int = 1, max_rows: int = 1) -> DaskQuery:
        """Start a query, as :meth:`pets.dp.Session.query`.

        ``keys`` are the public group keys, or ``"private"``: the keys present in the data
        are found on the cluster (never released as such) and only those whose noisy count
        passes OpenDP's threshold appear in the release (needs δ).
        """
        return DaskQuery(self, self.session.query(by, keys=keys, max_groups=max_groups,
                                                  max_rows=max_rows))

    def __repr__(self) -> str:
        return f"Dask{self.session!r}"


@dataclass(frozen=True)
class DaskQuery:
    """An immutable grouped DP query over a :class:`DaskSession`: every statistic of
    :class:`pets.dp.Query` (count, sum, mean, variance, quantile, median, histogram)."""

    dask_session: DaskSession
    query: Query

    def count(self) -> DaskQuery:
        """The number of rows per group (after contribution bounding)."""
        return DaskQuery(self.dask_session, self.query.count())

    def sum(self, column: str, *, bounds: tuple[float, float]) -> DaskQuery:
        """The sum of ``column`` clipped to ``bounds`` per group."""
        return DaskQuery(self.dask_session, self.query.sum(column, bounds=bounds))

    def mean(self, column: str, *, bounds: tuple[float, float]) -> DaskQuery:
        """The mean of ``column`` clipped to ``bounds`` per group."""
        return DaskQuery(self.dask_session, self.query.mean(column, bounds=bounds))

    def variance(self, column: str, *, bounds: tuple[float, float]) -> DaskQuery:
        """The variance of ``column`` clipped to ``bounds`` per group."""
        return DaskQuery(self.dask_session, self.query.variance(column, bounds=bounds))

    def quantile(self, column: str, alphas: float | Sequence[float], *,
                 bounds: tuple[float, float], candidates: int = 1001) -> DaskQuery:
        """The ``alphas``-quantiles of ``column`` per group, as :meth:`pets.dp.Query.quantile`.

        The cluster returns per-key counts over the ``2 · candidates + 1`` cells the
        candidates cut ``bounds`` into; the driver runs OpenDP's ``make_private_quantile`` on
        a vector with the same scores (see :mod:`pets.engines._dp`).

        Privacy:
            As :meth:`pets.dp.Query.quantile`: the same measurement, the same output
            distribution on the same bounded rows.
        """
        return DaskQuery(self.dask_session, self.query.quantile(
            column, alphas, bounds=bounds, candidates=candidates))

    def median(self, column: str, *, bounds: tuple[float, float],
               candidates: int = 1001) -> DaskQuery:
        """The median: :meth:`quantile` at 0.5.

        Privacy:
            As :meth:`quantile`.
        """
        return self.quantile(column, 0.5, bounds=bounds, candidates=candidates)

    def histogram(self, column: str, edges: Sequence[float]) -> DaskQuery:
        """Counts of ``column`` per bin and group, as :meth:`pets.dp.Query.histogram`.

        Privacy:
            As :meth:`pets.dp.Query.histogram`: counts over (group × bin) cells, L1
            sensitivity ``G·C`` (L2 ``√G·C``); the cluster returns exact cell counts, noise is
            added once on the driver.
        """
        return DaskQuery(self.dask_session, self.query.histogram(column, edges))

    def check_release(self, *, epsilon: float | None = None, delta: float | None = None,
                      rho: float | None = None, level: float = 0.95) -> None:
        """Refuse, before the cluster does any work, what :meth:`release` would refuse from
        the arguments alone: privacy parameters, level, unknown columns, too many cells.

        Raises:
            InputError: As :meth:`release` (nothing is computed or spent).

        Privacy:
            Reads no data and spends nothing.
        """
        session, q = self.dask_session.session, self.query
        session.check_release(q, epsilon=epsilon, delta=delta, rho=rho, level=level)
        for c in dict.fromkeys(a.column for a in q.aggs if a.column):
            if c not in session.columns:
                raise InputError(f"unknown column {c!r} (columns: "
                                 f"{', '.join(session.columns)})")
        if not isinstance(q.keys, str):
            _check_cells(q, len(q.keys) if q.keys is not None else 1)

    def release(self, *, epsilon: float | None = None, delta: float | None = None,
                rho: float | None = None, level: float = 0.95, seed: int | None = None,
                progress: bool | None = None) -> Release:
        """Bound and aggregate on the cluster, then add noise once here and spend the budget.

        Args:
            epsilon: The ε to spend (pure and approximate budgets).
            delta: The δ of private key selection (only with ``keys="private"``).
            rho: The ρ to spend (zCDP budgets).
            level: Confidence level of the intervals.
            seed: Sampling seed of the bounding (default: 128 bits from the OS CSPRNG, drawn
                per release). For tests only: a seed known to the analyst voids the guarantee
                (adding one user then shifts which rows the other users keep).
            progress: Show progress (default: when interactive).

        Raises:
            InputError: Bad input, or a quantile count matrix larger than
                ``MAX_QUANTILE_CELLS`` (nothing is spent).
            BudgetExhausted: The loss would exceed the remaining budget (nothing is spent).

        Privacy:
            The same measurements, ``d_in`` and accounting as
            :meth:`pets.dp.Query.release`; see :class:`DaskSession`.
        """
        return _release(self, epsilon=epsilon, delta=delta, rho=rho, level=level, seed=seed,
                        progress=progress)


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    """Turn a part file the workers cannot read (pyarrow's ``ArrowInvalid`` / ``OSError``:
    garbage, truncated) into an :class:`InputError`; nothing has been spent at that point.
    Dask's own communication errors (also ``OSError``) pass through unchanged."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        if type(exc).__module__.split(".")[0] in ("distributed", "tornado"):
            raise
        raise InputError(f"cannot read the input data: {type(exc).__name__}: {exc}") from exc


def _data_keys(data: dd.DataFrame, by: tuple[str, ...], progress: bool | None) -> pd.DataFrame:
    """Every combination of ``by`` present in the data (driver only; never released)."""
    from pets.engines._progress import compute

    with _reading():
        (present,) = compute(data[list(by)].drop_duplicates(), progress=progress)
    frame: pd.DataFrame = present.reset_index(drop=True)
    return frame


def _check_cells(q: Query, nkeys: int) -> None:
    """Refuse a quantile count matrix too large for the driver (before any bounding).

    With private keys ``nkeys`` is the number of keys present in the data: the refusal is
    data-dependent (for the data owner, like a NaN refusal), and its message does not print
    that number.
    """
    private = isinstance(q.keys, str)
    for key in q.measurements:
        if key[0] == "quantile" and nkeys * (2 * key[5] + 1) > MAX_QUANTILE_CELLS:
            if private:
                raise InputError(f"quantile({key[1]}) over the keys present in the data × "
                                 f"{key[5]} candidates needs more than {MAX_QUANTILE_CELLS} "
                                 "cell counts on the driver: use fewer candidates, or "
                                 "public keys")
            raise InputError(f"quantile({key[1]}) over {nkeys} keys × {key[5]} candidates "
                             f"needs {nkeys * (2 * key[5] + 1)} cell counts on the driver "
                             f"(limit {MAX_QUANTILE_CELLS}): use fewer candidates or keys")


def _release(dq: DaskQuery, *, epsilon: float | None, delta: float | None,
             rho: float | None, level: float, seed: int | None,
             progress: bool | None) -> Release:
    session, q = dq.dask_session.session, dq.query
    # refuse bad arguments before the cluster does any work (nothing is spent either way)
    dq.check_release(epsilon=epsilon, delta=delta, rho=rho, level=level)
    private = isinstance(q.keys, str)
    chosen: Any = (_data_keys(dq.dask_session.data, q.by, progress) if private
                   else q.keys if q.by else pd.DataFrame(index=range(1)))
    assert isinstance(chosen, pd.DataFrame)
    keys_frame: pd.DataFrame = chosen
    if private:
        _check_cells(q, len(keys_frame))
    key_tuples = (tuple(tuple(r) for r in keys_frame[list(q.by)].itertuples(index=False))
                  if q.by else ((),))
    spec = BoundingSpec(session.privacy_unit, q.by, key_tuples, q.measurements,
                        q.max_groups, q.max_rows,
                        seed if seed is not None else secrets.randbits(128))
    exact = bounded_aggregates(dq.dask_session.data, spec, progress=progress)
    # the pandas path's own noise-and-release step: same shares, d_in, ledger spend and audit
    return session.release_aggregates(q, exact.vectors, keys=keys_frame if private else None,
                                      epsilon=epsilon, delta=delta, rho=rho, level=level,
                                      engine="dask")

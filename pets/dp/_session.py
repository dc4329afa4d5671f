"""``Session`` and ``Query``: user-level differentially private aggregates over pandas data.

Privacy:
    **Unit**: one value of the ``privacy_unit`` column (e.g. a user) with *all* of its rows —
    neighbouring datasets differ by adding or removing one unit. **Definition**: ε-DP
    (``Budget.pure``), (ε, δ)-DP (``Budget.approx``) or ρ-zCDP (``Budget.zcdp``), with basic
    composition across releases, enforced by the :class:`~pets.dp.Ledger`. **Guarantee**: every
    noisy number comes from an OpenDP measurement (see :mod:`pets.dp._opendp`), calibrated and
    accounted by its privacy map ``meas.map(d_in)``. **Sensitivity** (what ``d_in`` is): after
    bounding, one unit touches at most ``G = max_groups`` groups (cells) and at most
    ``C = max_rows`` rows in each; each row's value is an integer of magnitude at most ``D``
    (1 for counts, the fixed-point bound for sums). The vector of per-key aggregates therefore
    moves by at most ``G·C·D`` in L1 and ``√G·C·D`` in L2 when one unit is added or removed —
    that is the ``d_in`` pets hands to OpenDP. **Public**: the bounds, ``G`` and ``C``, the
    quantile candidates, histogram edges, and — unless ``keys="private"`` — the group keys.
    The number of input rows is *not* released. **Not covered**: refusals that depend on the
    data (NaN or null values, null privacy units) are raised to the caller before anything is
    spent — they are for the data owner running the session, not for an untrusted analyst;
    only the :class:`~pets.dp.Release` is meant to leave.

Examples:
    >>> from pets.datasets import synthetic_events
    >>> from pets.dp import Budget, Session
    >>> events = synthetic_events(5_000, n_users=500, seed=1)
    >>> s = Session(events, privacy_unit="user_id", budget=Budget.pure(2.0))
    >>> r = (s.query(by="country", keys=["DE", "FR", "IT"], max_groups=1, max_rows=10)
    ...       .count().mean("watch_seconds", bounds=(0, 7200)).release(epsilon=1.0))
    >>> r.to_frame()[["country", "statistic"]].head(2).values.tolist()
    [['DE', 'count'], ['DE', 'mean']]
    >>> s.budget.remaining.epsilon
    1.0
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pets._errors import InputError
from pets._events import AuditHook, emit
from pets.dp._bounding import FixedPoint, bound_contributions, fixed_point, measured_column
from pets.dp._budget import Budget, PrivacyLoss
from pets.dp._intervals import halfwidth, ratio_interval
from pets.dp._ledger import BudgetStatus, Ledger
from pets.dp._opendp import (
    Mechanism,
    gaussian_vector,
    l2_sensitivity,
    laplace_vector,
    quantile_mechanism,
    threshold_mechanism,
)
from pets.dp._release import Release, _canonical_metadata, _Origin, new_release_id

__all__ = ["DEFAULT_MAX_KEYS", "Query", "Session"]

#: The columns of a release table after the group columns.
RELEASE_COLUMNS = ("statistic", "column", "param", "estimate", "ci_low", "ci_high", "mechanism",
                   "scale", "epsilon", "delta", "rho")

#: Largest key set (groups × histogram bins) a query may use.
DEFAULT_MAX_KEYS = 100_000

#: Largest magnitude of a declared bound (squares and noisy sums stay finite in float64).
MAX_BOUND = 1e150

AggKind = Literal["count", "sum", "mean", "variance", "quantile", "histogram"]
#: A measurement of a query (see :attr:`Query.measurements`).
PlanKey = tuple[Any, ...]
#: Aggregates that :meth:`Session.release_aggregates` takes as exact per-key arrays: integer
#: vectors (counts, fixed-point sums), ``keys × bins`` counts (histograms) and ``keys × cells``
#: counts (quantiles, see :func:`quantile_cells`).
VECTOR_AGGREGATES = ("count", "sum", "mean", "variance", "histogram", "quantile")
_LUT_LIMIT = 50_000_000

#: Largest ``max_groups`` and ``max_rows`` of a query (``G·C·D`` stays far inside int64).
MAX_CONTRIBUTIONS = 2**31 - 1

#: Largest noise scale (in integer units: counts, or grid steps of a sum) a release may use.
#: Beyond it the noisy integers approach int64 and the interval search slows down without
#: bound (1e24 took a minute): both would happen inside the ledger lock, after the spend.
MAX_NOISE_SCALE = 2.0**52

#: Most rows of one key :meth:`Session.release_aggregates` takes in a quantile count matrix:
#: the driver rebuilds one float64 per row of a key (32 GiB at this limit) to measure it.
MAX_QUANTILE_ROWS = 2**32


@dataclass(frozen=True)
class _Agg:
    kind: AggKind
    column: str = ""
    bounds: tuple[float, float] | None = None
    alphas: tuple[float, ...] = ()
    edges: tuple[float, ...] = ()
    candidates: int = 0

    @property
    def label(self) -> str:
        if self.kind == "count":
            return "count"
        extra = ""
        if self.bounds is not None:
            extra = f"[{self.bounds[0]:g}, {self.bounds[1]:g}]"
        if self.alphas:
            extra += "@" + ",".join(f"{a:g}" for a in self.alphas)
        if self.edges:
            extra += f" bins={len(self.edges) - 1}"
        return f"{self.kind}({self.column}){extra}"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "column": self.column or None,
                "bounds": list(self.bounds) if self.bounds else None,
                "alphas": list(self.alphas) or None, "edges": list(self.edges) or None,
                "label": self.label}


def _bounds(column: str, bounds: object) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise InputError(f"bounds for column {column!r} must be two numbers (lower, upper), "
                         f"got {bounds!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"bounds for column {column!r} must be finite, got {bounds!r}")
    if not lo < hi:
        raise InputError(f"bounds for column {column!r} are reversed or empty: lower {lo:g} "
                         f"must be < upper {hi:g}")
    if max(abs(lo), abs(hi)) > MAX_BOUND:
        # beyond this, widths, squares (variance) or noise × grid step overflow float64
        raise InputError(f"bounds for column {column!r} must lie within ±{MAX_BOUND:g}, got "
                         f"({lo:g}, {hi:g})")
    return lo, hi


def _positive_int(name: str, v: object, limit: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise InputError(f"{name} must be an integer >= 1, got {v!r}")
    if limit is not None and v > limit:
        raise InputError(f"{name} must be at most {limit}, got {v!r}")
    return int(v)


@dataclass(frozen=True, eq=False)
class Query:
    """An immutable description of a grouped DP query; each method returns a new query.

    Build with :meth:`Session.query`, add aggregates, then :meth:`release`.

    Privacy:
        Nothing is measured until :meth:`release`; building a query spends nothing.
    """

    session: Session = field(repr=False)
    by: tuple[str, ...]
    keys: pd.DataFrame | Literal["private"] | None = field(repr=False)
    max_groups: int
    max_rows: int
    aggs: tuple[_Agg, ...] = ()

    def _add(self, agg: _Agg) -> Query:
        if agg in self.aggs:
            raise InputError(f"{agg.label} is already in the query")
        return dataclasses.replace(self, aggs=(*self.aggs, agg))

    def count(self) -> Query:
        """The number of rows per group (after contribution bounding).

        Privacy:
            Discrete Laplace (``make_laplace``, L1 sensitivity ``G·C``) or discrete Gaussian
            (``make_gaussian``, L2 ``√G·C``); under ``keys="private"`` the threshold mechanism.
        """
        return self._add(_Agg("count"))

    def sum(self, column: str, *, bounds: tuple[float, float]) -> Query:
        """The sum of ``column`` clipped to ``bounds`` per group.

        Privacy:
            Fixed-point integer sums with per-row magnitude ``D`` (``max(|L|, |U|)`` in grid
            steps); ``make_laplace`` with L1 sensitivity ``G·C·D`` (or Gaussian, ``√G·C·D``).
        """
        return self._add(_Agg("sum", column, _bounds(column, bounds)))

    def mean(self, column: str, *, bounds: tuple[float, float]) -> Query:
        """The mean of ``column`` clipped to ``bounds``: centred noisy sum / noisy count + centre.

        The count and the centred sum get equal shares of the budget: with values centred on
        the middle of ``bounds``, this split minimises the worst-case variance of the ratio.

        Privacy:
            Two measurements: the count (as :meth:`count`) and the sum of ``x − c`` clipped to
            ``[−h, h]`` (``c``, ``h`` the centre and half-width of ``bounds``), sensitivity
            ``G·C·h`` in grid steps.
        """
        return self._add(_Agg("mean", column, _bounds(column, bounds)))

    def variance(self, column: str, *, bounds: tuple[float, float]) -> Query:
        """The (population) variance of ``column`` clipped to ``bounds``, from noisy count,
        centred sum and centred sum of squares.

        Privacy:
            Three measurements: count, centred sum, and the sum of ``(x − c)² − h²/2``
            (magnitude ``h²/2`` per row), each as for :meth:`sum`.
        """
        return self._add(_Agg("variance", column, _bounds(column, bounds)))

    def quantile(self, column: str, alphas: float | Sequence[float], *,
                 bounds: tuple[float, float], candidates: int = 1001) -> Query:
        """The ``alphas``-quantiles of ``column``, chosen among ``candidates`` evenly spaced
        points of ``bounds`` by the exponential mechanism. No confidence interval is given.

        Privacy:
            ``make_private_quantile`` per group at symmetric distance ``C``; the loss is the
            OpenDP map of ``G`` composed copies (a user touches at most ``G`` groups).
        """
        al = (alphas,) if isinstance(alphas, int | float) else tuple(alphas)
        if not al:
            raise InputError("quantile needs at least one alpha")
        for a in al:
            if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1:
                raise InputError(f"quantile alpha must be in [0, 1], got {a!r}")
        n = _positive_int("candidates", candidates)
        if n < 2 or n > 100_000:
            raise InputError(f"candidates must be between 2 and 100000, got {n}")
        lo, hi = _bounds(column, bounds)
        if not bool((np.diff(quantile_candidates(lo, hi, n)) > 0).all()):
            # too few floats in [lo, hi]: OpenDP needs strictly increasing candidates
            raise InputError(f"bounds ({lo!r}, {hi!r}) of {column!r} do not hold {n} distinct "
                             "candidates in floating point: widen them or use fewer candidates")
        return self._add(_Agg("quantile", column, (lo, hi), tuple(float(a) for a in al),
                              candidates=n))

    def median(self, column: str, *, bounds: tuple[float, float], candidates: int = 1001) -> Query:
        """The median: :meth:`quantile` at 0.5.

        Privacy:
            As :meth:`quantile`.
        """
        return self.quantile(column, 0.5, bounds=bounds, candidates=candidates)

    def histogram(self, column: str, edges: Sequence[float]) -> Query:
        """Counts of ``column`` in the bins ``[e0, e1), …, [e(n-1), en]`` per group; values
        outside ``[e0, en]`` are counted in the first or last bin.

        Privacy:
            Counts over (group × bin) cells: a user's ``C`` rows in a group spread over its
            bins, so L1 sensitivity ``G·C`` (L2 ``√G·C``), as for :meth:`count`.
        """
        try:
            e = tuple(float(x) for x in edges)
        except (TypeError, ValueError) as exc:
            raise InputError(f"histogram edges for {column!r} must be numbers") from exc
        if len(e) < 2 or not all(math.isfinite(x) for x in e) or any(
                b <= a for a, b in itertools.pairwise(e)):
            raise InputError(f"histogram edges for {column!r} must be >= 2 finite, strictly "
                             f"increasing numbers, got {list(edges)!r}")
        return self._add(_Agg("histogram", column, (e[0], e[-1]), edges=e))

    @property
    def measurements(self) -> tuple[PlanKey, ...]:
        """The distinct measurements this query makes, in the order they are made: the keys of
        the exact aggregates :meth:`Session.release_aggregates` takes.

        ``("count",)``; ``("sum", column, lo, hi)``; ``("csum", column, lo, hi)`` and
        ``("csq", column, lo, hi)`` (centred sum and sum of squares of mean and variance);
        ``("hist", column, edges)``; ``("quantile", column, lo, hi, alpha, candidates)``.
        A measurement shared by several statistics (the count of a mean) appears once.

        Examples:
            >>> import pandas as pd
            >>> s = Session(pd.DataFrame({"u": [1], "x": [1.0]}), privacy_unit="u",
            ...             budget=Budget.pure(1.0))
            >>> s.query().mean("x", bounds=(0, 10)).sum("x", bounds=(0, 10)).measurements
            (('count',), ('csum', 'x', 0.0, 10.0), ('sum', 'x', 0.0, 10.0))

        Privacy:
            Public: it depends on the query only, never on the data.
        """
        return tuple(k for k, _ in _plan(self.aggs, isinstance(self.keys, str)))

    def describe(self) -> dict[str, Any]:
        keys: object = ("private" if isinstance(self.keys, str)
                        else None if self.keys is None else f"public ({len(self.keys)})")
        return {"by": list(self.by), "keys": keys, "max_groups": self.max_groups,
                "max_rows": self.max_rows, "aggregates": [a.describe() for a in self.aggs]}

    def release(self, *, epsilon: float | None = None, delta: float | None = None,
                rho: float | None = None, level: float = 0.95) -> Release:
        """Run the query, spend its privacy loss in the ledger, and return the release.

        Args:
            epsilon: The ε this release may spend (pure and approximate budgets).
            delta: The δ for private key selection (only with ``keys="private"``).
            rho: The ρ this release may spend (zCDP budgets).
            level: Confidence level of the intervals.

        Raises:
            InputError: Bad input (nothing is spent).
            BudgetExhausted: The loss would exceed the remaining budget (nothing is spent).

        Privacy:
            See :mod:`pets.dp._session`: the loss recorded is the sum (basic composition) of
            the OpenDP privacy maps of the measurements used, each at most its share of the
            requested ε (or ρ); δ is spent only by private key selection.
        """
        return self.session._release(self, epsilon=epsilon, delta=delta, rho=rho, level=level)


class Session:
    """Differentially private queries over one dataset, per privacy unit, within a budget.

    Args:
        data: A pandas DataFrame, or the path of a Parquet file (columns are read per query).
        privacy_unit: The column identifying the unit protected (all rows of one value).
        budget: The total budget of this dataset and unit; with a ledger, it must match the
            one recorded there (the first session records it).
        ledger: A persistent :class:`Ledger`; ``None`` keeps an in-memory ledger for this
            session only.
        dataset_id: The dataset's name in the ledger (default: the Parquet file's absolute path;
            required for a DataFrame with a ledger).
        audit: Hook receiving a ``dp.release`` event (privacy spent, never data).
        rng: Source of the *sampling* priorities of contribution bounding (default: a fresh
            PCG64 seeded with 128 bits from ``secrets``). Noise never comes from it. The
            sensitivity argument needs priorities that are independent of the data and unknown
            to whoever sees the releases: a fixed, known seed voids it (adding one user then
            shifts every later row's priority). Pass one in tests only.
        max_keys: Largest key set (groups × bins) a query may use.

    Raises:
        InputError: Missing privacy-unit column, unreadable file, missing dataset id.

    Privacy:
        Protects every row of one ``privacy_unit`` value (user-level DP) under the budget's
        definition (pure, approximate or zCDP), with basic composition across releases kept by
        the ledger. See the module documentation for the sensitivity argument and
        ``docs/dp.md`` for the mechanisms.
    """

    def __init__(self, data: pd.DataFrame | str | os.PathLike[str], *, privacy_unit: str,
                 budget: Budget, ledger: Ledger | None = None, dataset_id: str | None = None,
                 audit: AuditHook | None = None, rng: np.random.Generator | None = None,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if not isinstance(budget, Budget):
            raise InputError(f"budget must be a pets.dp.Budget, got {type(budget).__name__}")
        self._path: Path | None = None
        self._frame: pd.DataFrame | None = None
        self._unit_codes: np.ndarray | None = None
        if isinstance(data, pd.DataFrame):
            # pandas copy-on-write: a shallow copy is a snapshot — later writes to ``data`` do
            # not reach it, so the privacy-unit codes cached below cannot go stale
            self._frame = data.copy(deep=False)
            columns = [str(c) for c in data.columns]
            if ledger is not None and dataset_id is None:
                raise InputError("dataset_id is required when a DataFrame is used with a ledger")
        elif isinstance(data, str | os.PathLike):
            self._path = Path(data)
            columns = self._parquet_columns(self._path)
            dataset_id = dataset_id or str(self._path.resolve())
        else:
            raise InputError(f"data must be a pandas DataFrame or a Parquet path, got "
                             f"{type(data).__name__}")
        if privacy_unit not in columns:
            raise InputError(f"privacy unit column {privacy_unit!r} is not in the data "
                             f"(columns: {', '.join(columns)})")
        self.columns = tuple(columns)
        self.privacy_unit = privacy_unit
        self.dataset_id = dataset_id
        self._ledger_key = dataset_id if dataset_id is not None else "(session)"
        if ledger is not None and audit is None and ledger.cap() is not None:
            # a boundary's ledger (``pets boundary init`` set its cap): its releases are on
            # the signed record, so a session spending from it must report to the log
            raise InputError(f"ledger {ledger!r} belongs to a boundary: pass "
                             "audit=<the boundary's AuditLog>.hook (keys.audit_log(context)"
                             ".hook) so every release is in its signed log")
        self.ledger = ledger if ledger is not None else Ledger()
        self.total = self.ledger.register(self._ledger_key, privacy_unit, budget)
        self.audit = audit
        self.max_keys = _positive_int("max_keys", max_keys)
        self._rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))

    def __repr__(self) -> str:
        return (f"Session(dataset_id={self.dataset_id!r}, privacy_unit={self.privacy_unit!r}, "
                f"budget={self.total.describe()!r})")

    @staticmethod
    def _parquet_columns(path: Path) -> list[str]:
        import pyarrow.parquet as pq

        if not path.is_file():
            raise InputError(f"input file {str(path)!r} does not exist")
        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:
            raise InputError(f"cannot read Parquet file {str(path)!r}: {exc}") from exc

    @property
    def budget(self) -> BudgetStatus:
        """Total, spent and remaining budget (from the ledger, including other processes)."""
        return self.ledger.status(self._ledger_key, self.privacy_unit)

    def query(self, by: str | Sequence[str] | None = None, *,
              keys: Any = None, max_groups: int = 1, max_rows: int = 1) -> Query:
        """Start a query grouped by ``by`` (none: one global group).

        Args:
            by: Grouping column(s).
            keys: The public group keys — a list of values (one column), of tuples (several),
                or a DataFrame with the ``by`` columns; groups absent from the data are
                released as noise only, rows of groups not listed are dropped. Or
                ``"private"``: keys are chosen from the data by a noisy threshold (needs δ).
            max_groups: ``G``, most groups one unit may contribute to (random sample beyond).
            max_rows: ``C``, most rows one unit may contribute to one group (random sample).
        """
        cols = (by,) if isinstance(by, str) else tuple(by or ())
        for col in cols:
            if col not in self.columns:
                raise InputError(f"unknown group column {col!r} (columns: "
                                 f"{', '.join(self.columns)})")
        if len(set(cols)) != len(cols):
            raise InputError(f"duplicate group columns in {list(cols)!r}")
        reserved = set(RELEASE_COLUMNS) & set(cols)
        if reserved:
            raise InputError(f"group column(s) {sorted(reserved)!r} clash with release columns; "
                             "rename them first")
        if self.privacy_unit in cols:
            raise InputError(f"cannot group by the privacy unit {self.privacy_unit!r}")
        g = _positive_int("max_groups", max_groups, MAX_CONTRIBUTIONS)
        c = _positive_int("max_rows", max_rows, MAX_CONTRIBUTIONS)
        key_frame: pd.DataFrame | Literal["private"] | None
        if not cols:
            if keys is not None:
                raise InputError("keys need group columns (by=...)")
            key_frame, g = None, 1
        elif isinstance(keys, str):
            if keys != "private":
                raise InputError(f"keys must be a collection of group keys or 'private', "
                                 f"got {keys!r}")
            key_frame = "private"
        elif keys is None:
            raise InputError(f"grouping by {list(cols)!r} needs keys: pass the public keys "
                             f"(keys=[...]) or keys='private' to select them privately")
        else:
            key_frame = self._key_frame(cols, keys)
        return Query(self, cols, key_frame, g, c)

    def _key_frame(self, cols: tuple[str, ...], keys: Any) -> pd.DataFrame:
        if isinstance(keys, pd.DataFrame):
            missing = [c for c in cols if c not in keys.columns]
            if missing:
                raise InputError(f"key frame lacks group column(s) {missing!r}")
            kf = keys[list(cols)].reset_index(drop=True)
        else:
            try:
                n = len(keys)
            except TypeError as exc:
                raise InputError("keys must be a list, a tuple, a pandas Index or a DataFrame"
                                 ) from exc
            if n > self.max_keys:
                raise InputError(f"{n} keys exceed the limit of {self.max_keys}")
            items = list(keys)
            if len(cols) == 1:
                kf = pd.DataFrame({cols[0]: items})
            else:
                if not all(isinstance(k, tuple) and len(k) == len(cols) for k in items):
                    raise InputError(f"keys for {list(cols)!r} must be tuples of "
                                     f"{len(cols)} values")
                kf = pd.DataFrame(items, columns=list(cols))
        if len(kf) > self.max_keys:
            raise InputError(f"{len(kf)} keys exceed the limit of {self.max_keys}")
        if len(kf) == 0:
            raise InputError("the key set is empty")
        if kf.duplicated().any():
            raise InputError("the key set has duplicate keys")
        return kf

    # -- execution ---------------------------------------------------------------------------

    def _load(self, columns: list[str]) -> pd.DataFrame:
        if self._frame is not None:
            missing = [c for c in columns if c not in self._frame.columns]
            if missing:
                raise InputError(f"unknown column(s) {missing!r}")
            return self._frame[columns]
        assert self._path is not None
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise InputError(f"unknown column(s) {missing!r} in {str(self._path)!r}")
        try:
            return pd.read_parquet(self._path, columns=columns)
        except Exception as exc:
            raise InputError(f"cannot read {str(self._path)!r}: {exc}") from exc

    def _units(self, frame: pd.DataFrame) -> np.ndarray:
        """Integer codes of the privacy unit, one per row (cached for an in-memory frame)."""
        if self._unit_codes is not None:
            return self._unit_codes
        unit = frame[self.privacy_unit]
        if unit.isna().any():
            raise InputError(f"privacy unit column {self.privacy_unit!r} has null values")
        codes = np.asarray(pd.factorize(unit)[0], dtype=np.int64)
        if self._frame is not None:
            self._unit_codes = codes
        return codes

    def _spend_params(self, q: Query, epsilon: float | None, delta: float | None,
                      rho: float | None) -> tuple[float, float]:
        kind = self.total.kind
        private = isinstance(q.keys, str)

        def pos(name: str, v: object) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v <= 0:
                raise InputError(f"{name} must be a finite number > 0, got {v!r}")
            if name in ("epsilon", "rho") and v < 1.0 / MAX_NOISE_SCALE ** (1 if
                                                                         name == "epsilon"
                                                                         else 2):
                # the noise scale of even a count would exceed MAX_NOISE_SCALE (or overflow
                # to infinity, which OpenDP refuses after the fact)
                raise InputError(f"{name} {v!r} is too small: the noise would exceed "
                                 f"{MAX_NOISE_SCALE:.4g} units; nothing was spent")
            return float(v)

        if kind == "zcdp":
            if epsilon is not None:
                raise InputError("this session has a zCDP budget: pass rho=, not epsilon=")
            primary = pos("rho", rho)
        else:
            if rho is not None:
                raise InputError(f"this session has a {kind} budget: pass epsilon=, not rho=")
            primary = pos("epsilon", epsilon)
        d = 0.0
        if private:
            if kind == "pure" or self.total.delta == 0:
                raise InputError("private key selection needs a budget with δ > 0: use "
                                 "Budget.approx(epsilon, delta) or Budget.zcdp(rho, delta), "
                                 "or pass public keys")
            if delta is None:
                raise InputError("private key selection needs delta=")
            if isinstance(delta, bool) or not isinstance(delta, int | float) \
                    or not 0 < delta < 1:
                raise InputError(f"delta must be a number in (0, 1), got {delta!r}")
            d = float(delta)
        elif delta is not None:
            raise InputError("delta is only spent by private key selection (keys='private')")
        return primary, d

    def _release(self, q: Query, *, epsilon: float | None, delta: float | None,
                 rho: float | None, level: float) -> Release:
        primary, delta_req = self._check_release(q, epsilon, delta, rho, level)
        measured = list(dict.fromkeys(a.column for a in q.aggs if a.column))
        for c in measured:
            if c not in self.columns:
                raise InputError(f"unknown column {c!r} (columns: {', '.join(self.columns)})")
        cols = list(dict.fromkeys([self.privacy_unit, *q.by, *measured]))
        frame = self._load(cols)
        all_units = self._units(frame)
        values = {c: measured_column(frame, c) for c in measured}

        # -- group codes and keys ---------------------------------------------------------
        gcode, keys = _group_codes(frame, q.by, q.keys)
        nkeys = len(keys)
        self._check_private_cells(q, nkeys)
        sel = gcode >= 0
        ucode = all_units[sel]
        gsel = gcode[sel]
        keep = bound_contributions(ucode, gsel, max_groups=q.max_groups, max_rows=q.max_rows,
                                   rng=self._rng)
        rows = np.flatnonzero(sel)[keep]
        g = gsel[keep]

        # -- exact aggregates of the bounded rows ------------------------------------------
        data: dict[PlanKey, Any] = {}
        for key in q.measurements:
            kind = key[0]
            if kind == "count":
                data[key] = np.bincount(g, minlength=nkeys)
            elif kind in ("sum", "csum", "csq"):
                data[key] = _int_sums(g, _encode(key, values[key[1]][rows]).values, nkeys)
            elif kind == "hist":
                _, col, edges = key
                data[key] = (g, histogram_bins(values[col][rows], edges), len(edges) - 1)
            elif kind == "quantile":
                _, col, lo, hi, _alpha, _ncand = key
                data[key] = (col, lo, hi)
        return self._noise_and_release(q, keys, data, primary=primary, delta_req=delta_req,
                                       epsilon=epsilon, delta=delta, rho=rho, level=level,
                                       rows=(values, rows, g))

    def check_release(self, query: Query, *, epsilon: float | None = None,
                      delta: float | None = None, rho: float | None = None,
                      level: float = 0.95) -> None:
        """Refuse, before any work, the arguments :meth:`Query.release` would refuse.

        An engine that computes the exact aggregates elsewhere (see
        :meth:`release_aggregates`) calls this first, so that bad input fails before the
        expensive part and nothing is spent.

        Raises:
            InputError: No aggregates, a bad ``level``, or privacy parameters that do not fit
                the budget's kind or the query's keys.

        Privacy:
            Checks arguments only; reads no data and spends nothing.
        """
        self._check_release(query, epsilon, delta, rho, level)

    def _check_release(self, q: Query, epsilon: float | None, delta: float | None,
                       rho: float | None, level: float) -> tuple[float, float]:
        if q.session is not self:
            raise InputError("the query belongs to another session")
        if not q.aggs:
            raise InputError("the query has no aggregates (add count(), sum(), ...)")
        if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
            raise InputError(f"level must be in (0, 1), got {level!r}")
        if not isinstance(q.keys, str):  # public keys (or one group): the cell count is known
            nkeys = len(q.keys) if isinstance(q.keys, pd.DataFrame) else 1
            bins = max((len(a.edges) - 1 for a in q.aggs if a.kind == "histogram"), default=1)
            if nkeys * bins > self.max_keys:
                raise InputError(f"{nkeys} keys × {bins} bins exceed the limit of "
                                 f"{self.max_keys}")
        return self._spend_params(q, epsilon, delta, rho)

    def _check_private_cells(self, q: Query, nkeys: int) -> None:
        """Under ``keys="private"``, the candidate keys (every key in the data) × bins within
        ``max_keys``: the threshold runs over all of them inside the ledger lock."""
        if not isinstance(q.keys, str):
            return
        bins = max((len(a.edges) - 1 for a in q.aggs if a.kind == "histogram"), default=1)
        if nkeys * bins > self.max_keys:
            raise InputError(f"keys='private': {nkeys} candidate keys in the data × {bins} "
                             f"bins exceed max_keys={self.max_keys}; group more coarsely or "
                             "raise max_keys")

    def release_aggregates(self, query: Query, aggregates: Mapping[PlanKey, np.ndarray], *,
                           keys: pd.DataFrame | None = None, epsilon: float | None = None,
                           delta: float | None = None, rho: float | None = None,
                           level: float = 0.95, engine: str | None = None) -> Release:
        """Noise exact, already bounded per-key aggregates, spend the loss, return the release.

        The noise-and-release half of :meth:`Query.release`, for an engine that bounds and
        aggregates elsewhere (``pets.engines.dask``): the same measurements, budget shares,
        ``d_in``, ledger spend, ``dp.release`` audit event and release table.

        Args:
            query: A query of this session (any of its statistics).
            aggregates: For each key of :attr:`Query.measurements`, an integer array indexed
                by the key set:

                * ``count``, ``sum``, ``csum``, ``csq``: a vector with one entry per key —
                  row counts, or sums of the values encoded by
                  :func:`pets.dp._bounding.fixed_point` (``sum``: clipped to ``[lo, hi]``
                  with magnitude ``max(|lo|, |hi|)``; ``csum``: ``x − c`` with ``c``, ``h``
                  the centre and half-width, magnitude ``h``; ``csq``: ``(x − c)² − h²/2``,
                  magnitude ``h²/2``);
                * ``("hist", column, edges)``: a ``keys × bins`` matrix of row counts per bin
                  of :func:`histogram_bins`;
                * ``("quantile", column, lo, hi, alpha, n)``: a ``keys × (2n + 1)`` matrix of
                  row counts per cell of :func:`quantile_cells` of the values clipped to
                  ``[lo, hi]``, over :func:`quantile_candidates` ``(lo, hi, n)``. The
                  measurement runs OpenDP's ``make_private_quantile`` on a vector rebuilt
                  with one value per cell (:func:`quantile_cell_values`), which has the same
                  OpenDP score as the clipped values, so the same output distribution. The
                  matrix may be shared by several alphas.
            keys: With ``keys="private"``: the key set the arrays are indexed by (every key
                present in the data; only keys passing the threshold are released). Otherwise
                ``None``: the query's public keys (or the one global group).
            epsilon: The ε to spend (pure and approximate budgets).
            delta: The δ of private key selection (only with ``keys="private"``).
            rho: The ρ to spend (zCDP budgets).
            level: Confidence level of the intervals.
            engine: Recorded in the release's query description and the audit event.

        Raises:
            InputError: Bad arguments, or aggregates of the wrong shape or dtype, values
                beyond int64, negative counts, quantile counts outside the bounds, or a key
                with more quantile rows than the driver can rebuild (more than
                ``MAX_QUANTILE_ROWS``, or than it can allocate) — nothing is spent.
            BudgetExhausted: The loss would exceed the remaining budget (nothing is spent).

        Privacy:
            **Precondition, not checked here**: the arrays must be exact aggregates of data
            bounded by pets (:func:`pets.dp._bounding.bound_contributions` with this query's
            ``max_groups`` G and ``max_rows`` C, per privacy unit, with sampling randomness
            independent of the data) and clipped, encoded or binned as described under
            ``aggregates``. That is what makes one unit move the count vector (and the
            flattened histogram) by at most ``G·C`` (and a sum vector by ``G·C·D``) in L1,
            ``√G·C·D`` in L2, and change at most ``G`` keys' quantile inputs by at most ``C``
            values each (``symmetric_distance`` ``C``) — the ``d_in`` handed to OpenDP.
            Anything else voids the guarantee. Given that, as
            :meth:`Query.release`: each measurement gets at most its share of the requested
            ε (or ρ), the loss is the basic composition of the OpenDP maps, noise is drawn
            once from OpenDP inside the ledger's spend.

        Examples:
            >>> import numpy as np, pandas as pd
            >>> s = Session(pd.DataFrame({"u": [1]}), privacy_unit="u", budget=Budget.pure(1.0))
            >>> q = s.query(max_rows=2).count()
            >>> r = s.release_aggregates(q, {("count",): np.array([7])}, epsilon=0.5)
            >>> r.to_frame()["statistic"].tolist(), s.budget.spent.epsilon
            (['count'], 0.5)
        """
        primary, delta_req = self._check_release(query, epsilon, delta, rho, level)
        if isinstance(query.keys, str):
            if not isinstance(keys, pd.DataFrame):
                raise InputError("private key selection needs keys=: the key set the "
                                 "aggregates are indexed by")
            missing = [c for c in query.by if c not in keys.columns]
            if missing:
                raise InputError(f"key frame lacks group column(s) {missing!r}")
            key_frame = keys[list(query.by)].reset_index(drop=True)
            self._check_private_cells(query, len(key_frame))
            if key_frame.duplicated().any():
                raise InputError("the key set has duplicate keys")
        elif keys is not None:
            raise InputError("keys= is only for keys='private': public keys come from the query")
        else:
            key_frame = (query.keys if isinstance(query.keys, pd.DataFrame)
                         else pd.DataFrame(index=range(1)))
        data: dict[PlanKey, Any] = {}
        for key in query.measurements:
            if key not in aggregates:
                raise InputError(f"no aggregate for measurement {key!r}")
            vec = np.asarray(aggregates[key])
            if key[0] in ("hist", "quantile"):
                data[key] = _cell_counts(key, vec, len(key_frame))
                continue
            if vec.ndim != 1 or vec.size != len(key_frame) or (
                    vec.size and not np.issubdtype(vec.dtype, np.integer)):
                raise InputError(f"the aggregate for {key!r} must be an integer vector of "
                                 f"{len(key_frame)} entries (one per key), got {vec.dtype} "
                                 f"{vec.shape}")
            data[key] = _as_int64(key, vec)
            if key[0] == "count" and (data[key] < 0).any():
                raise InputError(f"the aggregate for {key!r} has negative counts")
        return self._noise_and_release(query, key_frame, data, primary=primary,
                                       delta_req=delta_req, epsilon=epsilon, delta=delta,
                                       rho=rho, level=level, engine=engine)

    def _noise_and_release(self, q: Query, keys: pd.DataFrame, data: dict[PlanKey, Any], *,
                           primary: float, delta_req: float, epsilon: float | None,
                           delta: float | None, rho: float | None, level: float,
                           rows: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None
                           = None, engine: str | None = None) -> Release:
        """Measurements and their budget shares, noise (OpenDP), ledger spend, audit, release:
        the one step both engines share. ``data`` holds the exact aggregates per measurement;
        ``rows`` (values, bounded row indices, their key codes) only for quantiles given as
        ``(column, lo, hi)`` (the pandas path; engines pass cell counts instead)."""
        zcdp = self.total.kind == "zcdp"
        private = isinstance(q.keys, str)
        G, C = q.max_groups, q.max_rows
        plan = q.measurements
        share = _share(primary, len(plan))

        def vector_mech(name: str, d: int) -> Mechanism:
            if zcdp:
                return gaussian_vector(l2=l2_sensitivity(G, C * d), rho=share, name=name)
            return laplace_vector(l1=G * C * d, epsilon=share, name=name)

        mechs: dict[PlanKey, Mechanism] = {}
        fps: dict[PlanKey, FixedPoint] = {}
        for key in plan:
            kind = key[0]
            if kind == "count":
                if private:
                    mechs[key] = threshold_mechanism(l0=G, linf=C, primary=share,
                                                     delta=delta_req, zcdp=zcdp, name="count")
                else:
                    mechs[key] = vector_mech("count", 1)
            elif kind in ("sum", "csum", "csq"):
                fps[key] = _encode(key, np.zeros(0))
                mechs[key] = vector_mech(kind, fps[key].bound)
            elif kind == "hist":
                mechs[key] = vector_mech("histogram", 1)
            elif kind == "quantile":
                _, _col, lo, hi, alpha, ncand = key
                mechs[key] = quantile_mechanism(
                    candidates=quantile_candidates(lo, hi, ncand).tolist(), alpha=alpha, rows=C,
                    groups=G, primary=share, zcdp=zcdp, name="quantile")
        loss = PrivacyLoss.total(m.loss for m in mechs.values())
        description = q.describe()
        description.update(epsilon=epsilon, delta=delta, rho=rho, level=level)
        tags: dict[str, str] = {}
        if engine is not None:
            description["engine"] = tags["engine"] = engine
        empty = np.zeros(0, dtype=np.int64)
        values, bounded, g = rows if rows is not None else ({}, empty, empty)

        _check_noise(mechs, level, q.aggs)  # before the lock: nothing in run() may hang or fail
        release_id = new_release_id()
        origin = _Origin(self.ledger, self.audit)

        def run() -> Release:
            # the one place noise is drawn: OpenDP, once per release, inside the ledger lock
            table = _execute(q, keys, mechs, data, fps, values, bounded, g, level)
            return Release(table, q.by, loss, self.dataset_id, self.privacy_unit, float(level),
                           description, self.total.kind,
                           _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                           release_id=release_id, _origin=origin)

        def evidence(rel: Release) -> tuple[str, str, str]:
            # recorded in the spend's transaction: no release without its digest on record
            digests[rel.release_id] = rel.digest()
            return rel.release_id, digests[rel.release_id], _canonical_metadata(rel.metadata())

        digests: dict[str, str] = {}
        rel = self.ledger.spend(self._ledger_key, self.privacy_unit, loss, run,
                                query=json.dumps(description, sort_keys=True, default=str),
                                record=evidence)
        table = rel.frame
        emit(self.audit, "dp.release", release_id=rel.release_id,
             digest=digests[rel.release_id], dataset_id=self.dataset_id,
             privacy_unit=self.privacy_unit, epsilon=loss.epsilon, delta=loss.delta,
             rho=loss.rho, budget_kind=self.total.kind,
             statistics=[a.label for a in q.aggs], by=list(q.by),
             keys="private" if private else "public", groups=int(
                 table[list(q.by)].drop_duplicates().shape[0]) if q.by else 1,
             columns=[str(c) for c in table.columns], rows=len(table), **tags)
        return rel


# -- helpers -------------------------------------------------------------------------------


def _check_noise(mechs: Mapping[PlanKey, Mechanism], level: float,
                 aggs: Sequence[_Agg]) -> None:
    """Refuse, before the spend, a noise scale beyond :data:`MAX_NOISE_SCALE`, and compute
    every interval half-width the release will need (data-independent), so that nothing that
    depends on a user's number runs long or fails inside the ledger lock."""
    levels = {level}
    if any(a.kind == "mean" for a in aggs):
        levels.add(1 - (1 - level) / 2)
    if any(a.kind == "variance" for a in aggs):
        levels.add(1 - (1 - level) / 3)
    for key, m in mechs.items():
        if m.distribution == "exponential":
            continue
        if not m.scale <= MAX_NOISE_SCALE:
            raise InputError(f"the noise scale of {key[0]!r} would be {m.scale:.4g} units, "
                             f"beyond {MAX_NOISE_SCALE:.4g}: epsilon (or rho) is too small "
                             "for max_groups × max_rows × the bounds; spend more or bound "
                             "contributions more tightly")
        for lvl in levels:
            halfwidth(m.distribution, m.scale, lvl)


def _plan(aggs: Sequence[_Agg], private: bool) -> list[tuple[tuple[Any, ...], float]]:
    """The distinct measurements a query needs, each with weight 1 (shared ones once)."""
    keys: list[tuple[Any, ...]] = []

    def need(k: tuple[Any, ...]) -> None:
        if k not in keys:
            keys.append(k)

    if private or any(a.kind in ("count", "mean", "variance") for a in aggs):
        need(("count",))
    for a in aggs:
        if a.kind == "sum":
            assert a.bounds is not None
            need(("sum", a.column, *a.bounds))
        elif a.kind in ("mean", "variance"):
            assert a.bounds is not None
            need(("csum", a.column, *a.bounds))
            if a.kind == "variance":
                need(("csq", a.column, *a.bounds))
        elif a.kind == "histogram":
            need(("hist", a.column, a.edges))
        elif a.kind == "quantile":
            assert a.bounds is not None
            for al in a.alphas:
                need(("quantile", a.column, *a.bounds, al, a.candidates))
    return [(k, 1.0) for k in keys]


def _share(primary: float, parts: int) -> float:
    """The largest float ``s`` with ``parts · s <= primary`` exactly: each measurement's loss
    is at most ``s``, so the release's total never exceeds what was asked for (``primary /
    parts`` can round up: five shares of ``1.89 / 5`` add up to more than ``1.89``).

    Examples:
        >>> from fractions import Fraction
        >>> 5 * Fraction(1.89 / 5) > Fraction(1.89) >= 5 * Fraction(_share(1.89, 5))
        True
    """
    s = primary / parts
    while Fraction(s) * parts > Fraction(primary):
        s = math.nextafter(s, 0.0)
    return s


def _encode(key: PlanKey, x: np.ndarray) -> FixedPoint:
    """The clipping and fixed-point encoding of a ``sum``/``csum``/``csq`` measurement.

    The grid (step and bound) depends on the key only, never on ``x``.
    """
    kind, _, lo, hi = key
    x = np.clip(x, lo, hi)
    if kind == "sum":
        return fixed_point(x, max(abs(lo), abs(hi)))
    c, h = (lo + hi) / 2, (hi - lo) / 2
    y = np.clip(x - c, -h, h)
    return fixed_point(y, h) if kind == "csum" else fixed_point(y * y - h * h / 2, h * h / 2)


def histogram_bins(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The bin of each value: ``[e0, e1), …, [e(n-1), en]``, values below ``e0`` in the first
    bin and above ``en`` in the last (the one binning of both engines).

    Examples:
        >>> histogram_bins(np.array([-5.0, 0.0, 0.5, 1.0, 2.0, 9.0]), (0.0, 1.0, 2.0)).tolist()
        [0, 0, 0, 1, 1, 1]

    Privacy:
        Deterministic and row-wise: a row's bin depends on its value and the public edges only.
    """
    e = np.asarray(edges, dtype=np.float64)
    out: np.ndarray = np.clip(np.searchsorted(e, x, side="right") - 1, 0, e.size - 2)
    return out


def quantile_candidates(lo: float, hi: float, n: int) -> np.ndarray:
    """The ``n`` candidates of a quantile over ``[lo, hi]``: evenly spaced, the first exactly
    ``lo`` and the last exactly ``hi`` (``numpy.linspace`` sets both ends).

    Examples:
        >>> quantile_candidates(0.0, 1.0, 5).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    out: np.ndarray = np.linspace(lo, hi, n)
    return out


def quantile_cells(x: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The cell of each value among the ``2n + 1`` cells the ``n`` sorted candidates cut the
    line into: cell ``2k`` is the open interval just below ``c_k`` (``(c_(k-1), c_k)``; cell
    0 is everything below ``c_0``, cell ``2n`` everything above ``c_(n-1)``) and cell
    ``2k + 1`` is the point ``c_k`` itself.

    Values in one cell compare identically (``<``, ``==``, ``>``) with *every* candidate, so
    the counts per cell determine, for each candidate, how many values are below, equal and
    above it — all that OpenDP's quantile score reads of the data (see
    :func:`quantile_cell_values` and ``docs/scale-out.md``).

    Examples:
        >>> c = np.array([0.0, 0.5, 1.0])
        >>> quantile_cells(np.array([-1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0]), c).tolist()
        [0, 1, 2, 3, 4, 5, 6]

    Privacy:
        Deterministic and row-wise (public candidates only); no noise.
    """
    c = np.asarray(candidates, dtype=np.float64)
    k = np.searchsorted(c, x, side="left")  # candidates strictly below each value
    on = np.zeros(k.shape, dtype=bool)
    inside = k < c.size
    on[inside] = c[k[inside]] == x[inside]
    out: np.ndarray = 2 * k.astype(np.int64) + on
    return out


def quantile_cell_values(candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One representative value per cell of :func:`quantile_cells`, and which cells can hold
    a value at all.

    The representative of the point cell ``2k + 1`` is ``c_k``; of an open interval, its
    midpoint (or the float just above its lower end when the midpoint rounds onto an end);
    of the outer cells, the float just below ``c_0`` / above ``c_(n-1)``. A cell is
    *possible* if its representative lies strictly inside it; an open interval between two
    adjacent floats holds no float, so its count must be zero.

    Examples:
        >>> vals, ok = quantile_cell_values(np.array([0.0, 0.5, 1.0]))
        >>> vals[1:-1].tolist(), ok.all()
        ([0.0, 0.25, 0.5, 0.75, 1.0], np.True_)
        >>> x = np.array([0.1, 0.5, 0.5, 0.9])
        >>> counts = np.bincount(quantile_cells(x, np.array([0.0, 0.5, 1.0])), minlength=7)
        >>> np.repeat(vals, counts).tolist()  # a vector with the same comparisons as x
        [0.25, 0.5, 0.5, 0.75]
    """
    c = np.asarray(candidates, dtype=np.float64)
    n = c.size
    vals = np.empty(2 * n + 1, dtype=np.float64)
    vals[1::2] = c
    vals[0] = np.nextafter(c[0], -np.inf)
    vals[-1] = np.nextafter(c[-1], np.inf)
    lo, hi = c[:-1], c[1:]
    mid = lo + (hi - lo) / 2
    off = ~((lo < mid) & (mid < hi))
    mid[off] = np.nextafter(lo[off], np.inf)
    vals[2:-1:2] = mid
    ok = np.ones(2 * n + 1, dtype=bool)
    ok[2:-1:2] = (lo < mid) & (mid < hi)
    return vals, ok


def _as_int64(key: PlanKey, arr: np.ndarray) -> np.ndarray:
    """``arr`` (an integer array) as int64, refusing values int64 cannot hold (a uint64
    ``2**64 - 1`` would otherwise wrap to ``-1``)."""
    if arr.size and arr.dtype.kind == "u" and int(arr.max()) > np.iinfo(np.int64).max:
        raise InputError(f"the aggregate for {key!r} has values beyond int64 (max "
                         f"{int(arr.max())})")
    out: np.ndarray = arr.astype(np.int64)
    return out


def _cell_counts(key: PlanKey, arr: np.ndarray, nkeys: int) -> np.ndarray:
    """Validate a ``keys × bins`` (histogram) or ``keys × cells`` (quantile) count matrix."""
    if key[0] == "hist":
        width, what = len(key[2]) - 1, "bins"
    else:
        width, what = 2 * int(key[5]) + 1, "cells (2 × candidates + 1)"
    if arr.ndim != 2 or arr.shape != (nkeys, width) or (
            arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"the aggregate for {key!r} must be an integer matrix of {nkeys} "
                         f"keys × {width} {what}, got {arr.dtype} {arr.shape}")
    counts = _as_int64(key, arr)
    if (counts < 0).any():
        raise InputError(f"the aggregate for {key!r} has negative counts")
    if key[0] == "quantile":
        _, _col, lo, hi, _alpha, n = key
        _, ok = quantile_cell_values(quantile_candidates(lo, hi, n))
        ok[[0, -1]] = False  # values are clipped to [lo, hi] = [c_0, c_(n-1)] first
        if counts[:, ~ok].any():
            raise InputError(f"the aggregate for {key!r} counts values outside the bounds "
                             f"[{lo:g}, {hi:g}] (clip them first) or between adjacent floats")
        _check_quantile_rows(key, counts)
    return counts


def _check_quantile_rows(key: PlanKey, counts: np.ndarray) -> None:
    """Refuse, before anything is spent, a key whose rebuilt vector the driver cannot hold.

    The noise step rebuilds one float64 per row of a key (inside the ledger's spend): a
    ``MemoryError`` there would cost the budget and release nothing.
    """
    if not counts.size:
        return
    # each cell at most MAX_QUANTILE_ROWS first, so the per-key sums cannot wrap in int64
    largest = (int(counts.max()) if int(counts.max()) > MAX_QUANTILE_ROWS
               else int(counts.sum(axis=1).max()))
    problem = ""
    if largest > MAX_QUANTILE_ROWS:
        problem = f"more than the limit of {MAX_QUANTILE_ROWS}"
    else:
        try:  # address space only (no page is touched): fails now, not inside the spend
            np.empty(largest, dtype=np.float64)
        except MemoryError:
            problem = "more than this process can allocate"
    if problem:
        raise InputError(f"the aggregate for {key!r} has {largest} rows of one key, "
                         f"{problem}: the driver holds a key's rows (8 bytes each) to measure "
                         "its quantile; group more finely or lower max_rows")


def _int_sums(g: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """Exact per-group sums of integers (float64 accumulation is exact below 2**53)."""
    if v.size and v.size * float(np.abs(v).max(initial=0)) < 2.0**53:
        return np.rint(np.bincount(g, weights=v.astype(np.float64), minlength=n)).astype(np.int64)
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, g, v)
    return out


def _group_codes(frame: pd.DataFrame, by: tuple[str, ...],
                 keys: pd.DataFrame | Literal["private"] | None) -> tuple[np.ndarray, pd.DataFrame]:
    """Row → key index (``-1``: dropped) and the key frame (public, or every data key)."""
    n = len(frame)
    if not by:
        return np.zeros(n, dtype=np.int64), pd.DataFrame(index=range(1))
    codes, uniques, mults = [], [], []
    mult = 1
    for c in reversed(by):
        code, uniq = pd.factorize(frame[c], use_na_sentinel=False)
        codes.append(np.asarray(code, dtype=np.int64))
        uniques.append(pd.Index(uniq))
        mults.append(mult)
        mult *= max(len(uniq), 1)
        if mult > 2**62:
            raise InputError(f"too many distinct combinations of {list(by)!r}")
    codes, uniques, mults = codes[::-1], uniques[::-1], mults[::-1]
    row = np.zeros(n, dtype=np.int64)
    for code, m in zip(codes, mults, strict=True):
        row += code * m
    if isinstance(keys, str):  # private: every combination present in the data
        gid, present = pd.factorize(row)
        present = np.asarray(present, dtype=np.int64)
        kf = pd.DataFrame({c: uniques[i].take((present // mults[i]) % len(uniques[i]))
                           for i, c in enumerate(by)})
        return np.asarray(gid, dtype=np.int64), kf
    assert keys is not None
    kcode = np.zeros(len(keys), dtype=np.int64)
    valid = np.ones(len(keys), dtype=bool)
    for i, c in enumerate(by):
        try:
            idx = uniques[i].get_indexer(pd.Index(keys[c]))
        except (TypeError, ValueError) as exc:
            raise InputError(f"keys for column {c!r} do not match its type") from exc
        valid &= idx >= 0
        kcode += np.where(idx >= 0, idx, 0) * mults[i]
    if mult <= _LUT_LIMIT:
        lut = np.full(mult, -1, dtype=np.int64)
        lut[kcode[valid]] = np.flatnonzero(valid)
        return lut[row], keys
    index = pd.Index(np.where(valid, kcode, -1 - np.arange(len(keys))))
    return np.asarray(index.get_indexer(pd.Index(row)), dtype=np.int64), keys


def _sorted_keys(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``frame`` sorted by its values, never in data order, and never failing.

    It runs after noise was drawn, so it must not raise for any data: an object column mixing
    types (``'x'`` and ``1``) cannot be compared, so such a frame is sorted by
    ``type name:repr`` instead — still a function of the released values only.
    """
    try:
        return frame.sort_values(by, kind="stable", na_position="last")
    except TypeError:
        return frame.sort_values(by, kind="stable", na_position="last",
                                 key=lambda s: s.map(lambda v: f"{type(v).__name__}:{v!r}"))


def _plain_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """The key frame with categorical columns turned into their plain values.

    Privately selected keys come from the data: a categorical dtype carries *every* category
    (every key present, and more), which would leave with the release — in its dtype and the
    Parquet dictionary — whatever the threshold withheld, and would order the keys by
    category (often data) order. Never fails (it runs after the noise is drawn).
    """
    out = frame.copy()
    for c in out.columns:
        s = out[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            try:
                out[c] = s.astype(s.cat.categories.dtype)
            except (TypeError, ValueError):  # e.g. integer categories and a missing key
                out[c] = s.astype(object)
    return out


def _noisy(m: Mechanism, vec: np.ndarray) -> np.ndarray:
    if vec.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(m.measurement(vec.astype(np.int64).tolist()), dtype=np.int64)


def _mech_label(m: Mechanism) -> str:
    if m.distribution == "exponential":
        return "exponential mechanism (OpenDP make_private_quantile)"
    base = "discrete Laplace" if m.distribution == "discrete_laplace" else "discrete Gaussian"
    if m.threshold is not None:
        fn = "make_laplace_threshold" if m.distribution == "discrete_laplace" else \
            "make_gaussian_threshold"
        return f"{base} with threshold {m.threshold} (OpenDP {fn})"
    fn = "make_laplace" if m.distribution == "discrete_laplace" else "make_gaussian"
    return f"{base} (OpenDP {fn})"


def _execute(q: Query, keys: pd.DataFrame, mechs: dict[tuple[Any, ...], Mechanism],
             data: dict[tuple[Any, ...], Any], fps: dict[tuple[Any, ...], FixedPoint],
             values: dict[str, np.ndarray], rows: np.ndarray, g: np.ndarray,
             level: float) -> pd.DataFrame:
    """Draw all noise (OpenDP) and assemble the release table. Runs inside the ledger lock."""
    nkeys = len(keys)
    out_keys = np.arange(nkeys)
    noisy: dict[tuple[Any, ...], np.ndarray] = {}
    if isinstance(q.keys, str):  # private selection first: it decides the released keys
        keys = _plain_keys(keys)
        m = mechs[("count",)]
        counts = data[("count",)]
        kept = m.measurement({int(i): int(v) for i, v in enumerate(counts) if v > 0})
        # release the selected keys in the order of their values, never in data order
        chosen = _sorted_keys(keys.iloc[sorted(kept)], list(q.by))
        out_keys = np.asarray(chosen.index, dtype=np.int64)
        noisy[("count",)] = np.array([kept[int(i)] for i in out_keys], dtype=np.int64)
    for key, m in mechs.items():
        if key in noisy:
            continue
        kind = key[0]
        if kind in ("count", "sum", "csum", "csq"):
            noisy[key] = _noisy(m, np.asarray(data[key])[out_keys])
        elif kind == "hist":
            if isinstance(data[key], np.ndarray):  # keys × bins counts (release_aggregates)
                cells = data[key][out_keys].reshape(-1)
            else:
                gg, b, nb = data[key]
                lut = np.full(nkeys, -1, dtype=np.int64)
                lut[out_keys] = np.arange(out_keys.size)
                pos = lut[gg]
                ok = pos >= 0
                cells = np.bincount(pos[ok] * nb + b[ok], minlength=out_keys.size * nb)
            noisy[key] = _noisy(m, cells)
        elif kind == "quantile" and isinstance(data[key], np.ndarray):
            # keys × cells counts (release_aggregates): each key's vector is rebuilt from one
            # value per cell; it has the clipped values' comparisons with every candidate, so
            # the same OpenDP scores (see quantile_cells). One key's vector at a time.
            _, _col, lo, hi, _alpha, ncand = key
            vals, _ = quantile_cell_values(quantile_candidates(lo, hi, ncand))
            noisy[key] = np.array([float(m.measurement(np.repeat(vals, data[key][k])))
                                   for k in out_keys], dtype=np.float64)
        elif kind == "quantile":
            col, lo, hi = data[key]
            x = np.clip(values[col][rows], lo, hi)
            order = np.argsort(g, kind="stable")
            xs, gs = x[order], g[order]
            starts = np.searchsorted(gs, out_keys, side="left")
            ends = np.searchsorted(gs, out_keys, side="right")
            noisy[key] = np.array([float(m.measurement(xs[a:b])) for a, b in
                                   zip(starts, ends, strict=True)], dtype=np.float64)

    # columns are collected as arrays and the table is built once at the end (a DataFrame per
    # statistic cost more than the noise for small queries)
    cols: dict[str, list[Any]] = {c: [] for c in (*RELEASE_COLUMNS, "_k", "_block", "_pos")}
    nk = out_keys.size if q.by else 1
    nblocks = 0

    def block(stat: str, column: str, param: str | list[str], est: np.ndarray,
              lo: np.ndarray, hi: np.ndarray, mech: str, scale: float,
              used: Sequence[Mechanism], per_key: int = 1) -> None:
        nonlocal nblocks
        loss = PrivacyLoss.total(m.loss for m in used)
        n = nk * per_key
        for name, value in (("statistic", stat), ("column", column), ("mechanism", mech)):
            cols[name].append(np.full(n, value, dtype=object))
        cols["param"].append(np.asarray(param, dtype=object) if isinstance(param, list)
                             else np.full(n, param, dtype=object))
        for name, arr in (("estimate", est), ("ci_low", lo), ("ci_high", hi)):
            cols[name].append(np.asarray(arr, dtype=np.float64))
        for fname, fvalue in (("scale", float(scale)), ("epsilon", loss.epsilon),
                              ("delta", loss.delta), ("rho", loss.rho)):
            cols[fname].append(np.full(n, fvalue, dtype=np.float64))
        cols["_k"].append(np.repeat(np.arange(nk), per_key))
        cols["_block"].append(np.full(n, nblocks))
        cols["_pos"].append(np.arange(n))
        nblocks += 1

    def interval(m: Mechanism, lvl: float) -> int:
        return halfwidth(m.distribution, m.scale, lvl)

    for a in q.aggs:
        if a.kind == "count":
            m = mechs[("count",)]
            est = noisy[("count",)].astype(np.float64)
            t = interval(m, level)
            block("count", "", "", est, est - t, est + t, _mech_label(m), m.scale, [m])
        elif a.kind == "sum":
            assert a.bounds is not None
            key = ("sum", a.column, *a.bounds)
            m, fp = mechs[key], fps[key]
            est = noisy[key] * fp.step
            tw = interval(m, level) * fp.step
            block("sum", a.column, "", est, est - tw, est + tw, _mech_label(m),
                  m.scale * fp.step, [m])
        elif a.kind in ("mean", "variance"):
            assert a.bounds is not None
            lo_b, hi_b = a.bounds
            c, h = (lo_b + hi_b) / 2, (hi_b - lo_b) / 2
            mc, ms = mechs[("count",)], mechs[("csum", a.column, *a.bounds)]
            fs = fps[("csum", a.column, *a.bounds)]
            n_est = noisy[("count",)].astype(np.float64)
            s_est = noisy[("csum", a.column, *a.bounds)] * fs.step
            parts = 2 if a.kind == "mean" else 3
            lvl = 1 - (1 - level) / parts
            tn = interval(mc, lvl)
            ts = interval(ms, lvl) * fs.step
            denom = np.maximum(n_est, 1.0)
            mean_c = np.clip(s_est / denom, -h, h)
            m_lo, m_hi = ratio_interval(s_est - ts, s_est + ts, n_est - tn, n_est + tn, -h, h)
            if a.kind == "mean":
                block("mean", a.column, "", c + mean_c, c + m_lo, c + m_hi,
                      f"centred sum / count, {_mech_label(ms)}", ms.scale * fs.step, [ms, mc])
            else:
                mq = mechs[("csq", a.column, *a.bounds)]
                fq = fps[("csq", a.column, *a.bounds)]
                z_est = noisy[("csq", a.column, *a.bounds)] * fq.step
                tz = interval(mq, lvl) * fq.step
                h2 = h * h / 2
                sq = np.clip(z_est / denom, -h2, h2) + h2
                var = np.clip(sq - mean_c**2, 0, h * h)
                q_lo, q_hi = ratio_interval(z_est - tz, z_est + tz, n_est - tn, n_est + tn,
                                            -h2, h2)
                m2_lo = np.where((m_lo <= 0) & (m_hi >= 0), 0.0,
                                 np.minimum(m_lo**2, m_hi**2))
                m2_hi = np.maximum(m_lo**2, m_hi**2)
                v_lo = np.clip(q_lo + h2 - m2_hi, 0, h * h)
                v_hi = np.clip(q_hi + h2 - m2_lo, 0, h * h)
                block("variance", a.column, "", var, v_lo, v_hi,
                      f"centred sums / count, {_mech_label(mq)}", mq.scale * fq.step,
                      [mq, ms, mc])
        elif a.kind == "quantile":
            assert a.bounds is not None
            for al in a.alphas:
                key = ("quantile", a.column, *a.bounds, al, a.candidates)
                m = mechs[key]
                est = noisy[key]
                nan = np.full(est.size, np.nan)
                block("quantile", a.column, f"{al:g}", est, nan, nan, _mech_label(m), m.scale,
                      [m])
        elif a.kind == "histogram":
            key = ("hist", a.column, a.edges)
            m = mechs[key]
            e = a.edges
            nb = len(e) - 1
            labels = [f"[{e[i]:g}, {e[i + 1]:g}" + (")" if i < nb - 1 else "]")
                      for i in range(nb)]
            est = noisy[key].astype(np.float64)
            t = interval(m, level)
            block("histogram", a.column, labels * nk, est, est - t, est + t, _mech_label(m),
                  m.scale, [m], per_key=nb)
    flat = {c: (np.concatenate(v) if v else np.zeros(0)) for c, v in cols.items()}
    # order: by key (the order of the key set), then statistic in query order
    order = (np.lexsort((flat["_pos"], flat["_block"], flat["_k"])) if q.by
             else np.lexsort((flat["_pos"], flat["_block"])))
    body = pd.DataFrame({
        c: (pd.Series(flat[c][order], dtype="str") if c in ("statistic", "column", "param",
                                                             "mechanism")
            else flat[c][order].astype(np.float64))
        for c in RELEASE_COLUMNS})
    if not q.by:
        return body
    key_part = keys.iloc[out_keys[flat["_k"][order].astype(np.int64)]].reset_index(drop=True)
    return pd.concat([key_part, body], axis=1)

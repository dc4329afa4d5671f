"""Per-user contribution bounding and fixed-point clipping, vectorised with numpy.

Two caps make the sensitivity of every grouped aggregate finite:

* **max rows per user per group** (``C``): within each (user, group) pair, rows get an
  independent uniform priority and the ``C`` with the smallest priority are kept — a uniform
  random sample of the pair's rows, not its first ``C``;
* **max groups per user** (``G``): each (user, group) pair gets a uniform priority and each user
  keeps the pairs with the ``G`` smallest — a uniform random sample of the user's groups.

Both are implemented by sorting on (key, priority) and ranking within runs; only rows or pairs
in over-limit keys are sorted, and users whose rows all fall in one group (found in O(n)) skip
the pair hashing. After bounding, adding or removing one user changes at most
``G`` groups, each by at most ``C`` rows. The priorities come from a numpy ``Generator``
(seeded from the OS CSPRNG by default): they decide *which* rows are kept, never the noise,
which comes only from OpenDP.

Values are clipped to declared bounds and mapped to integers on a power-of-two grid
(:func:`fixed_point`) so that sums are computed exactly: a float sum's rounding can make its
true sensitivity exceed the declared bound (Casacuberta et al. 2022), an integer sum's cannot.

Examples:
    >>> import numpy as np
    >>> users = np.array([0, 0, 0, 0, 1, 1])
    >>> groups = np.array([0, 0, 0, 1, 0, 1])
    >>> keep = bound_contributions(users, groups, max_groups=1, max_rows=2,
    ...                            rng=np.random.default_rng(0))
    >>> int(keep.sum()) <= 4, [int(keep[users == u].sum()) <= 2 for u in (0, 1)]
    (True, [True, True])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pets._errors import InputError

__all__ = ["FixedPoint", "bound_contributions", "fixed_point", "rank_within"]

#: Values are scaled so the largest magnitude maps to at most 2**24 grid steps.
GRID_BITS = 24


def rank_within(keys: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniformly random rank (0, 1, …) of each element among equal ``keys``.

    ``keys`` must be non-negative and below ``2**62``. Returns ``(order, rank)``:
    ``keys[order]`` is sorted and ``rank[i]`` is the rank of element ``order[i]``.

    Ties in the random priorities are broken by position (a stable order), so the rank of an
    element depends only on the elements with the same key and on their own priorities —
    never on how an unstable sort happened to move *other* keys' elements around.
    """
    n = keys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    k = keys.astype(np.int64)
    # one int64 sort key: the group key in the high bits, as many random bits as fit below
    rbits = 63 - max(int(k.max()).bit_length(), 1)
    combined = (k << rbits) | rng.integers(0, 2**rbits, n, dtype=np.int64)
    order = np.argsort(combined)
    sc = combined[order]
    if bool((sc[1:] == sc[:-1]).any()):  # a tie (rare): redo with a stable sort
        order = np.argsort(combined, kind="stable")
    sk = keys[order]
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    lengths = np.diff(np.r_[starts, n])
    rank = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
    return order, rank


def bound_contributions(users: np.ndarray, groups: np.ndarray, *, max_groups: int,
                        max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of the rows kept so each user has ≤ ``max_groups`` groups and ≤
    ``max_rows`` rows in each.

    Args:
        users: Integer user codes (``>= 0``), one per row.
        groups: Integer group codes (``>= 0``), one per row.
        max_groups: ``G``, the most groups one user may contribute to.
        max_rows: ``C``, the most rows one user may contribute to one group.
        rng: Source of the sampling priorities (not of noise).
    """
    n = users.size
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    u = users.astype(np.int64)
    g = groups.astype(np.int64)
    if int(u.max()) >= 4 * n:  # sparse codes: make them dense before counting per user
        u = np.asarray(pd.factorize(u)[0], dtype=np.int64)
    if int(g.max()) >= 4 * n:
        g = np.asarray(pd.factorize(g)[0], dtype=np.int64)
    ngroups = int(g.max()) + 1
    per_user = np.bincount(u)
    # Fast path: a user whose rows all share one group has one (user, group) pair, so only
    # the row cap can bind. Found in O(n): by Cauchy–Schwarz, (Σg)² = n·Σg² iff g is constant
    # (integer sums, exact in float64 because (rows·groups)² < 2**52 is checked).
    single = np.zeros(per_user.size, dtype=bool)
    if int(per_user.max()) * ngroups < 2**26:
        s1 = np.rint(np.bincount(u, weights=g.astype(np.float64))).astype(np.int64)
        s2 = np.rint(np.bincount(u, weights=(g * g).astype(np.float64))).astype(np.int64)
        single = s2 * per_user == s1 * s1
    row_single = single[u]
    over = row_single & (per_user[u] > max_rows)
    if over.any():
        idx = np.flatnonzero(over)
        order, rank = rank_within(u[idx], rng)
        keep[idx[order[rank >= max_rows]]] = False
    if not row_single.all():
        midx = np.flatnonzero(~row_single)
        keep[midx] = _bound_pairs(u[midx], g[midx], ngroups, max_groups, max_rows, rng)
    return keep


def _bound_pairs(u: np.ndarray, g: np.ndarray, ngroups: int, max_groups: int, max_rows: int,
                 rng: np.random.Generator) -> np.ndarray:
    """The general case (users in several groups): hash the (user, group) pairs."""
    keep = np.ones(u.size, dtype=bool)
    codes, uniq = pd.factorize(u * ngroups + g)
    pair_id = np.asarray(codes, dtype=np.int64)
    per_pair = np.bincount(pair_id)
    over = per_pair[pair_id] > max_rows
    if over.any():
        idx = np.flatnonzero(over)
        order, rank = rank_within(pair_id[idx], rng)
        keep[idx[order[rank >= max_rows]]] = False
    pair_user = np.asarray(uniq, dtype=np.int64) // ngroups
    per_user = np.bincount(pair_user)
    over_u = per_user[pair_user] > max_groups
    if over_u.any():
        pidx = np.flatnonzero(over_u)
        order, rank = rank_within(pair_user[pidx], rng)
        pair_keep = np.ones(pair_user.size, dtype=bool)
        pair_keep[pidx[order[rank >= max_groups]]] = False
        keep &= pair_keep[pair_id]
    return keep


@dataclass(frozen=True)
class FixedPoint:
    """Integer values ``v`` on a grid of step ``step``: the real value is ``v * step``, and
    ``|v| <= bound`` for every row (so one row changes a sum by at most ``bound`` steps)."""

    values: np.ndarray
    step: float
    bound: int


def fixed_point(x: np.ndarray, magnitude: float) -> FixedPoint:
    """Round ``x`` (already clipped to ``[-magnitude, magnitude]``) onto a power-of-two grid.

    The step is ``2**(ceil(log2(magnitude)) - 24)``: at most ``2**24`` steps per side, so
    sums over fewer than ``2**29`` rows are exact in float64 and int64. Rounding moves each
    value by at most half a step (a relative ``2**-25`` of the bound).

    Examples:
        >>> fp = fixed_point(np.array([-1.0, 0.5, 1.0]), 1.0)
        >>> fp.step == 2**-24, fp.bound, fp.values.tolist()
        (True, 16777216, [-16777216, 8388608, 16777216])
    """
    if magnitude <= 0:
        return FixedPoint(np.zeros(x.size, dtype=np.int64), 1.0, 0)
    step = math.ldexp(1.0, math.ceil(math.log2(magnitude)) - GRID_BITS)
    bound = math.ceil(magnitude / step)
    v = np.clip(np.rint(x / step), -bound, bound).astype(np.int64)
    return FixedPoint(v, step, bound)


def measured_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The values of a measured column as float64, refusing non-numeric, NaN, inf or null.

    Shared by the pandas and Dask engines, so both refuse exactly the same inputs.
    """
    s = frame[column]
    if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        raise InputError(f"column {column!r} is not numeric ({s.dtype})")
    x = s.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(x).all():
        raise InputError(f"column {column!r} contains NaN, infinite or null values; "
                         "drop or impute them before a DP query")
    return x

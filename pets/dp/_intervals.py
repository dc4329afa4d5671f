"""Confidence intervals for OpenDP's integer noise, and sound intervals for ratios.

* Discrete Laplace with scale ``b`` (``P(Z = k) ∝ exp(-|k|/b)``, what ``make_laplace`` samples
  on integers): ``P(|Z| > t) = 2 p^(t+1) / (1 + p)`` with ``p = exp(-1/b)``, so the smallest
  integer ``t`` with ``P(|Z| > t) <= 1 - level`` is exact (the interval is conservative only by
  the discreteness of ``t``).
* Discrete Gaussian with scale ``σ`` (``P(Z = k) ∝ exp(-k²/2σ²)``): the pmf is summed exactly
  for ``σ <= 1e5``; above that the continuous normal quantile is used (the two differ by far less
  than one unit there; documented approximation).
* Ratios (means): with ``S ∈ [s_lo, s_hi]`` and ``N ∈ [n_lo, n_hi]`` each holding with
  probability ``1 - α/2`` (union bound), ``S/N`` lies between the extreme corner ratios when
  ``n_lo > 0``; otherwise the interval is the whole declared range.

Examples:
    >>> discrete_laplace_halfwidth(1.0, 0.95)
    3
    >>> round(1 - 2 * math.exp(-4) / (1 + math.exp(-1)), 4)   # coverage of ±3 at b = 1
    0.9732
    >>> discrete_gaussian_halfwidth(10.0, 0.95)
    20
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["discrete_gaussian_halfwidth", "discrete_laplace_halfwidth", "halfwidth",
           "ratio_interval"]


def discrete_laplace_halfwidth(scale: float, level: float) -> int:
    """Smallest integer ``t`` with ``P(|Z| <= t) >= level`` for discrete Laplace(``scale``)."""
    alpha = 1.0 - level
    if scale <= 0:
        return 0
    # In logs, never through p = exp(-1/b): for b ~ 1e16, 1 - p is lost to rounding and the
    # interval came out 10 % too narrow. 2 p^(t+1) / (1+p) <= alpha  <=>
    # (t + 1) / b >= need, with need = log(2 / (alpha (1 + e^(-1/b)))).
    need = math.log(2.0 / alpha) - math.log1p(math.exp(-1.0 / scale))
    if need <= 0:
        return 0

    def covers(t: int) -> bool:
        return (t + 1) / scale >= need

    t = max(0, math.ceil(need * scale) - 1)
    while t > 0 and covers(t - 1):  # guard against rounding: keep t minimal ...
        t -= 1
    while not covers(t):  # ... and covering
        t += 1
    if scale > 2.0**40:  # float checks are good to ~1e-16 relative only: widen, never narrow
        t += math.ceil(scale * 2.0**-45)
    return t


def discrete_gaussian_halfwidth(scale: float, level: float) -> int:
    """Smallest integer ``t`` with ``P(|Z| <= t) >= level`` for discrete Gaussian(``scale``)."""
    if scale <= 0:
        return 0
    if scale > 1e5:
        return math.ceil(NormalDist().inv_cdf(0.5 + level / 2) * scale)
    k = np.arange(0, math.ceil(scale * 12) + 2, dtype=np.float64)
    w = np.exp(-(k**2) / (2 * scale * scale))
    total = w[0] + 2 * w[1:].sum()
    cover = (w[0] + 2 * np.concatenate(([0.0], np.cumsum(w[1:])))) / total
    return int(np.searchsorted(cover, level, side="left"))


def halfwidth(distribution: str, scale: float, level: float) -> int:
    if distribution == "discrete_laplace":
        return discrete_laplace_halfwidth(scale, level)
    if distribution == "discrete_gaussian":
        return discrete_gaussian_halfwidth(scale, level)
    raise ValueError(distribution)  # pragma: no cover


def ratio_interval(s_lo: np.ndarray, s_hi: np.ndarray, n_lo: np.ndarray, n_hi: np.ndarray,
                   lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on ``s / n`` over the box, clipped to ``[lo, hi]``; ``[lo, hi]`` where ``n_lo <= 0``.

    Examples:
        >>> ratio_interval(np.array([-10.]), np.array([20.]), np.array([10.]), np.array([20.]),
        ...                -5., 5.)
        (array([-1.]), array([2.]))
    """
    ok = n_lo > 0
    safe_lo = np.where(ok, n_lo, 1.0)  # n_lo > 0 implies n_hi > 0; elsewhere unused
    safe_hi = np.where(ok, n_hi, 1.0)
    corners = np.stack([s_lo / safe_lo, s_lo / safe_hi, s_hi / safe_lo, s_hi / safe_hi])
    low = np.where(ok, np.clip(corners.min(axis=0), lo, hi), lo)
    high = np.where(ok, np.clip(corners.max(axis=0), lo, hi), hi)
    return low, high

"""The only place pets touches OpenDP: measurements, their calibration and their privacy maps.

Every noisy number pets releases is drawn by an OpenDP measurement built here:

* integer vectors (counts, fixed-point sums) — ``dp.m.make_laplace`` (discrete Laplace) under
  ``l1_distance`` for pure/approximate DP, ``dp.m.make_gaussian`` (discrete Gaussian) under
  ``l2_distance`` for zCDP;
* private key selection — ``dp.m.make_laplace_threshold`` / ``make_gaussian_threshold`` over a
  map of key → count under ``l01inf_distance`` / ``l02inf_distance`` (δ > 0);
* quantiles — ``dp.m.make_private_quantile`` (OpenDP's ``make_quantile_score_candidates``
  followed by report-noisy-max, i.e. the exponential mechanism).

Calibrated measurements are cached (``functools.lru_cache``) by their parameters: building
one costs a few OpenDP calls, and a measurement can be invoked any number of times.

Calibration: pets asks OpenDP's privacy map ``meas.map(d_in)`` for the loss at a trial scale,
solves for the scale that meets the requested loss, then rebuilds and re-checks with the map,
nudging the scale up until ``meas.map(d_in) <= target``. The loss pets records is always the
map's answer for the measurement actually invoked, never our own arithmetic.

OpenDP refuses to build these constructors until its ``"contrib"`` feature is enabled, and the
switch is process-global in OpenDP. :func:`opendp` turns it on lazily, the first time pets
builds a measurement (never at import time); it is idempotent and never turned off, so code of
your own that uses OpenDP in the same process also sees it enabled.

Examples:
    >>> m = laplace_vector(l1=20, epsilon=0.5)
    >>> m.scale, m.loss.epsilon
    (40.0, 0.5)
    >>> len(m.measurement([10, 20, 30]))
    3
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from pets._errors import InputError, PetsError
from pets.dp._budget import PrivacyLoss

__all__ = ["Mechanism", "gaussian_vector", "l2_sensitivity", "laplace_vector", "opendp",
           "quantile_mechanism", "threshold_mechanism"]

Distribution = Literal["discrete_laplace", "discrete_gaussian", "exponential"]


def opendp() -> Any:
    """``opendp.prelude`` with the ``"contrib"`` feature enabled (process-global, see above)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True)
class Mechanism:
    """A calibrated OpenDP measurement with the loss its privacy map gives for ``d_in``."""

    name: str
    measurement: Any
    d_in: Any
    scale: float
    loss: PrivacyLoss
    distribution: Distribution
    threshold: int | None = None


def _as_loss(measure: str, value: Any) -> PrivacyLoss:
    if measure == "MaxDivergence":
        return PrivacyLoss(epsilon=float(value))
    if measure == "ZeroConcentratedDivergence":
        return PrivacyLoss(rho=float(value))
    if measure == "Approximate(MaxDivergence)":
        return PrivacyLoss(epsilon=float(value[0]), delta=float(value[1]))
    if measure == "Approximate(ZeroConcentratedDivergence)":
        return PrivacyLoss(rho=float(value[0]), delta=float(value[1]))
    raise PetsError(f"unexpected OpenDP output measure {measure}")  # pragma: no cover


def _primary(loss: PrivacyLoss) -> float:
    return loss.rho if loss.rho else loss.epsilon


def _calibrate(build: Callable[[float], Any], d_in: Any, target: float,
               power: int) -> tuple[Any, float, PrivacyLoss]:
    """Find a scale whose OpenDP map gives a primary loss (ε or ρ) ``<= target``.

    The loss of these mechanisms is proportional to ``scale ** -power`` (1 for Laplace and the
    exponential mechanism, 2 for Gaussian): solve at scale 1, then verify with the map and
    nudge upwards until the map agrees.
    """
    if not (math.isfinite(target) and target > 0):
        raise InputError(f"privacy loss must be finite and > 0, got {target!r}")
    m1 = build(1.0)
    l1 = _primary(_as_loss(str(m1.output_measure), m1.map(d_in)))
    if l1 == 0:  # zero sensitivity: any scale is private
        return m1, 1.0, _as_loss(str(m1.output_measure), m1.map(d_in))
    scale = (l1 / target) ** (1.0 / power)
    for _ in range(200):
        meas = build(scale)
        loss = _as_loss(str(meas.output_measure), meas.map(d_in))
        got = _primary(loss)
        if got <= target:
            return meas, scale, loss
        scale = math.nextafter(scale * (got / target) ** (1.0 / power), math.inf)
    raise PetsError("could not calibrate the noise scale with OpenDP")  # pragma: no cover


def l2_sensitivity(groups: int, per_group: int) -> float:
    """``√groups · per_group``, rounded *up* to a float: the L2 ``d_in`` of a vector in which
    one unit changes at most ``groups`` entries by at most ``per_group`` each.

    ``math.sqrt(3) * C`` rounds *down* (``math.sqrt(3)**2 < 3`` exactly): passed to OpenDP as
    ``d_in`` it would understate the sensitivity, and so ρ, by an ulp. This returns the
    smallest float whose square is at least ``groups · per_group²`` (checked exactly).

    Examples:
        >>> from fractions import Fraction
        >>> math.sqrt(3) ** 2 < 3 <= Fraction(l2_sensitivity(3, 1)) ** 2
        True
        >>> l2_sensitivity(4, 5)
        10.0
    """
    n = int(groups) * int(per_group) ** 2
    if n < 0:
        raise InputError(f"sensitivity must be >= 0, got groups={groups}, per_group={per_group}")
    s = math.sqrt(n)
    while Fraction(s) ** 2 < n:
        s = math.nextafter(s, math.inf)
    return s


@functools.lru_cache(maxsize=256)
def laplace_vector(*, l1: int, epsilon: float, name: str = "laplace") -> Mechanism:
    """Discrete Laplace noise on an integer vector whose L1 sensitivity is ``l1``.

    Privacy:
        ``dp.m.make_laplace`` over ``vector_domain(atom_domain(T=i64))`` and ``l1_distance``;
        pure ε-DP with ``ε = meas.map(l1) <= epsilon``.
    """
    if not 0 <= int(l1) < 2**62:
        raise InputError(f"the L1 sensitivity {int(l1)} (max_groups × max_rows × the bound in "
                         "grid steps) is too large: lower max_groups or max_rows")
    dp = opendp()
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
    meas, scale, loss = _calibrate(lambda s: dp.m.make_laplace(*space, scale=s), int(l1),
                                   epsilon, 1)
    return Mechanism(name, meas, int(l1), scale, loss, "discrete_laplace")


@functools.lru_cache(maxsize=256)
def gaussian_vector(*, l2: float, rho: float, name: str = "gaussian") -> Mechanism:
    """Discrete Gaussian noise on an integer vector whose L2 sensitivity is ``l2``.

    ``l2`` must be an upper bound of the true sensitivity: build it with
    :func:`l2_sensitivity`, not ``math.sqrt(G) * C`` (which can round down).

    Privacy:
        ``dp.m.make_gaussian`` over ``vector_domain(atom_domain(T=i64))`` and
        ``l2_distance(T=f64)``; ρ-zCDP with ``ρ = meas.map(l2) <= rho``.
    """
    dp = opendp()
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="f64")
    meas, scale, loss = _calibrate(lambda s: dp.m.make_gaussian(*space, scale=s), float(l2),
                                   rho, 2)
    return Mechanism(name, meas, float(l2), scale, loss, "discrete_gaussian")


@functools.lru_cache(maxsize=256)
def threshold_mechanism(*, l0: int, linf: int, primary: float, delta: float, zcdp: bool,
                        name: str = "threshold") -> Mechanism:
    """Noisy counts over a key → count map, keeping only keys whose noisy count passes a
    threshold: private key selection.

    The scale is calibrated to ``primary`` (ε, or ρ under zCDP) with the threshold out of the
    way; then the smallest integer threshold whose map gives δ ≤ ``delta`` is found by binary
    search on OpenDP's map.

    Privacy:
        ``dp.m.make_laplace_threshold`` (``l01inf_distance``, (ε, δ)-DP) or
        ``dp.m.make_gaussian_threshold`` (``l02inf_distance``, (ρ, δ)-approximate zCDP), with
        ``d_in = (l0, l1, l∞)``: a user touches at most ``l0`` keys and changes each count by at
        most ``linf``. Keys are *not* public: δ bounds the chance that a key held by one user
        alone appears.
    """
    dp = opendp()
    dom = dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64"))
    if zcdp:
        metric = dp.l02inf_distance(dp.absolute_distance(T="f64"))
        d_in: tuple[int, float, float] = (l0, l2_sensitivity(l0, linf), float(linf))
        make = dp.m.make_gaussian_threshold
    else:
        metric = dp.l01inf_distance(dp.absolute_distance(T="f64"))
        d_in = (l0, float(l0 * linf), float(linf))
        make = dp.m.make_laplace_threshold
    big = 2**62

    def build(s: float, t: int = big) -> Any:
        return make(dom, metric, scale=s, threshold=t)

    _, scale, _ = _calibrate(build, d_in, primary, 2 if zcdp else 1)

    def delta_at(t: int) -> float:
        m = build(scale, t)
        return _as_loss(str(m.output_measure), m.map(d_in)).delta

    lo, hi = linf, big
    if delta_at(hi) > delta:
        raise InputError(f"delta={delta!r} is too small for private key selection")
    while lo < hi:  # smallest threshold whose δ meets the target (δ falls as it grows)
        mid = (lo + hi) // 2
        if delta_at(mid) <= delta:
            hi = mid
        else:
            lo = mid + 1
    meas = build(scale, lo)
    loss = _as_loss(str(meas.output_measure), meas.map(d_in))
    if _primary(loss) > primary or loss.delta > delta:  # pragma: no cover - defensive
        raise PetsError("OpenDP's map of the threshold mechanism exceeds the requested loss")
    return Mechanism(name, meas, d_in, scale, loss,
                     "discrete_gaussian" if zcdp else "discrete_laplace", threshold=lo)


def quantile_mechanism(*, candidates: Sequence[float], alpha: float, rows: int, groups: int,
                       primary: float, zcdp: bool, name: str = "quantile") -> Mechanism:
    """The exponential mechanism for the ``alpha``-quantile; see :func:`_quantile_mechanism`."""
    return _quantile_mechanism(tuple(float(c) for c in candidates), float(alpha), int(rows),
                               int(groups), float(primary), bool(zcdp), name)


@functools.lru_cache(maxsize=64)
def _quantile_mechanism(candidates: tuple[float, ...], alpha: float, rows: int, groups: int,
                        primary: float, zcdp: bool, name: str) -> Mechanism:
    """The exponential mechanism over ``candidates`` for the ``alpha``-quantile of one group.

    ``measurement`` is the per-group measurement; ``loss`` is the OpenDP map of the
    composition of ``groups`` copies, each at distance ``rows`` — a user adds at most ``rows``
    values to each of at most ``groups`` groups, and every other group is unchanged.

    Privacy:
        ``dp.m.make_private_quantile`` (``make_quantile_score_candidates`` + report noisy max)
        under ``symmetric_distance``, composed with ``dp.c.make_composition``; ε-DP, or ρ-zCDP
        when ``zcdp``.
    """
    dp = opendp()
    dom = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    measure = dp.zero_concentrated_divergence() if zcdp else dp.max_divergence()
    cands = list(candidates)

    def one(s: float) -> Any:
        return dp.m.make_private_quantile(dom, dp.symmetric_distance(), measure,
                                          candidates=cands, alpha=float(alpha), scale=s)

    def build(s: float) -> Any:
        return dp.c.make_composition([one(s)] * groups)

    _, scale, loss = _calibrate(build, rows, primary, 2 if zcdp else 1)
    return Mechanism(name, one(scale), rows, scale, loss, "exponential")

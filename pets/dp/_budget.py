"""Privacy budgets and privacy losses: pure ε, approximate (ε, δ), and zero-concentrated ρ.

A :class:`Budget` is the total a dataset may spend for one privacy unit; a :class:`PrivacyLoss`
is what one release spent, as computed by OpenDP's privacy maps. Losses compose by *basic
composition*: ε and δ add (pure and approximate DP), ρ adds (zCDP, with δ adding for the
private key selection that needs it). Whether a spend fits is decided in exact rational
arithmetic (:meth:`Budget.admits`), so float rounding can never let the total exceed the budget.

Examples:
    >>> b = Budget.approx(1.0, 1e-6)
    >>> b.kind, b.epsilon, b.delta
    ('approx', 1.0, 1e-06)
    >>> spent = PrivacyLoss(epsilon=0.25) + PrivacyLoss(epsilon=0.5, delta=1e-7)
    >>> spent
    PrivacyLoss(epsilon=0.75, delta=1e-07, rho=0.0)
    >>> b.remaining(spent)
    PrivacyLoss(epsilon=0.25, delta=9e-07, rho=0.0)
    >>> Budget.pure(0.0)
    Traceback (most recent call last):
    ...
    pets._errors.InputError: epsilon must be a finite number > 0, got 0.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from pets._errors import InputError

__all__ = ["Budget", "BudgetKind", "PrivacyLoss"]

BudgetKind = Literal["pure", "approx", "zcdp"]


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _delta(value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"delta must be a number in (0, 1), got {value!r}")
    v = float(value)
    if allow_zero and v == 0:
        return 0.0
    if not math.isfinite(v) or not 0 < v < 1:
        raise InputError(f"delta must be a number in (0, 1), got {value!r}")
    return v


@dataclass(frozen=True)
class PrivacyLoss:
    """The privacy spent by one release (or a sum of releases): ε, δ and ρ, each ≥ 0.

    Examples:
        >>> PrivacyLoss(rho=0.01).is_zero()
        False
    """

    epsilon: float = 0.0
    delta: float = 0.0
    rho: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta", "rho"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise InputError(f"privacy loss {name} must be finite and >= 0, got {v!r}")
            object.__setattr__(self, name, float(v))

    def __add__(self, other: PrivacyLoss) -> PrivacyLoss:
        return PrivacyLoss.total([self, other])

    @staticmethod
    def total(losses: Iterable[PrivacyLoss]) -> PrivacyLoss:
        """Basic composition: the exactly rounded sums (``math.fsum``) of ε, δ and ρ."""
        items = list(losses)
        return PrivacyLoss(math.fsum(x.epsilon for x in items),
                           math.fsum(x.delta for x in items),
                           math.fsum(x.rho for x in items))

    def is_zero(self) -> bool:
        return self.epsilon == 0 and self.delta == 0 and self.rho == 0

    def as_dict(self) -> dict[str, float]:
        return {"epsilon": self.epsilon, "delta": self.delta, "rho": self.rho}


@dataclass(frozen=True)
class Budget:
    """A total privacy budget for one dataset and privacy unit. Build with a class method.

    ``pure``: ε-DP, Laplace noise; keys must be public. ``approx``: (ε, δ)-DP, Laplace noise
    and δ spent only by private key selection. ``zcdp``: ρ-zCDP, Gaussian noise; an optional
    δ allows private key selection (then the guarantee is (ρ, δ)-approximate zCDP).
    """

    kind: BudgetKind
    epsilon: float = 0.0
    delta: float = 0.0
    rho: float = 0.0

    def __post_init__(self) -> None:
        # Checked here too, not only in the class methods: ``Budget("pure", epsilon=inf)``
        # would otherwise be an unlimited budget that the ledger records and enforces.
        if self.kind == "pure":
            eps, delta, rho = _positive("epsilon", self.epsilon), self.delta, self.rho
            if delta != 0 or rho != 0:
                raise InputError("a pure budget has only epsilon (delta = rho = 0)")
        elif self.kind == "approx":
            eps, delta, rho = _positive("epsilon", self.epsilon), _delta(self.delta), self.rho
            if rho != 0:
                raise InputError("an approximate budget has epsilon and delta, not rho")
        elif self.kind == "zcdp":
            eps, rho = self.epsilon, _positive("rho", self.rho)
            delta = _delta(self.delta, allow_zero=True)
            if eps != 0:
                raise InputError("a zCDP budget has rho (and delta), not epsilon")
        else:
            raise InputError(f"budget kind must be 'pure', 'approx' or 'zcdp', got {self.kind!r}")
        for name, v in (("epsilon", eps), ("delta", delta), ("rho", rho)):
            object.__setattr__(self, name, float(v))

    @classmethod
    def pure(cls, epsilon: float) -> Budget:
        """ε-differential privacy (``MaxDivergence`` in OpenDP)."""
        return cls("pure", epsilon=_positive("epsilon", epsilon))

    @classmethod
    def approx(cls, epsilon: float, delta: float) -> Budget:
        """(ε, δ)-differential privacy (``Approximate<MaxDivergence>`` in OpenDP)."""
        return cls("approx", epsilon=_positive("epsilon", epsilon), delta=_delta(delta))

    @classmethod
    def zcdp(cls, rho: float, delta: float = 0.0) -> Budget:
        """ρ-zero-concentrated DP (``ZeroConcentratedDivergence``); δ > 0 for private keys."""
        return cls("zcdp", rho=_positive("rho", rho), delta=_delta(delta, allow_zero=True))

    def as_loss(self) -> PrivacyLoss:
        return PrivacyLoss(self.epsilon, self.delta, self.rho)

    def allows(self, spent: PrivacyLoss) -> bool:
        """Whether ``spent`` (an already composed, rounded total) stays within this budget.

        To decide a spend use :meth:`admits`, which composes the individual losses exactly.
        """
        return (spent.epsilon <= self.epsilon and spent.delta <= self.delta
                and spent.rho <= self.rho)

    def admits(self, losses: Iterable[PrivacyLoss]) -> bool:
        """Whether the basic composition of ``losses`` stays within this budget, exactly.

        The sums are taken in rational arithmetic (``fractions.Fraction``), so no rounding can
        let a total that exceeds the budget pass: ten losses of the float ``0.1`` sum to
        ``1.0000000000000000555…`` and do *not* fit in ``Budget.pure(1.0)``, although their
        correctly rounded float sum is ``1.0``.

        Examples:
            >>> Budget.pure(1.0).admits([PrivacyLoss(0.125)] * 8)
            True
            >>> Budget.pure(1.0).admits([PrivacyLoss(0.1)] * 10)
            False
        """
        items = list(losses)
        for name in ("epsilon", "delta", "rho"):
            values = [getattr(x, name) for x in items]
            cap = getattr(self, name)
            # fsum is the correctly rounded exact sum, so it decides every case but a tie:
            # below the cap the exact sum is too, above it the exact sum is too
            total = math.fsum(values)
            if total > cap or (total == cap
                               and sum(map(Fraction, values), Fraction(0)) > Fraction(cap)):
                return False
        return True

    def remaining(self, spent: PrivacyLoss) -> PrivacyLoss:
        return PrivacyLoss(max(0.0, self.epsilon - spent.epsilon),
                           max(0.0, self.delta - spent.delta),
                           max(0.0, self.rho - spent.rho))

    def describe(self) -> str:
        if self.kind == "pure":
            return f"ε = {self.epsilon:g} (pure DP, basic composition)"
        if self.kind == "approx":
            return f"(ε = {self.epsilon:g}, δ = {self.delta:g}) (approximate DP, basic composition)"
        tail = f", δ = {self.delta:g}" if self.delta else ""
        return f"ρ = {self.rho:g}{tail} (zCDP, ρ adds)"

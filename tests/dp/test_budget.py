import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pets import InputError
from pets.dp import Budget, PrivacyLoss


class TestBudget:
    @pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, "1", None, True])
    def test_pure_rejects_non_positive_or_non_finite_epsilon(self, bad):
        with pytest.raises(InputError, match="epsilon"):
            Budget.pure(bad)

    @pytest.mark.parametrize("bad", [0, 1, 1.5, -1e-9, math.nan])
    def test_approx_rejects_delta_outside_open_unit_interval(self, bad):
        with pytest.raises(InputError, match="delta"):
            Budget.approx(1.0, bad)

    def test_zcdp_allows_zero_delta(self):
        assert Budget.zcdp(0.5).delta == 0.0
        assert Budget.zcdp(0.5, 1e-6).delta == 1e-6

    @pytest.mark.parametrize(("kind", "kw"), [
        ("pure", {"epsilon": math.inf}), ("pure", {"epsilon": -1.0}),
        ("pure", {"epsilon": 1.0, "delta": 0.5}), ("approx", {"epsilon": 1.0, "delta": 0.0}),
        ("approx", {"epsilon": 1.0, "delta": 2.0}), ("zcdp", {"rho": math.nan}),
        ("zcdp", {"rho": 1.0, "epsilon": 5.0}), ("renyi", {"epsilon": 1.0})])
    def test_direct_construction_is_validated_too(self, kind, kw):
        # Budget("pure", epsilon=inf) would be an unlimited budget the ledger then enforces
        with pytest.raises(InputError):
            Budget(kind, **kw)

    def test_allows_is_exact_at_the_boundary(self):
        b = Budget.pure(1.0)
        assert b.allows(PrivacyLoss.total([PrivacyLoss(0.1)] * 10))
        assert not b.allows(PrivacyLoss(math.nextafter(1.0, 2.0)))

    def test_remaining_never_negative(self):
        assert Budget.pure(1.0).remaining(PrivacyLoss(2.0)).epsilon == 0.0


    @settings(max_examples=200)
    @given(st.lists(st.floats(0, 2, allow_nan=False), max_size=12), st.floats(1e-3, 10))
    def test_admits_is_the_exact_rational_comparison(self, xs, cap):
        exact = sum(map(Fraction, xs), Fraction(0)) <= Fraction(cap)
        assert Budget.pure(cap).admits([PrivacyLoss(x) for x in xs]) == exact
        # ties: losses that sum exactly to the cap, or one ulp above it
        assert Budget.pure(cap).admits([PrivacyLoss(cap)])
        assert not Budget.pure(cap).admits([PrivacyLoss(cap), PrivacyLoss(5e-324)])


class TestPrivacyLoss:
    def test_negative_loss_is_rejected(self):
        with pytest.raises(InputError):
            PrivacyLoss(epsilon=-0.1)

    @given(st.lists(st.floats(0, 10, allow_nan=False), max_size=30))
    def test_total_is_the_exactly_rounded_sum(self, xs):
        total = PrivacyLoss.total(PrivacyLoss(epsilon=x) for x in xs)
        assert total.epsilon == math.fsum(xs)

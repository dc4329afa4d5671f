"""Exact privacy-map assertions: the loss pets records is what OpenDP's map says."""

import math
from fractions import Fraction

import numpy as np
import opendp.prelude as dp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pets import InputError
from pets.dp._opendp import (
    gaussian_vector,
    l2_sensitivity,
    laplace_vector,
    quantile_mechanism,
    threshold_mechanism,
)


class TestLaplaceVector:
    @pytest.mark.parametrize(("l1", "eps", "scale"), [(20, 0.5, 40.0), (1, 1.0, 1.0),
                                                      (60, 2.0, 30.0)])
    def test_scale_and_map_for_given_sensitivity(self, l1, eps, scale):
        m = laplace_vector(l1=l1, epsilon=eps)
        assert m.scale == scale
        assert m.loss.epsilon == eps == m.measurement.map(l1)
        assert str(m.measurement.output_measure) == "MaxDivergence"

    def test_map_never_exceeds_target_when_division_rounds_up(self):
        m = laplace_vector(l1=60, epsilon=1 / 3)
        assert m.measurement.map(60) <= 1 / 3
        assert m.loss.epsilon == m.measurement.map(60)

    def test_a_user_twice_as_heavy_costs_twice_the_epsilon(self):
        m = laplace_vector(l1=10, epsilon=0.5)
        assert m.measurement.map(20) == pytest.approx(1.0)

    @pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
    def test_bad_epsilon_is_refused(self, bad):
        with pytest.raises(InputError):
            laplace_vector(l1=1, epsilon=bad)


class TestGaussianVector:
    def test_rho_is_sensitivity_squared_over_two_sigma_squared(self):
        m = gaussian_vector(l2=20.0, rho=0.5)
        assert m.scale == pytest.approx(20.0)
        assert m.loss.rho <= 0.5 and m.loss.rho == pytest.approx(0.5)
        assert str(m.measurement.output_measure) == "ZeroConcentratedDivergence"


class TestL2Sensitivity:
    @given(st.integers(1, 10_000), st.integers(1, 2**34))
    def test_is_the_smallest_float_not_below_the_true_value(self, groups, per_group):
        s = l2_sensitivity(groups, per_group)
        n = groups * per_group**2
        assert Fraction(s) ** 2 >= n > Fraction(math.nextafter(s, 0)) ** 2

    def test_zcdp_threshold_d_in_is_not_rounded_down(self):
        # math.sqrt(3) * 1 < √3: OpenDP takes min(l2, √l0·l∞), so a low l2 would win
        m = threshold_mechanism(l0=3, linf=1, primary=0.5, delta=1e-6, zcdp=True)
        assert Fraction(m.d_in[1]) ** 2 >= 3


class TestThreshold:
    def test_threshold_is_the_smallest_meeting_delta(self):
        m = threshold_mechanism(l0=1, linf=20, primary=0.5, delta=1e-6, zcdp=False)
        assert m.loss.epsilon == 0.5 and 0 < m.loss.delta <= 1e-6
        dom = dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64"))
        met = dp.l01inf_distance(dp.absolute_distance(T="f64"))
        one_less = dp.m.make_laplace_threshold(dom, met, scale=m.scale, threshold=m.threshold - 1)
        assert one_less.map(m.d_in)[1] > 1e-6

    def test_more_groups_per_user_cost_more(self):
        one = threshold_mechanism(l0=1, linf=5, primary=1.0, delta=1e-6, zcdp=False)
        three = threshold_mechanism(l0=3, linf=5, primary=1.0, delta=1e-6, zcdp=False)
        assert three.scale == pytest.approx(3 * one.scale)
        assert three.threshold > one.threshold

    def test_zcdp_threshold_reports_rho_and_delta(self):
        m = threshold_mechanism(l0=2, linf=3, primary=0.1, delta=1e-7, zcdp=True)
        assert m.loss.epsilon == 0 and m.loss.rho <= 0.1 and 0 < m.loss.delta <= 1e-7


class TestQuantile:
    def test_loss_composes_over_max_groups(self):
        cands = np.linspace(0, 100, 11).tolist()
        one = quantile_mechanism(candidates=cands, alpha=0.5, rows=3, groups=1, primary=0.6,
                                 zcdp=False)
        two = quantile_mechanism(candidates=cands, alpha=0.5, rows=3, groups=2, primary=0.6,
                                 zcdp=False)
        assert one.loss.epsilon <= 0.6 and two.loss.epsilon <= 0.6
        # the per-group measurement of G=2 must be twice as private as with G=1
        assert two.measurement.map(3) == pytest.approx(one.measurement.map(3) / 2)
        assert two.loss.epsilon == pytest.approx(2 * two.measurement.map(3))

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pets.dp._intervals import (
    discrete_gaussian_halfwidth,
    discrete_laplace_halfwidth,
    ratio_interval,
)


def _coverage(pmf, t):
    return pmf[: t + 1].sum() * 2 - pmf[0]


class TestDiscreteLaplace:
    @pytest.mark.parametrize("scale", [0.3, 1.0, 7.5, 60.0])
    @pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
    def test_halfwidth_is_the_smallest_covering_integer(self, scale, level):
        k = np.arange(0, int(scale * 60) + 50)
        p = math.exp(-1 / scale)
        pmf = (1 - p) / (1 + p) * p**k
        t = discrete_laplace_halfwidth(scale, level)
        assert _coverage(pmf, t) >= level - 1e-12
        if t > 0:
            assert _coverage(pmf, t - 1) < level


    @pytest.mark.parametrize("scale", [1e9, 1e12, 1e14, 1e16, 1e18])
    def test_huge_scales_keep_the_laplace_tail(self, scale):
        # P(|Z| > t) ≈ e^(-t/b) for huge b, so t ≈ b·ln(1/α); through p = exp(-1/b) the
        # rounding of 1 - p made it 2.70·b at b = 1e16 (coverage ≈ 93 % for a stated 95 %)
        t = discrete_laplace_halfwidth(scale, 0.95)
        assert t == pytest.approx(scale * math.log(20), rel=1e-9)
        assert t >= scale * math.log(20)  # conservative where float checks get coarse

    def test_tiny_scale_gives_zero_width(self):
        assert discrete_laplace_halfwidth(1e-3, 0.95) == 0


class TestDiscreteGaussian:
    @pytest.mark.parametrize("scale", [0.5, 3.0, 40.0])
    def test_halfwidth_is_the_smallest_covering_integer(self, scale):
        k = np.arange(-int(scale * 20) - 5, int(scale * 20) + 6)
        w = np.exp(-(k**2) / (2 * scale**2))
        w /= w.sum()
        pmf = w[k >= 0]
        t = discrete_gaussian_halfwidth(scale, 0.95)
        assert _coverage(pmf, t) >= 0.95 - 1e-12
        if t > 0:
            assert _coverage(pmf, t - 1) < 0.95

    def test_large_scale_uses_the_normal_quantile(self):
        assert discrete_gaussian_halfwidth(1e6, 0.95) == math.ceil(1.959963984540054 * 1e6)


class TestRatioInterval:
    @given(st.floats(-1e4, 1e4), st.floats(0, 1e3), st.floats(1, 1e4), st.floats(0, 1e3),
           st.floats(0, 1), st.floats(0, 1))
    def test_true_ratio_inside_box_is_inside_interval(self, s, ds, n, dn, u, v):
        s_lo, s_hi = s - ds, s + ds
        n_lo, n_hi = n - dn, n + dn
        true_s = s_lo + u * (s_hi - s_lo)
        true_n = max(n_lo, 1.0) + v * (n_hi - max(n_lo, 1.0))  # a true count is >= 1
        lo, hi = ratio_interval(*(np.array([x]) for x in (s_lo, s_hi, n_lo, n_hi)), -1e5, 1e5)
        r = true_s / true_n
        assert lo[0] - 1e-9 * abs(r) <= r <= hi[0] + 1e-9 * abs(r)

    def test_zero_or_negative_upper_count_does_not_warn(self):
        # filterwarnings=error turns a division-by-zero RuntimeWarning into a failure
        lo, hi = ratio_interval(np.array([1.0, -2.0]), np.array([2.0, 3.0]),
                                np.array([-9.0, -4.0]), np.array([0.0, -1.0]), -7.0, 7.0)
        assert lo.tolist() == [-7.0, -7.0] and hi.tolist() == [7.0, 7.0]

    def test_non_positive_count_gives_the_declared_range(self):
        lo, hi = ratio_interval(np.array([1.0]), np.array([2.0]), np.array([-3.0]),
                                np.array([5.0]), -7.0, 7.0)
        assert (lo[0], hi[0]) == (-7.0, 7.0)

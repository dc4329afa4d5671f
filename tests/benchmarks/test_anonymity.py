"""The anonymity benchmark's utility figures, and infeasible k reported, not raised."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks import anonymity_utility as au


class TestMeasure:
    def test_figures_match_the_enforcement(self):
        frame = au.quasi_identifiers(1_000)
        row = au.measure(frame, 5, 0.05)
        assert row["status"] == "ok"
        assert row["k_achieved"] >= 5
        assert row["suppression_rate"] == row["rows_suppressed"] / 1_000 <= 0.05
        assert row["disc_norm"] == pytest.approx(row["discernibility"] / 1_000**2)
        kept = 1_000 - row["rows_suppressed"]
        assert row["c_avg"] == pytest.approx(kept / row["classes"] / 5)

    def test_larger_k_never_lowers_discernibility_at_zero_suppression(self):
        frame = au.quasi_identifiers(1_000)
        d = [au.measure(frame, k, 0.0)["discernibility"] for k in (2, 10, 50)]
        assert d == sorted(d)

    def test_infeasible_k_is_a_row_with_the_reason(self):
        frame = pd.DataFrame({"birth_date": pd.to_datetime(["1980-01-01"] * 3),
                              "postcode": ["1", "2", "3"], "country": ["DE", "FR", "IT"]})
        row = au.measure(frame, 5, 0.0)
        assert row["status"].startswith("infeasible: k=5 cannot be met")

"""Shared data for the DP tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def small_events() -> pd.DataFrame:
    """200 users in 3 countries, 1–4 rows each, a bounded metric."""
    rng = np.random.default_rng(5)
    users = np.repeat([f"u{i:03d}" for i in range(200)], rng.integers(1, 5, 200))
    country = {f"u{i:03d}": ["DE", "FR", "IT"][i % 3] for i in range(200)}
    return pd.DataFrame({
        "user_id": users,
        "country": [country[u] for u in users],
        "watch": rng.uniform(0, 100, users.size),
    })

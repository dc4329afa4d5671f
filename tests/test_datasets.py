import re

import numpy as np
import pandas as pd
import pytest

from pets import InputError
from pets.datasets import COUNTRIES, synthetic_events, synthetic_users


class TestSyntheticUsers:
    def test_same_seed_same_data_other_seed_other_data(self):
        a, b = synthetic_users(500, seed=3), synthetic_users(500, seed=3)
        pd.testing.assert_frame_equal(a, b)
        assert not a.equals(synthetic_users(500, seed=4))

    def test_columns_and_formats(self):
        u = synthetic_users(2000, seed=1)
        assert u["user_id"].is_unique
        assert u["email"].str.fullmatch(r"[a-z]+\.[a-z]+\d+@[a-z.]+").all()
        assert u["phone"].str.fullmatch(r"\+\d{9,15}").all()  # E.164: at most 15 digits
        assert set(u["country"]) <= {c[0] for c in COUNTRIES}
        cc = {c[0]: c[2] for c in COUNTRIES}
        assert all(p.startswith("+" + cc[c]) for p, c in zip(u["phone"], u["country"]))
        octets = u["ip"].str.split(".", expand=True).astype(int)
        assert octets.shape[1] == 4 and ((octets >= 0) & (octets <= 255)).all().all()
        assert u["birth_date"].between("1940-01-01", "2008-12-31").all()
        assert str(u["signup_ts"].dt.tz) == "UTC"

    def test_countries_follow_population_weights(self):
        share = synthetic_users(50_000, seed=2)["country"].value_counts(normalize=True)
        assert share["DE"] > share["FR"] > share["NL"] > share["MT"]
        assert abs(share["DE"] - 84.4 / sum(c[1] for c in COUNTRIES)) < 0.01

    def test_zero_and_negative(self):
        assert len(synthetic_users(0)) == 0
        with pytest.raises(InputError):
            synthetic_users(-1)


class TestSyntheticEvents:
    def test_users_contribute_varying_numbers_of_rows(self):
        e = synthetic_events(50_000, n_users=2_000, seed=5)
        per_user = e.groupby("user_id").size()
        assert per_user.max() > 10 * per_user.median()

    def test_events_match_users_countries(self):
        u = synthetic_users(1000, seed=9).set_index("user_id")["country"]
        e = synthetic_events(10_000, n_users=1000, seed=9)
        assert (e["country"].to_numpy() == u.loc[e["user_id"]].to_numpy()).all()

    def test_watch_seconds_heavy_tailed_and_only_for_play(self):
        e = synthetic_events(100_000, n_users=5_000, seed=0)
        assert (e.loc[e["event"] != "play", "watch_seconds"] == 0).all()
        play = e.loc[e["event"] == "play", "watch_seconds"]
        assert play.max() > 20 * play.median()
        assert np.isfinite(e["watch_seconds"]).all() and (e["watch_seconds"] >= 0).all()
        assert e["ts"].is_monotonic_increasing

    def test_bad_sizes(self):
        with pytest.raises(InputError):
            synthetic_events(10, n_users=0)
        assert len(synthetic_events(0, n_users=0)) == 0


def test_user_ids_are_zero_padded():
    assert re.fullmatch(r"u\d{8}", synthetic_users(1)["user_id"][0])

"""Generalizers: each against a per-value reference, plus nulls, dtypes and bad input."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pets import InputError
from pets.keys import Secret
from pets.pseudo import (
    AgeBand,
    Bucket,
    DateShift,
    IPPrefix,
    Mask,
    PostcodePrefix,
    Suppress,
    TopBottomCode,
    TruncateDate,
)


class TestBucket:
    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.integers(-1000, 1000), max_size=40), st.integers(1, 50))
    def test_width_buckets_contain_their_values(self, values, width):
        out = Bucket(width=width).apply(pd.Series(values, dtype="Int64"))
        for v, label in zip(values, out, strict=True):
            lo = math.floor(v / width) * width
            assert label == f"[{lo}, {lo + width})"

    def test_edges_cover_both_tails_and_nulls(self):
        out = Bucket(edges=[0, 10, 20]).apply(pd.Series([-5, 0, 9.5, 10, 20, 99, np.nan]))
        assert out.fillna("-").tolist() == ["<0", "[0, 10)", "[0, 10)", "[10, 20)", ">=20",
                                            ">=20", "-"]

    def test_quantiles_give_equal_frequency_buckets(self):
        s = pd.Series(np.arange(1000, dtype=float))
        counts = Bucket(quantiles=4).apply(s).value_counts()
        assert len(counts) == 4 and counts.min() >= 249

    @pytest.mark.parametrize("kw", [{}, {"width": 1, "edges": [1]}, {"width": 0},
                                    {"edges": [3, 1]}, {"quantiles": 0}])
    def test_bad_parameters_are_refused(self, kw):
        with pytest.raises(InputError):
            Bucket(**kw)

    def test_non_numeric_columns_are_refused(self):
        with pytest.raises(InputError, match="column 'x': Bucket needs a numeric column"):
            Bucket(width=5).apply(pd.Series(["a"], name="x"))


class TestTopBottomCode:
    def test_clips_and_keeps_nulls(self):
        out = TopBottomCode(lower=18, upper=90).apply(pd.Series([5, 40, 101, None]))
        assert out.iloc[:3].tolist() == [18, 40, 90] and pd.isna(out.iloc[3])

    def test_needs_a_threshold(self):
        with pytest.raises(InputError):
            TopBottomCode()


class TestTruncateDate:
    @pytest.mark.parametrize("unit", ["year", "month", "week", "day", "hour"])
    def test_matches_per_value_reference(self, unit):
        rng = np.random.default_rng(1)
        secs = rng.integers(0, 2_000_000_000, 200)
        s = pd.Series(pd.to_datetime(secs, unit="s")).astype("datetime64[s]")
        out = TruncateDate(unit).apply(s)
        assert out.dtype == s.dtype
        for a, b in zip(s, out, strict=True):
            if unit == "year":
                want = a.replace(month=1, day=1, hour=0, minute=0, second=0)
            elif unit == "month":
                want = a.replace(day=1, hour=0, minute=0, second=0)
            elif unit == "week":
                want = (a - pd.Timedelta(days=a.weekday())).normalize()
            elif unit == "day":
                want = a.normalize()
            else:
                want = a.floor("h")
            assert b == want

    def test_timezone_aware_columns_truncate_in_local_time(self):
        s = pd.Series(pd.to_datetime(["2024-03-01 00:30"])).dt.tz_localize("Europe/Paris")
        out = TruncateDate("month").apply(s)
        assert out[0] == pd.Timestamp("2024-03-01", tz="Europe/Paris")

    def test_nat_stays_nat_and_bad_inputs_are_refused(self):
        s = pd.Series(pd.to_datetime(["2024-03-01 10:00", None]))
        assert pd.isna(TruncateDate("day").apply(s)[1])
        with pytest.raises(InputError):
            TruncateDate("decade")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="datetime"):
            TruncateDate().apply(pd.Series(["2024-01-01"]))


class TestAgeBand:
    @settings(max_examples=60, deadline=None)
    @given(st.dates(dt.date(1900, 1, 1), dt.date(2025, 6, 15)))
    def test_age_matches_calendar_arithmetic(self, born):
        ref = dt.date(2025, 6, 15)
        want = ref.year - born.year - ((ref.month, ref.day) < (born.month, born.day))
        got = AgeBand(ref, width=1).ages(pd.Series(pd.to_datetime([born])))[0]
        assert got == want

    def test_bands_and_top_coding(self):
        s = pd.Series(pd.to_datetime(["2000-01-01", "1995-06-15", "1930-01-01", None]))
        out = AgeBand("2025-06-15", width=10, top=80).apply(s)
        assert out.fillna("-").tolist() == ["20-29", "30-39", "80+", "-"]

    def test_future_birth_dates_are_refused(self):
        with pytest.raises(InputError, match="after the reference"):
            AgeBand("2020-01-01").apply(pd.Series(pd.to_datetime(["2021-01-01"]), name="b"))


class TestPostcodeAndMask:
    def test_postcode_prefix(self):
        s = pd.Series(["75011", " 1010 ", None])
        assert PostcodePrefix(3).apply(s).fillna("-").tolist() == ["750", "101", "-"]

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.text(max_size=12), max_size=10), st.integers(0, 6))
    def test_mask_keeps_length_and_tail(self, values, k):
        import unicodedata

        out = Mask(keep_last=k).apply(pd.Series(values, dtype=object))
        for v, o in zip(values, out, strict=True):
            v = unicodedata.normalize("NFC", v)
            tail = v[-k:] if k else ""
            assert len(o) == len(v)
            assert o == "*" * max(len(v) - k, 0) + (tail if len(v) > k else v)

    def test_suppress(self):
        assert Suppress().apply(pd.Series(["a", "b"])).isna().all()


_EMBEDDED_V4 = {ipaddress.ip_network("::ffff:0:0/96"): 96,
                ipaddress.ip_network("64:ff9b::/96"): 96,
                ipaddress.ip_network("2002::/16"): 16}


class TestIPPrefix:
    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), max_size=20),
           st.integers(0, 32), st.integers(0, 128))
    def test_matches_ipaddress(self, ips, v4, v6):
        out = IPPrefix(v4=v4, v6=v6).apply(pd.Series([str(i) for i in ips], dtype=object))
        for ip, o in zip(ips, out, strict=True):
            plen = v4 if ip.version == 4 else v6
            for net, at in _EMBEDDED_V4.items():  # IPv4 bits start at bit `at`
                if ip.version == 6 and ip in net:
                    plen = min(v6, at + v4)
            assert o == str(ipaddress.ip_network(f"{ip}/{plen}", strict=False))

    @pytest.mark.parametrize("bad", ["300.1.1.1", "1.2.3", "not-an-ip", "1.2.3.4.5"])
    def test_invalid_addresses_are_refused(self, bad):
        with pytest.raises(InputError, match="column 'ip': value at position 1"):
            IPPrefix().apply(pd.Series(["1.2.3.4", bad], name="ip"))


class TestDateShift:
    def test_one_offset_per_user_within_bounds(self):
        ds = DateShift(Secret(bytes(32)), domain="visits", max_days=7)
        n = 400
        users = pd.Series([f"u{i % 40}" for i in range(n)])
        when = pd.Series(pd.to_datetime("2025-01-01") + pd.to_timedelta(np.arange(n), unit="h"))
        out = ds.apply(when, by=users)
        delta = (out - when).dt.days
        assert delta.between(-7, 7).all()
        assert (delta.groupby(users).nunique() == 1).all()
        assert delta.nunique() > 5  # users really get different offsets

    def test_domains_give_different_offsets_and_nulls_are_kept(self):
        users = pd.Series([f"u{i}" for i in range(50)])
        a = DateShift(Secret(bytes(32)), domain="a", max_days=30).offsets(users)
        b = DateShift(Secret(bytes(32)), domain="b", max_days=30).offsets(users)
        assert (a != b).any()
        when = pd.Series(pd.to_datetime(["2025-01-01", None]))
        out = DateShift(Secret(bytes(32)), domain="a").apply(when, by=pd.Series(["u", "v"]))
        assert pd.isna(out[1])

    def test_needs_by_of_the_same_length(self):
        ds = DateShift(Secret(bytes(32)), domain="a")
        when = pd.Series(pd.to_datetime(["2025-01-01"]))
        with pytest.raises(InputError, match="by="):
            ds.apply(when)
        with pytest.raises(InputError, match="same length"):
            ds.apply(when, by=pd.Series(["a", "b"]))


class TestDescribe:
    @pytest.mark.parametrize("t", [Bucket(width=5), TopBottomCode(upper=3), TruncateDate("year"),
                                   AgeBand("2025-01-01"), PostcodePrefix(2), IPPrefix(),
                                   Mask(4), Suppress()])
    def test_every_generalizer_describes_itself(self, t):
        import json

        d = t.describe()
        json.dumps(d)
        assert d["name"] == t.name and d["reversible"] is False and d["links"]

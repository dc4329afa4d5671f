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


def _bounds(label: str) -> tuple[float, float]:
    lo, hi = label[1:-1].split(", ")
    return float(lo), float(hi)


class TestReviewHardening:
    """Findings of the adversarial review (issue 4), each with the attack tried."""

    @settings(max_examples=80, deadline=None)
    @given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=30),
           st.sampled_from([0.1, 0.25, 1 / 3, 0.7, 7.0, 1e-3]), st.sampled_from([0.0, 0.05, -3.0]))
    def test_every_value_lies_in_the_interval_its_label_prints(self, values, width, origin):
        # before: 0.3 with width 0.1 was labelled "[0.2, 0.3)"
        out = Bucket(width=width, origin=origin).apply(pd.Series(values))
        for v, label in zip(values, out, strict=True):
            lo, hi = _bounds(label)
            assert lo <= v < hi, (v, label)

    def test_decimal_boundaries_land_in_the_upper_bucket(self):
        out = Bucket(width=0.1).apply(pd.Series([0.3, 0.7, 0.6, 1.0]))
        assert out.tolist() == ["[0.3, 0.4)", "[0.7, 0.8)", "[0.6, 0.7)", "[1, 1.1)"]

    def test_distinct_buckets_get_distinct_labels_at_large_magnitudes(self):
        # before: %g printed 1234567.5 as 1.23457e+06
        out = Bucket(width=0.5).apply(pd.Series([1234567.0, 1234567.5, 1234568.0]))
        assert out.tolist() == ["[1234567, 1234567.5)", "[1234567.5, 1234568)",
                                "[1234568, 1234568.5)"]

    @pytest.mark.parametrize("kw", [{"width": 10}, {"quantiles": 3}])
    def test_infinite_values_are_refused_naming_the_column(self, kw):
        # before: OverflowError / ValueError (plus a RuntimeWarning) from numpy
        with pytest.raises(InputError, match=r"column 'amount': Bucket.*infinite value at "
                                             r"position 1"):
            Bucket(**kw).apply(pd.Series([1.0, np.inf, 2.0], name="amount"))
        assert Bucket(edges=[0, 10]).apply(pd.Series([np.inf, -np.inf])).tolist() == [
            ">=10", "<0"]

    @pytest.mark.parametrize("unit", ["hour", "day"])
    def test_truncation_inside_a_repeated_dst_hour_is_not_nat(self, unit):
        # before: 02:30 on the night clocks go back truncated to an ambiguous 02:00 -> NaT
        utc = pd.date_range("2024-10-26 22:00", "2024-10-27 04:00", freq="10min", tz="UTC")
        s = pd.Series(utc.tz_convert("Europe/Paris"))
        out = TruncateDate(unit).apply(s)
        assert out.notna().all()
        if unit == "hour":  # Paris offsets are whole hours: local hour floor = UTC hour floor
            want = s.dt.tz_convert("UTC").dt.floor("h").dt.tz_convert("Europe/Paris")
            assert out.tolist() == want.tolist()
        else:
            assert (out.dt.strftime("%Y-%m-%d %H:%M") ==
                    s.dt.strftime("%Y-%m-%d 00:00")).all()
        assert (out <= s).all()

    @pytest.mark.parametrize("ref,age", [("2023-02-28", 22), ("2023-03-01", 23),
                                         ("2024-02-28", 23), ("2024-02-29", 24)])
    def test_leap_day_birthdays_count_from_march_first_in_common_years(self, ref, age):
        born = pd.Series(pd.to_datetime(["2000-02-29"]))
        assert AgeBand(ref, width=1).ages(born)[0] == age

    def test_age_bands_around_a_birthday_and_the_top_code(self):
        born = pd.Series(pd.to_datetime(["1995-06-15", "1995-06-16", "1940-06-15",
                                         "1940-06-16", None]))
        out = AgeBand("2025-06-15", width=10, top=85).apply(born)
        assert out.fillna("-").tolist() == ["30-39", "20-29", "85+", "80-84", "-"]

    @pytest.mark.parametrize("bad", ["010.1.2.3", "1.2.3.04", "00.1.2.3"])
    def test_ipv4_octets_with_leading_zeros_are_refused(self, bad):
        # before: read as decimal by the vectorized path (octal to other parsers)
        with pytest.raises(InputError, match="column 'ip': value at position 0"):
            IPPrefix().apply(pd.Series([bad], name="ip"))

    @pytest.mark.parametrize("addr,want", [
        ("::ffff:192.168.7.9", "::ffff:c0a8:0/112"),
        ("64:ff9b::192.168.7.9", "64:ff9b::c0a8:0/112"),
        ("2002:c0a8:0709::1", "2002:c0a8::/32"),
        ("2001:db8::1", "2001:db8::1/128"),
    ])
    def test_ipv4_embedded_in_ipv6_keeps_no_more_than_v4_allows(self, addr, want):
        # before: with v6=128 the mapped address kept all 32 IPv4 bits despite v4=16
        assert IPPrefix(v4=16, v6=128).apply(pd.Series([addr]))[0] == want

    def test_ip_edge_prefixes(self):
        s = pd.Series(["0.0.0.0", "255.255.255.255", "::", "ffff:ffff::1", "fe80::1%eth0"])
        assert IPPrefix(v4=0, v6=0).apply(s).tolist() == ["0.0.0.0/0", "0.0.0.0/0", "::/0",
                                                          "::/0", "::/0"]
        assert IPPrefix(v4=32, v6=128).apply(s).tolist()[:4] == [
            "0.0.0.0/32", "255.255.255.255/32", "::/128", "ffff:ffff::1/128"]

    def test_date_shift_of_a_row_without_user_is_nat_not_the_true_date(self):
        # before: offset 0, i.e. the real date published among shifted ones
        ds = DateShift(Secret(bytes(32)), domain="visits", max_days=30)
        when = pd.Series(pd.to_datetime(["2025-01-10", "2025-01-10", "2025-01-10"]))
        out = ds.apply(when, by=pd.Series(["ann", None, pd.NA], dtype=object))
        assert out.isna().tolist() == [False, True, True]

    def test_date_shift_offsets_cover_the_inclusive_range_and_zero(self):
        ds = DateShift(Secret(bytes(32)), domain="visits", max_days=2)
        users = pd.Series([f"u{i}" for i in range(400)])
        off = ds.offsets(users)
        assert set(off.tolist()) == {-2, -1, 0, 1, 2}
        counts = np.bincount(off + 2)
        assert counts.min() > 400 / 5 * 0.6  # roughly uniform, 0 no more likely than others

    def test_date_shift_is_consistent_per_user_across_tables_and_row_order(self):
        ds = DateShift(Secret(bytes(32)), domain="visits", max_days=30)
        users = pd.Series(["ann", "bob", "cy"] * 5)
        a = ds.offsets(users)
        b = ds.offsets(users.iloc[::-1].reset_index(drop=True))[::-1]
        c = DateShift(Secret(bytes(32)), domain="visits", max_days=30).offsets(
            pd.Series(["cy", "ann"]))
        assert (a == b).all() and c.tolist() == [a[2], a[0]]

    def test_date_shift_out_of_range_is_a_clean_error(self):
        ds = DateShift(Secret(bytes(32)), domain="v", max_days=30)
        users = pd.Series([f"u{i}" for i in range(60)])  # some of them shift forward
        when = pd.Series(pd.to_datetime(["2262-04-11"] * 60), name="d").astype("datetime64[ns]")
        with pytest.raises(InputError, match="column 'd': a shifted date falls outside"):
            ds.apply(when, by=users)

    @pytest.mark.parametrize("make", [lambda: Mask(4), lambda: PostcodePrefix(2),
                                      lambda: IPPrefix()], ids=["mask", "postcode", "ip"])
    def test_a_10mb_value_is_refused_naming_the_column(self, make):
        s = pd.Series(["ok", "9" * (10 * 1024 * 1024)], name="col")
        with pytest.raises(InputError, match="column 'col': value at position 1 is 10485760"):
            make().apply(s)

    def test_a_10mb_user_id_is_refused_by_date_shift(self):
        ds = DateShift(Secret(bytes(32)), domain="v")
        when = pd.Series(pd.to_datetime(["2025-01-01", "2025-01-02"]))
        with pytest.raises(InputError, match="column 'uid': value at position 0"):
            ds.apply(when, by=pd.Series(["u" * (10 * 1024 * 1024), "b"], name="uid"))

"""Generalizers: coarsen a column so that more rows share each value.

Each is a :class:`~pets.pseudo.Transform` (``apply(series) -> series``), vectorized, keeping the
index, the name and nulls. None is reversible; each says what it keeps (``links``). They are the
levels of the hierarchies :func:`~pets.pseudo.enforce_k` climbs.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import ipaddress
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pets._errors import InputError
from pets._events import AuditHook
from pets.keys import Secret
from pets.pseudo._base import KeyedTransform, Transform
from pets.pseudo._columnar import map_distinct, series_from_arrow
from pets.pseudo._text import DEFAULT_MAX_BYTES, column_label, normalized_text

__all__ = [
    "AgeBand",
    "Bucket",
    "DateShift",
    "IPPrefix",
    "Mask",
    "PostcodePrefix",
    "Suppress",
    "TopBottomCode",
    "TruncateDate",
]


def _numeric(series: pd.Series, who: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series.dtype) or not pd.api.types.is_numeric_dtype(series.dtype):
        raise InputError(f"column {column_label(series)!r}: {who} needs a numeric column, "
                         f"got {series.dtype}")
    return series


def _fmt(v: float) -> str:
    """A bucket bound as text: integers plainly, others with 15 significant digits.

    15 digits (a double's decimal precision) keep distinct bounds distinct (``%g``'s 6 digits
    printed 1234567.5 as ``1.23457e+06``) while hiding float noise (0.1 * 3 -> ``0.3``).
    """
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.15g}" if v != int(v) or abs(v) >= 1e15 else str(int(v))


def _finite(x: np.ndarray, series: pd.Series, who: str) -> None:
    if np.isinf(x).any():
        raise InputError(f"column {column_label(series)!r}: {who} got an infinite value at "
                         f"position {int(np.flatnonzero(np.isinf(x))[0])}")


def _labels(codes: np.ndarray, names: Sequence[str], like: pd.Series) -> pd.Series:
    table = pa.array(list(names), type=pa.large_string())
    idx = pa.array(codes, mask=codes < 0, type=pa.int64())
    return series_from_arrow(pc.take(table, idx) if len(table) else
                             pa.nulls(len(codes), pa.large_string()), like)


def quantile_edges(series: pd.Series, quantiles: int) -> np.ndarray:
    """The edges of ``Bucket(quantiles=n)``: quantiles of the column's non-null values.

    One definition for every engine: the pandas transform computes them on its column, the
    Dask engine once over the whole column, then buckets each partition by them
    (:func:`bucket_by_quantile_edges`).

    Examples:
        >>> quantile_edges(pd.Series([1.0, 2.0, 3.0, None, 4.0]), 2).tolist()
        [1.0, 2.5, 4.0]
    """
    x = _numeric(series, "Bucket").to_numpy(dtype=np.float64, na_value=np.nan)
    _finite(x, series, "Bucket(quantiles=)")
    present = x[~np.isnan(x)]
    q = np.linspace(0, 1, int(quantiles) + 1)
    return np.unique(np.quantile(present, q)) if len(present) else np.zeros(1)


def bucket_by_quantile_edges(series: pd.Series, edges: Sequence[float] | np.ndarray
                             ) -> pd.Series:
    """Label ``series`` by quantile ``edges`` as ``Bucket(quantiles=n)`` does (the maximum
    belongs to the last closed bucket ``"[a, b]"``; nulls stay null).

    Examples:
        >>> bucket_by_quantile_edges(pd.Series([1, 3, 4]), [1.0, 2.5, 4.0]).tolist()
        ['[1, 2.5)', '[2.5, 4]', '[2.5, 4]']
    """
    x = _numeric(series, "Bucket").to_numpy(dtype=np.float64, na_value=np.nan)
    isnan = np.isnan(x)
    e = np.asarray(edges, dtype=np.float64)
    names = [f"<{_fmt(e[0])}"] + [f"[{_fmt(a)}, {_fmt(b)})" for a, b in itertools.pairwise(e)
                                  ] + [f">={_fmt(e[-1])}"]
    if len(e) > 1:  # the maximum belongs to the last closed bucket
        names[-2] = f"[{_fmt(e[-2])}, {_fmt(e[-1])}]"
        x = np.where(x == e[-1], np.nextafter(e[-1], -np.inf), x)
    codes = np.searchsorted(e, np.where(isnan, 0.0, x), side="right").astype(np.int64)
    codes[isnan] = -1
    return _labels(codes, names, series)


class Bucket(Transform):
    """Numeric bucketing into labelled intervals ``"[lo, hi)"``, by width, edges or quantiles.

    Exactly one of ``width`` (buckets ``[origin + k*width, origin + (k+1)*width)``), ``edges``
    (sorted boundaries; values below the first become ``"<e0"``, at or above the last
    ``">=eN"``) or ``quantiles`` (a number of equal-frequency buckets, edges computed from the
    column — note that data-derived edges themselves reveal a little about the data).

    Bounds print as integers or with 15 significant digits, and every value lies in the interval
    its label prints (with ``width=0.1``, 0.3 is ``"[0.3, 0.4)"`` although ``0.3 / 0.1`` is
    2.9999999999999996). Infinite values are refused with ``width`` and ``quantiles``.

    Links: values in the same bucket become indistinguishable; order of buckets is kept.

    Examples:
        >>> import pandas as pd
        >>> Bucket(width=10).apply(pd.Series([3, 17, 20, None])).tolist()
        ['[0, 10)', '[10, 20)', '[20, 30)', <NA>]
        >>> Bucket(edges=[18, 30, 65]).apply(pd.Series([10, 18, 40, 70])).tolist()
        ['<18', '[18, 30)', '[30, 65)', '>=65']
    """

    name: ClassVar[str] = "bucket"
    links: ClassVar[str] = "values within one bucket become equal; bucket order kept"

    def __init__(self, *, width: float | None = None, edges: Sequence[float] | None = None,
                 quantiles: int | None = None, origin: float = 0.0) -> None:
        if sum(x is not None for x in (width, edges, quantiles)) != 1:
            raise InputError("Bucket needs exactly one of width=, edges=, quantiles=")
        if width is not None and not width > 0:
            raise InputError("Bucket width must be > 0")
        if edges is not None:
            e = [float(x) for x in edges]
            if not e or any(b <= a for a, b in itertools.pairwise(e)):
                raise InputError("Bucket edges must be non-empty and strictly increasing")
            edges = e
        if quantiles is not None and not 1 <= quantiles <= 1000:
            raise InputError("Bucket quantiles must be 1..1000")
        self.width, self.edges, self.quantiles, self.origin = width, edges, quantiles, origin

    def params(self) -> dict[str, Any]:
        return {"width": self.width, "edges": self.edges, "quantiles": self.quantiles,
                "origin": self.origin}

    def _printed(self, q: np.ndarray) -> np.ndarray:
        """The bounds ``origin + q * width`` as their labels print them."""
        w = float(self.width or 1.0)
        return np.array([float(_fmt(self.origin + v * w)) for v in q.tolist()], dtype=np.float64)

    def apply(self, series: pd.Series) -> pd.Series:
        _numeric(series, "Bucket")
        x = series.to_numpy(dtype=np.float64, na_value=np.nan)
        isnan = np.isnan(x)
        if self.width is not None:
            _finite(x, series, "Bucket(width=)")
            w = float(self.width)
            base = np.where(isnan, self.origin, x)
            k = np.floor((base - self.origin) / w)
            # (x - origin) / w is rounded: put x back into the bucket whose *printed* bounds
            # hold it (0.3 with width 0.1 lands in "[0.3, 0.4)", not in "[0.2, 0.3)").
            inv, uk = pd.factorize(k)
            uk = np.asarray(uk, dtype=np.float64)
            lo = self._printed(uk)[inv]
            hi = self._printed(uk + 1)[inv]
            k = np.where(base < lo, k - 1, np.where(base >= hi, k + 1, k))
            codes_f, uniq = pd.factorize(np.where(isnan, np.nan, k), use_na_sentinel=True)
            names = [f"[{_fmt(self.origin + q * w)}, {_fmt(self.origin + (q + 1) * w)})"
                     for q in np.asarray(uniq, dtype=np.float64)]
            return _labels(np.asarray(codes_f, dtype=np.int64), names, series)
        if self.edges is None:
            return bucket_by_quantile_edges(
                series, quantile_edges(series, int(self.quantiles or 1)))
        edges = np.asarray(self.edges)
        names = [f"<{_fmt(edges[0])}"] + [
            f"[{_fmt(a)}, {_fmt(b)})" for a, b in itertools.pairwise(edges)
        ] + [f">={_fmt(edges[-1])}"]
        codes = np.searchsorted(edges, np.where(isnan, 0.0, x), side="right").astype(np.int64)
        codes[isnan] = -1
        return _labels(codes, names, series)


class TopBottomCode(Transform):
    """Clip a numeric column: values below ``lower`` become ``lower``, above ``upper`` ``upper``.

    Links: extreme values (often the identifying ones) merge with the thresholds.

    Examples:
        >>> import pandas as pd
        >>> TopBottomCode(lower=18, upper=90).apply(pd.Series([5, 40, 101])).tolist()
        [18, 40, 90]
    """

    name: ClassVar[str] = "top-bottom-code"
    links: ClassVar[str] = "values beyond the thresholds become equal to the thresholds"

    def __init__(self, *, lower: float | None = None, upper: float | None = None) -> None:
        if lower is None and upper is None:
            raise InputError("TopBottomCode needs lower= and/or upper=")
        if lower is not None and upper is not None and lower > upper:
            raise InputError("TopBottomCode lower must be <= upper")
        self.lower, self.upper = lower, upper

    def params(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper}

    def apply(self, series: pd.Series) -> pd.Series:
        _numeric(series, "TopBottomCode")
        return series.clip(lower=self.lower, upper=self.upper)


_UNITS = ("year", "month", "week", "day", "hour")


def _as_datetime(series: pd.Series, who: str) -> pd.Series:
    if not pd.api.types.is_datetime64_any_dtype(series.dtype):
        raise InputError(f"column {column_label(series)!r}: {who} needs a datetime column, "
                         f"got {series.dtype}")
    return series


class TruncateDate(Transform):
    """Truncate datetimes to the start of their year, month, ISO week (Monday), day or hour.

    Time-zone-aware columns are truncated in their own zone's wall time. A truncated time in
    the hour repeated when clocks go back takes the later of its two instants that is not after
    the original (never ``NaT``); one in a skipped hour moves forward. The dtype is kept.

    Links: all dates within one period become equal.

    Examples:
        >>> import pandas as pd
        >>> s = pd.Series(pd.to_datetime(["2024-05-17 13:45", "2024-12-31 00:00", None]))
        >>> TruncateDate("month").apply(s).dt.strftime("%Y-%m-%d").tolist()
        ['2024-05-01', '2024-12-01', nan]
        >>> TruncateDate("week").apply(s)[0].strftime("%a %Y-%m-%d")
        'Mon 2024-05-13'
    """

    name: ClassVar[str] = "truncate-date"
    links: ClassVar[str] = "dates within one period become equal"

    def __init__(self, unit: Literal["year", "month", "week", "day", "hour"] = "month") -> None:
        if unit not in _UNITS:
            raise InputError(f"TruncateDate unit must be one of {_UNITS}, got {unit!r}")
        self.unit = unit

    def params(self) -> dict[str, Any]:
        return {"unit": self.unit}

    def apply(self, series: pd.Series) -> pd.Series:
        _as_datetime(series, "TruncateDate")
        tz = getattr(series.dtype, "tz", None)
        local = series.dt.tz_localize(None) if tz is not None else series
        values = local.to_numpy(dtype="datetime64[ns]")
        nat = np.isnat(values)
        if self.unit == "year":
            out = values.astype("datetime64[Y]").astype("datetime64[ns]")
        elif self.unit == "month":
            out = values.astype("datetime64[M]").astype("datetime64[ns]")
        elif self.unit == "week":
            days = values.astype("datetime64[D]")
            weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
            out = (days - weekday.astype("timedelta64[D]")).astype("datetime64[ns]")
        elif self.unit == "day":
            out = values.astype("datetime64[D]").astype("datetime64[ns]")
        else:
            out = values.astype("datetime64[h]").astype("datetime64[ns]")
        out[nat] = np.datetime64("NaT")
        res = pd.Series(out, index=series.index, name=series.name)
        if tz is not None:
            # A truncated wall time in a repeated hour (DST ending) is ambiguous: take the later
            # of its two instants that is not after the original (instead of NaT, which would
            # silently null the value); one in a skipped hour moves forward.
            n = len(res)
            early = res.dt.tz_localize(tz, ambiguous=np.ones(n, dtype=bool),
                                       nonexistent="shift_forward")
            late = res.dt.tz_localize(tz, ambiguous=np.zeros(n, dtype=bool),
                                      nonexistent="shift_forward")
            res = late.where((late <= series).fillna(False).astype(bool), early)
        return res.astype(series.dtype)


class AgeBand(Transform):
    """Birth date → age band at a reference date, e.g. ``"30-39"``, top-coded as ``"90+"``.

    The age is whole years completed on ``reference`` (a birthday on the reference date
    counts; someone born on 29 February has their birthday on 1 March in common years). Birth
    dates after the reference date are refused.

    Links: everyone born in the same band (relative to the reference date) becomes equal.

    Examples:
        >>> import pandas as pd, datetime as dt
        >>> s = pd.Series(pd.to_datetime(["1990-06-15", "1990-06-16", "1930-01-01"]))
        >>> AgeBand(dt.date(2025, 6, 15), width=5, top=80).apply(s).tolist()
        ['35-39', '30-34', '80+']
    """

    name: ClassVar[str] = "age-band"
    links: ClassVar[str] = "birth dates whose age at the reference date falls in one band"

    def __init__(self, reference: _dt.date | str, *, width: int = 10,
                 top: int | None = None) -> None:
        ref = pd.Timestamp(reference)
        if pd.isna(ref):
            raise InputError("AgeBand needs a reference date")
        if not isinstance(width, int) or width < 1:
            raise InputError("AgeBand width must be a positive integer")
        if top is not None and top < 0:
            raise InputError("AgeBand top must be >= 0")
        self.reference = ref.date()
        self.width, self.top = width, top

    def params(self) -> dict[str, Any]:
        return {"reference": self.reference.isoformat(), "width": self.width, "top": self.top}

    def ages(self, series: pd.Series) -> np.ndarray:
        """Whole years completed at the reference date (float, NaN for nulls)."""
        _as_datetime(series, "AgeBand")
        local = series.dt.tz_localize(None) if getattr(series.dtype, "tz", None) else series
        born = local.to_numpy(dtype="datetime64[D]")
        nat = np.isnat(born)
        years = born.astype("datetime64[Y]").astype(np.int64) + 1970
        months = born.astype("datetime64[M]").astype(np.int64) % 12 + 1
        days = (born - born.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
        ref = self.reference
        before = (months > ref.month) | ((months == ref.month) & (days > ref.day))
        age = (ref.year - years - before).astype(np.float64)
        age[nat] = np.nan
        if (age < 0).any():
            raise InputError(f"column {column_label(series)!r}: birth date after the reference "
                             f"date {ref.isoformat()}")
        return np.asarray(age, dtype=np.float64)

    def apply(self, series: pd.Series) -> pd.Series:
        age = self.ages(series)
        nan = np.isnan(age)
        a = np.where(nan, 0, age).astype(np.int64)
        w = self.width
        lo = (a // w) * w
        if self.top is not None:
            lo = np.where(a >= self.top, self.top, lo)
        codes, uniq = pd.factorize(np.where(nan, -1, lo), sort=True)
        names = []
        for v in uniq:
            if self.top is not None and v == self.top:
                names.append(f"{v}+")
            elif w == 1:
                names.append(str(v))
            else:
                hi = v + w - 1 if self.top is None else min(v + w - 1, self.top - 1)
                names.append(f"{v}-{hi}")
        codes = np.asarray(codes, dtype=np.int64)
        if len(uniq) and uniq[0] == -1:
            codes = codes - 1
            names = names[1:]
        return _labels(codes, names, series)


class PostcodePrefix(Transform):
    """Keep the first ``keep`` characters of a postcode (optionally ``fill`` the rest).

    Links: postcodes sharing the prefix (a region) become equal.

    Examples:
        >>> import pandas as pd
        >>> PostcodePrefix(2).apply(pd.Series(["75011", "1010", None])).tolist()
        ['75', '10', <NA>]
        >>> PostcodePrefix(2, fill="*").apply(pd.Series(["75011"])).tolist()
        ['75***']
    """

    name: ClassVar[str] = "postcode-prefix"
    links: ClassVar[str] = "postcodes with the same prefix become equal"

    def __init__(self, keep: int = 2, *, fill: str | None = None) -> None:
        if not isinstance(keep, int) or keep < 0:
            raise InputError("PostcodePrefix keep must be a non-negative integer")
        if fill is not None and len(fill) != 1:
            raise InputError("PostcodePrefix fill must be one character")
        self.keep, self.fill = keep, fill

    def params(self) -> dict[str, Any]:
        return {"keep": self.keep, "fill": self.fill}

    def apply(self, series: pd.Series) -> pd.Series:
        arr = normalized_text(series, strip=True)
        out = pc.utf8_slice_codeunits(arr, 0, self.keep)
        if self.fill is not None:
            lengths = pc.utf8_length(arr).to_numpy(zero_copy_only=False)
            pad = np.maximum(np.nan_to_num(lengths.astype(np.float64)) - self.keep, 0)
            tails = pc.binary_repeat(pa.scalar(self.fill, pa.large_string()),
                                     pa.array(pad.astype(np.int64)))
            out = pc.binary_join_element_wise(out, tails, pa.scalar("", pa.large_string()))
        return series_from_arrow(out, series)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class IPPrefix(Transform):
    """Truncate IP addresses to a network prefix, written in CIDR form (``"10.1.2.0/24"``).

    IPv4 is vectorized (octets parsed with Arrow, masked in numpy); IPv6 goes through
    :mod:`ipaddress` once per distinct value. Invalid addresses are refused, including IPv4
    octets with leading zeros (``"010.1.2.3"``, octal to some parsers). An IPv4 address embedded
    in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``, 6to4 ``2002:AABB:CCDD::``)
    keeps no more of its IPv4 bits than ``v4`` allows. Zone ids (``fe80::1%eth0``) are dropped.

    Links: addresses within the same prefix become equal.

    Examples:
        >>> import pandas as pd
        >>> IPPrefix(v4=16).apply(pd.Series(["192.168.7.9", "2001:db8::1", None])).tolist()
        ['192.168.0.0/16', '2001:db8::/48', <NA>]
    """

    name: ClassVar[str] = "ip-prefix"
    links: ClassVar[str] = "addresses in the same network prefix become equal"

    def __init__(self, *, v4: int = 24, v6: int = 48) -> None:
        if not 0 <= v4 <= 32 or not 0 <= v6 <= 128:
            raise InputError("IPPrefix needs 0 <= v4 <= 32 and 0 <= v6 <= 128")
        self.v4, self.v6 = v4, v6

    def params(self) -> dict[str, Any]:
        return {"v4": self.v4, "v6": self.v6}

    def _prefix_length(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
        """The prefix kept: ``v4``/``v6``, and never more of an IPv4 address embedded in an
        IPv6 one (IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``)
        than ``v4`` keeps of a plain IPv4 address."""
        if ip.version == 4:
            return self.v4
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return min(self.v6, 96 + self.v4)
        if ip.sixtofour is not None:
            return min(self.v6, 16 + self.v4)
        return self.v6

    def apply(self, series: pd.Series) -> pd.Series:
        label = column_label(series)
        arr = normalized_text(series, strip=True, max_bytes=64)
        n = len(arr)
        out = np.empty(n, dtype=object)
        valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        out[~valid] = None
        # Dotted decimal without leading zeros, as :mod:`ipaddress` accepts it ("010.1.2.3" is
        # octal to some parsers: refused, as ipaddress refuses it).
        is4 = np.asarray(pc.match_substring_regex(
            arr, r"^(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}$").fill_null(False)
            .to_numpy(zero_copy_only=False), dtype=bool)
        if is4.any():
            parts = pc.split_pattern(arr.filter(pa.array(is4)), ".")
            octets = np.asarray(pc.cast(pc.list_flatten(parts), pa.int64())
                                .to_numpy(zero_copy_only=False)).reshape(-1, 4)
            if (octets > 255).any():
                bad = int(np.flatnonzero(is4)[int(np.flatnonzero((octets > 255).any(1))[0])])
                raise InputError(f"column {label!r}: value at position {bad} is not an IP "
                                 "address")
            mask = octets * 0
            bits = self.v4
            for i in range(4):
                keep = min(max(bits - 8 * i, 0), 8)
                mask[:, i] = (0xFF << (8 - keep)) & 0xFF
            net = (octets & mask).astype(str)
            out[is4] = np.char.add(np.char.add(np.char.add(np.char.add(
                np.char.add(np.char.add(np.char.add(net[:, 0], "."), net[:, 1]), "."),
                net[:, 2]), "."), net[:, 3]), f"/{self.v4}")
        rest = valid & ~is4
        if rest.any():
            values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)[rest]
            codes, uniq = pd.factorize(values)
            nets = []
            for j, v in enumerate(uniq):
                try:
                    ip = ipaddress.ip_address(v)
                except ValueError:
                    bad = int(np.flatnonzero(rest)[int(np.flatnonzero(codes == j)[0])])
                    raise InputError(f"column {label!r}: value at position {bad} is not an IP "
                                     "address") from None
                plen = self._prefix_length(ip)
                nets.append(str(ipaddress.ip_network(f"{ip}/{plen}", strict=False)))
            out[rest] = np.asarray(nets, dtype=object)[codes]
        res = pa.array(out, type=pa.large_string(), from_pandas=True) if n else \
            pa.array([], type=pa.large_string())
        return series_from_arrow(res, series)


class Mask(Transform):
    """Replace all but the last ``keep_last`` characters with ``char`` (length kept).

    Links: values sharing their last characters and length become equal.

    Examples:
        >>> import pandas as pd
        >>> Mask(keep_last=4).apply(pd.Series(["4111111111111111", "12", None])).tolist()
        ['************1111', '12', <NA>]
    """

    name: ClassVar[str] = "mask"
    links: ClassVar[str] = "values with the same last characters and length become equal"

    def __init__(self, keep_last: int = 4, *, char: str = "*") -> None:
        if not isinstance(keep_last, int) or keep_last < 0:
            raise InputError("Mask keep_last must be a non-negative integer")
        if len(char) != 1:
            raise InputError("Mask char must be one character")
        self.keep_last, self.char = keep_last, char

    def params(self) -> dict[str, Any]:
        return {"keep_last": self.keep_last, "char": self.char}

    def apply(self, series: pd.Series) -> pd.Series:
        arr = normalized_text(series)
        lengths = pc.utf8_length(arr)
        hidden = pc.max_element_wise(pc.subtract(lengths, self.keep_last), 0)
        tail = pc.utf8_slice_codeunits(arr, -self.keep_last) if self.keep_last else \
            pc.utf8_slice_codeunits(arr, 0, 0)
        stars = pc.binary_repeat(pa.scalar(self.char, pa.large_string()),
                                 pc.fill_null(hidden, 0))
        out = pc.binary_join_element_wise(stars, tail, pa.scalar("", pa.large_string()))
        return series_from_arrow(out, series)


class Suppress(Transform):
    """Replace every value with ``value`` (default null): the column carries nothing.

    Links: nothing (all rows equal).

    Examples:
        >>> import pandas as pd
        >>> Suppress("*").apply(pd.Series(["a", "b"])).tolist()
        ['*', '*']
    """

    name: ClassVar[str] = "suppress"
    links: ClassVar[str] = "nothing: every row gets the same value"

    def __init__(self, value: str | None = None) -> None:
        self.value = value

    def params(self) -> dict[str, Any]:
        return {"value": self.value}

    def apply(self, series: pd.Series) -> pd.Series:
        return pd.Series(pd.array([self.value] * len(series), dtype="string"),
                         index=series.index, name=series.name)


class DateShift(KeyedTransform):
    """Keyed per-user date shifting: every date of one user moves by the same secret offset.

    The offset of a user is ``HMAC-SHA256(domain_key, normalised user id)`` read as a 64-bit
    integer, reduced to ``[-max_days, +max_days]`` (inclusive; bias below 2^-40). Intervals
    between one user's dates are kept exactly; calendar dates are hidden up to ± ``max_days``.
    Zero is one of the ``2·max_days + 1`` equally likely offsets: about one user in
    ``2·max_days + 1`` keeps their true dates, and nobody without the key can tell which.
    Rows whose user id is null get ``NaT`` (there is no offset to hide them behind).

    Warning — what it links: the offset is deterministic per (user, domain), so the shifted
    dates of one user stay consistent across tables shifted in the same domain; differences
    between dates (durations, ordering within a user) are preserved. Not reversible here.

    Examples:
        >>> import pandas as pd
        >>> from pets.keys import Secret
        >>> ds = DateShift(Secret(bytes(32)), domain="visits", max_days=30)
        >>> when = pd.Series(pd.to_datetime(["2025-01-10", "2025-01-20", "2025-03-01"]))
        >>> who = pd.Series(["ann", "ann", "bob"])
        >>> out = ds.apply(when, by=who)
        >>> (out[1] - out[0]).days, abs((out[0] - when[0]).days) <= 30
        (10, True)
    """

    name: ClassVar[str] = "date-shift"
    purpose: ClassVar[str] = "date-shift"
    links: ClassVar[str] = (
        "one user's dates keep their intervals (one offset per user and domain); calendar "
        "dates hidden within ±max_days")

    def __init__(self, secret: Secret, *, domain: str, max_days: int = 30,
                 by: str | None = None, jurisdiction: str | None = None,
                 audit: AuditHook | None = None) -> None:
        self._configure(max_days=max_days, by=by)
        super().__init__(secret, domain=domain, jurisdiction=jurisdiction, audit=audit)

    def _configure(self, max_days: int = 30, by: str | None = None, **kw: Any) -> None:
        super()._configure(**kw)
        if not isinstance(max_days, int) or not 1 <= max_days <= 36500:
            raise InputError("DateShift max_days must be 1..36500")
        self.max_days = max_days
        self.by = by

    def params(self) -> dict[str, Any]:
        return {"max_days": self.max_days, "by": self.by}

    def offsets(self, users: pd.Series) -> np.ndarray:
        """The day offset of each row's user (0 where the user is null; :meth:`apply` turns
        those rows into ``NaT``)."""
        arr = normalized_text(users, max_bytes=DEFAULT_MAX_BYTES)
        key = self._key.expose()
        span = np.uint64(2 * self.max_days + 1)
        digest = hmac.digest

        def fn(values: list[bytes]) -> np.ndarray:
            raw = b"".join([digest(key, v, "sha256")[:8] for v in values])
            word = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
            return (word % span).astype(np.int64).view("S8")

        vals, valid = map_distinct(arr, fn)
        off = np.zeros(len(arr), dtype=np.int64)
        if valid.any():
            off[valid] = np.frombuffer(np.ascontiguousarray(vals[valid]).tobytes(),
                                       dtype=np.int64) - self.max_days
        return off

    def apply(self, series: pd.Series, *, by: pd.Series | None = None) -> pd.Series:
        """Shift ``series`` (datetimes) by the offset of the user in ``by`` (same length).

        :func:`~pets.pseudo.pseudonymize` passes the column named by the ``by`` parameter.
        """
        if by is None:
            raise InputError(f"{self.name} needs by= (the user id column)")
        _as_datetime(series, "DateShift")
        if len(by) != len(series):
            raise InputError("DateShift: by= must have the same length as the dates")
        users = by.reset_index(drop=True)
        days = self.offsets(users)
        td = days.astype("timedelta64[D]").astype("timedelta64[s]")
        # No user, no offset to hide the date behind: the date becomes NaT (an unshifted date
        # among shifted ones would be the true date).
        td[users.isna().to_numpy(dtype=bool)] = np.timedelta64("NaT")
        delta = pd.Series(td, index=series.index)
        try:
            return series + delta
        except (OverflowError, pd.errors.OutOfBoundsDatetime):
            raise InputError(f"column {column_label(series)!r}: a shifted date falls outside "
                             "the datetime range") from None


# -- identity: a generalizer that leaves values as they were is no protection --------------------

#: The generalizers a policy names, by treatment name (``pets.boundary`` builds them from
#: ``params``).
GENERALIZERS: dict[str, type[Transform]] = {c.name: c for c in (
    Bucket, TopBottomCode, TruncateDate, AgeBand, PostcodePrefix, IPPrefix, Mask, Suppress)}


def generalizer(name: str, params: dict[str, Any]) -> Transform:
    """Build the generalizer a policy names (``params`` are its constructor's arguments).

    Raises:
        InputError: Unknown name.
        TypeError, InputError: Parameters the class does not take or refuses.

    Examples:
        >>> generalizer("mask", {"keep_last": 2}).params()
        {'keep_last': 2, 'char': '*'}
    """
    if name not in GENERALIZERS:
        raise InputError(f"{name!r} is not a generalizer (known: {', '.join(sorted(GENERALIZERS))})")
    return GENERALIZERS[name](**params)


def identity_reason(transform: Transform) -> str | None:
    """Why ``transform`` leaves values unchanged *whatever the data*, or ``None``.

    Parameters that keep every value of some kind whole: an IP prefix of /32 (every IPv4
    address) or /128 (every IPv6 address), a mask or a postcode prefix keeping at least as many
    characters as the longest value pets accepts (64 KiB), a top/bottom coding without a finite
    bound. Data-dependent cases (a prefix longer than the values at hand, a date truncation
    finer than the data) are :func:`left_unchanged`'s.

    Examples:
        >>> identity_reason(IPPrefix(v4=32))
        'v4=32 keeps every bit of an IPv4 address'
        >>> identity_reason(IPPrefix(v4=31)) is None
        True
    """
    if isinstance(transform, IPPrefix):
        if transform.v4 >= 32:
            return "v4=32 keeps every bit of an IPv4 address"
        if transform.v6 >= 128:
            return "v6=128 keeps every bit of an IPv6 address"
    elif isinstance(transform, Mask) and transform.keep_last >= DEFAULT_MAX_BYTES:
        return (f"keep_last={transform.keep_last} keeps every character of any value pets "
                f"accepts (at most {DEFAULT_MAX_BYTES} bytes)")
    elif isinstance(transform, PostcodePrefix) and transform.keep >= DEFAULT_MAX_BYTES:
        return (f"keep={transform.keep} keeps every character of any value pets accepts (at "
                f"most {DEFAULT_MAX_BYTES} bytes)")
    elif isinstance(transform, TopBottomCode):
        finite = [b for b in (transform.lower, transform.upper)
                  if b is not None and math.isfinite(float(b))]
        if not finite:
            return "no finite lower or upper bound: no value is ever clipped"
    return None


def _same(before: pa.Array, after: pa.Array) -> np.ndarray:
    eq = pc.fill_null(pc.equal(before, after), False)
    return np.asarray(eq.to_numpy(zero_copy_only=False), dtype=bool)


def _arrow_text(series: pd.Series) -> pa.Array:
    return pa.array(series.astype(object).where(series.notna(), None).tolist(),
                    type=pa.large_string())


def _ip_unchanged(before: pd.Series, after: pd.Series) -> np.ndarray:
    """Rows whose network address is the input address itself (no bit was cleared)."""
    addr = normalized_text(before, strip=True, max_bytes=64)
    out = _arrow_text(after)
    net = pc.replace_substring_regex(out, r"/[0-9]+$", "")
    same = _same(addr, net)
    rest = ~same & np.asarray(pc.fill_null(pc.match_substring(addr, ":"), False)
                              .to_numpy(zero_copy_only=False), dtype=bool)
    if rest.any():  # IPv6 written another way than ipaddress prints it
        pairs = pd.DataFrame({"a": np.asarray(addr.to_numpy(zero_copy_only=False),
                                              dtype=object)[rest],
                              "n": np.asarray(out.to_numpy(zero_copy_only=False),
                                              dtype=object)[rest]})
        codes, uniq = pd.factorize(pd.MultiIndex.from_frame(pairs))
        hits = []
        for a, n in uniq:
            try:
                ip = ipaddress.ip_address(str(a).split("%", 1)[0])
                hits.append(ipaddress.ip_network(n, strict=False).network_address == ip)
            except ValueError:
                hits.append(False)
        same[rest] = np.asarray(hits, dtype=bool)[codes]
    return same


def _interval_low(label: str) -> float | None:
    """The lower bound of a bucket label ``"[a, b)"``/``"[a, b]"`` (``None`` for ``"<a"``,
    ``">=a"``)."""
    if not label.startswith("["):
        return None
    try:
        return float(label[1:].split(", ", 1)[0])
    except ValueError:
        return None


def _bucket_unchanged(before: pd.Series, after: pd.Series) -> np.ndarray:
    """Rows whose value is its bucket's lower bound: the value sits on the bucket grid, so
    the label shows it (width 1 on integers, width 10 on multiples of ten)."""
    x = before.to_numpy(dtype=np.float64, na_value=np.nan)
    codes, uniq = pd.factorize(after.astype(object).where(after.notna(), None))
    low = np.array([np.nan if (v := _interval_low(str(u))) is None else v
                    for u in uniq] + [np.nan], dtype=np.float64)
    return np.asarray(low[np.asarray(codes)] == x, dtype=bool)


def left_unchanged(name: str, before: pd.Series, after: pd.Series) -> np.ndarray:
    """Which rows the generalizer ``name`` left readable exactly as they were (nulls: False).

    ``after`` is the generalizer's output on ``before``. A row is *unchanged* when its output
    shows its input exactly: equal to it (``mask``, ``postcode-prefix`` and ``truncate-date``
    on their normalised input, ``top-bottom-code``), a network whose address is the input
    address (``ip-prefix``: no bit was cleared), or a bucket whose lower bound is the input
    (``bucket``: the value sits on the bucket grid, as 31 in ``"[31, 32)"``). When *every*
    value is unchanged, the data already were that coarse and the treatment did nothing.
    ``age-band``, ``suppress`` and keyed treatments never leave a value unchanged.

    Examples:
        >>> s = pd.Series(["1234", "123456789"])
        >>> left_unchanged("mask", s, Mask(keep_last=4).apply(s)).tolist()
        [True, False]
        >>> ips = pd.Series(["10.1.2.0", "10.1.2.3", None])
        >>> left_unchanged("ip-prefix", ips, IPPrefix(v4=24).apply(ips)).tolist()
        [True, False, False]
        >>> n = pd.Series([31, 32.5, 40])
        >>> left_unchanged("bucket", n, Bucket(width=1).apply(n)).tolist()
        [True, False, True]
    """
    present = before.notna().to_numpy(dtype=bool) & after.notna().to_numpy(dtype=bool)
    if name == "mask":
        same = _same(normalized_text(before), _arrow_text(after))
    elif name == "postcode-prefix":
        same = _same(normalized_text(before, strip=True), _arrow_text(after))
    elif name == "ip-prefix":
        same = _ip_unchanged(before, after)
    elif name == "bucket":
        same = _bucket_unchanged(before, after)
    elif name in ("truncate-date", "top-bottom-code"):
        same = np.asarray((before == after).fillna(False), dtype=bool)
    else:
        same = np.zeros(len(before), dtype=bool)
    return np.asarray(same & present, dtype=bool)

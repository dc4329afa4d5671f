"""Digests of a table's *values*, independent of Arrow and Parquet file bytes.

The one canonical value encoding of pets, shared by the boundary's manifests (``pets.boundary``)
and DP release records (``pets.dp``): strings and binaries as length-prefixed bytes, integers as
int64/uint64, floats as float64, decimals exactly as their text at the column's scale (the
scale in the type tag), timestamps as int64 nanoseconds (with their time zone in the type tag),
dates as int32 days, booleans as bytes, plus the null bitmap. A digest survives a Parquet round
trip; it changes with any value, null, type class or column name.

Examples:
    >>> import pandas as pd
    >>> d = column_digest("n", pd.Series([1, 2]))
    >>> d == column_digest("n", pd.Series([1, 2], dtype="int32")), d == column_digest(
    ...     "n", pd.Series([1, 3]))
    (True, False)
    >>> len(data_digest(2, [("n", d)]))
    64
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["column_digest", "data_digest"]


def _values(series: pd.Series) -> pa.Array:
    arr = pa.array(series, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _as_text(name: str, series: pd.Series) -> pd.Series:
    """Scalar types without a canonical encoding (intervals, mixed objects) are digested as
    their text. Containers are refused: their text is not exact (numpy prints 8 digits of a
    float and elides long arrays), so values could change under an unchanged digest.

    Raises:
        InputError: A value is a list, array, mapping, set or tuple.
    """
    from pets._errors import InputError

    for v in series.array:
        if isinstance(v, np.ndarray | list | tuple | dict | set | frozenset):
            raise InputError(f"column {name!r} holds {type(v).__name__} values: pets digests "
                             "(and so protects and exports) only scalar columns; flatten or "
                             "drop it", column=name)
    return series.astype(str).where(series.notna(), None).astype("string")


def column_digest(name: str, series: pd.Series) -> str:
    """SHA-256 (hex) of a column's name, canonical type and values (see the module docstring).

    Examples:
        >>> import pandas as pd
        >>> a = column_digest("x", pd.Series([1, 2, None], dtype="Int64"))
        >>> a == column_digest("x", pd.Series([1, 2, None], dtype="Int32"))
        True
        >>> a == column_digest("x", pd.Series([1, 2, 3]))
        False
    """
    try:
        arr = _values(series)
    except (pa.ArrowException, TypeError, ValueError):
        return column_digest(name, _as_text(name, series))
    t = arr.type
    n = len(arr)
    valid = np.ones(n, dtype=bool) if arr.null_count == 0 else arr.is_valid().to_numpy(
        zero_copy_only=False)
    payload: list[bytes] = []
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or \
            pa.types.is_large_binary(t):
        tag = "bytes"
        b = pc.fill_null(arr.cast(pa.large_binary()), b"")
        offsets = np.frombuffer(b.buffers()[1], dtype="<i8")[b.offset:b.offset + n + 1]
        data = b.buffers()[2]
        payload.append(np.diff(offsets).astype("<i8").tobytes())
        if data is not None and n:
            payload.append(data.to_pybytes()[int(offsets[0]):int(offsets[-1])])
    elif pa.types.is_boolean(t):
        tag = "bool"
        payload.append(pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
                       .astype("u1").tobytes())
    elif pa.types.is_integer(t):
        unsigned = pa.types.is_unsigned_integer(t) and t.bit_width == 64
        tag, target, dt = ("uint", pa.uint64(), "<u8") if unsigned else ("int", pa.int64(), "<i8")
        payload.append(pc.fill_null(arr.cast(target), 0).to_numpy(zero_copy_only=False)
                       .astype(dt).tobytes())
    elif pa.types.is_decimal(t):  # exact: its text at the column's scale (float64 rounds)
        text = pc.fill_null(arr.cast(pa.large_string()), "").cast(pa.large_binary())
        tag = f"decimal[{t.scale}]"
        offsets = np.frombuffer(text.buffers()[1], dtype="<i8")[text.offset:text.offset + n + 1]
        payload.append(np.diff(offsets).astype("<i8").tobytes())
        if text.buffers()[2] is not None and n:
            payload.append(text.buffers()[2].to_pybytes()[int(offsets[0]):int(offsets[-1])])
    elif pa.types.is_floating(t):
        tag = "float"
        payload.append(pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
                       .astype("<f8").tobytes())
    elif pa.types.is_timestamp(t):
        tag = f"timestamp[{t.tz or ''}]"
        ns = arr.cast(pa.timestamp("ns", tz=t.tz)).cast(pa.int64())
        payload.append(pc.fill_null(ns, 0).to_numpy(zero_copy_only=False).astype("<i8")
                       .tobytes())
    elif pa.types.is_date(t):
        tag = "date"
        days = arr.cast(pa.date32()).cast(pa.int32())
        payload.append(pc.fill_null(days, 0).to_numpy(zero_copy_only=False).astype("<i4")
                       .tobytes())
    else:
        if pa.types.is_nested(t):
            from pets._errors import InputError

            raise InputError(f"column {name!r} has the nested type {t}: pets digests (and so "
                             "protects and exports) only scalar columns; flatten or drop it",
                             column=name)
        return column_digest(name, _as_text(name, series))
    h = hashlib.sha256(b"pets.column/1\x00")
    h.update(name.encode() + b"\x00" + tag.encode() + b"\x00" + n.to_bytes(8, "little"))
    h.update(np.packbits(valid).tobytes())
    for part in payload:
        h.update(part)
    return h.hexdigest()


def data_digest(rows: int, digests: Sequence[tuple[str, str]]) -> str:
    """SHA-256 (hex) chaining the row count and each ``(column, digest)`` in order."""
    h = hashlib.sha256(b"pets.data/1\x00" + rows.to_bytes(8, "little"))
    for name, digest in digests:
        h.update(name.encode() + b"\x00" + digest.encode() + b"\x00")
    return h.hexdigest()

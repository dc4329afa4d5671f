"""Explicit input normalisation shared by keyed hashing, tokens and date shifting.

A value is turned into bytes in exactly one documented way:

* strings: Unicode NFC, then optionally ``strip`` (leading/trailing whitespace) and
  ``casefold`` (for e-mail addresses), then UTF-8;
* integers (numpy, nullable ``Int*`` or Python ints in an object column): decimal, so ``42`` and
  ``"42"`` give the same bytes;
* nulls (``None``, ``NA``, ``NaN`` in an object column) stay null and are never hashed;
* floats, booleans, dates, bytes and mixed columns are refused with an :class:`InputError`
  naming the column: convert them explicitly first (a float ``1.0`` vs ``1`` must not silently
  become two pseudonyms).

Values longer than ``max_bytes`` (default 64 KiB) are refused, before and after normalisation,
so a hostile 10 MB cell fails cleanly instead of being hashed; text that is not valid Unicode
(lone surrogates) is refused too.

Intended collisions, by design: ``42`` and ``"42"``; canonically equivalent strings (``"é"`` as
one code point or as ``e`` + combining accent). Intended *non*-collisions: NFC is not NFKC, so
compatibility variants stay distinct (full-width ``"ＡＢ"`` vs ``"AB"``, ``"①"`` vs ``"1"``) unless
``casefold`` maps them (it folds ligatures: ``"ﬁ"`` -> ``"fi"``); ``"042"`` vs ``42``; the empty
string is a value, not a null.

Examples:
    >>> import pandas as pd
    >>> arr = normalized_text(pd.Series([" Ann@X.eu ", None]), column="email",
    ...                       casefold=True, strip=True)
    >>> arr.to_pylist()
    ['ann@x.eu', None]
    >>> normalized_text(pd.Series([1.5]), column="score")
    Traceback (most recent call last):
    ...
    pets._errors.InputError: column 'score': float values cannot be pseudonymized; convert them to strings or integers explicitly
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pets._errors import InputError

__all__ = ["DEFAULT_MAX_BYTES", "column_label", "normalized_text", "to_arrow_strings"]

DEFAULT_MAX_BYTES = 64 * 1024


def column_label(series: pd.Series, column: str | None = None) -> str:
    """The column name to put in error messages."""
    return str(column if column is not None else series.name if series.name is not None
               else "<unnamed>")


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _kind(pd.Series(dtype.categories))
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float" if series.notna().any() else "null"
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return "str"
    if pd.api.types.is_object_dtype(dtype):
        values = series[series.notna()]
        if values.empty:
            return "null"
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        return {"string": "str", "integer": "int", "floating": "float", "boolean": "bool",
                "mixed-integer-float": "float"}.get(inferred, inferred)
    return str(dtype)


def to_arrow_strings(series: pd.Series, *, column: str | None = None) -> pa.Array:
    """A pyarrow ``large_string`` array of the column's values (ints as decimal), no other change.

    Raises:
        InputError: The column holds floats, booleans, dates, bytes or mixed types.
    """
    label = column_label(series, column)
    kind = _kind(series)
    if kind == "null":
        return pa.nulls(len(series), pa.large_string())
    if kind == "int":
        values = pd.Series(np.asarray(series.astype(object).where(series.notna(), None),
                                      dtype=object))
        if _fits64(series):
            arr = pa.array(values, type=pa.int64(), from_pandas=True)
            return pc.cast(arr, pa.large_string())
        return pa.array([None if v is None else str(int(v)) for v in values],
                        type=pa.large_string())
    if kind != "str":
        raise InputError(
            f"column {label!r}: {kind} values cannot be pseudonymized; convert them to strings or "
            "integers explicitly")
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    try:
        arr = pa.array(series, from_pandas=True)
    except (UnicodeError, pa.ArrowException):
        # e.g. lone surrogates ("\ud800"), which have no UTF-8 form
        raise InputError(f"column {label!r}: values are not valid Unicode text") from None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pc.cast(arr, pa.large_string())


def _fits64(series: pd.Series) -> bool:
    if series.dtype != object:
        return not (pd.api.types.is_unsigned_integer_dtype(series.dtype)
                    and getattr(series.dtype, "itemsize", 0) == 8 and bool((series.dropna() > 2**63 - 1).any()))
    try:
        vals = series.dropna()
        return bool(vals.empty or (vals.min() >= -(2**63) and vals.max() <= 2**63 - 1))
    except TypeError:
        return False


def normalized_text(series: pd.Series, *, column: str | None = None, casefold: bool = False,
                    strip: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> pa.Array:
    """Normalise a column to a pyarrow ``large_string`` array (NFC, optional strip/casefold).

    Args:
        series: The column.
        column: Name for error messages (defaults to ``series.name``).
        casefold: Apply :meth:`str.casefold` (full Unicode case folding), e.g. for e-mails.
        strip: Remove leading and trailing whitespace.
        max_bytes: Refuse any value longer than this many UTF-8 bytes.

    Raises:
        InputError: Unsupported types (see the module docstring) or an oversized value.
    """
    label = column_label(series, column)
    arr = to_arrow_strings(series, column=column)
    if len(arr) == 0:
        return arr
    _check_lengths(arr, label, max_bytes)
    if pc.all(pc.string_is_ascii(arr)).as_py() is False:
        arr = pc.utf8_normalize(arr, form="NFC")
    if strip:
        arr = pc.utf8_trim_whitespace(arr)
    if casefold:
        arr = _casefold(arr)
    _check_lengths(arr, label, max_bytes)  # NFC and case folding can lengthen a value (ΐ -> 3)
    return arr


def _check_lengths(arr: pa.Array, label: str, max_bytes: int) -> None:
    lengths = pc.binary_length(arr)
    longest = pc.max(lengths).as_py()
    if longest is not None and longest > max_bytes:
        first = int(np.argmax(lengths.to_numpy(zero_copy_only=False) > max_bytes))
        raise InputError(
            f"column {label!r}: value at position {first} is {longest} bytes; at most "
            f"{max_bytes} allowed")


def _casefold(arr: pa.Array) -> pa.Array:
    if pc.all(pc.string_is_ascii(arr)).as_py() in (True, None):
        return pc.ascii_lower(arr)
    enc = pc.dictionary_encode(arr)
    folded = pa.array([None if v is None else v.casefold() for v in enc.dictionary.to_pylist()],
                      type=pa.large_string())
    folded = pc.utf8_normalize(folded, form="NFC")
    return pc.take(folded, enc.indices)

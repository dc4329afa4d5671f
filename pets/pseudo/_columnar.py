"""Column plumbing: compute a function once per distinct value, build fixed-width string columns.

Hashing or encrypting a value is the expensive step (about a microsecond); finding distinct
values with Arrow's hash table is ~10× cheaper. So a column is dictionary-encoded, the function
runs on the distinct values, and the result is taken back by index. When (nearly) every value is
distinct, encoding first costs more than it saves, and the function runs on the values directly;
a random sample of the column decides.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["fixed_width_strings", "map_distinct", "series_from_arrow", "use_direct_path"]

_SAMPLE = 65_536
_DIRECT_MAX_DUP = 0.0005


def use_direct_path(arr: pa.Array) -> bool:
    """True when a sample says nearly every value is distinct (so dedup would not pay).

    The choice only affects speed, never the output.
    """
    n = len(arr)
    if n < 4 * _SAMPLE:
        return False
    rng = np.random.default_rng(0)  # deterministic: the choice is a speed heuristic only
    idx = np.sort(rng.choice(n, size=_SAMPLE, replace=False))
    sample = arr.take(pa.array(idx))
    nonnull = len(sample) - sample.null_count
    if nonnull == 0:
        return False
    distinct = pc.count_distinct(sample, mode="only_valid").as_py()
    return bool((nonnull - distinct) / nonnull < _DIRECT_MAX_DUP)


def map_distinct(arr: pa.Array, fn: Callable[[list[bytes]], np.ndarray],
                 *, direct: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``fn`` (a list of UTF-8 values -> fixed-width ``S`` array) to each distinct value.

    Returns ``(values, valid)``: an ``S`` array with one entry per row (undefined where
    ``valid`` is False) and the validity mask.
    """
    n = len(arr)
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if direct is None:
        direct = use_direct_path(arr)
    if direct:
        present = arr.filter(pa.array(valid)) if arr.null_count else arr
        out_present = fn(present.cast(pa.large_binary()).to_pylist())
        if not arr.null_count:
            return out_present, valid
        out = np.zeros(n, dtype=out_present.dtype)
        out[valid] = out_present
        return out, valid
    enc = pc.dictionary_encode(arr)
    if isinstance(enc, pa.ChunkedArray):  # pragma: no cover - arrays are combined upstream
        enc = enc.combine_chunks()
    table = fn(enc.dictionary.cast(pa.large_binary()).to_pylist())
    codes = enc.indices.fill_null(0).to_numpy(zero_copy_only=False)
    if len(table) == 0:
        return np.zeros(n, dtype="S1"), valid
    return np.take(table, codes), valid


def fixed_width_strings(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A ``large_string`` array from a fixed-width ASCII ``S`` array and a validity mask.

    Zero-copy on the character data: offsets are ``i * width``.
    """
    n = len(values)
    width = values.dtype.itemsize if n else 0
    data = np.ascontiguousarray(values).view(np.uint8) if n else np.zeros(0, np.uint8)
    offsets = np.arange(n + 1, dtype=np.int64) * width
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(pa.large_string(), n,
                                 [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=nulls)


def series_from_arrow(arr: pa.Array, like: pd.Series) -> pd.Series:
    """A pandas ``string`` (pyarrow-backed, ``NA`` nulls) Series with ``like``'s index and name."""
    return pd.Series(pd.arrays.ArrowStringArray(arr), index=like.index, name=like.name)

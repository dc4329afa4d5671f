"""The Dask engine: pets transforms on ``dask.dataframe`` frames, lazily, partition by partition.

Every function here takes a ``dask.dataframe.DataFrame`` and returns one built with
``map_partitions`` and an explicit ``meta``; nothing is computed until you ask. Results are
identical to the pandas engine on the same rows, because every partition function is a pure,
row-wise, deterministic function of its rows (keyed transforms depend only on the key and the
value; randomized ciphertexts differ but decrypt to the same plaintext).

Keyed transforms are shipped as :class:`~pets.engines.Rebuild` objects holding a
:class:`~pets.engines.KeyRef` (see :class:`~pets.engines.WorkerKeys`): the task graph carries
wrapped keys only, and each worker process unwraps once through its own key service.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from pets._errors import InputError, MissingDependencyError, PetsError
from pets.engines._keyref import WorkerKeys
from pets.engines._plan import PartitionFn, Step, Transform, ship
from pets.engines._ship import keyed_shipper

if TYPE_CHECKING:
    import dask.dataframe as dd

__all__ = ["is_dask", "require_dask", "transform_columns"]


def require_dask() -> Any:
    """Import ``dask.dataframe`` or fail with the install line.

    Example:
        >>> require_dask().__name__
        'dask.dataframe'
    """
    try:
        return importlib.import_module("dask.dataframe")
    except ImportError as exc:
        raise MissingDependencyError(
            "dask.dataframe is needed for the Dask engine: pip install 'pets[dask]'") from exc


def is_dask(frame: object) -> bool:
    """True for a ``dask.dataframe`` DataFrame or Series (without importing dask).

    Example:
        >>> import pandas as pd
        >>> is_dask(pd.DataFrame())
        False
    """
    return type(frame).__module__.startswith(("dask.dataframe", "dask_expr"))


def _meta_series(transform: Transform, nonempty: pd.Series, empty: pd.Series) -> pd.Series:
    """The output dtype of ``transform``, found on dask's fake non-empty column (or empty)."""
    for probe in (nonempty, empty):
        try:
            out = transform.apply(probe)
        except (PetsError, ValueError, TypeError):
            continue
        return out.iloc[:0]
    raise InputError(f"cannot infer the output type of {transform.name!r} on column "
                     f"{empty.name!r}: the transform rejects sample values")


def transform_columns(
    ddf: dd.DataFrame,
    transforms: Mapping[str, Transform] | Sequence[tuple[str, Transform]],
    *,
    keys: WorkerKeys | None = None,
    outputs: Mapping[str, str] | None = None,
    drop: Sequence[str] = (),
) -> dd.DataFrame:
    """Apply column transforms to every partition of ``ddf``, lazily.

    Args:
        ddf: The input frame.
        transforms: Column name -> transform (``apply(series) -> series``), in order.
        keys: How keyed transforms reach the workers (required when any is keyed).
        outputs: Column name -> output column name (default: replace in place).
        drop: Columns to remove.

    Returns:
        A Dask DataFrame with the same partitions and index.

    Raises:
        InputError: A column is missing, or a keyed transform has no key reference.
    """
    items = list(transforms.items()) if isinstance(transforms, Mapping) else list(transforms)
    outputs = dict(outputs or {})
    missing = [c for c, _ in items if c not in ddf.columns] + [c for c in drop
                                                                if c not in ddf.columns]
    if missing:
        raise InputError(f"column(s) {sorted(set(missing))} not in the frame "
                         f"(columns: {list(ddf.columns)})")
    meta_ne = ddf._meta_nonempty
    meta = ddf._meta.copy()
    shippers = [keyed_shipper(keys)]
    steps: list[Step] = []
    for column, t in items:
        out_col = outputs.get(column, column)
        meta[out_col] = _meta_series(t, meta_ne[column], ddf._meta[column])
        steps.append(Step(column, ship(t, shippers), output=None if out_col == column
                          else out_col))
    for column in drop:
        steps.append(Step(column, drop=True))
        meta = meta.drop(columns=[column])
    fn = PartitionFn(tuple(steps), columns=tuple(meta.columns))
    out: dd.DataFrame = ddf.map_partitions(fn, meta=meta)  # type: ignore[no-untyped-call]
    return out

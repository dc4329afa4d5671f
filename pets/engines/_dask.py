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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from pets._errors import InputError, MissingDependencyError, PetsError
from pets.engines._keyref import KeySource, WorkerKeys, services_for
from pets.engines._plan import PartitionFn, Step, Transform, ship
from pets.engines._ship import keyed_shipper
from pets.jurisdiction import Context
from pets.keys import KeyServices

if TYPE_CHECKING:
    import dask.dataframe as dd

    from pets.envelope import ColumnKeys

__all__ = ["decrypt_columns", "encrypt_columns", "is_dask", "meta_for", "require_dask",
           "transform_columns"]


def require_dask() -> Any:
    """Import ``dask.dataframe`` or fail with the install line.

    Examples:
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

    Examples:
        >>> import pandas as pd
        >>> is_dask(pd.DataFrame())
        False
    """
    return type(frame).__module__.startswith(("dask.dataframe", "dask_expr"))


def meta_for(transform: Transform, probes: Sequence[tuple[pd.Series, pd.Series | None]],
             kwargs: Mapping[str, Any] | None = None) -> pd.Series:
    """The output's empty pandas Series: ``transform`` applied to the first probe it accepts.

    Each probe is ``(values, users)``: dask's fake non-empty column first, then the empty one;
    ``users`` is the ``by=`` column of per-user transforms (else ``None``). When every probe is
    refused with an :class:`~pets.InputError` (the column's type is wrong, e.g. text for a
    bucket) that error is raised, so it names the column at call time.
    """
    first: Exception | None = None
    for values, users in probes:
        kw = dict(kwargs or {}) if users is None else {**(kwargs or {}), "by": users}
        try:
            out: pd.Series = transform.apply(values, **kw)  # type: ignore[call-arg]
        except (PetsError, ValueError, TypeError, KeyError) as exc:
            first = first or exc
            continue
        return out.iloc[:0]
    if isinstance(first, InputError):
        raise first
    name = probes[0][0].name if probes else None
    raise InputError(f"cannot infer the output type of {transform.name!r} on column "
                     f"{name!r}: the transform rejects sample values")


def _meta_series(transform: Transform, nonempty: pd.Series, empty: pd.Series,
                 frame_ne: pd.DataFrame | None = None,
                 frame: pd.DataFrame | None = None) -> pd.Series:
    """The output dtype of ``transform``, found on dask's fake non-empty column (or empty).

    Per-user transforms (``by=``) get the user column of the same fake frame.
    """
    by = getattr(transform, "by", None)
    per_user = isinstance(by, str) and frame_ne is not None and frame is not None
    return meta_for(transform, [
        (nonempty, frame_ne[by] if per_user else None),  # type: ignore[index]
        (empty, frame[by] if per_user else None)])  # type: ignore[index]


def transform_columns(
    ddf: dd.DataFrame,
    transforms: Mapping[str, Transform] | Sequence[tuple[str, Transform]],
    *,
    keys: WorkerKeys | None = None,
    outputs: Mapping[str, str] | None = None,
    drop: Sequence[str] = (),
    lease: object | None = None,
) -> dd.DataFrame:
    """Apply column transforms to every partition of ``ddf``, lazily.

    Args:
        ddf: The input frame.
        transforms: Column name -> transform (``apply(series) -> series``), in order.
        keys: How keyed transforms reach the workers (required when any is keyed).
        outputs: Column name -> output column name (default: replace in place).
        drop: Columns to remove.
        lease: An object the task graph holds as long as it lives (see
            :func:`pets.engines._dispatch.in_process_keys`).

    Returns:
        A Dask DataFrame with the same partitions and index.

    Raises:
        InputError: A column is missing, or a keyed transform has no key reference.
    """
    from pets.engines._protect import _fit

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
        t = _fit(t, ddf[column])
        meta[out_col] = _meta_series(t, meta_ne[column], ddf._meta[column], meta_ne, ddf._meta)
        steps.append(Step(column, ship(t, shippers), output=None if out_col == column
                          else out_col))
    for column in drop:
        steps.append(Step(column, drop=True))
        meta = meta.drop(columns=[column])
    fn: Any = PartitionFn(tuple(steps), columns=tuple(meta.columns))
    if lease is not None:
        fn = _Leased(fn, lease)
    out: dd.DataFrame = ddf.map_partitions(fn, meta=meta)  # type: ignore[no-untyped-call]
    return out


@dataclass(frozen=True)
class _Leased:
    """A partition function holding a lease object for as long as the graph holds it."""

    fn: PartitionFn
    lease: object

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.fn(frame)


@dataclass(frozen=True)
class _EncryptPartition:
    """Encrypt one partition under the job's column keys (wrapped DEKs, unwrapped here)."""

    source: KeySource
    context: Context
    header: str
    columns: tuple[tuple[str, str], ...]
    key_uris: tuple[str, ...]
    encoding: str
    lease: object = None  # held as long as the graph is (see transform_columns)

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        from pets.envelope import ColumnKeys, encrypt_columns

        ck = ColumnKeys.from_json(self.header)
        wanted: Any = dict(self.columns)
        out, _ = encrypt_columns(frame, wanted, keys=services_for(self.source),
                                 key_uris=list(self.key_uris), context=self.context,
                                 enc_context=ck.enc_context, column_keys=ck,
                                 encoding=self.encoding)  # type: ignore[arg-type]
        return out


@dataclass(frozen=True)
class _DecryptPartition:
    source: KeySource
    context: Context
    header: str
    columns: tuple[str, ...] | None
    lease: object = None

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        from pets.envelope import ColumnKeys, decrypt_columns

        return decrypt_columns(frame, ColumnKeys.from_json(self.header),
                               keys=services_for(self.source), context=self.context,
                               columns=list(self.columns) if self.columns is not None else None)


def encrypt_columns(
    ddf: dd.DataFrame,
    columns: Mapping[str, str] | Sequence[str],
    *,
    keys: WorkerKeys,
    key_uris: str | Sequence[str],
    enc_context: Mapping[str, str] | None = None,
    column_keys: ColumnKeys | None = None,
    mode: str = "randomized",
    encoding: str = "bytes",
    services: KeyServices | None = None,
    wrap_context: Context | None = None,
    lease: object | None = None,
) -> tuple[dd.DataFrame, ColumnKeys]:
    """Column encryption (:func:`pets.envelope.encrypt_columns`) on every partition, lazily.

    The column keys are made once, on the driver: one fresh DEK per column, wrapped under
    ``key_uris``. Partitions receive only that header (wrapped DEKs) and unwrap each DEK through
    the key service on the worker (opened from ``keys.source``). Every partition therefore uses
    the same DEKs, and the returned :class:`~pets.envelope.ColumnKeys` decrypts the whole
    dataset with :func:`pets.envelope.decrypt_columns` or :func:`decrypt_columns`.

    Args:
        ddf: The frame.
        columns: Column names (all in ``mode``) or ``{column: mode}``
            (``"randomized"`` AES-GCM or ``"deterministic"`` AES-SIV).
        keys: Where workers open key services, and the context they unwrap under.
        key_uris: KEK(s) wrapping each column's DEK.
        enc_context: Non-secret context bound to every cell.
        column_keys: Reuse the DEKs of an earlier header (deterministic joins across runs).
        mode: Default mode when ``columns`` is a list.
        encoding: ``"bytes"`` or ``"base64"`` cells.
        services: Key services the driver wraps the DEKs with (default ``keys.services()``).
        wrap_context: Context the driver wraps under (default ``keys.context``).
        lease: An object the task graph holds as long as it lives.

    Returns:
        ``(encrypted_ddf, column_keys)``.

    Warning — what it links: ``deterministic`` columns link equal plaintexts (see
    :mod:`pets.envelope`); ``randomized`` columns link nothing.
    """
    from pets.envelope import encrypt_columns as pd_encrypt

    wanted = dict(columns) if isinstance(columns, Mapping) else dict.fromkeys(columns, mode)
    missing = [c for c in wanted if c not in ddf.columns]
    if missing:
        raise InputError(f"column(s) {missing} not in the frame (columns: {list(ddf.columns)})")
    uris = [key_uris] if isinstance(key_uris, str) else list(key_uris)
    sample = ddf._meta_nonempty
    spec: Any = wanted
    meta, header = pd_encrypt(sample, spec, keys=services or keys.services(), key_uris=uris,
                              context=wrap_context or keys.context, enc_context=enc_context,
                              column_keys=column_keys, encoding=encoding)  # type: ignore[arg-type]
    fn = _EncryptPartition(keys.source, keys.context, header.to_json(),
                           tuple(wanted.items()), tuple(uris), encoding, lease)
    out: dd.DataFrame = ddf.map_partitions(fn, meta=meta.iloc[:0])  # type: ignore[no-untyped-call]
    return out, header


def decrypt_columns(
    ddf: dd.DataFrame,
    column_keys: ColumnKeys,
    *,
    keys: WorkerKeys,
    columns: Sequence[str] | None = None,
    lease: object | None = None,
) -> dd.DataFrame:
    """Inverse of :func:`encrypt_columns`, partition by partition, lazily.

    ``lease``: an object the task graph holds as long as it lives.

    Raises (at compute time):
        IntegrityError: A cell or wrapped DEK does not authenticate.
        JurisdictionError: The workers' context may not unwrap the column keys.
    """
    names = tuple(columns) if columns is not None else tuple(
        c for c in column_keys.columns if c in ddf.columns)
    meta = ddf._meta.copy()
    for name in names:
        ck = column_keys.columns[name]
        meta[name] = pd.Series([], dtype=pd.api.types.pandas_dtype(ck.dtype))
    fn = _DecryptPartition(keys.source, keys.context, column_keys.to_json(), names, lease)
    out: dd.DataFrame = ddf.map_partitions(fn, meta=meta)  # type: ignore[no-untyped-call]
    return out

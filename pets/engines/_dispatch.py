"""The pandas API on Dask frames: lazy dispatch from ``pets.pseudo``, ``pets.envelope`` and
``pets.boundary`` to the Dask engine.

Every transform's ``apply``, :func:`pets.pseudo.pseudonymize`,
:func:`pets.envelope.encrypt_columns` / :func:`~pets.envelope.decrypt_columns` and
:func:`pets.boundary.protect`, given a ``dask.dataframe`` object, land here and return a lazy
Dask object built with ``map_partitions`` and an explicit ``meta`` — the result of the Dask
engine (:mod:`pets.engines.dask`), identical to pandas on the same rows.

How keys reach the partitions (keyed transforms never put key bytes in a task graph):

* the caller's :class:`~pets.engines.WorkerKeys` (``keys=`` / ``workers=``) when given — the
  way for real clusters;
* otherwise, when no ``distributed`` client is active (threaded or synchronous scheduler,
  everything in this process), a key reference over an **ephemeral in-process KEK**: a fresh
  :class:`~pets.keys.MemoryKeyring` key made for the call, referenced through
  :class:`~pets.engines.InProcessKeys` (only a random handle is pickled); except for
  ``protect`` it is destroyed once the lazy objects built with it are collected, and
  the caller's key-service audit hook records the partitions' key uses;
* with an active ``distributed`` client (or the multiprocessing scheduler) and no key
  reference, the call is refused with an :class:`~pets.InputError` naming the keyword to pass:
  a worker in another process could not resolve an in-process reference, and pickling the key
  instead would copy it into every task message.

Examples:
    >>> import dask, dask.dataframe as dd, pandas as pd
    >>> from pets.keys import Secret
    >>> from pets.pseudo import Bucket, KeyedHash
    >>> ddf = dd.from_pandas(pd.DataFrame({"age": [23, 37, 41, 58], "u": list("abca")}),
    ...                      npartitions=2)
    >>> ages = Bucket(width=20).apply(ddf["age"])        # lazy: a Dask Series
    >>> type(ages).__module__.startswith("dask")
    True
    >>> with dask.config.set(scheduler="sync"):
    ...     ages.compute().tolist()
    ['[20, 40)', '[20, 40)', '[40, 60)', '[40, 60)']
    >>> h = KeyedHash(Secret(bytes(32)), domain="crm")
    >>> with dask.config.set(scheduler="sync"):
    ...     h.apply(ddf["u"]).compute().equals(h.apply(ddf["u"].compute()))
    True
"""

from __future__ import annotations

import inspect
import secrets
import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from pets._errors import InputError, KeyServiceError
from pets._events import emit
from pets.engines._dask import is_dask, meta_for, require_dask
from pets.engines._keyref import _IN_PROCESS, InProcessKeys, WorkerKeys
from pets.engines._plan import ship
from pets.engines._ship import keyed_shipper
from pets.jurisdiction import Context
from pets.keys import KeyServices, MemoryKeyring

if TYPE_CHECKING:
    import dask.dataframe as dd

    from pets.boundary import BoundaryKeys, Policy
    from pets.envelope import ColumnKeys

__all__ = [
    "apply_series",
    "decrypt_columns",
    "encrypt_columns",
    "in_process_keys",
    "in_process_refusal",
    "protect",
    "pseudonymize",
]

#: The context of the ephemeral KEK that references keyed transforms' keys in this process.
_PROCESS = Context("PROCESS", principal="pets.engines.dispatch")


# -- where may an in-process key reference be resolved? ---------------------------------------


def _distributed_client_active() -> bool:
    """True when a ``distributed`` client is the default (without importing ``distributed``)."""
    client_mod = sys.modules.get("distributed.client")
    if client_mod is None:  # never imported: there is no client
        return False
    try:
        client_mod.default_client()
    except ValueError:
        return False
    return True


def in_process_refusal() -> str | None:
    """Why an in-process key reference cannot be used now, or ``None`` when it can.

    In-process references resolve only in this process: under a ``distributed`` client or the
    multiprocessing scheduler the partitions run elsewhere.

    Examples:
        >>> in_process_refusal() is None
        True
    """
    if _distributed_client_active():
        return "a distributed client is active (tasks run in other processes)"
    if "dask" in sys.modules:
        scheduler = sys.modules["dask"].config.get("scheduler", None)
        if _runs_elsewhere(scheduler):
            what = ("the multiprocessing scheduler" if scheduler in ("processes", "multiprocessing")
                    else f"the scheduler {scheduler!r}")
            return f"{what} is configured (tasks run in other processes)"
    return None


def _runs_elsewhere(scheduler: object) -> bool:
    """True for a configured ``scheduler`` whose tasks run outside this process.

    ``dask.config.set(scheduler=...)`` takes a name, a ``get`` function or an executor: the
    multiprocessing names, ``dask.multiprocessing.get``, a ``ProcessPoolExecutor``, and a
    ``distributed`` client (or its ``get``) run tasks in other processes.
    """
    import concurrent.futures

    if isinstance(scheduler, str):
        return scheduler in ("processes", "multiprocessing", "distributed", "dask.distributed")
    if isinstance(scheduler, concurrent.futures.ProcessPoolExecutor):
        return True
    owner = getattr(scheduler, "__self__", scheduler)  # a bound get: its client
    module = getattr(scheduler, "__module__", None) or ""
    return (module == "dask.multiprocessing"
            or type(owner).__module__.startswith("distributed"))


def _refuse(what: str, fix: str, reason: str) -> InputError:
    return InputError(
        f"{what} needs keys in the partitions and {reason}: pass a key reference the workers "
        f"can resolve, {fix} (see docs/scale-out.md, 'How keys reach the workers'); pets "
        "never pickles the key into the task graph")


class _EphemeralKeys(InProcessKeys):
    """The source of an ephemeral in-process key reference (pickled as its handle only).

    Resolved in another process — a lazy frame built with no cluster around, then computed by
    a ``distributed`` client or the multiprocessing scheduler — it says so and names the fix.
    """

    __slots__ = ()

    def services(self, *, environ: Mapping[str, str] | None = None) -> KeyServices:
        try:
            return super().services(environ=environ)
        except KeyServiceError:
            raise KeyServiceError(
                "this lazy Dask object was built with an ephemeral in-process key reference (no "
                "distributed client or multiprocessing scheduler was configured when it was "
                "built) and is computed in another process, which cannot resolve it: build it "
                "again with keys=/workers=WorkerKeys(...) a worker can resolve (see "
                "docs/scale-out.md, 'How keys reach the workers')") from None

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_ephemeral_from_handle, (self.handle,))


def _ephemeral_from_handle(handle: str) -> _EphemeralKeys:
    obj = _EphemeralKeys.__new__(_EphemeralKeys)
    obj.handle = handle
    obj._holder = _IN_PROCESS.get(handle)
    return obj


class _Lease:
    """Lives exactly as long as the task graph that holds it (one per lazy object built).

    A finalizer on it marks the call's ephemeral KEK for shredding. It pickles to a fresh
    lease (nothing travels) and tokenizes by a random id.
    """

    __slots__ = ("__weakref__", "token")

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)

    def __reduce__(self) -> tuple[type[_Lease], tuple[()]]:
        return (_Lease, ())

    def __dask_tokenize__(self) -> str:
        return self.token

    def __repr__(self) -> str:
        return "_Lease()"


#: Ephemeral KEKs whose lazy objects are gone: appended by finalizers (a lock-free append, as
#: a finalizer may run inside any lock), shredded by the next :func:`in_process_keys` call.
_DEAD: list[tuple[KeyServices, str, InProcessKeys]] = []


def _shred_dead() -> None:
    """Destroy the ephemeral KEKs of collected lazy objects and forget their key registries.

    Destroying a KEK makes the key-reference caches drop every secret wrapped under it (and
    the transforms rebuilt from them), so the domain keys do not outlive their lazy objects;
    the registry the partitions opened from the reference (the caller's key services behind
    the ephemeral KEK) leaves the per-process cache of opened sources.
    """
    from pets.engines import _keyref

    while _DEAD:
        try:
            services, uri, source = _DEAD.pop()
        except IndexError:  # another thread took the last one
            return
        services.destroy(uri)
        with _keyref._LOCK:  # the cache services_for() fills; keyed by the (dead) source
            _keyref._SERVICES.pop(source, None)


class _OneKeyRing(MemoryKeyring):
    """A :class:`~pets.keys.MemoryKeyring` holding one KEK and claiming only that URI.

    Claiming one URI lets it sit in front of the caller's own key services (which may include
    another ``MemoryKeyring``) without shadowing them.
    """

    def __init__(self, uri: str, jurisdiction: str) -> None:
        super().__init__()
        self.uri = uri
        self.create(uri, jurisdiction=jurisdiction)

    def supports(self, uri: str) -> bool:
        return uri == self.uri


def in_process_keys(context: Context = _PROCESS, services: KeyServices | None = None,
                    *, what: str = "a keyed transform",
                    fix: str = "keys=WorkerKeys(...)", lease: object | None = None
                    ) -> WorkerKeys:
    """Key references resolved in this process, under a fresh ephemeral KEK made for one call.

    The KEK lives in this process's memory only; partitions resolve references to it through
    :class:`~pets.engines.InProcessKeys` (a random handle in the graph). ``services`` (the
    caller's own key services) are reachable through the same source, so column keys wrapped
    under the caller's KEKs unwrap in the partitions too — through a registry carrying the
    caller's ``audit`` hook, so each of those key uses is recorded as on pandas.

    Given a ``lease`` (an object the lazy result's task graph holds), the KEK is destroyed
    once the lease is collected — at the next call — so the secrets wrapped under it leave
    the process's key-reference caches with it; without one it lives as long as the process
    (or until :func:`~pets.engines.forget_keys`).

    Args:
        context: Who the partitions run as (the ephemeral KEK belongs to its jurisdiction).
        services: The caller's key services, placed behind the ephemeral KEK.
        what: The thing that needs keys (for the refusal message).
        fix: The keyword that fixes a refusal (for the refusal message).
        lease: Shred the KEK once this object is collected.

    Raises:
        InputError: A ``distributed`` client (or the multiprocessing scheduler) is active.

    Examples:
        >>> from pets.keys import Secret
        >>> wk = in_process_keys()
        >>> wk.ref(Secret(b"k" * 32)).resolve() == Secret(b"k" * 32)
        True
    """
    _shred_dead()
    reason = in_process_refusal()
    if reason is not None:
        raise _refuse(what, fix, reason)
    uri = f"memory://pets-dispatch/{secrets.token_hex(8)}"
    ring = _OneKeyRing(uri, context.jurisdiction)
    # the caller's audit hook comes along: the partitions' key uses are recorded (and fail
    # closed) exactly as the same calls on pandas
    every = KeyServices([ring, *(services or ())], audit=getattr(services, "audit", None))
    source = _EphemeralKeys(every)
    if lease is not None:
        weakref.finalize(lease, _DEAD.append, (KeyServices([ring]), uri, source)).atexit = False
    return WorkerKeys(source, uri, context, services=every)


# -- transforms on a Dask Series ---------------------------------------------------------------


def _keyed(transform: Any) -> bool:
    return callable(getattr(transform, "worker_ref", None))


def _quantiles(transform: Any) -> int | None:
    """``n`` for ``Bucket(quantiles=n)`` (edges depend on the whole column), else ``None``."""
    from pets.pseudo import Bucket

    if isinstance(transform, Bucket) and transform.quantiles:
        return int(transform.quantiles)
    return None


def _meta(transform: Any, series: dd.Series, by: dd.Series | None, kwargs: Mapping[str, Any]
          ) -> pd.Series:
    """The output's empty pandas Series, found by applying ``transform`` to dask's fake rows."""
    return meta_for(transform, [
        (series._meta_nonempty, None if by is None else by._meta_nonempty),
        (series._meta, None if by is None else by._meta)], kwargs)


@dataclass(frozen=True)
class _SeriesFn:
    """Apply a shipped transform to one partition of a column (and of its ``by`` column)."""

    transform: Any
    kwargs: tuple[tuple[str, Any], ...] = ()
    lease: _Lease | None = None  # keeps an ephemeral KEK alive while the graph is

    def __call__(self, part: pd.Series, by: pd.Series | None = None) -> pd.Series:
        t = self.transform
        t = t.build() if hasattr(t, "build") and not hasattr(t, "apply") else t
        kw = dict(self.kwargs)
        if by is not None:
            kw["by"] = by
        out: pd.Series = t.apply(part, **kw)
        return out


def _quantile_edges(values: pd.Series, quantiles: int, column: str) -> tuple[float, ...]:
    """The edges ``Bucket(quantiles=n)`` computes on the whole column (as pandas does)."""
    from pets.pseudo._generalize import quantile_edges

    return tuple(float(e) for e in quantile_edges(values.rename(column), quantiles))


@dataclass(frozen=True)
class _QuantileFn:
    """Bucket one partition by the global edges (computed once, passed in as a task result)."""

    quantiles: int
    origin: float

    def __call__(self, part: pd.Series, edges: tuple[float, ...]) -> pd.Series:
        from pets.engines._protect import QuantileBucket

        out: pd.Series = QuantileBucket(edges, self.quantiles, self.origin).apply(part)
        return out


def _quantile_series(transform: Any, series: dd.Series) -> dd.Series:
    """``Bucket(quantiles=n)`` lazily, with edges over the whole column (one extra task)."""
    from dask.delayed import delayed

    n = _quantiles(transform)
    assert n is not None
    meta = _meta(transform, series, None, {})
    edges = delayed(_quantile_edges, pure=True)(series, n, str(series.name))
    fn = _QuantileFn(n, float(transform.origin))
    out: dd.Series = series.map_partitions(fn, edges, meta=meta)  # type: ignore[no-untyped-call]
    return out


def apply_series(transform: Any, series: Any, *args: Any, **kwargs: Any) -> Any:
    """``transform.apply(series)`` for a Dask Series: a Dask Series, lazily.

    Keyed transforms reach the partitions through an ephemeral in-process key reference
    (:func:`in_process_keys`); with a ``distributed`` client active they are refused — use
    :func:`pets.pseudo.pseudonymize` (or :func:`pets.engines.dask.pseudonymize`) with
    ``keys=WorkerKeys(...)``. ``Bucket(quantiles=n)`` computes its edges over the whole column
    in one task and buckets every partition by them. ``DateShift`` takes ``by=`` as a Dask
    Series partitioned like the dates.

    Raises:
        InputError: Not a Series, a bad ``by=``, an unknown keyword, a column type the
            transform refuses, or keyed with a ``distributed`` client and no key reference.
    """
    ddm = require_dask()
    name = getattr(transform, "name", type(transform).__name__)
    if not isinstance(series, ddm.Series):
        raise InputError(f"{name}: apply takes one column (a Dask Series), not a Dask "
                         f"{type(series).__name__}; for a frame use "
                         "pets.pseudo.pseudonymize(ddf, {column: transform})")
    try:
        inspect.signature(transform.apply).bind(series, *args, **kwargs)
    except TypeError as exc:
        raise InputError(f"{name}: {exc}") from None
    if args:
        raise InputError(f"{name}: apply takes keyword arguments only after the column")
    by = kwargs.pop("by", None)
    if by is not None and not (is_dask(by) and isinstance(by, ddm.Series)):
        raise InputError(f"{name}: by= must be a Dask Series partitioned like the column "
                         f"{series.name!r}, not {type(by).__name__}")
    if by is not None and by.npartitions != series.npartitions:
        raise InputError(f"{name}: by= has {by.npartitions} partitions, the column "
                         f"{series.name!r} {series.npartitions}: partition them alike")
    if (by is not None and by.known_divisions and series.known_divisions
            and tuple(by.divisions) != tuple(series.divisions)):
        # dask zips the partitions without aligning them: rows would meet other users' ids
        raise InputError(f"{name}: by= is partitioned at other index bounds than the column "
                         f"{series.name!r} (other divisions): take both from one frame, or "
                         "repartition by= like the column")
    if _quantiles(transform) is not None:
        if kwargs:
            raise InputError(f"{name}: unexpected keyword(s) {sorted(kwargs)}")
        return _quantile_series(transform, series)
    meta = _meta(transform, series, by, kwargs)  # also refuses unknown keywords (TypeError)
    lease = _Lease() if _keyed(transform) else None
    keys = in_process_keys(what=f"transform {name!r} (on a Dask Series)",
                           fix=("pets.pseudo.pseudonymize(ddf, {column: transform}, "
                                "keys=WorkerKeys(...))"), lease=lease) if lease else None
    fn = _SeriesFn(ship(transform, [keyed_shipper(keys)]), tuple(sorted(kwargs.items())),
                   lease)
    if by is None:
        return series.map_partitions(fn, meta=meta)
    return ddm.map_partitions(fn, series, by, meta=meta)


def pseudonymize(ddf: Any, transforms: Mapping[str, Any], *,
                 keys: WorkerKeys | None = None) -> Any:
    """:func:`pets.pseudo.pseudonymize` on a Dask DataFrame: a Dask DataFrame, lazily.

    (Typed ``Any``: the pandas-typed public function returns what this returns.)

    Runs the Dask engine's :func:`pets.engines.dask.pseudonymize` (one partition function for
    every column). ``keys`` defaults to an ephemeral in-process key reference when any
    transform is keyed and no ``distributed`` client is active; with one active, ``keys`` is
    required. ``Bucket(quantiles=n)`` columns use edges over the whole column.

    Raises:
        InputError: A named column is missing, a date shift has no user column, or a keyed
            transform has no usable key reference.
    """
    from pets.engines._dask import transform_columns
    from pets.pseudo import DateShift

    missing = [c for c in transforms if c not in ddf.columns]
    if missing:
        raise InputError(f"unknown column(s) {missing}; the frame has {list(ddf.columns)}")
    for col, t in transforms.items():
        if isinstance(t, DateShift) and (t.by is None or t.by not in ddf.columns):
            raise InputError(f"column {col!r}: date-shift needs by=<user id column> naming "
                             "a column of the frame")
    quantile = {c: t for c, t in transforms.items() if _quantiles(t) is not None}
    rest = {c: t for c, t in transforms.items() if c not in quantile}
    lease = None
    if keys is None and any(_keyed(t) for t in rest.values()):
        lease = _Lease()
        keys = in_process_keys(what="a keyed transform of pets.pseudo.pseudonymize",
                               fix="pets.pseudo.pseudonymize(ddf, transforms, "
                                   "keys=WorkerKeys(...))", lease=lease)
    out: dd.DataFrame = transform_columns(ddf, rest, keys=keys, lease=lease) if rest else ddf
    for col, t in quantile.items():
        out = out.assign(**{col: _quantile_series(t, ddf[col])})
    return out


# -- column encryption and protect -------------------------------------------------------------


def encrypt_columns(ddf: Any, columns: Mapping[str, str] | Sequence[str], *,
                    keys: Any, key_uris: str | Sequence[str], context: Context,
                    enc_context: Mapping[str, str] | None, column_keys: ColumnKeys | None,
                    mode: str, encoding: str, audit: Any,
                    workers: WorkerKeys | None) -> Any:
    """:func:`pets.envelope.encrypt_columns` on a Dask DataFrame (see its docstring).

    The driver makes and wraps one DEK per column with ``keys`` under ``context``; partitions
    unwrap them through ``workers`` (default: ``keys`` themselves, in process). The audit
    event is emitted once, when the lazy frame is built — after the DEKs were made and
    wrapped, before any cell is encrypted — and says so with ``lazy=True`` (a compute that
    later fails, or never runs, encrypted nothing; each compute re-encrypts under the same
    DEKs).

    Returns:
        ``(encrypted Dask DataFrame, ColumnKeys)``.
    """
    from pets.engines._dask import encrypt_columns as dask_encrypt
    from pets.envelope._envelope import as_services

    services = as_services(keys)
    uris = [key_uris] if isinstance(key_uris, str) else list(key_uris)
    lease = None
    if workers is None:
        lease = _Lease()
        workers = in_process_keys(context, services, what="column encryption on Dask",
                                  fix="pets.envelope.encrypt_columns(ddf, ..., "
                                      "workers=WorkerKeys(...))", lease=lease)
    out, header = dask_encrypt(ddf, columns, keys=workers, key_uris=uris,
                               enc_context=enc_context, column_keys=column_keys, mode=mode,
                               encoding=encoding, services=services, wrap_context=context,
                               lease=lease)
    wanted = dict(columns) if isinstance(columns, Mapping) else dict.fromkeys(columns, mode)
    emit(audit, "envelope.encrypt_columns", columns=sorted(wanted), keys=uris,
         principal=context.principal, jurisdiction=context.jurisdiction, engine="dask",
         lazy=True)
    return out, header


def decrypt_columns(ddf: Any, column_keys: ColumnKeys | Mapping[str, Any] | None, *,
                    keys: Any, context: Context, columns: Sequence[str] | None, audit: Any,
                    workers: WorkerKeys | None) -> Any:
    """:func:`pets.envelope.decrypt_columns` on a Dask DataFrame (see its docstring).

    As on pandas, each column's DEK is unwrapped once here, as ``context``, before anything
    is built: a context outside the keys' jurisdiction, a destroyed KEK or a tampered header
    is refused at call time, and the ``envelope.decrypt_columns`` event (emitted once, when
    the lazy frame is built, with ``lazy=True``: no cell is decrypted yet) never records a
    decryption the key service refused. Partitions then unwrap each DEK through ``workers`` (default: ``keys``, in
    process, as ``context``); a tampered *cell* surfaces at compute time.

    Returns:
        The decrypted Dask DataFrame (lazy).
    """
    from pets.engines._dask import decrypt_columns as dask_decrypt
    from pets.envelope import ColumnKeys
    from pets.envelope._columns import _unwrap_dek
    from pets.envelope._envelope import as_services

    if column_keys is None:
        raise InputError("a Dask frame carries no attrs: pass column_keys= (the header "
                         "encrypt_columns returned)")
    if not isinstance(column_keys, ColumnKeys):
        column_keys = ColumnKeys.from_dict(column_keys)
    names = list(columns) if columns is not None else [
        c for c in column_keys.columns if c in ddf.columns]
    for name in names:
        if name not in column_keys.columns:
            raise InputError(f"column {name!r} is not in the column-key header")
        if name not in ddf.columns:
            raise InputError(f"no column {name!r} in the frame")
    services = as_services(keys)
    for name in names:  # the pandas path's checks, at call time (the DEK is dropped at once)
        _unwrap_dek(column_keys.columns[name], services, context, column_keys.enc_context)
    lease = None
    if workers is None:
        lease = _Lease()
        workers = in_process_keys(context, services, what="column decryption on Dask",
                                  fix="pets.envelope.decrypt_columns(ddf, ..., "
                                      "workers=WorkerKeys(...))", lease=lease)
    out = dask_decrypt(ddf, column_keys, keys=workers, columns=names, lease=lease)
    emit(audit, "envelope.decrypt_columns", columns=names, principal=context.principal,
         jurisdiction=context.jurisdiction, engine="dask", lazy=True)
    return out


def protect(ddf: Any, policy: Policy, keys: BoundaryKeys, context: Context, *,
            audit: Any, workers: WorkerKeys | None,
            progress: bool | None = None) -> Any:
    """:func:`pets.boundary.protect` on a Dask DataFrame: the engine's lazy ``DaskProtected``.

    ``workers`` defaults to an in-process reference (the boundary's key services behind an
    ephemeral KEK, as ``context``) when no ``distributed`` client is active.

    Returns:
        A :class:`~pets.engines.dask.DaskProtected`.
    """
    from pets.boundary._protect import _record
    from pets.engines._protect import protect as dask_protect

    if workers is None:
        try:
            workers = in_process_keys(context, keys.services, what="protect on Dask",
                                      fix="pets.boundary.protect(ddf, policy, keys, context, "
                                          "workers=WorkerKeys(...))")
        except InputError as exc:
            _record(audit, "boundary.refused", context, operation="protect",
                    target=policy.dataset, reason=f"{type(exc).__name__}: {exc}")
            raise
    return dask_protect(ddf, policy, keys, context, workers=workers, audit=audit,
                        progress=progress)

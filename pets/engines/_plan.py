"""Partition plumbing: pure ``DataFrame -> DataFrame`` functions that are safe to ship.

An engine turns the transforms a user hands it (which may hold a :class:`~pets.keys.Secret`)
into a :class:`PartitionFn`: a picklable, frozen list of :class:`Step` objects, each naming a
column and a *shippable* transform. A shippable transform is either

* a transform that holds no secret and pickles as it is (generalizers, masks, bucket edges
  computed on the driver), or
* a :class:`Rebuild`: a factory, a :class:`~pets.engines.KeyRef` and the non-secret keyword
  arguments; the worker resolves the reference (one unwrap per process) and rebuilds the
  transform once per process.

:func:`ship` makes that choice and refuses anything that would put key bytes in a task graph.

Examples:
    >>> import pandas as pd
    >>> class Upper:
    ...     name = "upper"
    ...     def apply(self, s):
    ...         return s.str.upper()
    >>> fn = PartitionFn((Step("city", Upper()),))
    >>> fn(pd.DataFrame({"city": ["paris", "rome"], "n": [1, 2]}))["city"].tolist()
    ['PARIS', 'ROME']
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from pets._errors import InputError
from pets.engines._keyref import KeyRef, _epoch, on_invalidate
from pets.keys import Secret

__all__ = ["PartitionFn", "Rebuild", "Step", "Transform", "ship"]


@runtime_checkable
class Transform(Protocol):
    """What every pets column transform provides: a name and ``apply(series) -> series``."""

    @property
    def name(self) -> str:
        """Short kebab-case name, e.g. ``"keyed-hash"``."""
        ...

    def apply(self, series: pd.Series) -> pd.Series:  # type: ignore[type-arg]
        """Transform one column; the result has the input's index and length."""
        ...


_BUILT_LOCK = threading.Lock()
_BUILT: dict[Rebuild, Transform] = {}


@dataclass(frozen=True)
class Rebuild:
    """Rebuild a keyed transform on the worker: ``factory(ref.resolve(), **kwargs)``.

    Attributes:
        factory: A module-level callable (a class or classmethod), pickled by reference.
        ref: Reference to the secret the factory takes first.
        kwargs: Non-secret keyword arguments, as sorted ``(name, value)`` pairs.
        name: The transform's name (for error messages and manifests).
    """

    factory: Callable[..., Transform]
    ref: KeyRef
    kwargs: tuple[tuple[str, Any], ...] = ()
    name: str = ""

    @classmethod
    def of(cls, factory: Callable[..., Transform], ref: KeyRef, name: str = "",
           **kwargs: Any) -> Rebuild:
        return cls(factory, ref, tuple(sorted(kwargs.items())), name)

    def build(self) -> Transform:
        """The transform, built once per process from the resolved secret.

        A transform whose KEK was destroyed or retired in this process while it was being
        built is returned to this caller but not cached (the next build asks the key service,
        as :meth:`KeyRef.resolve` does for the secret itself). A cached transform is served
        only while its secret is (:data:`~pets.engines._keyref.CACHE_LIFETIME_SECONDS`), then
        the key service is asked again, so a KEK destroyed by another process stops it too.
        """
        with _BUILT_LOCK:
            hit = _BUILT.get(self)
        if hit is not None and self.ref.cached():
            return hit
        epoch = _epoch()
        secret = self.ref.resolve()  # past the cache lifetime: the key service is asked again
        if hit is not None:
            return hit  # still allowed: the same secret, cached anew
        t = self.factory(secret, **dict(self.kwargs))
        with _BUILT_LOCK:
            # compared under _BUILT_LOCK: an invalidation either came first (epoch moved: not
            # cached) or comes after and drops the entry (its listener takes _BUILT_LOCK)
            if _epoch() != epoch:
                return t
            return _BUILT.setdefault(self, t)

    def __hash__(self) -> int:
        return hash((getattr(self.factory, "__qualname__", id(self.factory)), self.ref,
                     repr(self.kwargs)))


def forget_built() -> None:
    """Drop the per-process cache of rebuilt transforms."""
    with _BUILT_LOCK:
        _BUILT.clear()


def _drop_built(refs: frozenset[KeyRef] | None) -> None:
    """Drop transforms built from secrets the key-reference cache just dropped (a destroyed
    or retired KEK in this process; everything after ``forget_keys()``), so a shredded key
    stops pseudonymizing here at once, exactly as a cold process would refuse."""
    with _BUILT_LOCK:
        for rebuild in [r for r in _BUILT if refs is None or r.ref in refs]:
            del _BUILT[rebuild]


on_invalidate(_drop_built)


@dataclass(frozen=True)
class Step:
    """Apply ``transform`` to ``column`` and store the result in ``output`` (default: in place).

    ``transform`` is a :class:`Transform` or anything with ``build() -> Transform``
    (e.g. :class:`Rebuild`). ``output=None`` with ``drop=True`` removes the column.
    """

    column: str
    transform: Any = None
    output: str | None = None
    drop: bool = False

    def resolve(self) -> Transform:
        t = self.transform
        return t.build() if hasattr(t, "build") and not hasattr(t, "apply") else t  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PartitionFn:
    """A pure function of one partition: the steps in order, other columns untouched.

    Deterministic steps give the same output for a row whichever partition holds it, so
    retries and re-partitioning never change a result.
    """

    steps: tuple[Step, ...]
    columns: tuple[str, ...] | None = field(default=None)

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy(deep=False)
        for step in self.steps:
            if step.column not in frame.columns:
                raise InputError(f"column {step.column!r} is not in the frame")
            if step.drop:
                out = out.drop(columns=[step.column])
                continue
            t = step.resolve()
            by = getattr(t, "by", None)
            if isinstance(by, str):  # per-user transforms (date shift) read the user column
                if by not in frame.columns:
                    raise InputError(f"column {step.column!r}: {t.name} needs the user column "
                                     f"{by!r}, which is not in the frame")
                result = t.apply(frame[step.column], by=frame[by])  # type: ignore[call-arg]
            else:
                result = t.apply(frame[step.column])
            out[step.output or step.column] = result
        if self.columns is not None:
            out = out[list(self.columns)]
        return out


def _picklable(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except (TypeError, AttributeError, pickle.PicklingError):
        return False
    return True


Shipper = Callable[[Any], Any]


def ship(transform: Any, shippers: Sequence[Shipper] = ()) -> Any:
    """Return a form of ``transform`` that can travel in a task graph without key bytes.

    Each of ``shippers`` may return a shippable form (or ``None`` to pass); otherwise a
    transform that pickles cleanly (holds no :class:`~pets.keys.Secret`) ships as it is.

    Raises:
        InputError: The transform holds a key and nothing can turn it into a key reference.

    Examples:
        >>> from pets.keys import Secret
        >>> class Keyed:
        ...     name = "keyed"
        ...     def __init__(self, key): self.key = key
        ...     def apply(self, s): return s
        >>> ship(Keyed(Secret(b"k" * 32)))
        Traceback (most recent call last):
        ...
        pets._errors.InputError: transform 'keyed' holds a key and cannot be sent to workers: give the engine a key reference for it (see pets.engines.WorkerKeys)
    """
    if isinstance(transform, Rebuild):
        return transform
    for shipper in shippers:
        out = shipper(transform)
        if out is not None:
            return out
    if isinstance(transform, Secret) or not _picklable(transform):
        name = getattr(transform, "name", type(transform).__name__)
        raise InputError(
            f"transform {name!r} holds a key and cannot be sent to workers: give the engine a "
            "key reference for it (see pets.engines.WorkerKeys)"
        )
    return transform

"""Key references: how a secret reaches a worker without travelling in the task graph.

A :class:`KeyRef` is the *ciphertext* of a key (a :class:`~pets.keys.WrappedKey`), the
driver's :class:`~pets.Context`, and a :class:`KeySource` saying how a worker process opens the
key service that can unwrap it. It is picklable and safe to ship: it contains no key
bytes. A worker calls :meth:`KeyRef.resolve` the first time a partition needs the key; the
unwrapped :class:`~pets.keys.Secret` is cached in that process (one unwrap per worker process
and :data:`CACHE_LIFETIME_SECONDS`, not per task), and :func:`forget_keys` drops the cache.

Two key sources ship with pets:

* :class:`~pets.keys.KeyConfig` (from ``pets.keys``) — a keyring directory and/or PKCS#11
  tokens; the worker reads the master key / passphrase / PIN from *its own* environment
  (``PETS_MASTER_KEY`` …), so no secret crosses the wire. This is the source for real clusters.
* :class:`InProcessKeys` — key services that live in the driver process (e.g. a
  :class:`~pets.keys.MemoryKeyring` in a notebook). Only a random handle is pickled; resolving it
  in another process fails with a clear :class:`~pets.KeyServiceError`. Use it with the
  threaded or synchronous schedulers.

**Whose context unwraps.** The process that resolves a reference unwraps in *its own* context.
In the process that made the reference (the driver, and its threaded or synchronous schedulers)
that is the reference's context. In any other process (a Dask worker, a ``spawn`` or ``fork``
child) it is that process's :meth:`Context.from_env <pets.Context.from_env>` — the jurisdiction
and principal of *its own* environment (``PETS_JURISDICTION``, ``PETS_PRINCIPAL``), never the
driver's claim. The driver's context travels only as a hint whose jurisdiction must match the
worker's own: a mismatch is a :class:`~pets.JurisdictionError` naming both and the key URI,
raised before the key service is opened. The key service then checks the worker's own context
against the key's jurisdiction, so a worker outside it is refused there, as on the driver.
Secrets are cached per reference *and* context: one resolved in one context is never served
to another.

**Destroyed and retired keys.** Every :class:`~pets.keys.KeyServices` this module wraps or
unwraps through is subscribed to (:meth:`~pets.keys.KeyServices.subscribe`), and kept alive by
the cache entry for as long as a secret it covers stays cached (key-change hubs hold their
subscribers weakly: a registry the caller dropped would otherwise take the subscription with
it). When a KEK is destroyed or retired in this process, every cached secret wrapped under that
KEK is dropped at once, so the next :meth:`KeyRef.resolve` asks the key service and is refused.
Listeners added with :func:`on_invalidate` (caches built *from* resolved secrets) hear which
references went. A change made in *another* process (the driver destroying a key while workers hold it) is not
heard by the workers: they ask the key service again, and are refused, once their cached
entry is :data:`CACHE_LIFETIME_SECONDS` (60 s) old; run ``client.run(forget_keys)`` after
crypto-shredding to make it immediate.

Examples:
    >>> from pets import Context
    >>> from pets.keys import KeyServices, MemoryKeyring, Secret
    >>> ring = MemoryKeyring()
    >>> _ = ring.create("memory://eu/kek", jurisdiction="EU")
    >>> source = InProcessKeys(KeyServices([ring]))
    >>> root = Secret(b"r" * 32)
    >>> ref = KeyRef.wrap(root, "memory://eu/kek", source=source, context=Context("EU"))
    >>> ref.resolve() == root
    True
    >>> b"r" * 32 in repr(ref).encode()
    False
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, Protocol, runtime_checkable

from pets._errors import InputError, JurisdictionError, KeyServiceError, PetsError
from pets.jurisdiction import Context
from pets.keys import KeyServices, Secret, WrappedKey

__all__ = [
    "CACHE_LIFETIME_SECONDS",
    "InProcessKeys",
    "KeyRef",
    "KeySource",
    "WorkerKeys",
    "forget_keys",
]

#: ``enc_context`` purpose bound (as AAD) into every key a :class:`KeyRef` wraps itself.
PURPOSE = "pets.engines.keyref"


@runtime_checkable
class KeySource(Protocol):
    """Something picklable and secret-free that opens key services in the current process."""

    def services(self, *, environ: Mapping[str, str] | None = None) -> KeyServices:
        """Open the key services (secrets such as a master key come from ``environ``)."""
        ...


# Process-wide caches. They are the point of a key reference (one unwrap per worker process),
# so they are deliberately module state; forget_keys() clears them.
_LOCK = threading.Lock()
_SERVICES: dict[object, KeyServices] = {}
#: How long a cached secret is served before the key service is asked again: the bound on how
#: long a KEK destroyed or retired by *another process* (unheard here) keeps working in this
#: one, as for ParquetCrypto's pyarrow cache. Changes made in this process act at once.
CACHE_LIFETIME_SECONDS = 60.0
_clock = time.monotonic
#: Each cached secret, keyed by its reference *and* the context it was unwrapped in (a secret
#: resolved under one context is never served to another), with the registry whose
#: subscription invalidates it (key-change hubs hold subscribers weakly, so the entry keeps that
#: registry alive as long as the secret) and the time after which it is unwrapped again.
_SECRETS: dict[tuple[KeyRef, Context], tuple[Secret, KeyServices, float]] = {}
_IN_PROCESS: weakref.WeakValueDictionary[str, _Holder] = weakref.WeakValueDictionary()
#: Called with the references dropped because their KEK changed (``None``: every reference,
#: from :func:`forget_keys`).
_LISTENERS: list[Callable[[frozenset[KeyRef] | None], None]] = []
#: Raised by every invalidation: a secret unwrapped while a KEK changed is returned, not cached.
_EPOCH = [0]
#: This process's identity (random; renewed in a forked child). A reference made here records
#: it: only here is the reference's own context the process's context.
_ORIGIN = [secrets.token_hex(16)]


def _new_origin() -> None:
    _ORIGIN[0] = secrets.token_hex(16)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_origin)


def on_invalidate(listener: Callable[[frozenset[KeyRef] | None], None]
                  ) -> Callable[[], None]:
    """Call ``listener(refs)`` whenever cached secrets are dropped: ``refs`` are the references
    whose KEK was destroyed or retired in this process, ``None`` after :func:`forget_keys`.

    For per-process caches built from resolved secrets (keyed transforms), so they drop what
    they built from a shredded key. Held strongly (register module-level functions once);
    returns a function that removes the listener.

    Examples:
        >>> heard = []
        >>> remove = on_invalidate(heard.append)
        >>> _ = forget_keys()
        >>> heard
        [None]
        >>> remove()
    """
    with _LOCK:
        if listener not in _LISTENERS:
            _LISTENERS.append(listener)

    def remove() -> None:
        with _LOCK:
            if listener in _LISTENERS:
                _LISTENERS.remove(listener)

    return remove


def _invalidated(refs: frozenset[KeyRef] | None) -> None:
    """Tell every listener (all of them, even if one raises; the first error is re-raised)."""
    with _LOCK:
        listeners = list(_LISTENERS)
    first: Exception | None = None
    for listener in listeners:
        try:
            listener(refs)
        except Exception as exc:  # a broken listener must not keep a shredded key in another
            first = first or exc
    if first is not None:
        raise first


def _epoch() -> int:
    """The invalidation counter: a cache built from a secret compares it before and after."""
    with _LOCK:
        return _EPOCH[0]


def _on_key_change(uri: str, version: int, what: str) -> None:
    """A KEK changed in this process: drop every secret wrapped under it on destroy/retire.

    Every version of the KEK goes (not only the refused ones): resolving a still-usable one
    again costs one unwrap, and keeps the rule simple enough to trust.
    """
    if what not in ("destroy", "retire"):
        return
    with _LOCK:
        _EPOCH[0] += 1
        gone = [key for key in _SECRETS if key[0].wrapped.key_uri == uri]
        for key in gone:
            del _SECRETS[key]
    if gone:
        _invalidated(frozenset(ref for ref, _ in gone))


def _sweep(keep: tuple[KeyRef, Context] | None = None) -> None:
    """Drop every expired secret but ``keep``'s (and tell listeners, so what was built from
    them goes too): a long-lived driver caching job keys run after run does not keep them all."""
    now = _clock()
    with _LOCK:
        gone = [key for key, entry in _SECRETS.items() if entry[2] <= now and key != keep]
        for key in gone:
            del _SECRETS[key]
    if gone:
        _invalidated(frozenset(ref for ref, _ in gone))


def _expire(key: tuple[KeyRef, Context]) -> None:
    """Drop the expired secret that the key service now refuses, and tell listeners."""
    with _LOCK:
        _EPOCH[0] += 1
        gone = _SECRETS.pop(key, None) is not None
    if gone:
        _invalidated(frozenset({key[0]}))


def _watch(services: KeyServices) -> KeyServices:
    """Subscribe the secret cache to ``services`` (idempotent; held weakly by them)."""
    subscribe = getattr(services, "subscribe", None)
    if subscribe is not None:
        subscribe(_on_key_change)
    return services


class _Holder:
    """Keeps registered in-process key services alive while their handle is referenced."""

    __slots__ = ("__weakref__", "services")

    def __init__(self, services: KeyServices) -> None:
        self.services = services


class InProcessKeys:
    """Key services living in this (driver) process, referenced by a random handle.

    Pickling keeps only the handle. In a different process (a ``processes=True`` Dask worker)
    :meth:`services` raises :class:`~pets.KeyServiceError`: use a ``KeyConfig`` there.

    Args:
        services: The key services to expose under the handle.
    """

    __slots__ = ("_holder", "handle")

    def __init__(self, services: KeyServices) -> None:
        self.handle = secrets.token_hex(16)
        self._holder: _Holder | None = _Holder(services)
        _IN_PROCESS[self.handle] = self._holder

    def services(self, *, environ: Mapping[str, str] | None = None) -> KeyServices:
        holder = self._holder or _IN_PROCESS.get(self.handle)
        if holder is None:
            raise KeyServiceError(
                "the key services of this key reference live in the driver process only; on a "
                "multi-process cluster reference keys through a KeyConfig (keyring directory + "
                "PETS_MASTER_KEY in the workers' environment)"
            )
        return holder.services

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_in_process_from_handle, (self.handle,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InProcessKeys) and other.handle == self.handle

    def __hash__(self) -> int:
        return hash(("InProcessKeys", self.handle))

    def __repr__(self) -> str:
        return f"InProcessKeys(handle={self.handle[:8]}…)"


def _in_process_from_handle(handle: str) -> InProcessKeys:
    obj = InProcessKeys.__new__(InProcessKeys)
    obj.handle = handle
    obj._holder = _IN_PROCESS.get(handle)
    return obj


@dataclass(frozen=True)
class KeyRef:
    """A picklable reference to a secret: its wrapped form plus where to unwrap it.

    Attributes:
        wrapped: The key, wrapped under a KEK (ciphertext; safe to ship).
        source: Opens the key service on the process that resolves the reference.
        context: The driver's context. The process that made the reference unwraps in it;
            any other process unwraps in its *own* context (:meth:`Context.from_env
            <pets.Context.from_env>`), and this one is only a hint whose jurisdiction must
            match that.
        enc_context: Encryption context bound into the wrapping (sorted pairs).
        origin: The identity of the process that made the reference (random, not secret; no
            part of equality). Empty: made nowhere, so every process uses its own context.
    """

    wrapped: WrappedKey
    source: KeySource
    context: Context
    enc_context: tuple[tuple[str, str], ...] = field(default=())
    origin: str = field(default="", compare=False, repr=False)

    @classmethod
    def wrap(
        cls,
        secret: Secret,
        key_uri: str,
        *,
        source: KeySource,
        context: Context,
        services: KeyServices | None = None,
        enc_context: Mapping[str, str] | None = None,
    ) -> KeyRef:
        """Wrap ``secret`` under the KEK ``key_uri`` and return a reference to it.

        Args:
            secret: The key to reference (it is wrapped, never stored in the reference).
            key_uri: KEK that wraps it, e.g. ``local://eu/engine``.
            source: How resolving processes open the key service.
            context: Execution context for wrapping and for later unwraps.
            services: Key services to wrap with on this process (default: ``source``'s).
            enc_context: Extra encryption context; ``purpose`` is always bound (to
                ``pets.engines.keyref``: it is what ``key.wrap`` / ``key.unwrap`` audit events
                report, so it cannot be set here).

        Returns:
            A reference whose :meth:`resolve` gives back ``secret``.

        Raises:
            InputError: ``enc_context`` has a ``purpose`` entry.
        """
        extra = dict(enc_context or {})
        if "purpose" in extra:
            raise InputError("a key reference's purpose is always pets.engines.keyref: leave "
                             "'purpose' out of enc_context")
        ec = {"purpose": PURPOSE, **extra}
        svc = _watch(services if services is not None else source.services())
        with _LOCK:
            epoch = _EPOCH[0]
        wrapped = svc.wrap(key_uri, secret.expose(), context=context, enc_context=ec)
        ref = cls(wrapped, source, context, tuple(sorted(ec.items())), origin=_ORIGIN[0])
        with _LOCK:
            if _EPOCH[0] == epoch:  # no KEK changed meanwhile (else resolve() asks again)
                _SECRETS[ref, context] = (secret, svc, _clock() + CACHE_LIFETIME_SECONDS)
        _sweep()
        return ref

    def _made_here(self) -> bool:
        return bool(self.origin) and self.origin == _ORIGIN[0]

    def unwrap_context(self, environ: Mapping[str, str] | None = None) -> Context:
        """The context this process unwraps the reference in.

        In the process that made the reference: :attr:`context`. In any other: the process's
        own :meth:`Context.from_env <pets.Context.from_env>` (``PETS_JURISDICTION``, default
        ``EU`` as for the command line, and ``PETS_PRINCIPAL``), provided its jurisdiction is
        the one :attr:`context` names.

        Args:
            environ: This process's environment (default: ``os.environ``).

        Raises:
            JurisdictionError: This process's own jurisdiction is not the driver's, or its
                environment names no valid jurisdiction.

        Examples:
            >>> from dataclasses import replace
            >>> from pets import Context
            >>> from pets.keys import KeyServices, MemoryKeyring, Secret
            >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/kek", jurisdiction="EU")
            >>> ref = KeyRef.wrap(Secret.generate(), "memory://eu/kek",
            ...                   source=InProcessKeys(KeyServices([ring])),
            ...                   context=Context("EU", principal="etl"))
            >>> ref.unwrap_context()  # made here: the driver's context is this process's
            Context(jurisdiction='EU', principal='etl')
            >>> worker = {"PETS_JURISDICTION": "EU", "PETS_PRINCIPAL": "svc-dask"}
            >>> elsewhere = replace(ref, origin="")  # as another process sees it
            >>> elsewhere.unwrap_context(worker)  # its own principal, the same jurisdiction
            Context(jurisdiction='EU', principal='svc-dask')
            >>> elsewhere.unwrap_context({"PETS_JURISDICTION": "US"})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            pets._errors.JurisdictionError: key reference to memory://eu/kek was made for EU (driver principal etl), but this process's own environment says US ...
        """
        if self._made_here():
            return self.context
        uri = self.wrapped.key_uri
        try:
            own = Context.from_env(os.environ if environ is None else environ)
        except InputError as exc:
            raise JurisdictionError(
                f"key reference to {uri}: this process's environment names no valid "
                f"jurisdiction ({exc}); set PETS_JURISDICTION where the worker runs"
            ) from None
        if own.jurisdiction != self.context.jurisdiction:
            raise JurisdictionError(
                f"key reference to {uri} was made for {self.context.jurisdiction} (driver "
                f"principal {self.context.principal}), but this process's own environment says "
                f"{own.jurisdiction} (PETS_JURISDICTION; principal {own.principal}): refused "
                f"before the key service is asked"
            )
        return own

    def resolve(self) -> Secret:
        """The referenced secret, unwrapped through the key service once per process and
        context (:meth:`unwrap_context`).

        Raises:
            JurisdictionError: This process's own context is not the driver's, or may not
                unwrap the key.
            KeyServiceError: The key service cannot be opened or refuses.
            IntegrityError: The wrapped key was tampered with.
        """
        if isinstance(self.source, InProcessKeys) and not self._made_here():
            # key services of the driver's memory: say that first (a registry lookup, nothing
            # is unwrapped), it is the real reason another process cannot resolve this
            self.source.services()
        context = self.unwrap_context()
        key = (self, context)
        with _LOCK:
            hit = _SECRETS.get(key)
            epoch = _EPOCH[0]
        if hit is not None and _clock() < hit[2]:
            return hit[0]
        services = services_for(self.source) if hit is None else hit[1]
        try:
            raw = services.unwrap(self.wrapped, context=context,
                                  enc_context=dict(self.enc_context))
        except PetsError:
            if hit is not None:  # expired and now refused (a change made elsewhere): drop it
                _expire(key)
            raise
        secret = Secret(raw)
        _sweep(keep=key)  # this one is being renewed: what was built from it stays valid
        with _LOCK:
            if _EPOCH[0] != epoch:  # a KEK changed while we unwrapped: do not cache
                return secret
            entry = (secret, services, _clock() + CACHE_LIFETIME_SECONDS)
            if hit is not None:
                _SECRETS[key] = entry
            return _SECRETS.setdefault(key, entry)[0]

    def cached(self) -> bool:
        """True while this process serves the secret from its cache (within its lifetime),
        for the context it would unwrap in now."""
        try:
            key = (self, self.unwrap_context())
        except PetsError:
            return False
        with _LOCK:
            hit = _SECRETS.get(key)
        return hit is not None and _clock() < hit[2]

    def __repr__(self) -> str:
        return (f"KeyRef(key_uri={self.wrapped.key_uri!r}, version={self.wrapped.version}, "
                f"context={self.context!r})")


def services_for(source: KeySource) -> KeyServices:
    """The key services ``source`` opens in this process (opened once, then cached)."""
    with _LOCK:
        hit = _SERVICES.get(source)
    if hit is not None:
        return hit
    services = _watch(source.services(environ=os.environ))
    with _LOCK:
        return _SERVICES.setdefault(source, services)


def forget_keys() -> int:
    """Drop every cached secret and key service in this process; return how many secrets.

    Run it on every worker after a job (``client.run(forget_keys)``) to shorten the time key
    material stays in worker memory.

    Examples:
        >>> forget_keys() >= 0
        True
    """
    with _LOCK:
        _EPOCH[0] += 1
        n = len(_SECRETS)
        _SECRETS.clear()
        _SERVICES.clear()
    _invalidated(None)
    return n


class WorkerKeys:
    """Driver-side helper: turns the secrets of a job into :class:`KeyRef` objects, once each.

    Every distinct secret handed to :meth:`ref` is wrapped once under ``kek_uri`` (a fresh wrap
    of a key the driver already holds), so a job with ten columns keyed by one domain key ships
    one reference. The helper remembers those secrets (driver memory only) for its lifetime and
    refuses to be pickled.

    Args:
        source: How worker processes open the key service (a ``KeyConfig`` for real clusters).
        kek_uri: The KEK that wraps the job's secrets (it must belong to ``context``'s
            jurisdiction: workers unwrap in their own context, which must be in that one).
        context: Who runs the job, and where (the workers' own environments must say the same
            jurisdiction; see :meth:`KeyRef.unwrap_context`).
        services: Key services to wrap with on the driver (default: opened from ``source``).

    Examples:
        >>> from pets import Context
        >>> from pets.keys import KeyServices, MemoryKeyring, Secret
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/kek", jurisdiction="EU")
        >>> wk = WorkerKeys(InProcessKeys(KeyServices([ring])), "memory://eu/kek", Context("EU"))
        >>> root = Secret.generate()
        >>> wk.ref(root) is wk.ref(root)
        True
    """

    def __init__(self, source: KeySource, kek_uri: str, context: Context, *,
                 services: KeyServices | None = None) -> None:
        self.source = source
        self.kek_uri = kek_uri
        self.context = context
        self._services = services
        self._refs: dict[bytes, KeyRef] = {}

    def ref(self, secret: Secret) -> KeyRef:
        """The reference for ``secret`` (wrapped on first use; equal secrets share one)."""
        raw = secret.expose()
        hit = self._refs.get(raw)
        if hit is not None:
            return hit
        services = self._services if self._services is not None else services_for(self.source)
        ref = KeyRef.wrap(secret, self.kek_uri, source=self.source, context=self.context,
                          services=services)
        self._refs[raw] = ref
        return ref

    def services(self) -> KeyServices:
        """The key services this driver wraps with."""
        return self._services if self._services is not None else services_for(self.source)

    def __repr__(self) -> str:
        return f"WorkerKeys(kek_uri={self.kek_uri!r}, context={self.context!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("WorkerKeys stays on the driver: ship the KeyRef objects it makes")

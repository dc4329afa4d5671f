"""The key-service protocol shared by every backend.

A key service holds key-encryption keys (KEKs). Each KEK is named by a URI
(``local://<keyring>/<name>``, ``pkcs11://<token>/<label>``, ``memory://<ring>/<name>``),
belongs to exactly one jurisdiction, and has numbered versions. Data keys (DEKs) are wrapped
under the newest active version and unwrapped with any version that is neither destroyed nor
below the key's ``min_decryption_version``.

``unwrap`` is refused *by the service* when the caller's :class:`~pets.Context` is in another
jurisdiction, before any key material is touched; the refusal is reported to the audit hook.

Two facilities sit beside the protocol:

* **Change notification.** :class:`KeyChanges` fans a ``(uri, version, what)`` notice out to
  weakly held subscribers after a successful ``rotate`` / ``retire`` / ``destroy``. The built-in
  backends each own one (every :class:`~pets.keys.LocalKeyring` object on one keyring directory,
  and every :class:`~pets.keys.Pkcs11Keyring` on one token, share it within the process), and
  :meth:`KeyServices.subscribe` relays them, so in-process caches of unwrapped keys
  (``ParquetCrypto``, worker key references) drop what a destroyed or retired version protects
  at once. Another *process* changing a key is not seen: see ``docs/keys.md``.
* **Audited key use.** A :class:`KeyServices` built with ``audit=`` reports every successful
  ``wrap`` / ``unwrap`` made through it (``key.wrap`` / ``key.unwrap``: key URI, version,
  jurisdictions, principal, purpose; never key or wrapped-key bytes) and every failed one.
  A use the hook cannot record fails closed (:class:`AuditHookError`), as the export gate
  writes nothing when its audit entry fails.
"""

from __future__ import annotations

import base64
import inspect
import json
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pets._errors import (
    AuditHookError,
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
    PetsError,
)
from pets._events import AuditHook, emit
from pets.jurisdiction import Context

__all__ = [
    "AuditHookError",
    "KeyChange",
    "KeyChanges",
    "KeyInfo",
    "KeyService",
    "KeyServices",
    "KeyVersion",
    "WrappedKey",
    "canonical_context",
    "check_dek",
    "check_unwrap_allowed",
    "check_version_usable",
    "check_wrapped_matches",
    "parse_key_uri",
]

_URI = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<authority>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+)$")
MAX_CONTEXT_ITEMS = 64
MAX_CONTEXT_BYTES = 8192
MAX_DEK_BYTES = 1024


def check_dek(dek: object) -> bytes:
    """Validate a data key before wrapping: bytes-like, 1 to 1024 bytes. Returns it as bytes.

    ``bytes(32)`` is 32 zero bytes, so an ``int`` (or ``str``) passed by mistake is refused
    rather than silently wrapped.

    Examples:
        >>> len(check_dek(bytearray(32)))
        32
        >>> check_dek(32)
        Traceback (most recent call last):
        ...
        pets._errors.InputError: a data key must be bytes, not int
    """
    if not isinstance(dek, bytes | bytearray | memoryview):
        raise InputError(f"a data key must be bytes, not {type(dek).__name__}")
    raw = bytes(dek)
    if not 1 <= len(raw) <= MAX_DEK_BYTES:
        raise InputError(f"a data key must be 1..{MAX_DEK_BYTES} bytes, not {len(raw)}")
    return raw


def check_wrapped_matches(wrapped: WrappedKey, info: KeyInfo) -> None:
    """Refuse a wrapped key whose stated jurisdiction is not its KEK's (a tampered header).

    ``WrappedKey.jurisdiction`` is not covered by the wrapping AAD, so every backend compares it
    with the key's own (authenticated) jurisdiction before using the KEK — after
    :func:`check_unwrap_allowed`, so callers from elsewhere still get :class:`JurisdictionError`.

    Examples:
        >>> info = KeyInfo("memory://eu/k", "EU", 1, 1, [], "memory")
        >>> check_wrapped_matches(WrappedKey("memory://eu/k", 1, "EU", b""), info)
        >>> check_wrapped_matches(WrappedKey("memory://eu/k", 1, "US", b""), info)
        Traceback (most recent call last):
        ...
        pets._errors.IntegrityError: wrapped key failed to authenticate
    """
    if wrapped.jurisdiction != info.jurisdiction:
        raise IntegrityError("wrapped key failed to authenticate")


def parse_key_uri(uri: str) -> tuple[str, str, str]:
    """Split a key URI into ``(scheme, authority, name)``.

    Examples:
        >>> parse_key_uri("local://eu/customer-kek")
        ('local', 'eu', 'customer-kek')
        >>> parse_key_uri("eu/kek")
        Traceback (most recent call last):
        ...
        pets._errors.InputError: invalid key URI 'eu/kek': expected scheme://authority/name
    """
    m = _URI.match(uri)
    if not m:
        raise InputError(f"invalid key URI {uri!r}: expected scheme://authority/name")
    return m["scheme"], m["authority"], m["name"]


def canonical_context(enc_context: Mapping[str, str] | None) -> bytes:
    """Deterministic bytes for an encryption context (sorted keys, compact JSON, UTF-8).

    Examples:
        >>> canonical_context({"b": "2", "a": "1"})
        b'{"a":"1","b":"2"}'
    """
    ctx = dict(enc_context or {})
    if len(ctx) > MAX_CONTEXT_ITEMS:
        raise InputError(f"encryption context has {len(ctx)} items; at most {MAX_CONTEXT_ITEMS}")
    for k, v in ctx.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InputError("encryption context keys and values must be strings")
    try:
        out = json.dumps(ctx, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InputError("encryption context keys and values must be valid Unicode text "
                         "(no lone surrogates)") from None
    if len(out) > MAX_CONTEXT_BYTES:
        raise InputError(f"encryption context is {len(out)} bytes; at most {MAX_CONTEXT_BYTES}")
    return out


@dataclass(frozen=True)
class KeyVersion:
    """One version of a KEK. ``state`` is ``active``, ``retired`` or ``destroyed``."""

    version: int
    state: Literal["active", "retired", "destroyed"]
    created: str


@dataclass(frozen=True)
class KeyInfo:
    """Public description of a KEK: never contains key bytes."""

    uri: str
    jurisdiction: str
    primary_version: int
    min_decryption_version: int
    versions: Sequence[KeyVersion]
    backend: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "jurisdiction": self.jurisdiction,
            "primary_version": self.primary_version,
            "min_decryption_version": self.min_decryption_version,
            "versions": [v.__dict__ for v in self.versions],
            "backend": self.backend,
            "attributes": dict(self.attributes),
        }


@dataclass(frozen=True)
class WrappedKey:
    """A data key wrapped under one KEK version. Safe to store and ship: it is ciphertext.

    ``blob`` is the backend's opaque wrapping (e.g. nonce + AES-GCM ciphertext + tag).
    """

    key_uri: str
    version: int
    jurisdiction: str
    blob: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_uri": self.key_uri,
            "version": self.version,
            "jurisdiction": self.jurisdiction,
            "blob": base64.b64encode(self.blob).decode(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WrappedKey:
        """Parse :meth:`to_dict` output strictly: text fields are strings, the version an
        integer 1 .. 2^32-1 (not a float, bool or string), the blob base64.

        Examples:
            >>> WrappedKey.from_dict({"key_uri": "memory://eu/k", "version": 1.5,
            ...                       "jurisdiction": "EU", "blob": ""})
            Traceback (most recent call last):
            ...
            pets._errors.InputError: malformed wrapped key: version must be an integer 1 .. 2^32-1
        """
        try:
            uri, version, jur, blob = d["key_uri"], d["version"], d["jurisdiction"], d["blob"]
        except (KeyError, TypeError) as exc:
            raise InputError(f"malformed wrapped key: {exc.__class__.__name__}") from None
        if not (isinstance(uri, str) and isinstance(jur, str) and isinstance(blob, str)):
            raise InputError("malformed wrapped key: key_uri, jurisdiction and blob are text")
        if isinstance(version, bool) or not isinstance(version, int) or not (
                1 <= version < 1 << 32):
            raise InputError("malformed wrapped key: version must be an integer 1 .. 2^32-1")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError as exc:
            raise InputError(f"malformed wrapped key: {exc.__class__.__name__}") from None
        return cls(uri, version, jur, raw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> WrappedKey:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError:
            raise InputError("malformed wrapped key: not JSON") from None


@runtime_checkable
class KeyService(Protocol):
    """What every key backend provides. All methods are safe to call concurrently."""

    def supports(self, uri: str) -> bool:
        """True when this service owns keys named like ``uri``."""
        ...

    def create(self, uri: str, *, jurisdiction: str) -> KeyInfo:
        """Create a KEK (version 1) belonging to ``jurisdiction``."""
        ...

    def wrap(self, uri: str, dek: bytes, *, context: Context,
             enc_context: Mapping[str, str] | None = None) -> WrappedKey:
        """Wrap ``dek`` under the primary version, binding ``enc_context`` as AAD."""
        ...

    def unwrap(self, wrapped: WrappedKey, *, context: Context,
               enc_context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap; refused with JurisdictionError outside the key's jurisdiction."""
        ...

    def rotate(self, uri: str) -> KeyInfo:
        """Add a new version and make it primary; older versions still unwrap."""
        ...

    def retire(self, uri: str, min_decryption_version: int) -> KeyInfo:
        """Refuse unwrap for versions below ``min_decryption_version``."""
        ...

    def destroy(self, uri: str, version: int | None = None) -> KeyInfo:
        """Destroy one version (or all): data under it becomes unrecoverable."""
        ...

    def describe(self, uri: str) -> KeyInfo:
        """Public metadata; never key bytes."""
        ...

    def list(self) -> list[KeyInfo]:
        """Every KEK this service holds."""
        ...


def check_version_usable(info: KeyInfo, version: int) -> KeyVersion:
    """The version of ``info`` that may unwrap, or the precise refusal.

    Unknown → :class:`KeyNotFoundError`; destroyed, retired or below
    ``min_decryption_version`` → :class:`KeyDestroyedError`.

    Examples:
        >>> info = KeyInfo("memory://eu/k", "EU", 2, 2,
        ...                [KeyVersion(1, "retired", ""), KeyVersion(2, "active", "")], "memory")
        >>> check_version_usable(info, 2).state
        'active'
        >>> check_version_usable(info, 1)
        Traceback (most recent call last):
        ...
        pets._errors.KeyDestroyedError: memory://eu/k v1 is retired (min_decryption_version=2)
    """
    entry = next((x for x in info.versions if x.version == version), None)
    if entry is None:
        raise KeyNotFoundError(f"{info.uri} has no version {version}")
    if entry.state == "destroyed":
        raise KeyDestroyedError(f"{info.uri} v{version} is destroyed")
    if version < info.min_decryption_version or entry.state == "retired":
        raise KeyDestroyedError(f"{info.uri} v{version} is retired "
                                f"(min_decryption_version={info.min_decryption_version})")
    return entry


def check_unwrap_allowed(
    info: KeyInfo, context: Context, audit: AuditHook | None, *, operation: str = "unwrap"
) -> None:
    """Refuse (and report) an unwrap from outside the key's jurisdiction.

    Examples:
        >>> info = KeyInfo("memory://eu/k", "EU", 1, 1, [], "memory")
        >>> check_unwrap_allowed(info, Context("EU"), None)
        >>> check_unwrap_allowed(info, Context("US", principal="bob"), None)
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: key memory://eu/k belongs to EU; unwrap refused for bob@US
    """
    if context.jurisdiction != info.jurisdiction:
        emit(audit, "key.refused", key=info.uri, key_jurisdiction=info.jurisdiction,
             jurisdiction=context.jurisdiction, principal=context.principal, operation=operation)
        raise JurisdictionError(
            f"key {info.uri} belongs to {info.jurisdiction}; {operation} refused for "
            f"{context.access_token}", key=info.uri
        )


ChangeKind = Literal["rotate", "retire", "destroy"]
#: A subscriber: ``callback(uri, version, what)``. ``what`` is ``"destroy"`` (``version`` was
#: crypto-shredded; one call per version), ``"retire"`` (``version`` is the new
#: ``min_decryption_version``: every version below it is refused; also sent when the minimum is
#: lowered again) or ``"rotate"`` (``version`` is the new primary version).
KeyChange = Callable[[str, int, ChangeKind], None]


class KeyChanges:
    """Fan-out of key-state changes to weakly held subscribers (no strong reference is kept).

    A bound method is held through :class:`weakref.WeakMethod`, so subscribing a cache's method
    never keeps the cache alive; a plain function must be kept alive by the subscriber (a
    module-level function always is). Subscribing the same callback twice keeps one entry.

    :meth:`notify` calls every live subscriber even if one raises, then re-raises the first
    exception: a cache that failed to drop a destroyed key must not pass silently.

    Examples:
        >>> changes = KeyChanges()
        >>> seen = []
        >>> def on_change(uri, version, what):
        ...     seen.append((uri, version, what))
        >>> changes.subscribe(on_change)
        >>> changes.notify("memory://eu/k", 1, "destroy")
        >>> seen
        [('memory://eu/k', 1, 'destroy')]
        >>> changes.unsubscribe(on_change)
        >>> len(changes)
        0
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[weakref.ref[Any]] = []

    @staticmethod
    def _ref(callback: KeyChange) -> weakref.ref[Any]:
        bound_builtin = inspect.isbuiltin(callback) and not inspect.ismodule(
            getattr(callback, "__self__", None))
        try:
            if bound_builtin:  # e.g. ``seen.append``: a new object per access, dead at once
                raise TypeError
            if inspect.ismethod(callback):
                return weakref.WeakMethod(callback)
            return weakref.ref(callback)
        except TypeError:
            raise InputError(
                f"key-change subscribers are held weakly and {callback!r} cannot be: pass a "
                "function or a method of a living object") from None

    def subscribe(self, callback: KeyChange) -> None:
        """Call ``callback(uri, version, what)`` after each change, while it is alive."""
        if not callable(callback):
            raise InputError("a key-change subscriber must be callable")
        ref = self._ref(callback)
        with self._lock:
            self._subscribers = [r for r in self._subscribers if r() is not None]
            if all(r() != callback for r in self._subscribers):
                self._subscribers.append(ref)

    def unsubscribe(self, callback: KeyChange) -> None:
        """Stop calling ``callback`` (no error if it was not subscribed)."""
        with self._lock:
            self._subscribers = [r for r in self._subscribers
                                 if r() is not None and r() != callback]

    def notify(self, uri: str, version: int, what: ChangeKind) -> None:
        """Tell every live subscriber that ``uri`` changed."""
        with self._lock:
            live = [cb for cb in (r() for r in self._subscribers) if cb is not None]
            if len(live) != len(self._subscribers):
                self._subscribers = [r for r in self._subscribers if r() is not None]
        first: BaseException | None = None
        for cb in live:
            try:
                cb(uri, version, what)
            except Exception as exc:  # every subscriber runs; the first error is re-raised
                first = first or exc
        if first is not None:
            raise first

    def notify_info(self, info: KeyInfo, what: ChangeKind, *,
                    versions: Iterable[int] = ()) -> None:
        """Notify for a change whose result is ``info``: each of ``versions`` for a destroy,
        the minimum decryption version for a retire, the primary version for a rotate."""
        if what == "destroy":
            first: Exception | None = None
            for v in sorted(versions):  # every version is announced even if a subscriber fails
                try:
                    self.notify(info.uri, v, what)
                except Exception as exc:
                    first = first or exc
            if first is not None:
                raise first
        elif what == "retire":
            self.notify(info.uri, info.min_decryption_version, what)
        else:
            self.notify(info.uri, info.primary_version, what)

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for r in self._subscribers if r() is not None)

    def __repr__(self) -> str:
        return f"KeyChanges(subscribers={len(self)})"


def _same_hook(a: object, b: object) -> bool:
    """The same hook: the same object, or the same method of the same object (``log.hook`` is
    a new bound-method object at each access)."""
    return a is b or (inspect.ismethod(a) and inspect.ismethod(b) and a == b)


def _changes_of(service: KeyService) -> KeyChanges | None:
    hub = getattr(service, "changes", None)
    return hub if isinstance(hub, KeyChanges) else None


class KeyServices:
    """Several key services, each chosen by the key URI it supports (passed in explicitly).

    Args:
        services: The key services, asked in order.
        audit: Hook receiving one event per :meth:`wrap` / :meth:`unwrap` call made through this
            registry: ``key.wrap`` / ``key.unwrap`` on success; on failure ``key.failed``
            (destroyed or retired version, a blob that does not authenticate, a failing
            service) or, for a jurisdiction refusal, ``key.refused`` — unless the service
            already reports refusals to this same hook. Fields: ``key`` (URI), ``version``,
            ``key_jurisdiction``, ``jurisdiction`` and ``principal`` (who asked),
            ``purpose``; never key bytes or wrapped-key bytes. "No such key" is not reported.
            If the hook raises, the call fails closed with :class:`AuditHookError` (no key
            returned; a refusal that cannot be recorded is raised as that instead).

    Changes made through :meth:`rotate`, :meth:`retire` and :meth:`destroy` — or directly on a
    built-in backend held here — are relayed to :meth:`subscribe` callbacks.

    Examples:
        >>> from pets import Context
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring()
        >>> seen = []
        >>> services = KeyServices([ring], audit=seen.append)
        >>> services.for_uri("memory://eu/k") is ring
        True
        >>> _ = ring.create("memory://eu/k", jurisdiction="EU")
        >>> w = services.wrap("memory://eu/k", b"d" * 32, context=Context("EU", principal="etl"),
        ...                   purpose="example")
        >>> seen[-1].kind, seen[-1].fields["key"], seen[-1].fields["principal"]
        ('key.wrap', 'memory://eu/k', 'etl')
        >>> changes = []
        >>> def on_change(uri, version, what):
        ...     changes.append((uri, version, what))
        >>> services.subscribe(on_change)
        >>> _ = services.destroy("memory://eu/k", 1)
        >>> changes
        [('memory://eu/k', 1, 'destroy')]
    """

    def __init__(self, services: Iterable[KeyService], *, audit: AuditHook | None = None) -> None:
        self._services = list(services)
        self.audit = audit
        self._changes = KeyChanges()
        for svc in self._services:
            hub = _changes_of(svc)
            if hub is not None:
                hub.subscribe(self._relay)  # weakly: the registry may be dropped

    def _relay(self, uri: str, version: int, what: ChangeKind) -> None:
        self._changes.notify(uri, version, what)

    def for_uri(self, uri: str) -> KeyService:
        parse_key_uri(uri)
        for svc in self._services:
            if svc.supports(uri):
                return svc
        raise KeyNotFoundError(f"no key service supports {uri}")

    # ---------------------------------------------------------------- audited use

    def _report(self, kind: str, key: str, version: int | None, key_jurisdiction: str | None,
                context: Context, purpose: str | None,
                enc_context: Mapping[str, str] | None, **extra: Any) -> None:
        if purpose is None and enc_context:
            purpose = enc_context.get("purpose")
        try:
            emit(self.audit, kind, key=key, version=version, key_jurisdiction=key_jurisdiction,
                 jurisdiction=context.jurisdiction, principal=context.principal,
                 purpose=purpose, **extra)
        except Exception as exc:  # fail closed: an unrecorded key use does not happen
            at = "" if version is None else f" v{version}"
            raise AuditHookError(f"key use refused: the audit hook could not record {kind} of "
                                 f"{key}{at} ({type(exc).__name__})") from exc

    def _report_failure(self, svc: KeyService, operation: str, key: str, version: int | None,
                        key_jurisdiction: str | None, context: Context, purpose: str | None,
                        enc_context: Mapping[str, str] | None, exc: PetsError) -> None:
        if self.audit is None or isinstance(exc, KeyNotFoundError):
            return
        # the key's own (authenticated) jurisdiction: a wrapped key's is an unauthenticated
        # header field, and a tampered one would put a false trail in the audit entry
        try:
            key_jurisdiction = svc.describe(key).jurisdiction
        except PetsError:
            key_jurisdiction = None
        if isinstance(exc, JurisdictionError):
            if _same_hook(getattr(svc, "audit", None), self.audit):
                return  # the service reported its refusal to this same hook already
            self._report("key.refused", key, version, key_jurisdiction, context, purpose,
                         enc_context, operation=operation)
            return
        self._report("key.failed", key, version, key_jurisdiction, context, purpose,
                     enc_context, operation=operation, error=type(exc).__name__,
                     reason=str(exc))

    def wrap(self, uri: str, dek: bytes, *, context: Context,
             enc_context: Mapping[str, str] | None = None,
             purpose: str | None = None) -> WrappedKey:
        """Wrap ``dek`` under ``uri``'s primary version (see :meth:`KeyService.wrap`).

        ``purpose`` names what the data key is for in the ``key.wrap`` event (default: the
        ``purpose`` entry of ``enc_context``, if any).
        """
        svc = self.for_uri(uri)
        try:
            out = svc.wrap(uri, dek, context=context, enc_context=enc_context)
        except PetsError as exc:
            self._report_failure(svc, "wrap", uri, None, None, context, purpose, enc_context,
                                 exc)
            raise
        self._report("key.wrap", out.key_uri, out.version, out.jurisdiction, context, purpose,
                     enc_context)
        return out

    def unwrap(self, wrapped: WrappedKey, *, context: Context,
               enc_context: Mapping[str, str] | None = None, purpose: str | None = None,
               service: KeyService | None = None) -> bytes:
        """Unwrap through the service that supports ``wrapped.key_uri`` (or ``service``).

        Args:
            wrapped: The wrapped data key.
            context: Who asks, and where (the service checks the jurisdiction).
            enc_context: The encryption context bound at wrapping.
            purpose: What the key is for, for the ``key.unwrap`` event (default: the
                ``purpose`` entry of ``enc_context``).
            service: Ask this member service instead of the first that supports the URI
                (two keyrings may share a scheme; envelope decryption tries each).

        Raises:
            InputError: ``service`` is not one of this registry's services.
            JurisdictionError, KeyDestroyedError, KeyNotFoundError, IntegrityError: as the
                service raises them.
        """
        if service is None:
            svc = self.for_uri(wrapped.key_uri)
        elif any(s is service for s in self._services):
            svc = service
        else:
            raise InputError("service is not one of these key services")
        try:
            dek = svc.unwrap(wrapped, context=context, enc_context=enc_context)
        except PetsError as exc:
            self._report_failure(svc, "unwrap", wrapped.key_uri, wrapped.version,
                                 wrapped.jurisdiction, context, purpose, enc_context, exc)
            raise
        # the service checked wrapped.jurisdiction against the key's own before unwrapping
        try:
            self._report("key.unwrap", wrapped.key_uri, wrapped.version, wrapped.jurisdiction,
                         context, purpose, enc_context)
        except AuditHookError:
            del dek  # not kept in this frame's locals, which the traceback carries
            raise
        return dek

    # ---------------------------------------------------------------- key changes

    def subscribe(self, callback: KeyChange) -> None:
        """Call ``callback(uri, version, what)`` after each rotate / retire / destroy of a key
        held here, while ``callback`` is alive (it is held weakly: see :class:`KeyChanges`).

        Changes are seen when made through this registry, through another registry holding the
        same backend object, or directly on a built-in backend (every ``LocalKeyring`` on the
        same directory and every ``Pkcs11Keyring`` on the same token share one
        :class:`KeyChanges` per process). A change made by *another process* is not seen.
        """
        self._changes.subscribe(callback)

    def unsubscribe(self, callback: KeyChange) -> None:
        """Stop calling ``callback``."""
        self._changes.unsubscribe(callback)

    def _changed(self, svc: KeyService, info: KeyInfo, what: ChangeKind,
                 versions: Iterable[int] = ()) -> None:
        if _changes_of(svc) is None:  # a backend without its own hub: tell subscribers here
            self._changes.notify_info(info, what, versions=versions)

    def rotate(self, uri: str) -> KeyInfo:
        """Add a new primary version of ``uri``; subscribers hear ``"rotate"``."""
        svc = self.for_uri(uri)
        info = svc.rotate(uri)
        self._changed(svc, info, "rotate")
        return info

    def retire(self, uri: str, min_decryption_version: int) -> KeyInfo:
        """Refuse unwrap below ``min_decryption_version``; subscribers hear ``"retire"``."""
        svc = self.for_uri(uri)
        info = svc.retire(uri, min_decryption_version)
        self._changed(svc, info, "retire")
        return info

    def destroy(self, uri: str, version: int | None = None) -> KeyInfo:
        """Crypto-shred one version (or all); subscribers hear ``"destroy"`` per version."""
        svc = self.for_uri(uri)
        info = svc.destroy(uri, version)
        gone = [v.version for v in info.versions if v.state == "destroyed"] \
            if version is None else [version]
        self._changed(svc, info, "destroy", gone)
        return info

    def __iter__(self) -> Iterator[KeyService]:
        return iter(self._services)

    def __repr__(self) -> str:
        return f"KeyServices({self._services!r})"

"""The key-service protocol shared by every backend.

A key service holds key-encryption keys (KEKs). Each KEK is named by a URI
(``local://<keyring>/<name>``, ``pkcs11://<token>/<label>``, ``memory://<ring>/<name>``),
belongs to exactly one jurisdiction, and has numbered versions. Data keys (DEKs) are wrapped
under the newest active version and unwrapped with any version that is neither destroyed nor
below the key's ``min_decryption_version``.

``unwrap`` is refused *by the service* when the caller's :class:`~pets.Context` is in another
jurisdiction, before any key material is touched; the refusal is reported to the audit hook.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pets._errors import (
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
)
from pets._events import AuditHook, emit
from pets.jurisdiction import Context

__all__ = [
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
            f"{context.access_token}"
        )


class KeyServices:
    """Several key services, each chosen by the key URI it supports (passed in explicitly).

    Examples:
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring()
        >>> services = KeyServices([ring])
        >>> services.for_uri("memory://eu/k") is ring
        True
    """

    def __init__(self, services: Iterable[KeyService]) -> None:
        self._services = list(services)

    def for_uri(self, uri: str) -> KeyService:
        parse_key_uri(uri)
        for svc in self._services:
            if svc.supports(uri):
                return svc
        raise KeyNotFoundError(f"no key service supports {uri}")

    def wrap(self, uri: str, dek: bytes, *, context: Context,
             enc_context: Mapping[str, str] | None = None) -> WrappedKey:
        return self.for_uri(uri).wrap(uri, dek, context=context, enc_context=enc_context)

    def unwrap(self, wrapped: WrappedKey, *, context: Context,
               enc_context: Mapping[str, str] | None = None) -> bytes:
        svc = self.for_uri(wrapped.key_uri)
        return svc.unwrap(wrapped, context=context, enc_context=enc_context)

    def __iter__(self) -> Iterator[KeyService]:
        return iter(self._services)

    def __repr__(self) -> str:
        return f"KeyServices({self._services!r})"

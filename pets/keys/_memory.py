"""An in-memory key service: the test double that ships with pets (like tink's fake KMS).

It behaves like a real backend — jurisdiction checks, versions, retirement, destruction,
AES-256-GCM wrapping with the encryption context as AAD — but keeps KEKs only in process
memory. Use it in tests and notebooks; use :class:`~pets.keys.LocalKeyring` or an HSM for data
that must survive the process.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pets._errors import (
    InputError,
    IntegrityError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
)
from pets._events import AuditHook, emit
from pets.jurisdiction import Context, Jurisdiction
from pets.keys._service import (
    KeyChanges,
    KeyInfo,
    KeyVersion,
    WrappedKey,
    canonical_context,
    check_dek,
    check_unwrap_allowed,
    check_wrapped_matches,
    parse_key_uri,
)

__all__ = ["MemoryKeyring", "wrapping_aad"]

_NONCE = 12


def wrapping_aad(uri: str, version: int, enc_context: Mapping[str, str] | None) -> bytes:
    """AAD binding a wrapped DEK to its KEK URI, version and encryption context."""
    return b"pets-wrap-v1\x00" + uri.encode() + b"\x00" + str(version).encode() + b"\x00" + (
        canonical_context(enc_context)
    )


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class MemoryKeyring:
    """KEKs held in process memory, named ``memory://<ring>/<name>``.

    Examples:
        >>> from pets import Context
        >>> ring = MemoryKeyring()
        >>> _ = ring.create("memory://eu/kek", jurisdiction="EU")
        >>> w = ring.wrap("memory://eu/kek", b"d" * 32, context=Context("EU"))
        >>> ring.unwrap(w, context=Context("EU")) == b"d" * 32
        True
        >>> ring.unwrap(w, context=Context("US"))
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: key memory://eu/kek belongs to EU; unwrap refused for anonymous@US
    """

    scheme = "memory"

    def __init__(self, *, audit: AuditHook | None = None) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, dict[int, bytes | None]] = {}
        self._info: dict[str, KeyInfo] = {}
        self.audit = audit
        #: Subscribers told after each rotate / retire / destroy (see :class:`KeyChanges`).
        self.changes = KeyChanges()

    def __repr__(self) -> str:
        return f"MemoryKeyring(keys={sorted(self._info)})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("MemoryKeyring cannot be pickled")

    def supports(self, uri: str) -> bool:
        return uri.startswith(self.scheme + "://")

    def _get(self, uri: str) -> KeyInfo:
        try:
            return self._info[uri]
        except KeyError:
            raise KeyNotFoundError(f"no key {uri}") from None

    def create(self, uri: str, *, jurisdiction: str) -> KeyInfo:
        scheme, _, _ = parse_key_uri(uri)
        if scheme != self.scheme:
            raise InputError(f"{uri}: MemoryKeyring handles memory:// URIs")
        code = Jurisdiction(jurisdiction).code
        with self._lock:
            if uri in self._info:
                raise KeyServiceError(f"key {uri} already exists")
            self._keys[uri] = {1: AESGCM.generate_key(bit_length=256)}
            info = KeyInfo(uri, code, 1, 1, [KeyVersion(1, "active", _now())], "memory")
            self._info[uri] = info
        emit(self.audit, "key.create", key=uri, jurisdiction=code, version=1)
        return info

    def wrap(self, uri: str, dek: bytes, *, context: Context,
             enc_context: Mapping[str, str] | None = None) -> WrappedKey:
        dek = check_dek(dek)
        info = self._get(uri)
        kek = self._keys[uri][info.primary_version]
        if kek is None:
            raise KeyDestroyedError(f"{uri} v{info.primary_version} is destroyed")
        nonce = os.urandom(_NONCE)
        aad = wrapping_aad(uri, info.primary_version, enc_context)
        blob = nonce + AESGCM(kek).encrypt(nonce, dek, aad)
        return WrappedKey(uri, info.primary_version, info.jurisdiction, blob)

    def unwrap(self, wrapped: WrappedKey, *, context: Context,
               enc_context: Mapping[str, str] | None = None) -> bytes:
        info = self._get(wrapped.key_uri)
        check_unwrap_allowed(info, context, self.audit)
        check_wrapped_matches(wrapped, info)
        versions = self._keys[wrapped.key_uri]
        if wrapped.version not in versions:
            raise KeyNotFoundError(f"{wrapped.key_uri} has no version {wrapped.version}")
        kek = versions[wrapped.version]
        if kek is None:
            raise KeyDestroyedError(f"{wrapped.key_uri} v{wrapped.version} is destroyed")
        if wrapped.version < info.min_decryption_version:
            raise KeyDestroyedError(
                f"{wrapped.key_uri} v{wrapped.version} is retired "
                f"(min_decryption_version={info.min_decryption_version})"
            )
        blob = wrapped.blob
        try:
            return AESGCM(kek).decrypt(
                blob[:_NONCE], blob[_NONCE:],
                wrapping_aad(wrapped.key_uri, wrapped.version, enc_context),
            )
        except (InvalidTag, ValueError):
            raise IntegrityError("wrapped key failed to authenticate") from None

    def rotate(self, uri: str) -> KeyInfo:
        with self._lock:
            info = self._get(uri)
            new = max(v.version for v in info.versions) + 1
            self._keys[uri][new] = AESGCM.generate_key(bit_length=256)
            info = replace(info, primary_version=new,
                           versions=[*info.versions, KeyVersion(new, "active", _now())])
            self._info[uri] = info
        try:
            self.changes.notify_info(info, "rotate")
        finally:
            emit(self.audit, "key.rotate", key=uri, version=new)
        return info

    def retire(self, uri: str, min_decryption_version: int) -> KeyInfo:
        with self._lock:
            info = self._get(uri)
            if not 1 <= min_decryption_version <= info.primary_version:
                raise InputError(f"{uri}: min_decryption_version must be 1..{info.primary_version}")
            versions = [
                replace(v, state="retired" if v.version < min_decryption_version else "active")
                if v.state in ("active", "retired") else v for v in info.versions
            ]  # lowering the minimum again revives versions that were only retired
            info = replace(info, min_decryption_version=min_decryption_version, versions=versions)
            self._info[uri] = info
        try:
            self.changes.notify_info(info, "retire")
        finally:
            emit(self.audit, "key.retire", key=uri,
                 min_decryption_version=min_decryption_version)
        return info

    def destroy(self, uri: str, version: int | None = None) -> KeyInfo:
        with self._lock:
            info = self._get(uri)
            targets = {v.version for v in info.versions} if version is None else {version}
            for t in targets:
                if t not in self._keys[uri]:
                    raise KeyNotFoundError(f"{uri} has no version {t}")
                self._keys[uri][t] = None
            info = replace(info, versions=[
                replace(v, state="destroyed") if v.version in targets else v
                for v in info.versions
            ])
            self._info[uri] = info
        try:
            self.changes.notify_info(info, "destroy", versions=targets)
        finally:
            emit(self.audit, "key.destroy", key=uri, versions=sorted(targets))
        return info

    def describe(self, uri: str) -> KeyInfo:
        return self._get(uri)

    def list(self) -> list[KeyInfo]:
        return [self._info[k] for k in sorted(self._info)]

"""Envelope encryption of bytes and files (format v1, see :class:`EnvelopeHeader`).

A fresh 256-bit data key (DEK) encrypts each message; the DEK is wrapped by one or more
key-encryption keys (KEKs) held by jurisdiction-scoped key services and stored, wrapped, in the
header. Decryption asks the caller's key services to unwrap any of the wrapped keys; a service
outside the key's jurisdiction refuses.
"""

from __future__ import annotations

import hmac as _hmac
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pets._errors import (
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
    KeyStoreIntegrityError,
    PetsError,
)
from pets._events import AuditHook, emit
from pets._io import atomic_path
from pets.envelope._format import (
    DEFAULT_SEGMENT_SIZE,
    DEK_SIZE,
    MAX_SEGMENTS,
    TAG_SIZE,
    EnvelopeHeader,
    MessageKeys,
    derive_keys,
    segment_nonce,
)
from pets.jurisdiction import Context
from pets.keys import (
    AuditHookError,
    KeyService,
    KeyServices,
    WrappedKey,
    canonical_context,
    parse_key_uri,
)

__all__ = [
    "EnvelopeInfo",
    "as_services",
    "decrypt",
    "decrypt_file",
    "encrypt",
    "encrypt_file",
    "open_dek",
    "read_header",
    "rewrap",
    "rewrap_file",
]

PathLike = str | os.PathLike[str]
#: The one message of every envelope integrity failure (wrapped key, commitment, header tag,
#: expected context, any segment): it must not tell which check failed.
_OPAQUE = "envelope failed to authenticate"
Keys = KeyServices | KeyService


@dataclass(frozen=True)
class EnvelopeInfo:
    """Public facts about an envelope: its context, wrapped keys and sizes (no secrets).

    ``authenticated`` is True when the facts were checked under the DEK (after a decrypt or
    re-wrap) and False when they were only parsed (:func:`read_header`).
    """

    enc_context: Mapping[str, str]
    wrapped_keys: tuple[WrappedKey, ...]
    segment_size: int
    header_size: int
    plaintext_size: int | None
    authenticated: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (wrapped keys without their blobs)."""
        return {
            "enc_context": dict(self.enc_context),
            "wrapped_keys": [
                {"key_uri": w.key_uri, "version": w.version, "jurisdiction": w.jurisdiction}
                for w in self.wrapped_keys
            ],
            "segment_size": self.segment_size,
            "header_size": self.header_size,
            "plaintext_size": self.plaintext_size,
            "authenticated": self.authenticated,
        }


def as_services(keys: Keys) -> KeyServices:
    """Accept one key service or a :class:`~pets.keys.KeyServices` registry."""
    if isinstance(keys, KeyServices):
        return keys
    if isinstance(keys, KeyService):
        return KeyServices([keys])
    raise InputError("keys must be a KeyServices registry or a key service")


def _key_uris(key_uris: str | Sequence[str]) -> list[str]:
    uris = [key_uris] if isinstance(key_uris, str) else list(key_uris)
    if not uris:
        raise InputError("at least one key URI is needed to encrypt")
    if len(set(uris)) != len(uris):
        raise InputError("duplicate key URI")
    return uris


def _wrap_all(dek: bytes, uris: Sequence[str], keys: KeyServices, context: Context,
              enc_context: Mapping[str, str] | None, *, purpose: str = "envelope"
              ) -> list[WrappedKey]:
    return [keys.wrap(u, dek, context=context, enc_context=enc_context, purpose=purpose)
            for u in uris]


def _new_message(keys: KeyServices, key_uris: str | Sequence[str], context: Context,
                 enc_context: Mapping[str, str] | None, segment_size: int
                 ) -> tuple[EnvelopeHeader, MessageKeys]:
    uris = _key_uris(key_uris)
    header = EnvelopeHeader.new(segment_size=segment_size, enc_context=enc_context)
    dek = os.urandom(DEK_SIZE)
    mkeys = derive_keys(dek, header.salt, header.suite)
    wrapped = _wrap_all(dek, uris, keys, context, header.enc_context)
    del dek
    return header.sealed(mkeys, wrapped), mkeys


def _services_for(keys: KeyServices, uri: str) -> list[KeyService]:
    """Every service that supports ``uri`` (two keyrings may share a scheme)."""
    try:
        parse_key_uri(uri)
    except InputError:
        return []
    return [svc for svc in keys if svc.supports(uri)]


def _unwrap_any(wrapped_keys: Sequence[WrappedKey], keys: KeyServices, context: Context,
                enc_context: Mapping[str, str], *, what: str = "this envelope",
                accept: Callable[[bytes], bool] | None = None,
                audit: AuditHook | None = None, opaque: str | None = None,
                purpose: str = "envelope") -> bytes:
    """Return the first data key that one of the caller's services unwraps (multi-keyring).

    Each attempt goes through ``keys.unwrap`` (one ``key.unwrap`` / ``key.failed`` event per
    attempt on the registry's audit hook, tagged ``purpose``).

    ``accept(dek)`` may reject a candidate (counted as an integrity failure) or raise to stop.
    When nothing unwraps, the error says why in the most useful terms that reveal nothing:
    a key service's own key file is corrupt → that KeyStoreIntegrityError (it names the file:
    the key store is at fault, not the data); all refused for jurisdiction → JurisdictionError; destroyed/retired → KeyDestroyedError;
    no service holds any key → KeyNotFoundError; otherwise an opaque IntegrityError.
    """
    opaque = opaque or f"{what} failed to authenticate"
    errors: list[PetsError] = []
    candidates = 0
    for w in wrapped_keys:
        for svc in _services_for(keys, w.key_uri):
            candidates += 1
            try:
                dek = keys.unwrap(w, context=context, enc_context=enc_context,
                                  purpose=purpose, service=svc)
            except AuditHookError:
                raise  # not a property of this wrapped key: no other key is used un-recorded
            except (IntegrityError, JurisdictionError, KeyServiceError, InputError) as exc:
                errors.append(exc)
                continue
            if accept is not None and not accept(dek):
                errors.append(IntegrityError(opaque))
                continue
            emit(audit, "envelope.unwrap", key=w.key_uri, version=w.version,
                 jurisdiction=context.jurisdiction, principal=context.principal)
            return dek
    uris = ", ".join(f"{w.key_uri} v{w.version}" for w in wrapped_keys)
    if candidates == 0:
        raise KeyNotFoundError(f"no configured key service holds a key of {what} ({uris})")
    store = [e for e in errors if isinstance(e, KeyStoreIntegrityError)]
    if store:  # not the data: the key file that would have unwrapped it
        raise KeyStoreIntegrityError(f"cannot decrypt {what}: {store[0]}")
    if any(isinstance(e, IntegrityError | InputError) for e in errors):
        # a wrapped key, the header or the expected context did not authenticate: opaque
        raise IntegrityError(opaque)
    if all(isinstance(e, JurisdictionError) for e in errors):
        raise JurisdictionError(
            f"every key of {what} ({uris}) belongs to another jurisdiction; "
            f"unwrap refused for {context.access_token}")
    benign = (JurisdictionError, KeyDestroyedError, KeyNotFoundError)
    failed = [e for e in errors if not isinstance(e, benign)]
    if failed:  # a service failed (unreachable, wrong PIN ...): say so, it is not the data
        raise type(failed[0])(f"cannot decrypt {what}: {failed[0]}")
    destroyed = [e for e in errors if isinstance(e, KeyDestroyedError)]
    if destroyed:
        raise KeyDestroyedError(f"cannot decrypt {what}: {destroyed[0]}")
    if any(isinstance(e, JurisdictionError) for e in errors):
        # some keys refused for jurisdiction, the others not held here: the caller is in the
        # wrong place for every key it can reach
        raise JurisdictionError(
            f"no key of {what} ({uris}) may be unwrapped here: refused for "
            f"{context.access_token} or not held by the configured key services")
    raise KeyNotFoundError(f"cannot decrypt {what}: {errors[0]}")


def open_dek(header: EnvelopeHeader, keys: Keys, context: Context,
             enc_context: Mapping[str, str] | None = None, *, audit: AuditHook | None = None
             ) -> tuple[bytes, MessageKeys]:
    """Unwrap the DEK of ``header`` with any wrapped key the caller's services can unwrap.

    The DEK is accepted only when its HKDF commitment matches the header (constant-time) and
    the header tag verifies, so every header byte is authenticated before it is trusted.

    Returns:
        ``(dek, message_keys)``. Raw key bytes: keep them inside :mod:`pets.envelope`.

    Raises:
        IntegrityError: the header, a wrapped key or the expected ``enc_context`` does not
            authenticate (deliberately opaque).
        JurisdictionError: every wrapped key was refused for the caller's jurisdiction.
        KeyDestroyedError: the only usable KEK versions are destroyed or retired.
        KeyNotFoundError: none of the envelope's keys is held by the caller's services.
    """
    services = as_services(keys)
    if enc_context is not None and not _hmac.compare_digest(
            canonical_context(enc_context), header.context_bytes):
        raise IntegrityError(_OPAQUE)
    found: list[MessageKeys] = []

    def accept(dek: bytes) -> bool:
        if len(dek) != DEK_SIZE:
            return False
        mkeys = derive_keys(dek, header.salt, header.suite)
        if not _hmac.compare_digest(mkeys.commitment, header.commitment):
            return False
        if not header.tag_ok(mkeys.header_key):
            raise IntegrityError(_OPAQUE)
        found.append(mkeys)
        return True

    dek = _unwrap_any(header.wrapped_keys, services, context, header.enc_context,
                      what="this envelope", accept=accept, audit=audit, opaque=_OPAQUE)
    return dek, found[-1]


def _fill(src: IO[bytes], buf: memoryview) -> int:
    """Read until ``buf`` is full or EOF; return the byte count."""
    got = 0
    size = len(buf)
    while got < size:
        n = src.readinto(buf[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _encrypt_stream(src: IO[bytes], dst: IO[bytes], header: EnvelopeHeader,
                    mkeys: MessageKeys) -> int:
    """Write the header and the segments of ``src``; return the plaintext size."""
    seg = header.segment_size
    aes = AESGCM(mkeys.segment_key)
    aad = header.segment_aad()
    prefix = header.nonce_prefix
    cur, nxt = memoryview(bytearray(seg)), memoryview(bytearray(seg))
    out = memoryview(bytearray(seg + TAG_SIZE))
    dst.write(header.to_bytes())
    total = 0
    counter = 0
    cur_len = _fill(src, cur)
    while True:
        if cur_len < seg:
            last, nxt_len = True, 0
        else:
            nxt_len = _fill(src, nxt)
            last = nxt_len == 0
        ct = out[:cur_len + TAG_SIZE]
        aes.encrypt_into(segment_nonce(prefix, counter, last), cur[:cur_len], aad, ct)
        dst.write(ct)
        total += cur_len
        if last:
            return total
        counter += 1
        if counter > MAX_SEGMENTS:
            raise InputError("input too large for one envelope at this segment size")
        cur, nxt, cur_len = nxt, cur, nxt_len


def _decrypt_stream(src: IO[bytes], dst: IO[bytes] | None, header: EnvelopeHeader,
                    mkeys: MessageKeys) -> int:
    """Authenticate and decrypt every segment of ``src`` into ``dst``; return plaintext size."""
    seg = header.segment_size
    size = seg + TAG_SIZE
    aes = AESGCM(mkeys.segment_key)
    aad = header.segment_aad()
    prefix = header.nonce_prefix
    cur, nxt = memoryview(bytearray(size)), memoryview(bytearray(size))
    out = memoryview(bytearray(seg))
    total = 0
    counter = 0
    cur_len = _fill(src, cur)
    while True:
        if cur_len < size:
            last, nxt_len = True, 0
        else:
            nxt_len = _fill(src, nxt)
            last = nxt_len == 0
        if cur_len < TAG_SIZE or counter > MAX_SEGMENTS:
            raise IntegrityError(_OPAQUE)
        pt = out[:cur_len - TAG_SIZE]
        try:
            aes.decrypt_into(segment_nonce(prefix, counter, last), cur[:cur_len], aad, pt)
        except InvalidTag:
            raise IntegrityError(_OPAQUE) from None
        if dst is not None:
            dst.write(pt)
        total += len(pt)
        if last:
            return total
        counter += 1
        cur, nxt, cur_len = nxt, cur, nxt_len


def _encrypt_bytes(data: memoryview, header: EnvelopeHeader, mkeys: MessageKeys) -> bytes:
    """The whole envelope for in-memory ``data`` (same layout as :func:`_encrypt_stream`)."""
    seg = header.segment_size
    aes = AESGCM(mkeys.segment_key)
    aad = header.segment_aad()
    starts = range(0, max(len(data), 1), seg)
    if len(starts) > MAX_SEGMENTS + 1:
        raise InputError("input too large for one envelope at this segment size")
    last = len(starts) - 1
    parts = [header.to_bytes()]
    parts += [aes.encrypt(segment_nonce(header.nonce_prefix, i, i == last),
                          data[start:start + seg], aad) for i, start in enumerate(starts)]
    return b"".join(parts)


def _decrypt_bytes(body: memoryview, header: EnvelopeHeader, mkeys: MessageKeys) -> bytes:
    """Authenticate and decrypt every segment of an in-memory envelope body."""
    size = header.segment_size + TAG_SIZE
    aes = AESGCM(mkeys.segment_key)
    aad = header.segment_aad()
    starts = range(0, max(len(body), 1), size)
    last = len(starts) - 1
    if len(body) - starts[-1] < TAG_SIZE or last > MAX_SEGMENTS:
        raise IntegrityError(_OPAQUE)
    try:
        return b"".join(aes.decrypt(segment_nonce(header.nonce_prefix, i, i == last),
                                    body[start:start + size], aad)
                        for i, start in enumerate(starts))
    except InvalidTag:
        raise IntegrityError(_OPAQUE) from None


def _read_header(src: IO[bytes]) -> tuple[EnvelopeHeader, int]:
    return EnvelopeHeader.read(src.read)


def encrypt(data: bytes, *, keys: Keys, key_uris: str | Sequence[str], context: Context,
            enc_context: Mapping[str, str] | None = None,
            segment_size: int = DEFAULT_SEGMENT_SIZE, audit: AuditHook | None = None) -> bytes:
    """Encrypt ``data`` into a pets envelope (format v1) under fresh DEK wrapped by each KEK.

    Args:
        data: The plaintext.
        keys: The key services (a :class:`~pets.keys.KeyServices` or a single service).
        key_uris: One KEK URI, or several (e.g. two EU data centres); any one decrypts.
        context: Who encrypts, and where.
        enc_context: Non-secret key/values bound to the ciphertext (AAD); stored in clear.
        segment_size: Plaintext bytes per authenticated segment.
        audit: Optional audit hook (receives ``envelope.encrypt``).

    Returns:
        The envelope bytes.

    Examples:
        >>> from pets import Context
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring()
        >>> _ = ring.create("memory://eu/kek", jurisdiction="EU")
        >>> eu = Context("EU", principal="etl")
        >>> blob = encrypt(b"secret", keys=ring, key_uris="memory://eu/kek", context=eu,
        ...                enc_context={"table": "users"})
        >>> blob[:4]
        b'PETS'
        >>> decrypt(blob, keys=ring, context=eu)
        b'secret'
        >>> decrypt(blob, keys=ring, context=Context("US"))
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: every key of this envelope (memory://eu/kek v1) belongs to another jurisdiction; unwrap refused for anonymous@US
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError("encrypt takes bytes")
    services = as_services(keys)
    header, mkeys = _new_message(services, key_uris, context, enc_context, segment_size)
    out = _encrypt_bytes(memoryview(data).cast("B"), header, mkeys)
    emit(audit, "envelope.encrypt", keys=[w.key_uri for w in header.wrapped_keys],
         principal=context.principal, jurisdiction=context.jurisdiction)
    return out


def decrypt(data: bytes, *, keys: Keys, context: Context,
            enc_context: Mapping[str, str] | None = None,
            audit: AuditHook | None = None) -> bytes:
    """Decrypt a pets envelope.

    Args:
        data: The envelope bytes.
        keys: The caller's key services; any wrapped key they can unwrap is used.
        context: Who decrypts, and where (checked by each key service).
        enc_context: When given, the envelope's context must equal it exactly.
        audit: Optional audit hook.

    Raises:
        IntegrityError: any tampering, wrong key, wrong ``enc_context`` (deliberately opaque);
            :class:`EnvelopeFormatError` for data that is not a v1 envelope.
        JurisdictionError: every wrapped key was refused for ``context``'s jurisdiction.
        KeyDestroyedError: the KEK version was destroyed or retired.
        KeyNotFoundError: none of the envelope's keys is held by ``keys``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError("decrypt takes bytes")
    view = memoryview(data).cast("B")
    header, hsize = EnvelopeHeader.from_bytes(view)
    _, mkeys = open_dek(header, keys, context, enc_context, audit=audit)
    return _decrypt_bytes(view[hsize:], header, mkeys)


def encrypt_file(src: PathLike, dst: PathLike, *, keys: Keys, key_uris: str | Sequence[str],
                 context: Context, enc_context: Mapping[str, str] | None = None,
                 segment_size: int = DEFAULT_SEGMENT_SIZE,
                 audit: AuditHook | None = None) -> EnvelopeInfo:
    """Encrypt the file ``src`` into ``dst`` in constant memory (atomic: temp file + rename).

    Examples:
        >>> import tempfile, pathlib
        >>> from pets import Context
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/kek", jurisdiction="EU")
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.csv").write_text("id,email\\n")
        >>> info = encrypt_file(d / "a.csv", d / "a.pets", keys=ring, key_uris="memory://eu/kek",
        ...                     context=Context("EU"))
        >>> info = decrypt_file(d / "a.pets", d / "b.csv", keys=ring, context=Context("EU"))
        >>> (d / "b.csv").read_text(), info.plaintext_size
        ('id,email\\n', 9)
    """
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.is_file():
        raise InputError(f"{src_p}: no such file")
    services = as_services(keys)
    header, mkeys = _new_message(services, key_uris, context, enc_context, segment_size)
    with open(src_p, "rb") as fin, atomic_path(dst_p) as tmp, open(tmp, "wb") as fout:
        size = _encrypt_stream(fin, fout, header, mkeys)
    emit(audit, "envelope.encrypt", file=str(dst_p), keys=[w.key_uri for w in header.wrapped_keys],
         principal=context.principal, jurisdiction=context.jurisdiction)
    return EnvelopeInfo(header.enc_context, header.wrapped_keys, header.segment_size,
                        len(header.to_bytes()), size, True)


def decrypt_file(src: PathLike, dst: PathLike, *, keys: Keys, context: Context,
                 enc_context: Mapping[str, str] | None = None,
                 audit: AuditHook | None = None) -> EnvelopeInfo:
    """Decrypt the envelope file ``src`` into ``dst`` in constant memory.

    The plaintext goes to a temporary file beside ``dst`` (mode 0600) that is renamed onto
    ``dst`` only after the last segment authenticates: on any failure nothing appears at
    ``dst`` (an existing ``dst`` is left untouched).

    Raises:
        Same as :func:`decrypt`; :class:`~pets.InputError` when ``src`` does not exist.
    """
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.is_file():
        raise InputError(f"{src_p}: no such file")
    with open(src_p, "rb") as fin:
        header, hsize = _read_header(fin)
        _, mkeys = open_dek(header, keys, context, enc_context, audit=audit)
        with atomic_path(dst_p, mode=0o600) as tmp, open(tmp, "wb") as fout:
            size = _decrypt_stream(fin, fout, header, mkeys)
    return EnvelopeInfo(header.enc_context, header.wrapped_keys, header.segment_size, hsize,
                        size, True)


def read_header(source: bytes | PathLike) -> EnvelopeInfo:
    """Parse an envelope's header *without authenticating it* (no key service is asked).

    Use it to see which keys and context an envelope names; trust nothing in it until a
    decrypt or re-wrap has authenticated it.
    """
    if isinstance(source, bytes | bytearray):
        header, hsize = EnvelopeHeader.from_bytes(bytes(source))
    else:
        p = Path(source)
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        with open(p, "rb") as f:
            header, hsize = _read_header(f)
    return EnvelopeInfo(header.enc_context, header.wrapped_keys, header.segment_size, hsize,
                        None, False)


def _rewrapped_header(header: EnvelopeHeader, keys: KeyServices, context: Context,
                      to: str | Sequence[str], enc_context: Mapping[str, str] | None,
                      audit: AuditHook | None, allow_jurisdiction_change: bool
                      ) -> EnvelopeHeader:
    uris = _key_uris(to)
    old = {w.jurisdiction for w in header.wrapped_keys}
    for u in uris:
        target = keys.for_uri(u).describe(u).jurisdiction
        if target not in old and not allow_jurisdiction_change:
            raise JurisdictionError(
                f"re-wrapping under {u} ({target}) would move this envelope out of "
                f"{', '.join(sorted(old))}; pass allow_jurisdiction_change=True to do it")
    dek, mkeys = open_dek(header, keys, context, enc_context, audit=audit)
    wrapped = _wrap_all(dek, uris, keys, context, header.enc_context)
    del dek
    new = header.sealed(mkeys, wrapped)
    emit(audit, "envelope.rewrap",
         old=[f"{w.key_uri}#{w.version}" for w in header.wrapped_keys],
         new=[f"{w.key_uri}#{w.version}" for w in new.wrapped_keys],
         principal=context.principal, jurisdiction=context.jurisdiction)
    return new


def rewrap(data: bytes, *, keys: Keys, context: Context, to: str | Sequence[str],
           enc_context: Mapping[str, str] | None = None,
           allow_jurisdiction_change: bool = False, audit: AuditHook | None = None) -> bytes:
    """Re-wrap an envelope's DEK under ``to`` (the primary version of each KEK); keep the data.

    The header is authenticated first (a tampered envelope is never re-wrapped); only the
    wrapped-key list and the header tag change: every segment byte stays the same. Use it
    after a KEK rotation (``to`` = the same URI: the new primary version), to retire old
    versions, or to migrate to another key service or data centre (``to`` = new URIs; the
    old wrapped keys are dropped). A target KEK of a jurisdiction none of the current keys
    belongs to is refused (:class:`~pets.JurisdictionError`) unless
    ``allow_jurisdiction_change`` is True: it would change where the data can be decrypted.

    Examples:
        >>> from pets import Context
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/kek", jurisdiction="EU")
        >>> eu = Context("EU")
        >>> blob = encrypt(b"x" * 100, keys=ring, key_uris="memory://eu/kek", context=eu)
        >>> _ = ring.rotate("memory://eu/kek")
        >>> new = rewrap(blob, keys=ring, context=eu, to="memory://eu/kek")
        >>> [w.version for w in read_header(new).wrapped_keys]
        [2]
        >>> new[-116:] == blob[-116:]  # the segment (100 bytes + tag) is unchanged
        True
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError("rewrap takes bytes")
    services = as_services(keys)
    header, hsize = EnvelopeHeader.from_bytes(bytes(data))
    new = _rewrapped_header(header, services, context, to, enc_context, audit,
                               allow_jurisdiction_change)
    return new.to_bytes() + bytes(data[hsize:])


def rewrap_file(path: PathLike, *, keys: Keys, context: Context, to: str | Sequence[str],
                dst: PathLike | None = None, enc_context: Mapping[str, str] | None = None,
                allow_jurisdiction_change: bool = False,
                audit: AuditHook | None = None) -> EnvelopeInfo:
    """Re-wrap an envelope file in place (or into ``dst``), atomically; see :func:`rewrap`.

    Only the header is rewritten; the segment bytes are copied unchanged.
    """
    src_p = Path(path)
    if not src_p.is_file():
        raise InputError(f"{src_p}: no such file")
    services = as_services(keys)
    dst_p = Path(dst) if dst is not None else src_p
    mode = src_p.stat().st_mode & 0o777
    with open(src_p, "rb") as fin:
        header, _ = _read_header(fin)
        new = _rewrapped_header(header, services, context, to, enc_context, audit,
                               allow_jurisdiction_change)
        hbytes = new.to_bytes()
        with atomic_path(dst_p, mode=mode) as tmp, open(tmp, "wb") as fout:
            fout.write(hbytes)
            shutil.copyfileobj(fin, fout, 1 << 20)
    return EnvelopeInfo(new.enc_context, new.wrapped_keys, new.segment_size, len(hbytes), None,
                        True)

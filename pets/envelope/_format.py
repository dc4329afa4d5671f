"""The envelope header, format v1: byte layout, limits, key derivation.

This module is the low layer of :mod:`pets.envelope`: it parses and serialises headers and
derives per-message keys. It never talks to a key service; :mod:`pets.envelope._envelope`
does that.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import json
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pets._errors import InputError, IntegrityError
from pets.keys import WrappedKey, canonical_context

__all__ = [
    "COMMITMENT_SIZE",
    "DEFAULT_SEGMENT_SIZE",
    "DEK_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_BLOB_BYTES",
    "MAX_CONTEXT_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_JURISDICTION_BYTES",
    "MAX_SEGMENT_SIZE",
    "MAX_SEGMENTS",
    "MAX_URI_BYTES",
    "MAX_WRAPPED_KEYS",
    "MIN_SEGMENT_SIZE",
    "NONCE_PREFIX_SIZE",
    "SALT_SIZE",
    "SUITE_AES256GCM_HKDF_SHA256_COMMIT",
    "TAG_SIZE",
    "EnvelopeFormatError",
    "EnvelopeHeader",
    "MessageKeys",
    "derive_keys",
    "segment_nonce",
]

MAGIC = b"PETS"
FORMAT_VERSION = 1
SUITE_AES256GCM_HKDF_SHA256_COMMIT = 0x0001

DEK_SIZE = 32
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
COMMITMENT_SIZE = 32
HEADER_TAG_SIZE = 32
TAG_SIZE = 16  # AES-GCM tag appended to every segment

DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 64
MAX_SEGMENT_SIZE = 16 << 20
MAX_SEGMENTS = (1 << 32) - 1  # the segment counter is 32 bits

MAX_CONTEXT_BYTES = 8192
MAX_WRAPPED_KEYS = 16
MAX_URI_BYTES = 512
MAX_JURISDICTION_BYTES = 16
MAX_BLOB_BYTES = 1024

_FIXED = struct.Struct(">4sBHI32s7s32sH")  # magic .. context length
_ENTRY_FIXED_SIZE = 2 + 4 + 1 + 2
MAX_HEADER_BYTES = (
    _FIXED.size + MAX_CONTEXT_BYTES + 2
    + MAX_WRAPPED_KEYS * (_ENTRY_FIXED_SIZE + MAX_URI_BYTES + MAX_JURISDICTION_BYTES
                          + MAX_BLOB_BYTES)
    + HEADER_TAG_SIZE
)

_KDF_INFO = b"pets-envelope\x00v1\x00"


class EnvelopeFormatError(IntegrityError):
    """The bytes are not a pets envelope this version can read, or the header breaks a limit.

    A subclass of :class:`~pets.IntegrityError` (exit code 5). Its message describes only the
    public, unauthenticated structure (magic, version, a length over a limit), never a key or a
    plaintext.
    """


@dataclass(frozen=True)
class MessageKeys:
    """The three values HKDF derives from a DEK for one message (never repr'd)."""

    segment_key: bytes = field(repr=False)
    header_key: bytes = field(repr=False)
    commitment: bytes = field(repr=False)

    def __reduce__(self) -> NoReturn:
        raise TypeError("MessageKeys cannot be pickled")


def derive_keys(dek: bytes, salt: bytes, suite: int = SUITE_AES256GCM_HKDF_SHA256_COMMIT
                ) -> MessageKeys:
    """HKDF-SHA256(IKM=dek, salt=salt, info="pets-envelope\\0v1\\0" ‖ suite, L=96), split 3×32.

    Examples:
        >>> k = derive_keys(b"k" * 32, b"s" * 32)
        >>> len(k.segment_key), len(k.header_key), len(k.commitment)
        (32, 32, 32)
        >>> k.commitment == derive_keys(b"k" * 32, b"t" * 32).commitment
        False
    """
    okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=salt,
               info=_KDF_INFO + suite.to_bytes(2, "big")).derive(dek)
    return MessageKeys(okm[:32], okm[32:64], okm[64:])


def segment_nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    """STREAM nonce: 7-byte random prefix ‖ 32-bit big-endian counter ‖ last-segment flag.

    Examples:
        >>> segment_nonce(b"\\x00" * 7, 1, True).hex()
        '000000000000000000000101'
    """
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _fmt(msg: str) -> EnvelopeFormatError:
    return EnvelopeFormatError(f"not a valid pets envelope: {msg}")


@dataclass(frozen=True)
class EnvelopeHeader:
    """The header of a pets envelope, format v1. All integers are big-endian.

    Byte layout (``C`` = context length, ``N`` = number of wrapped keys)::

        offset  size  field
        0       4     magic "PETS"
        4       1     format version = 0x01
        5       2     algorithm suite = 0x0001 (AES-256-GCM segments, HKDF-SHA256 key
                      derivation, HKDF key commitment, HMAC-SHA256 header tag)
        7       4     segment size S: plaintext bytes per segment (64 .. 16 MiB)
        11      32    salt: random per message, HKDF salt
        43      7     nonce prefix: random per message
        50      32    commitment: HKDF output, compared in constant time before any decryption
        82      2     C: context length (<= 8192)
        84      C     encryption context: canonical JSON (sorted keys, compact, UTF-8)
        84+C    2     N: number of wrapped data keys (1 .. 16)
        then N entries, each:
                2     U: key URI length (1 .. 512)
                U     key URI (UTF-8), e.g. local://eu-dc1/customers
                4     KEK version
                1     J: jurisdiction length (1 .. 16)
                J     jurisdiction code (ASCII), e.g. EU
                2     B: wrapped-key blob length (1 .. 1024)
                B     blob: the key service's wrapping of the DEK (context bound as AAD)
        then    32    header tag: HMAC-SHA256(header_key, every header byte before the tag)

    Then the segments. Segment ``i`` (from 0) encrypts plaintext bytes ``[i*S, (i+1)*S)`` with
    AES-256-GCM under ``segment_key``, nonce = prefix ‖ uint32(i) ‖ (0x01 if last else 0x00),
    AAD = SHA-256(header bytes 0 .. 84+C), and is stored as ciphertext ‖ 16-byte tag. Every
    segment but the last holds exactly S plaintext bytes; the last holds 0 .. S (an empty
    message is one empty last segment), so truncation, extension, reordering and swapping
    segments between messages all fail authentication.

    Keys: ``segment_key ‖ header_key ‖ commitment`` = HKDF-SHA256(IKM=DEK (32 bytes),
    salt=salt, info="pets-envelope\\0v1\\0" ‖ suite, L=96).

    Examples:
        >>> h = EnvelopeHeader.new(segment_size=1024, enc_context={"purpose": "demo"})
        >>> h.segment_size, dict(h.enc_context)
        (1024, {'purpose': 'demo'})
    """

    segment_size: int
    salt: bytes = field(repr=False)
    nonce_prefix: bytes = field(repr=False)
    commitment: bytes = field(repr=False)
    context_bytes: bytes
    wrapped_keys: tuple[WrappedKey, ...] = ()
    tag: bytes = field(default=b"", repr=False)
    version: int = FORMAT_VERSION
    suite: int = SUITE_AES256GCM_HKDF_SHA256_COMMIT

    @classmethod
    def new(cls, *, segment_size: int = DEFAULT_SEGMENT_SIZE,
            enc_context: Mapping[str, str] | None = None) -> EnvelopeHeader:
        """A fresh header with random salt and nonce prefix (no keys, no commitment yet)."""
        check_segment_size(segment_size)
        ctx = canonical_context(enc_context)
        if len(ctx) > MAX_CONTEXT_BYTES:  # pragma: no cover - canonical_context enforces it
            raise _fmt("encryption context too large")
        return cls(segment_size, os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE),
                   b"\x00" * COMMITMENT_SIZE, ctx)

    @property
    def enc_context(self) -> dict[str, str]:
        """The encryption context as a dict."""
        out: dict[str, str] = json.loads(self.context_bytes)
        return out

    def fixed_bytes(self) -> bytes:
        """Header bytes 0 .. 84+C: everything that re-wrapping never changes."""
        return _FIXED.pack(MAGIC, self.version, self.suite, self.segment_size, self.salt,
                           self.nonce_prefix, self.commitment, len(self.context_bytes)
                           ) + self.context_bytes

    def segment_aad(self) -> bytes:
        """The AAD of every segment: SHA-256 of :meth:`fixed_bytes`."""
        return hashlib.sha256(self.fixed_bytes()).digest()

    def body_bytes(self) -> bytes:
        """Every header byte before the header tag."""
        parts = [self.fixed_bytes(), len(self.wrapped_keys).to_bytes(2, "big")]
        for w in self.wrapped_keys:
            uri, jur = w.key_uri.encode(), w.jurisdiction.encode("ascii")
            parts += [len(uri).to_bytes(2, "big"), uri, w.version.to_bytes(4, "big"),
                      len(jur).to_bytes(1, "big"), jur, len(w.blob).to_bytes(2, "big"), w.blob]
        return b"".join(parts)

    def compute_tag(self, header_key: bytes) -> bytes:
        """HMAC-SHA256 over :meth:`body_bytes`."""
        mac = crypto_hmac.HMAC(header_key, hashes.SHA256())
        mac.update(self.body_bytes())
        return mac.finalize()

    def tag_ok(self, header_key: bytes) -> bool:
        """Constant-time check of the stored header tag."""
        return _hmac.compare_digest(self.compute_tag(header_key), self.tag)

    def to_bytes(self) -> bytes:
        """The serialised header (body and tag)."""
        if len(self.tag) != HEADER_TAG_SIZE:
            raise ValueError("header is not sealed (no tag)")
        return self.body_bytes() + self.tag

    def sealed(self, keys: MessageKeys, wrapped: Sequence[WrappedKey]) -> EnvelopeHeader:
        """This header with ``wrapped`` keys, ``keys.commitment`` and a fresh header tag."""
        check_wrapped(wrapped)
        from dataclasses import replace

        h = replace(self, wrapped_keys=tuple(wrapped), commitment=keys.commitment, tag=b"")
        return replace(h, tag=h.compute_tag(keys.header_key))

    def describe(self) -> dict[str, Any]:
        """Public, unauthenticated metadata (JSON-able)."""
        return {
            "format_version": self.version,
            "suite": self.suite,
            "segment_size": self.segment_size,
            "enc_context": self.enc_context,
            "wrapped_keys": [
                {"key_uri": w.key_uri, "version": w.version, "jurisdiction": w.jurisdiction}
                for w in self.wrapped_keys
            ],
        }

    @classmethod
    def read(cls, read: Callable[[int], bytes]) -> tuple[EnvelopeHeader, int]:
        """Parse a header from ``read(n)`` (returns up to ``n`` bytes); return it and its size.

        Every length is checked against its limit before the bytes it announces are read.

        Raises:
            EnvelopeFormatError: bad magic, unknown version or suite, a limit exceeded, or
                the input ends inside the header.
        """
        consumed = 0

        def take(n: int) -> bytes:
            nonlocal consumed
            b = read(n)
            if len(b) != n:
                raise _fmt("truncated header")
            consumed += n
            return b

        head = take(7)
        if head[:4] != MAGIC:
            raise _fmt("bad magic")
        version = head[4]
        if version != FORMAT_VERSION:
            raise EnvelopeFormatError(
                f"unsupported pets envelope format version {version} (this pets reads 1)")
        suite = int.from_bytes(head[5:7], "big")
        if suite != SUITE_AES256GCM_HKDF_SHA256_COMMIT:
            raise EnvelopeFormatError(f"unsupported pets envelope algorithm suite {suite:#06x}")
        rest = take(_FIXED.size - 7)
        _, _, _, seg, salt, prefix, commitment, clen = _FIXED.unpack(head + rest)
        check_segment_size(seg, reading=True)
        if clen > MAX_CONTEXT_BYTES:
            raise _fmt(f"encryption context of {clen} bytes exceeds {MAX_CONTEXT_BYTES}")
        ctx_bytes = take(clen)
        try:
            ctx = json.loads(ctx_bytes.decode("utf-8"))
            if not isinstance(ctx, dict) or canonical_context(ctx) != ctx_bytes:
                raise ValueError
        except (ValueError, TypeError):
            raise _fmt("encryption context is not canonical JSON") from None
        n = int.from_bytes(take(2), "big")
        if not 1 <= n <= MAX_WRAPPED_KEYS:
            raise _fmt(f"{n} wrapped keys (allowed 1 .. {MAX_WRAPPED_KEYS})")
        wrapped = []
        for _ in range(n):
            ulen = int.from_bytes(take(2), "big")
            if not 1 <= ulen <= MAX_URI_BYTES:
                raise _fmt(f"key URI of {ulen} bytes (allowed 1 .. {MAX_URI_BYTES})")
            uri_b = take(ulen)
            kver = int.from_bytes(take(4), "big")
            jlen = take(1)[0]
            if not 1 <= jlen <= MAX_JURISDICTION_BYTES:
                raise _fmt(f"jurisdiction of {jlen} bytes (allowed 1 .. {MAX_JURISDICTION_BYTES})")
            jur_b = take(jlen)
            blen = int.from_bytes(take(2), "big")
            if not 1 <= blen <= MAX_BLOB_BYTES:
                raise _fmt(f"wrapped key of {blen} bytes (allowed 1 .. {MAX_BLOB_BYTES})")
            blob = take(blen)
            try:
                uri, jur = uri_b.decode("utf-8"), jur_b.decode("ascii")
            except UnicodeDecodeError:
                raise _fmt("key URI or jurisdiction is not text") from None
            wrapped.append(WrappedKey(uri, kver, jur, blob))
        tag = take(HEADER_TAG_SIZE)
        header = cls(seg, salt, prefix, commitment, ctx_bytes, tuple(wrapped), tag, version,
                     suite)
        return header, consumed

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> tuple[EnvelopeHeader, int]:
        """Parse the header at the start of ``data``; return it and its size in bytes."""
        pos = 0
        view = memoryview(data)

        def read(n: int) -> bytes:
            nonlocal pos
            out = bytes(view[pos:pos + n])
            pos += len(out)
            return out

        return cls.read(read)


def check_segment_size(segment_size: int, *, reading: bool = False) -> None:
    """Refuse a segment size outside ``MIN_SEGMENT_SIZE .. MAX_SEGMENT_SIZE``.

    Raises:
        EnvelopeFormatError: when ``reading`` (a hostile or corrupt header).
        InputError: when writing (a bad argument).
    """
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        msg = f"segment size {segment_size} (allowed {MIN_SEGMENT_SIZE} .. {MAX_SEGMENT_SIZE})"
        raise _fmt(msg) if reading else InputError(msg)


def check_wrapped(wrapped: Sequence[WrappedKey]) -> None:
    """Refuse (with :class:`~pets.InputError`) a wrapped-key list the format cannot carry."""
    _fmt = InputError
    if not 1 <= len(wrapped) <= MAX_WRAPPED_KEYS:
        raise _fmt(f"{len(wrapped)} wrapped keys (allowed 1 .. {MAX_WRAPPED_KEYS})")
    for w in wrapped:
        if not 1 <= len(w.key_uri.encode()) <= MAX_URI_BYTES:
            raise _fmt(f"key URI {w.key_uri[:80]!r} too long")
        if not 1 <= len(w.jurisdiction) <= MAX_JURISDICTION_BYTES or not w.jurisdiction.isascii():
            raise _fmt(f"jurisdiction {w.jurisdiction!r} of {w.key_uri}")
        if not 1 <= len(w.blob) <= MAX_BLOB_BYTES:
            raise _fmt(f"wrapped key of {w.key_uri} is {len(w.blob)} bytes")
        if not 0 <= w.version < 1 << 32:
            raise _fmt(f"version {w.version} of {w.key_uri}")

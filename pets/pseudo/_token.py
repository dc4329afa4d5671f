"""Reversible deterministic tokens: AES-SIV with the domain as associated data."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from pets._errors import InputError, IntegrityError
from pets._events import AuditHook
from pets.jurisdiction import Context
from pets.keys import Secret
from pets.pseudo._base import KeyedTransform, _check_domain
from pets.pseudo._columnar import series_from_arrow
from pets.pseudo._text import DEFAULT_MAX_BYTES, normalized_text, to_arrow_strings

__all__ = ["TOKEN_PREFIX", "Tokenizer", "siv_open", "siv_seal"]

TOKEN_PREFIX = "t1."  # noqa: S105 - a format tag, not a secret
_MAX_TOKEN_CHARS = 4 * DEFAULT_MAX_BYTES


def siv_seal(key: bytes, plaintext: bytes, associated_data: Sequence[bytes]) -> bytes:
    """AES-SIV (RFC 5297) encryption: ``SIV || ciphertext``, from ``cryptography``'s AESSIV.

    A nonce, if any, is the last associated-data component (RFC 5297 §3).
    """
    return AESSIV(key).encrypt(plaintext, list(associated_data))


def siv_open(key: bytes, sealed: bytes, associated_data: Sequence[bytes]) -> bytes:
    """AES-SIV decryption; any failure is an opaque :class:`IntegrityError`."""
    try:
        return AESSIV(key).decrypt(sealed, list(associated_data))
    except (InvalidTag, ValueError):
        raise IntegrityError("token failed to authenticate") from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    """Strict, canonical base64url: one string per byte sequence, or ``ValueError``.

    ``base64.urlsafe_b64decode`` skips characters outside the alphabet and ignores the unused
    low bits of the last character, so several strings would decode to one token; requiring the
    re-encoding to equal the input makes every altered token string fail.
    """
    if not text or len(text) % 4 == 1:
        raise ValueError("bad length")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


class Tokenizer(KeyedTransform):
    """Deterministic, reversible tokens: ``"t1." + base64url(AES-SIV(domain_key, value, [domain]))``.

    AES-256-SIV (RFC 5297, from ``cryptography``) under a 64-byte domain key derived by HKDF from
    the root secret; the domain is the associated data, so a token moved to another domain does
    not decrypt. Tokens are URL-safe and versioned (``t1.``); a modified token is rejected with
    an opaque :class:`~pets.IntegrityError`.

    Warning — what it links: deterministic authenticated encryption is **not semantically
    secure**: equal (normalised) inputs in one domain give equal tokens, so rows of one person
    are linkable within the domain and frequencies are preserved; token length reveals input
    length (bucket or pad first if that matters). Across domains tokens are unlinkable.

    Re-identification (:meth:`reverse`) works only in the jurisdiction of the key the root
    secret was unwrapped with (recorded by :meth:`from_key`, or ``jurisdiction=``), and every
    call — allowed or refused — is reported to the audit hook with counts, never values.

    Examples:
        >>> import pandas as pd
        >>> from pets import Context
        >>> from pets.keys import Secret
        >>> seen = []
        >>> tok = Tokenizer(Secret(bytes(32)), domain="crm", jurisdiction="EU", audit=seen.append)
        >>> t = tok.apply(pd.Series(["ann@x.eu", None, "ann@x.eu"]))
        >>> t[0] == t[2], t[0].startswith("t1."), pd.isna(t[1])
        (True, True, True)
        >>> tok.reverse(t, context=Context("EU")).tolist()
        ['ann@x.eu', <NA>, 'ann@x.eu']
        >>> tok.reverse(t, context=Context("US"))
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: token re-identification refused for anonymous@US: the key belongs to EU
        >>> [(e.fields["outcome"], e.fields["rows"]) for e in seen]
        [('ok', 3), ('refused', 3)]
    """

    name: ClassVar[str] = "token"
    purpose: ClassVar[str] = "token-aes-siv"
    key_length: ClassVar[int] = 64
    reversible: ClassVar[bool] = True
    links: ClassVar[str] = (
        "equal normalised inputs within one domain (deterministic; frequencies and input length "
        "preserved); unlinkable across domains; reversible in the key's jurisdiction")

    def __init__(self, secret: Secret, *, domain: str, casefold: bool = False,
                 strip: bool = False, max_bytes: int = DEFAULT_MAX_BYTES,
                 jurisdiction: str | None = None, audit: AuditHook | None = None) -> None:
        self._configure(casefold=casefold, strip=strip, max_bytes=max_bytes)
        super().__init__(secret, domain=domain, jurisdiction=jurisdiction, audit=audit)

    def _configure(self, casefold: bool = False, strip: bool = False,
                   max_bytes: int = DEFAULT_MAX_BYTES, **kw: Any) -> None:
        super()._configure(**kw)
        if not isinstance(max_bytes, int) or max_bytes < 1:
            raise InputError("max_bytes must be a positive integer")
        self.casefold = bool(casefold)
        self.strip = bool(strip)
        self.max_bytes = max_bytes

    def params(self) -> dict[str, Any]:
        return {"casefold": self.casefold, "strip": self.strip, "format": TOKEN_PREFIX}

    def config(self) -> dict[str, Any]:
        return {"casefold": self.casefold, "strip": self.strip, "max_bytes": self.max_bytes}

    def _ad(self) -> list[bytes]:
        return [_check_domain(self.domain)]

    def apply(self, series: pd.Series) -> pd.Series:
        """Tokenise a column (each distinct value encrypted once; nulls stay null)."""
        arr = normalized_text(series, casefold=self.casefold, strip=self.strip,
                              max_bytes=self.max_bytes)
        enc = pc.dictionary_encode(arr)
        siv = AESSIV(self._key.expose())
        ad = self._ad()
        table = pa.array(
            [TOKEN_PREFIX + _b64url(siv.encrypt(v, ad))
             for v in enc.dictionary.cast(pa.large_binary()).to_pylist()],
            type=pa.large_string())
        return series_from_arrow(pc.take(table, enc.indices), series)

    def reverse(self, series: pd.Series, *, context: Context) -> pd.Series:
        """Recover the normalised values (as strings) from tokens, in the key's jurisdiction only.

        Raises:
            JurisdictionError: ``context`` is not the key's jurisdiction (reported, then raised).
            IntegrityError: A token was modified, truncated, or comes from another key or domain.
        """
        rows = len(series)
        self._check_reverse(context, rows)
        try:
            arr = pc.cast(to_arrow_strings(series), pa.large_string())
        except InputError:
            self._report_reverse(context, rows, 0, "integrity-failed")
            raise IntegrityError("token failed to authenticate") from None
        enc = pc.dictionary_encode(arr)
        siv = AESSIV(self._key.expose())
        ad = self._ad()
        try:
            out = []
            for tok in enc.dictionary.to_pylist():
                if (not isinstance(tok, str) or not tok.startswith(TOKEN_PREFIX)
                        or len(tok) > _MAX_TOKEN_CHARS):
                    raise IntegrityError("token failed to authenticate")
                try:
                    sealed = _unb64url(tok[len(TOKEN_PREFIX):])
                    out.append(siv.decrypt(sealed, ad).decode("utf-8"))
                except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
                    raise IntegrityError("token failed to authenticate") from None
        except IntegrityError:
            self._report_reverse(context, rows, int(arr.null_count), "integrity-failed")
            raise
        self._report_reverse(context, rows, int(arr.null_count), "ok")
        table = pa.array(out, type=pa.large_string())
        return series_from_arrow(pc.take(table, enc.indices), series)

"""Ed25519 signing keys of the home jurisdiction: they sign manifests and audit entries.

A :class:`SigningKey` is held by the EU side only. At rest it is stored as a *wrapped data key*:
the 32 raw private-key bytes are wrapped by a KEK of a jurisdiction key service
(:class:`~pets.keys.KeyServices`), with the encryption context ``{"purpose":
"pets.signing-key", "key_id": ...}`` bound as AAD. Loading it therefore needs the key service
*and* a context of the KEK's jurisdiction — a US process cannot load the EU signing key. The
public half is exported as PEM for auditors and receivers: verification needs nothing else.

The key id is the first 16 hex digits of SHA-256 over the raw public key; it names the signer in
manifests and audit entries (a name, not a secret).

A signing-key file that is corrupted, truncated or replaced (its wrapped key does not
authenticate under the KEK, or does not match the key id it states) is reported as a
:class:`~pets.KeyStoreIntegrityError` naming the file — the fault is the key file, never a
manifest or an audit entry the key was about to sign or verify.

Examples:
    >>> import tempfile, pathlib
    >>> from pets import Context
    >>> from pets.keys import KeyServices, MemoryKeyring
    >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/kek", jurisdiction="EU")
    >>> services = KeyServices([ring])
    >>> key = SigningKey.generate()
    >>> len(key.key_id), repr(key) == f"SigningKey(key_id='{key.key_id}')"
    (16, True)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "signing-key.json"
    >>> key.save(path, services, "memory://eu/kek", context=Context("EU"))
    >>> again = SigningKey.load(path, services, context=Context("EU"))
    >>> again.key_id == key.key_id
    True
    >>> verify_signature(key.public_key, b"msg", key.sign(b"msg"))
    True
    >>> SigningKey.load(path, services, context=Context("US"))
    Traceback (most recent call last):
    ...
    pets._errors.JurisdictionError: key memory://eu/kek belongs to EU; unwrap refused for anonymous@US
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pets._errors import InputError, IntegrityError, KeyNotFoundError, KeyStoreIntegrityError
from pets._io import atomic_path
from pets.jurisdiction import Context
from pets.keys import KeyServices, WrappedKey

__all__ = [
    "PublicKeyLike",
    "SigningKey",
    "key_id_of",
    "load_public_key",
    "verify_signature",
]

_FORMAT = "pets.signing-key/1"
_PURPOSE = "pets.signing-key"

PublicKeyLike = Ed25519PublicKey | bytes | str | os.PathLike[str]
"""An Ed25519 public key, its PEM bytes/text, or the path of a PEM file."""


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The signer id: 16 hex digits of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """Accept an Ed25519 public key, PEM text or bytes, or a path to a PEM file.

    Raises:
        InputError: The file is missing or does not hold an Ed25519 public key.
    """
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes):
        pem, where = key, "public key"
    elif isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        pem, where = key.encode(), "public key"
    else:
        from pets._io import require_regular_file

        path = require_regular_file(key, "public key")
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read public key ({exc.strerror})") from None
        where = str(path)
    try:
        loaded = serialization.load_pem_public_key(pem)
    except ValueError:
        raise InputError(f"{where}: not a PEM public key") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise InputError(f"{where}: not an Ed25519 public key")
    return loaded


def verify_signature(public_key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


class SigningKey:
    """An Ed25519 private key of the home jurisdiction: no repr of the key, no pickling.

    Args:
        private_key: The key; use :meth:`generate` or :meth:`load` rather than building one.
    """

    __slots__ = ("_key", "key_id")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("SigningKey takes an Ed25519PrivateKey")
        self._key = private_key
        self.key_id = key_id_of(private_key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the OS CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def public_pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo): give this to auditors and receivers."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of ``message`` (64 bytes)."""
        return self._key.sign(message)

    def save(self, path: str | os.PathLike[str], services: KeyServices, kek_uri: str, *,
             context: Context) -> None:
        """Wrap the private key under ``kek_uri`` and write it (atomically, mode 0600).

        The file holds the key id, the public key PEM and the wrapped key: ciphertext only.
        """
        raw = self._key.private_bytes(serialization.Encoding.Raw,
                                      serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
        wrapped = services.wrap(kek_uri, raw, context=context, enc_context=self._aad(self.key_id))
        doc = {
            "format": _FORMAT,
            "key_id": self.key_id,
            "public_key_pem": self.public_pem().decode(),
            "wrapped": wrapped.to_dict(),
        }
        with atomic_path(path, mode=0o600) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str], services: KeyServices, *,
             context: Context) -> SigningKey:
        """Unwrap a key written by :meth:`save` (refused outside the KEK's jurisdiction).

        Raises:
            InputError: The file is missing or is not a signing-key file.
            JurisdictionError: ``context`` is not in the KEK's jurisdiction.
            KeyStoreIntegrityError: The file is corrupt or replaced: not JSON, or its wrapped
                key does not authenticate under the KEK or does not match its key id (the
                message names the file and the KEK); or the KEK's own key file is.
        """
        doc = read_key_file(path)
        corrupt = f"signing key file {path}"
        try:
            wrapped = WrappedKey.from_dict(doc["wrapped"])
        except (InputError, ValueError, KeyError, TypeError):
            raise KeyStoreIntegrityError(
                f"{corrupt} is corrupted or replaced: its wrapped key is malformed") from None
        try:
            raw = services.unwrap(wrapped, context=context,
                                  enc_context=cls._aad(str(doc["key_id"])))
        except KeyStoreIntegrityError:
            raise  # the KEK's own key file: it names itself
        except KeyNotFoundError as exc:
            raise KeyNotFoundError(f"{corrupt} names a key no key service holds: {exc}"
                                   ) from None
        except IntegrityError:
            raise KeyStoreIntegrityError(
                f"{corrupt} failed to authenticate under {wrapped.key_uri} "
                f"v{wrapped.version}: corrupted or replaced (the signing key cannot be used; "
                f"nothing was signed or verified with it)") from None
        try:
            key = cls(Ed25519PrivateKey.from_private_bytes(raw))
        except ValueError:
            raise KeyStoreIntegrityError(
                f"{corrupt} is corrupted or replaced: its wrapped key is no Ed25519 key"
            ) from None
        finally:
            del raw
        if key.key_id != doc["key_id"]:
            raise KeyStoreIntegrityError(
                f"{corrupt} is corrupted or replaced: key id {doc['key_id']} does not match the "
                f"wrapped key ({key.key_id})")
        return key

    @staticmethod
    def _aad(key_id: str) -> dict[str, str]:
        return {"purpose": _PURPOSE, "key_id": key_id}

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SigningKey cannot be pickled: save it wrapped and load it by path")


def read_key_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a signing-key file (public parts only are usable without the key service)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read signing key ({exc.strerror})") from None
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KeyStoreIntegrityError(
            f"signing key file {p} is corrupted or replaced: not JSON (truncated or "
            f"overwritten)") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(
            doc.get("wrapped"), dict) or not isinstance(doc.get("key_id"), str):
        raise InputError(f"{p}: not a pets signing-key file ({_FORMAT})")
    return doc

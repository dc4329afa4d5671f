"""What the boundary needs from the home jurisdiction's keys, kept in one directory.

:class:`BoundaryKeys` bundles

* the key services (:class:`~pets.keys.KeyServices`) that hold the KEKs a policy names;
* the Ed25519 :class:`~pets.boundary.SigningKey` that signs manifests and audit entries,
  stored wrapped under a KEK (``signing-key.json``) with its public half beside it
  (``signing-key.pub.pem``, for auditors and receivers);
* one *root secret* per KEK URI for keyed treatments (keyed hash, tokens, FF1, date shift):
  32 random bytes wrapped by that KEK (``roots.json``). Keyed pseudonyms must be stable across
  runs — the same e-mail address gives the same pseudonym next month — so the root is created
  once and reused; each column derives its own domain key from it (HKDF, in
  :mod:`pets.pseudo`).

Every file holds ciphertext and public facts only; using any of it needs the key service and
a context of the KEK's jurisdiction. Files are written atomically (mode 0600) under an
``fcntl`` lock, so concurrent first runs agree on one root.

Examples:
    >>> import tempfile, pathlib
    >>> from pets import Context
    >>> from pets.keys import KeyServices, MemoryKeyring
    >>> ring = MemoryKeyring()
    >>> for n in ("boundary", "pseudonyms"):
    ...     _ = ring.create(f"memory://eu/{n}", jurisdiction="EU")
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> keys = BoundaryKeys.open(d, KeyServices([ring]), context=Context("EU"),
    ...                          signing_kek="memory://eu/boundary")
    >>> root = keys.root_for("memory://eu/pseudonyms", context=Context("EU"))
    >>> root == keys.root_for("memory://eu/pseudonyms", context=Context("EU"))
    True
    >>> sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
    ['roots.json', 'signing-key.json', 'signing-key.pub.pem']
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pets._errors import InputError
from pets._events import AuditHook, emit
from pets._io import atomic_path
from pets.boundary._signing import SigningKey, load_public_key
from pets.jurisdiction import Context
from pets.keys import KeyServices, WrappedKey

__all__ = ["BoundaryKeys"]

_ROOTS = "roots.json"
_SIGNING = "signing-key.json"
_PUBLIC = "signing-key.pub.pem"
_ROOTS_FORMAT = "pets.boundary-roots/1"
ROOT_BYTES = 32


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class BoundaryKeys:
    """Key services, the signing key and the wrapped root secrets of one home jurisdiction.

    Build with :meth:`open` (a directory) or directly for tests (``directory=None`` keeps
    roots in memory).
    """

    def __init__(self, services: KeyServices, signer: SigningKey, *,
                 directory: str | os.PathLike[str] | None = None,
                 audit: AuditHook | None = None) -> None:
        self.services = services
        self.signer = signer
        self.directory = Path(directory) if directory is not None else None
        self.audit = audit
        self._roots: dict[str, WrappedKey] = {}

    def __repr__(self) -> str:
        return (f"BoundaryKeys(signer={self.signer.key_id!r}, "
                f"directory={str(self.directory) if self.directory else None!r})")

    @classmethod
    def open(cls, directory: str | os.PathLike[str], services: KeyServices, *,
             context: Context, signing_kek: str | None = None,
             audit: AuditHook | None = None) -> BoundaryKeys:
        """Load the boundary keys in ``directory``, creating the signing key if absent.

        Args:
            directory: Where ``signing-key.json``, ``signing-key.pub.pem`` and ``roots.json``
                live (e.g. ``<keyring>/boundary``).
            services: The key services holding the KEKs.
            context: Who opens them (must be in the KEKs' jurisdiction).
            signing_kek: KEK URI that wraps a *new* signing key; needed only on first use.
            audit: Receives ``boundary.signing_key.create`` and ``boundary.root.create``.

        Raises:
            InputError: No signing key yet and no ``signing_kek`` to create one.
            JurisdictionError: ``context`` is outside the KEK's jurisdiction.
        """
        d = Path(directory)
        with _locked(d):
            path = d / _SIGNING
            if path.exists():
                signer = SigningKey.load(path, services, context=context)
            else:
                if signing_kek is None:
                    raise InputError(f"{d}: no signing key yet; name a KEK to create one "
                                     "(the policy's keys.signing)")
                signer = SigningKey.generate()
                signer.save(path, services, signing_kek, context=context)
                with atomic_path(d / _PUBLIC, mode=0o644) as tmp:
                    tmp.write_bytes(signer.public_pem())
                emit(audit, "boundary.signing_key.create", key_id=signer.key_id,
                     kek=signing_kek, public_key=str(d / _PUBLIC))
        keys = cls(services, signer, directory=d, audit=audit)
        keys._roots = keys._read_roots()
        return keys

    @staticmethod
    def public_key_path(directory: str | os.PathLike[str]) -> Path:
        """Where :meth:`open` wrote the public key PEM."""
        return Path(directory) / _PUBLIC

    @property
    def public_key(self) -> Any:
        return load_public_key(self.signer.public_pem())

    def _read_roots(self) -> dict[str, WrappedKey]:
        if self.directory is None or not (self.directory / _ROOTS).exists():
            return {}
        path = self.directory / _ROOTS
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != _ROOTS_FORMAT:
                raise ValueError
            return {uri: WrappedKey.from_dict(w) for uri, w in doc["roots"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"{path}: not a pets roots file ({_ROOTS_FORMAT})") from None

    def root_for(self, kek_uri: str, *, context: Context, create: bool = True) -> WrappedKey:
        """The wrapped root secret under ``kek_uri``, created (and stored) on first use.

        Raises:
            InputError: ``create`` is false and there is no root for ``kek_uri``.
        """
        if kek_uri in self._roots:
            return self._roots[kek_uri]
        if not create:
            if self.directory is not None:
                self._roots = self._read_roots()
            if kek_uri not in self._roots:
                raise InputError(f"no root secret under {kek_uri} in the boundary keys")
            return self._roots[kek_uri]
        if self.directory is None:
            self._roots[kek_uri] = self._new_root(kek_uri, context)
            return self._roots[kek_uri]
        with _locked(self.directory):
            self._roots = self._read_roots()
            if kek_uri not in self._roots:
                self._roots[kek_uri] = self._new_root(kek_uri, context)
                doc = {"format": _ROOTS_FORMAT,
                       "roots": {u: w.to_dict() for u, w in sorted(self._roots.items())}}
                with atomic_path(self.directory / _ROOTS, mode=0o600) as tmp:
                    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return self._roots[kek_uri]

    def _new_root(self, kek_uri: str, context: Context) -> WrappedKey:
        raw = os.urandom(ROOT_BYTES)
        try:
            wrapped = self.services.wrap(kek_uri, raw, context=context)
        finally:
            del raw
        emit(self.audit, "boundary.root.create", kek=kek_uri, version=wrapped.version)
        return wrapped

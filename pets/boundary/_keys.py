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
  :mod:`pets.pseudo`);
* the boundary's **trust anchors** (``boundary.json``, :class:`Anchors`): the home jurisdiction,
  the *pinned* signing public keys, and where the audit log and the privacy-budget ledger
  live. It is written once, by :meth:`BoundaryKeys.create` (``pets boundary init``), and signed
  by the current signing key, which only the home KEK unwraps: whoever can edit the file but not
  use the KEK cannot add a key or move the log. Every command reads it; the export gate verifies
  manifests against the pinned keys only, never a key its caller hands in. A rotation of the
  signing key (:meth:`BoundaryKeys.rotate_signing_key`) is an explicit, audited operation that
  adds one pinned key.

Nothing is created implicitly: :meth:`BoundaryKeys.open` of a directory that was never set up
is an error, not a second signing key that would poison the audit log.

Every file holds ciphertext and public facts only; using any of it needs the key service and
a context of the KEK's jurisdiction. Files are written atomically (mode 0600) under an
exclusive lock on ``.lock`` in the directory (:func:`pets._lock.exclusive`, portable to macOS
and Windows), so concurrent first runs agree on one root.

Examples:
    >>> import tempfile, pathlib
    >>> from pets import Context
    >>> from pets.keys import KeyServices, MemoryKeyring
    >>> ring = MemoryKeyring()
    >>> for n in ("boundary", "pseudonyms"):
    ...     _ = ring.create(f"memory://eu/{n}", jurisdiction="EU")
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> keys = BoundaryKeys.create(d, KeyServices([ring]), context=Context("EU"),
    ...                            signing_kek="memory://eu/boundary",
    ...                            audit_log=d / "audit.jsonl", ledger=d / "ledger.sqlite")
    >>> keys.anchors.home, keys.anchors.pinned == (keys.signer.key_id,)
    ('EU', True)
    >>> root = keys.root_for("memory://eu/pseudonyms", context=Context("EU"))
    >>> again = BoundaryKeys.open(d, KeyServices([ring]), context=Context("EU"))
    >>> again.root_for("memory://eu/pseudonyms", context=Context("EU")) == root
    True
    >>> sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
    ['boundary.json', 'roots.json', 'signing-key.json', 'signing-key.pub.pem']
    >>> BoundaryKeys.open(d / "elsewhere", KeyServices([ring]),
    ...                   context=Context("EU"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pets._errors.InputError: no boundary at .../elsewhere: set it up once with `pets boundary init` (nothing is created implicitly)
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pets._errors import InputError, IntegrityError, JurisdictionError
from pets._events import AuditHook, emit
from pets._io import atomic_path
from pets._lock import exclusive
from pets.boundary._signing import SigningKey, load_public_key, read_key_file, verify_signature
from pets.jurisdiction import Context, Jurisdiction
from pets.keys import KeyServices, WrappedKey

__all__ = ["Anchors", "BoundaryKeys"]

_ROOTS = "roots.json"
_SIGNING = "signing-key.json"
_PUBLIC = "signing-key.pub.pem"
_ANCHORS = "boundary.json"
_ROOTS_FORMAT = "pets.boundary-roots/1"
_ANCHORS_FORMAT = "pets.boundary/1"
ROOT_BYTES = 32


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with exclusive(directory / ".lock"):
        yield


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Anchors:
    """The trust anchors of one boundary, as pinned in ``boundary.json`` at set-up.

    Attributes:
        home: The home jurisdiction (where raw data stays).
        audit_log: The signed audit log every command appends to (absolute path).
        ledger: The privacy-budget ledger (absolute path).
        signing_kek: The KEK the signing key is wrapped under.
        pinned: Key ids of the pinned signing keys, oldest first; the last is the current one.
        public_keys: ``{key_id: PEM}`` of the pinned keys.
        key_services: The non-secret key-service settings recorded at set-up (e.g. the
            keyring directory); secrets are never recorded.
        created: When the boundary was set up (UTC, ISO 8601).
    """

    home: str
    audit_log: Path
    ledger: Path
    signing_kek: str
    pinned: tuple[str, ...]
    public_keys: Mapping[str, str]
    key_services: Mapping[str, Any]
    created: str

    def public_key_objects(self) -> list[Ed25519PublicKey]:
        """The pinned public keys, oldest first."""
        return [load_public_key(self.public_keys[k].encode()) for k in self.pinned]

    def to_dict(self) -> dict[str, Any]:
        return {"format": _ANCHORS_FORMAT, "home": self.home, "audit_log": str(self.audit_log),
                "ledger": str(self.ledger), "signing_kek": self.signing_kek,
                "pinned": list(self.pinned), "public_keys": dict(self.public_keys),
                "key_services": dict(self.key_services), "created": self.created}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> Anchors:
        try:
            if doc.get("format") != _ANCHORS_FORMAT:
                raise ValueError
            pinned = tuple(str(k) for k in doc["pinned"])
            keys = {str(k): str(v) for k, v in doc["public_keys"].items()}
            if not pinned or set(pinned) != set(keys):
                raise ValueError
            return cls(home=Jurisdiction(str(doc["home"])).code,
                       audit_log=Path(doc["audit_log"]), ledger=Path(doc["ledger"]),
                       signing_kek=str(doc["signing_kek"]), pinned=pinned, public_keys=keys,
                       key_services=dict(doc.get("key_services") or {}),
                       created=str(doc["created"]))
        except (ValueError, KeyError, TypeError, AttributeError, InputError):
            raise InputError(f"{where}: not a pets boundary file ({_ANCHORS_FORMAT})") from None


class BoundaryKeys:
    """Key services, the signing key, the pinned anchors and the root secrets of one boundary.

    Set a boundary up once with :meth:`create`, then :meth:`open` it; build one directly for
    tests (``directory=None`` keeps roots in memory; the signer is then the only pinned key).
    """

    def __init__(self, services: KeyServices, signer: SigningKey, *,
                 directory: str | os.PathLike[str] | None = None,
                 audit: AuditHook | None = None, anchors: Anchors | None = None) -> None:
        self.services = services
        self.signer = signer
        self.directory = Path(directory) if directory is not None else None
        self.audit = audit
        self.anchors = anchors
        self._roots: dict[str, WrappedKey] = {}

    def __repr__(self) -> str:
        return (f"BoundaryKeys(signer={self.signer.key_id!r}, "
                f"directory={str(self.directory) if self.directory else None!r})")

    @property
    def pinned_public_keys(self) -> list[Ed25519PublicKey]:
        """The public keys the export gate trusts: the pinned ones (or, without anchors, the
        signer's own). Never a key handed in by a caller."""
        if self.anchors is None:
            return [self.signer.public_key]
        return self.anchors.public_key_objects()

    @staticmethod
    def exists(directory: str | os.PathLike[str]) -> bool:
        """Whether ``directory`` holds a boundary set up by :meth:`create`."""
        return (Path(directory) / _ANCHORS).is_file()

    @classmethod
    def create(cls, directory: str | os.PathLike[str], services: KeyServices, *,
               context: Context, signing_kek: str, audit_log: str | os.PathLike[str],
               ledger: str | os.PathLike[str], key_services: Mapping[str, Any] | None = None,
               audit: AuditHook | None = None) -> BoundaryKeys:
        """Set a boundary up: the signing key (wrapped under ``signing_kek``) and its anchors.

        An existing signing key in ``directory`` (a boundary made before anchors were pinned)
        is adopted: it must open under the key service, and it becomes the first pinned key.

        Args:
            directory: The boundary directory (e.g. ``<keyring>/boundary``).
            services: The key services holding ``signing_kek``.
            context: Who sets it up; its jurisdiction becomes the home and must be the KEK's.
            signing_kek: The home KEK that wraps the signing key.
            audit_log: The audit log to pin.
            ledger: The privacy-budget ledger to pin.
            key_services: Non-secret key-service settings to record (e.g. the keyring path).
            audit: Receives ``boundary.signing_key.create`` and ``boundary.init``.

        Raises:
            InputError: The boundary is already set up (nothing is changed).
            JurisdictionError: ``signing_kek`` belongs to another jurisdiction than ``context``.
        """
        d = Path(directory)
        with _locked(d):
            if (d / _ANCHORS).exists():
                raise InputError(f"{d}: a boundary is already set up here ({_ANCHORS}); "
                                 "nothing changed")
            kek_home = services.for_uri(signing_kek).describe(signing_kek).jurisdiction
            if kek_home != context.jurisdiction:
                raise JurisdictionError(
                    f"{signing_kek} belongs to {kek_home}: the signing key of a boundary at "
                    f"home in {context.jurisdiction} needs a KEK of {context.jurisdiction}")
            path = d / _SIGNING
            if path.exists():
                signer = SigningKey.load(path, services, context=context)
                kek = str(read_key_file(path)["wrapped"].get("key_uri", signing_kek))
            else:
                signer = SigningKey.generate()
                signer.save(path, services, signing_kek, context=context)
                kek = signing_kek
                emit(audit, "boundary.signing_key.create", key_id=signer.key_id, kek=kek,
                     public_key=str(d / _PUBLIC))
            with atomic_path(d / _PUBLIC, mode=0o644) as tmp:
                tmp.write_bytes(signer.public_pem())
            anchors = Anchors(
                home=context.jurisdiction, audit_log=Path(audit_log).resolve(),
                ledger=Path(ledger).resolve(), signing_kek=kek, pinned=(signer.key_id,),
                public_keys={signer.key_id: signer.public_pem().decode()},
                key_services=dict(key_services or {}),
                created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
            _write_anchors(d, anchors, signer)
        keys = cls(services, signer, directory=d, audit=audit, anchors=anchors)
        keys._roots = keys._read_roots()
        return keys

    @classmethod
    def open(cls, directory: str | os.PathLike[str], services: KeyServices, *,
             context: Context, audit: AuditHook | None = None) -> BoundaryKeys:
        """Open the boundary set up in ``directory`` (never creates anything).

        The signing key is unwrapped through the key service, then ``boundary.json`` must
        verify under it and pin it: a replaced or edited anchors file, or a signing key that
        is not pinned, is refused.

        Raises:
            InputError: No boundary was set up in ``directory``.
            JurisdictionError: ``context`` is outside the KEK's jurisdiction.
            IntegrityError: ``boundary.json`` does not verify under the signing key, or does
                not pin it.
        """
        d = Path(directory)
        if not (d / _ANCHORS).is_file():
            hint = (" (it holds a signing key from before anchors were pinned: run `pets "
                    "boundary init` once to pin it)") if (d / _SIGNING).exists() else \
                " (nothing is created implicitly)"
            raise InputError(f"no boundary at {d}: set it up once with `pets boundary init`"
                             + hint)
        with _locked(d):
            signer = SigningKey.load(d / _SIGNING, services, context=context)
            anchors = _read_anchors(d, signer)
        keys = cls(services, signer, directory=d, audit=audit, anchors=anchors)
        keys._roots = keys._read_roots()
        return keys

    def rotate_signing_key(self, *, context: Context, kek: str | None = None) -> SigningKey:
        """Make a new signing key the current one and pin it beside the old ones (audited).

        Manifests and log entries signed by earlier keys still verify (their keys stay
        pinned); new ones are signed by the new key. Emits ``boundary.signing_key.rotate``.

        Raises:
            InputError: This object was not opened from a boundary directory.
        """
        if self.directory is None or self.anchors is None:
            raise InputError("rotate_signing_key needs a boundary opened from its directory")
        d = self.directory
        kek = kek or self.anchors.signing_kek
        with _locked(d):
            current = _read_anchors(d, self.signer)
            new = SigningKey.generate()
            new.save(d / _SIGNING, self.services, kek, context=context)
            with atomic_path(d / _PUBLIC, mode=0o644) as tmp:
                tmp.write_bytes(new.public_pem())
            anchors = Anchors(
                home=current.home, audit_log=current.audit_log, ledger=current.ledger,
                signing_kek=kek, pinned=(*current.pinned, new.key_id),
                public_keys={**current.public_keys, new.key_id: new.public_pem().decode()},
                key_services=current.key_services, created=current.created)
            _write_anchors(d, anchors, new)
        emit(self.audit, "boundary.signing_key.rotate", key_id=new.key_id,
             previous=self.signer.key_id, kek=kek, pinned=list(anchors.pinned))
        self.signer, self.anchors = new, anchors
        return new

    def audit_log(self, context: Context) -> Any:
        """The boundary's pinned :class:`~pets.boundary.AuditLog`, signing as ``context``.

        Raises:
            InputError: This boundary has no anchors (built in memory, not set up).
        """
        from pets.boundary._audit import AuditLog

        if self.anchors is None:
            raise InputError("this boundary has no pinned audit log (set it up with "
                             "BoundaryKeys.create / pets boundary init)")
        return AuditLog(self.anchors.audit_log, signer=self.signer, actor=context)

    def pinned_audit(self, audit: Any, context: Context) -> Any:
        """The audit log an action at this boundary records to: its pinned one.

        With anchors, ``None`` means the pinned log, an :class:`~pets.boundary.AuditLog` must
        *be* the pinned log, and a bare hook (which could drop every event) is refused. Without
        anchors (a boundary built in memory) ``audit`` is returned as given.

        Raises:
            InputError: A log other than the pinned one, or a bare hook, for a set-up boundary.
        """
        from pets.boundary._audit import AuditLog

        if self.anchors is None:
            return audit
        if audit is None:
            return self.audit_log(context)
        if not isinstance(audit, AuditLog):
            raise InputError("this boundary records to its pinned audit log "
                             f"{self.anchors.audit_log}: pass that AuditLog (or nothing), not "
                             "a hook")
        if audit.path.resolve() != self.anchors.audit_log:
            raise InputError(f"audit log {audit.path} is not the boundary's pinned log "
                             f"{self.anchors.audit_log}: actions at the boundary are recorded "
                             "there")
        return audit

    @staticmethod
    def public_key_path(directory: str | os.PathLike[str]) -> Path:
        """Where :meth:`create` wrote the current public key PEM."""
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


def _write_anchors(d: Path, anchors: Anchors, signer: SigningKey) -> None:
    doc = anchors.to_dict()
    doc["signer"] = signer.key_id
    doc["signature"] = base64.b64encode(signer.sign(_canonical(doc))).decode()
    with atomic_path(d / _ANCHORS, mode=0o644) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _read_anchors(d: Path, signer: SigningKey) -> Anchors:
    """``boundary.json``, verified under the (unwrapped) current signing key."""
    path = d / _ANCHORS
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise IntegrityError(f"{path}: the boundary's anchors file is not JSON "
                             "(corrupted or replaced)") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{path}: the boundary's anchors file is corrupted or replaced")
    anchors = Anchors.from_dict(doc, str(path))
    try:
        signature = base64.b64decode(str(doc.get("signature", "")), validate=True)
    except ValueError:
        signature = b""
    if doc.get("signer") != signer.key_id or anchors.pinned[-1] != signer.key_id or \
            not verify_signature(signer.public_key, _canonical(doc), signature):
        raise IntegrityError(f"{path}: the boundary's anchors do not verify under its signing "
                             f"key {signer.key_id} (edited, replaced, or the signing key is "
                             "not the pinned one)")
    pem = anchors.public_keys[signer.key_id].encode()
    if load_public_key(pem).public_bytes_raw() != signer.public_key.public_bytes_raw():
        raise IntegrityError(f"{path}: the pinned key {signer.key_id} is not the signing key")
    return anchors


def pinned_keys(keys: BoundaryKeys | Sequence[Ed25519PublicKey]) -> list[Ed25519PublicKey]:
    """The keys a gate may trust: a boundary's pinned keys (internal helper)."""
    if isinstance(keys, BoundaryKeys):
        return keys.pinned_public_keys
    return list(keys)

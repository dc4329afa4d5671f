"""A real HSM behind the key-service protocol, through PKCS#11 (``python-pkcs11``).

Keys are named ``pkcs11://<token-label>/<key-label>``. On the token:

* every KEK **version** is its own AES-256 secret-key object, generated inside the token with
  ``TOKEN, PRIVATE, SENSITIVE = True`` and ``EXTRACTABLE = False`` (the key bytes never leave the
  token), ``CKA_LABEL = <key-label>`` and ``CKA_ID = b"pets-v" + version (4 bytes, big-endian)``;
* a private data object ``CKA_LABEL = "pets-meta:<key-label>"`` holds the public metadata (URI,
  jurisdiction, primary and minimum versions, version states) as JSON;
* a private data object ``CKA_LABEL = "pets-token"`` records the token's jurisdiction the first
  time pets uses it; opening the token later under another jurisdiction is refused.

Wrapping is ``C_Encrypt`` with ``CKM_AES_GCM`` inside the token (96-bit random nonce, 128-bit
tag, AAD = :func:`~pets.keys.wrapping_aad` of URI, version and encryption context); the blob is
``nonce ‖ ciphertext ‖ tag`` — the same layout as :class:`~pets.keys.LocalKeyring` and
``cryptography``'s ``AESGCM``. Unwrapping decrypts inside the token and returns the data key.

Before a key object is used, its attributes are checked: it must have been generated in the token
(``CKA_LOCAL``), never extractable and always sensitive, an AES-256 key. An object planted under a
pets label by someone holding the PIN (an imported key whose bytes they know, say) is refused
with :class:`~pets.IntegrityError` instead of being used to wrap data keys.

PKCS#11 logins belong to the whole process (a second ``C_Login`` fails with
``UserAlreadyLoggedIn``), so one session per (library, token) is opened, logged in once, kept
open and shared by every :class:`Pkcs11Keyring` on that token; a lock serialises its use.
Across processes on one host, an ``fcntl`` lock file per (library, token) in
``$XDG_RUNTIME_DIR`` (else the temp directory) is held exclusively while keys are created,
rotated, retired or destroyed and shared while they are used, so concurrent rotations never lose
a version and readers never see a half-made update. Processes on *different* hosts sharing a
network HSM are not serialised by it.

Nonces: each wrap draws a fresh 96-bit nonce from ``os.urandom`` on the host and passes it in
``CK_GCM_PARAMS`` (SoftHSM and most HSMs accept caller nonces; FIPS-mode HSMs that insist on
generating the IV themselves are not supported). With random nonces, keep well under 2^32 wraps
per KEK version (NIST SP 800-38D §8.3): rotate.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from pets._errors import (
    InputError,
    IntegrityError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
    require,
)
from pets._events import AuditHook, emit
from pets.jurisdiction import Context, Jurisdiction
from pets.keys._memory import wrapping_aad
from pets.keys._service import (
    KeyChanges,
    KeyInfo,
    KeyVersion,
    WrappedKey,
    check_dek,
    check_unwrap_allowed,
    check_version_usable,
    check_wrapped_matches,
    parse_key_uri,
)

__all__ = ["SOFTHSM2_LIBRARY", "Pkcs11Keyring", "init_softhsm_tokens"]

SOFTHSM2_LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"
_NONCE = 12
_TAG = 16
_META_PREFIX = "pets-meta:"
_TOKEN_MARKER = "pets-token"  # noqa: S105 - an object label
_MAX_META = 1 << 20
_PIN_KEY = os.urandom(32)  # per-process key for comparing PINs without storing them


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _version_id(version: int) -> bytes:
    return b"pets-v" + struct.pack(">I", version)


def _pin_digest(pin: str) -> bytes:
    return hmac.digest(_PIN_KEY, pin.encode(), "sha256")


@dataclass
class _Shared:
    """One logged-in session per (library, token) in this process, and its host lock file."""

    session: Any
    pin_digest: bytes
    lock_path: Path
    lock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0
    #: Shared by every Pkcs11Keyring on this token in this process.
    changes: KeyChanges = field(default_factory=KeyChanges)


def _lock_path(library: str, token_label: str) -> Path:
    """The host-wide lock file of one (library, token): per user, never a secret in its name."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    digest = hashlib.sha256(f"{library}\x00{token_label}".encode()).hexdigest()[:20]
    return Path(base) / f"pets-pkcs11-{os.getuid()}-{digest}.lock"


@contextlib.contextmanager
def _host_lock(shared: _Shared, exclusive: bool) -> Iterator[None]:
    """``fcntl.flock`` on the token's lock file (taken once per thread-lock holder).

    Call with ``shared.lock`` held. The outermost caller decides the mode; nested calls reuse it
    (an exclusive holder may read; a shared holder must not write — the code never nests so).
    """
    if shared.depth:
        shared.depth += 1
        try:
            yield
        finally:
            shared.depth -= 1
        return
    try:
        fd = os.open(shared.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise KeyServiceError(
            f"cannot open PKCS#11 lock file {shared.lock_path}: {exc.strerror}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        shared.depth = 1
        yield
    finally:
        shared.depth = 0
        os.close(fd)  # releases the lock


_SESSIONS: dict[tuple[str, str], _Shared] = {}
_SESSIONS_LOCK = threading.Lock()


def _login(library: str, token_label: str, pin: str) -> _Shared:
    pkcs11: Any = require("pkcs11", "hsm")
    key = (os.path.realpath(library), token_label)
    with _SESSIONS_LOCK:
        shared = _SESSIONS.get(key)
        if shared is not None:
            if not hmac.compare_digest(shared.pin_digest, _pin_digest(pin)):
                raise KeyServiceError(
                    f"login to PKCS#11 token {token_label!r} failed: incorrect PIN"
                )
            return shared
        if not Path(library).is_file():
            raise KeyServiceError(f"PKCS#11 library {library} not found")
        probe = _Shared(None, b"", _lock_path(key[0], token_label))
        with _host_lock(probe, exclusive=True):  # concurrent SoftHSM loads can fail
            shared = _open_session(pkcs11, library, key[0], token_label, pin)
        _SESSIONS[key] = shared
        return shared


def _open_session(pkcs11: Any, library: str, real: str, token_label: str, pin: str) -> _Shared:
    exc_mod = pkcs11.exceptions
    try:
        lib = pkcs11.lib(real)  # one path per module: a second C_Initialize would fail
        token = lib.get_token(token_label=token_label)
    except exc_mod.NoSuchToken:
        raise KeyNotFoundError(
            f"no PKCS#11 token labelled {token_label!r} in {library}"
        ) from None
    except exc_mod.MultipleTokensReturned:
        raise KeyServiceError(
            f"several PKCS#11 tokens are labelled {token_label!r} in {library}"
        ) from None
    except (exc_mod.PKCS11Error, OSError, RuntimeError) as exc:
        raise KeyServiceError(
            f"cannot load PKCS#11 library {library}: {type(exc).__name__}"
        ) from None
    try:
        session = token.open(rw=True, user_pin=pin)
    except (exc_mod.PinIncorrect, exc_mod.PinLenRange, exc_mod.PinInvalid):
        raise KeyServiceError(
            f"login to PKCS#11 token {token_label!r} failed: incorrect PIN"
        ) from None
    except exc_mod.PinLocked:
        raise KeyServiceError(f"PKCS#11 token {token_label!r}: the user PIN is locked") from None
    except exc_mod.PKCS11Error as exc:
        raise KeyServiceError(
            f"login to PKCS#11 token {token_label!r} failed: {type(exc).__name__}"
        ) from None
    return _Shared(session, _pin_digest(pin), _lock_path(real, token_label))


class Pkcs11Keyring:
    """KEKs inside a PKCS#11 token (an HSM; SoftHSM2 in tests), named ``pkcs11://<token>/<label>``.

    Args:
        library: Path of the PKCS#11 module, e.g. ``/usr/lib/softhsm/libsofthsm2.so``.
        token_label: The token's label.
        pin: The user PIN (never stored; compared through a per-process keyed digest).
        jurisdiction: Where this token's keys belong. Recorded in the token the first time; a
            later mismatch is refused.
        audit: Hook receiving key events, including jurisdiction refusals.

    Raises:
        MissingDependencyError: ``python-pkcs11`` is not installed (``pip install 'pets[hsm]'``).
        KeyNotFoundError: No token with that label.
        KeyServiceError: Wrong PIN (the message names the token, never the PIN), a library that
            will not load, or a token recorded under another jurisdiction.

    Example (needs a SoftHSM2 token; a process loads the module with one configuration, so the
    runnable version lives in ``tests/keys/test_pkcs11.py``)::

        >>> from pets import Context
        >>> hsm = Pkcs11Keyring(SOFTHSM2_LIBRARY, "EU", os.environ["PETS_PKCS11_PIN"],
        ...                     jurisdiction="EU")  # doctest: +SKIP
        >>> _ = hsm.create("pkcs11://EU/customers", jurisdiction="EU")  # doctest: +SKIP
        >>> w = hsm.wrap("pkcs11://EU/customers", b"k" * 32, context=Context("EU"))  # doctest: +SKIP
        >>> hsm.unwrap(w, context=Context("EU")) == b"k" * 32  # doctest: +SKIP
        True
    """

    scheme = "pkcs11"

    def __init__(self, library: str, token_label: str, pin: str, *, jurisdiction: str,
                 audit: AuditHook | None = None) -> None:
        self._pk: Any = require("pkcs11", "hsm")
        self.library = library
        self.token_label = token_label
        self.jurisdiction = Jurisdiction(jurisdiction).code
        self.audit = audit
        self._shared = _login(library, token_label, pin)
        #: Subscribers told after each rotate / retire / destroy through any keyring object on
        #: this token in this process (see :meth:`~pets.keys.KeyServices.subscribe`).
        self.changes: KeyChanges = self._shared.changes
        self._check_token_jurisdiction()

    def __repr__(self) -> str:
        return (f"Pkcs11Keyring(token={self.token_label!r}, jurisdiction={self.jurisdiction!r}, "
                f"library={self.library!r})")

    def __reduce__(self) -> NoReturn:
        raise TypeError("Pkcs11Keyring cannot be pickled: open it where it is used")

    # ---------------------------------------------------------------- helpers

    @property
    def _session(self) -> Any:
        return self._shared.session

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool = False) -> Iterator[None]:
        """Serialise use of the shared session (threads) and of the token (processes).

        ``exclusive`` for operations that change the token; token failures become
        KeyServiceError naming the token.
        """
        with self._shared.lock, _host_lock(self._shared, exclusive):
            try:
                yield
            except self._pk.exceptions.PKCS11Error as exc:
                raise KeyServiceError(
                    f"PKCS#11 token {self.token_label!r} failed: {type(exc).__name__}"
                ) from None

    def _find(self, attrs: Mapping[Any, Any]) -> list[Any]:
        return list(self._session.get_objects(dict(attrs)))

    def _check_token_jurisdiction(self) -> None:
        A, OC = self._pk.Attribute, self._pk.ObjectClass
        with self._locked(exclusive=True):
            found = self._find({A.CLASS: OC.DATA, A.LABEL: _TOKEN_MARKER})
            if not found:
                self._session.create_object({
                    A.CLASS: OC.DATA, A.LABEL: _TOKEN_MARKER, A.APPLICATION: "pets",
                    A.TOKEN: True, A.PRIVATE: True,
                    A.VALUE: json.dumps({"jurisdiction": self.jurisdiction}).encode(),
                })
                return
            try:
                recorded = json.loads(bytes(found[0][A.VALUE]))["jurisdiction"]
            except (ValueError, KeyError, TypeError):
                raise KeyServiceError(
                    f"PKCS#11 token {self.token_label!r}: unreadable pets marker"
                ) from None
        if recorded != self.jurisdiction:
            raise KeyServiceError(
                f"PKCS#11 token {self.token_label!r} holds {recorded} keys; it cannot be opened "
                f"as {self.jurisdiction}"
            )

    def _name(self, uri: str) -> str:
        scheme, authority, name = parse_key_uri(uri)
        if scheme != self.scheme or authority != self.token_label:
            raise KeyNotFoundError(f"no key {uri} (this is token pkcs11://{self.token_label})")
        return name

    def _meta_objs(self, uri: str) -> list[tuple[int, Any, bytes]]:
        """Every metadata object of ``uri`` as ``(generation, object, value)``, newest first."""
        A, OC = self._pk.Attribute, self._pk.ObjectClass
        out = []
        for obj in self._find({A.CLASS: OC.DATA, A.LABEL: _META_PREFIX + self._name(uri)}):
            raw = bytes(obj[A.VALUE])
            try:
                gen = int(json.loads(raw[:_MAX_META]).get("generation", 0))
            except (ValueError, AttributeError, TypeError):
                gen = -1
            out.append((gen, obj, raw))
        if not out:
            raise KeyNotFoundError(f"no key {uri}")
        return sorted(out, key=lambda t: t[0], reverse=True)

    def _meta(self, uri: str) -> dict[str, Any]:
        raw = self._meta_objs(uri)[0][2]
        try:
            if len(raw) > _MAX_META:
                raise ValueError("too large")
            doc = json.loads(raw)
            if doc["uri"] != uri:
                raise ValueError("wrong uri")
            self._info(doc)
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"metadata of {uri} in the token is malformed") from None
        if doc["jurisdiction"] != self.jurisdiction:
            raise KeyServiceError(
                f"{uri} is recorded as {doc['jurisdiction']} but the token is opened as "
                f"{self.jurisdiction}"
            )
        return dict(doc)

    def _save_meta(self, uri: str, doc: dict[str, Any], *, new: bool = False) -> None:
        """Store ``doc`` as a new generation, then remove older ones.

        Data objects' ``CKA_VALUE`` is read-only in SoftHSM, so an update is create-then-destroy;
        readers take the newest generation, so a crash in between loses nothing.
        """
        A, OC = self._pk.Attribute, self._pk.ObjectClass
        old = [] if new else self._meta_objs(uri)
        doc["generation"] = (old[0][0] + 1) if old else 1
        self._session.create_object({
            A.CLASS: OC.DATA, A.LABEL: _META_PREFIX + self._name(uri), A.APPLICATION: "pets",
            A.TOKEN: True, A.PRIVATE: True, A.VALUE: json.dumps(doc, sort_keys=True).encode(),
        })
        for _, obj, _ in old:
            obj.destroy()

    def _info(self, doc: Mapping[str, Any]) -> KeyInfo:
        states = {"active", "retired", "destroyed"}
        versions = []
        for v in doc["versions"]:
            if v["state"] not in states:
                raise ValueError("bad state")
            versions.append(KeyVersion(int(v["version"]), v["state"], str(v["created"])))
        return KeyInfo(
            uri=str(doc["uri"]), jurisdiction=Jurisdiction(str(doc["jurisdiction"])).code,
            primary_version=int(doc["primary_version"]),
            min_decryption_version=int(doc["min_decryption_version"]),
            versions=versions, backend="pkcs11",
            attributes={"token": self.token_label, "extractable": False, "sensitive": True,
                        "created": str(doc["created"])},
        )

    def _key(self, uri: str, version: int) -> Any:
        """The version's key object, after checking it is a KEK pets generated in the token.

        Raises:
            KeyDestroyedError: No such object (destroyed).
            IntegrityError: Several objects, or one that was imported, is (or was ever)
                extractable or not sensitive, or is not AES-256 — never used.
        """
        pk = self._pk
        A, OC = pk.Attribute, pk.ObjectClass
        found = self._find({A.CLASS: OC.SECRET_KEY, A.LABEL: self._name(uri),
                            A.ID: _version_id(version)})
        if not found:
            raise KeyDestroyedError(f"{uri} v{version} is not in the token (destroyed)")
        bad = IntegrityError(f"{uri} v{version}: the key object in the token is not a KEK pets "
                             f"generated there (imported, extractable or duplicated); refused")
        if len(found) != 1:
            raise bad
        obj = found[0]
        try:
            got = obj.get_attributes([A.LOCAL, A.NEVER_EXTRACTABLE, A.ALWAYS_SENSITIVE,
                                      A.EXTRACTABLE, A.SENSITIVE, A.KEY_TYPE, A.VALUE_LEN])
            ok = (got[A.LOCAL] is True and got[A.NEVER_EXTRACTABLE] is True
                  and got[A.ALWAYS_SENSITIVE] is True and got[A.EXTRACTABLE] is False
                  and got[A.SENSITIVE] is True and got[A.KEY_TYPE] == pk.KeyType.AES
                  and int(got[A.VALUE_LEN]) == 32)
        except (pk.exceptions.AttributeTypeInvalid, pk.exceptions.AttributeSensitive,
                KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise bad
        return obj

    def _generate(self, uri: str, version: int) -> None:
        pk = self._pk
        A = pk.Attribute
        self._session.generate_key(
            pk.KeyType.AES, 256, label=self._name(uri), id=_version_id(version), store=True,
            capabilities=pk.MechanismFlag.ENCRYPT | pk.MechanismFlag.DECRYPT,
            template={A.SENSITIVE: True, A.EXTRACTABLE: False, A.PRIVATE: True,
                      A.WRAP: False, A.UNWRAP: False, A.DERIVE: False,
                      A.SIGN: False, A.VERIFY: False,
                      A.MODIFIABLE: False, A.COPYABLE: False},
        )

    def _gcm(self, nonce: bytes, aad: bytes) -> Any:
        return self._pk.GCMParams(nonce, aad, 128)

    def _token_failures(self) -> tuple[type[BaseException], ...]:
        """PKCS#11 errors that mean the token or session failed, not that a blob is forged."""
        e = self._pk.exceptions
        return (e.DeviceError, e.DeviceMemory, e.DeviceRemoved, e.TokenNotPresent,
                e.TokenNotRecognised, e.SessionClosed, e.SessionHandleInvalid,
                e.UserNotLoggedIn, e.HostMemory, e.KeyHandleInvalid, e.ObjectHandleInvalid,
                e.OperationActive, e.FunctionCancelled)

    # ------------------------------------------------------------- protocol

    def supports(self, uri: str) -> bool:
        """True for ``pkcs11://<this token's label>/...`` URIs."""
        try:
            scheme, authority, _ = parse_key_uri(uri)
        except InputError:
            return False
        return scheme == self.scheme and authority == self.token_label

    def create(self, uri: str, *, jurisdiction: str) -> KeyInfo:
        """Generate version 1 inside the token (non-extractable, sensitive).

        Raises:
            InputError: ``jurisdiction`` is not this token's jurisdiction.
            KeyServiceError: The key already exists, or the token holds key objects with its
                label but no metadata (an interrupted create, or deleted metadata: pets will not
                guess whether data was wrapped under them).
        """
        code = Jurisdiction(jurisdiction).code
        if code != self.jurisdiction:
            raise InputError(
                f"token {self.token_label!r} holds {self.jurisdiction} keys; cannot create "
                f"{uri} for {code}"
            )
        self._name(uri)
        now = _now()
        doc = {"uri": uri, "jurisdiction": code, "created": now, "primary_version": 1,
               "min_decryption_version": 1,
               "versions": [{"version": 1, "state": "active", "created": now}]}
        with self._locked(exclusive=True):
            try:
                self._meta_objs(uri)
            except KeyNotFoundError:
                pass
            else:
                raise KeyServiceError(f"key {uri} already exists")
            A, OC = self._pk.Attribute, self._pk.ObjectClass
            if self._find({A.CLASS: OC.SECRET_KEY, A.LABEL: self._name(uri)}):
                raise KeyServiceError(
                    f"PKCS#11 token {self.token_label!r} holds key objects labelled "
                    f"{self._name(uri)!r} without pets metadata; remove them or use another label"
                )
            self._generate(uri, 1)
            self._save_meta(uri, doc, new=True)
        emit(self.audit, "key.create", key=uri, jurisdiction=code, version=1)
        return self._info(doc)

    def wrap(self, uri: str, dek: bytes, *, context: Context,
             enc_context: Mapping[str, str] | None = None) -> WrappedKey:
        """Wrap ``dek`` with AES-GCM inside the token under the primary version.

        Raises:
            InputError: ``dek`` is not 1..1024 bytes.
            KeyDestroyedError: The primary version is destroyed.
            IntegrityError: The key object is not a KEK pets generated in the token.
        """
        dek = check_dek(dek)
        with self._locked():
            doc = self._meta(uri)
            primary = int(doc["primary_version"])
            state = next((v["state"] for v in doc["versions"] if v["version"] == primary),
                         "destroyed")
            if state == "destroyed":
                raise KeyDestroyedError(f"{uri} v{primary} is destroyed")
            key = self._key(uri, primary)
            nonce = os.urandom(_NONCE)
            ct = key.encrypt(dek, mechanism=self._pk.Mechanism.AES_GCM,
                             mechanism_param=self._gcm(nonce, wrapping_aad(uri, primary,
                                                                           enc_context)))
        return WrappedKey(uri, primary, self.jurisdiction, nonce + bytes(ct))

    def unwrap(self, wrapped: WrappedKey, *, context: Context,
               enc_context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap inside the token; refused outside the token's jurisdiction before any use.

        Raises:
            JurisdictionError: ``context`` is in another jurisdiction (reported to audit).
            KeyDestroyedError: The version is destroyed or retired.
            IntegrityError: The blob or the encryption context does not authenticate, the
                wrapped key states another jurisdiction, or the key object is not a pets KEK.
            KeyServiceError: The token or session failed (not the blob).
        """
        uri, v = wrapped.key_uri, wrapped.version
        with self._locked():
            doc = self._meta(uri)
            info = self._info(doc)
            check_unwrap_allowed(info, context, self.audit)
            check_wrapped_matches(wrapped, info)
            check_version_usable(info, v)
            blob = wrapped.blob
            if len(blob) < _NONCE + _TAG:
                raise IntegrityError("wrapped key failed to authenticate")
            key = self._key(uri, v)
            try:
                dek = key.decrypt(blob[_NONCE:], mechanism=self._pk.Mechanism.AES_GCM,
                                  mechanism_param=self._gcm(blob[:_NONCE],
                                                            wrapping_aad(uri, v, enc_context)))
            except self._token_failures():
                raise  # the token, not the blob, failed: KeyServiceError via _locked
            except self._pk.exceptions.PKCS11Error:
                raise IntegrityError("wrapped key failed to authenticate") from None
        return bytes(dek)

    def rotate(self, uri: str) -> KeyInfo:
        """Generate a new version inside the token and make it primary.

        An object left with the new version's ID by an interrupted rotation (generated, but
        never recorded, so nothing was ever wrapped under it) is destroyed first.
        """
        A, OC = self._pk.Attribute, self._pk.ObjectClass
        with self._locked(exclusive=True):
            doc = self._meta(uri)
            new = max(int(v["version"]) for v in doc["versions"]) + 1
            for orphan in self._find({A.CLASS: OC.SECRET_KEY, A.LABEL: self._name(uri),
                                      A.ID: _version_id(new)}):
                orphan.destroy()
            self._generate(uri, new)
            doc["versions"].append({"version": new, "state": "active", "created": _now()})
            doc["primary_version"] = new
            self._save_meta(uri, doc)
        info = self._info(doc)
        try:
            self.changes.notify_info(info, "rotate")
        finally:
            emit(self.audit, "key.rotate", key=uri, version=new)
        return info

    def retire(self, uri: str, min_decryption_version: int) -> KeyInfo:
        """Refuse unwrap below ``min_decryption_version`` (lowering it revives versions)."""
        with self._locked(exclusive=True):
            doc = self._meta(uri)
            primary = int(doc["primary_version"])
            if not 1 <= min_decryption_version <= primary:
                raise InputError(f"{uri}: min_decryption_version must be 1..{primary}")
            for v in doc["versions"]:
                if v["state"] in ("active", "retired"):
                    v["state"] = "retired" if v["version"] < min_decryption_version else "active"
            doc["min_decryption_version"] = min_decryption_version
            self._save_meta(uri, doc)
        info = self._info(doc)
        try:
            self.changes.notify_info(info, "retire")
        finally:
            emit(self.audit, "key.retire", key=uri,
                 min_decryption_version=min_decryption_version)
        return info

    def destroy(self, uri: str, version: int | None = None) -> KeyInfo:
        """Destroy the version's key object(s) in the token (``C_DestroyObject``)."""
        A, OC = self._pk.Attribute, self._pk.ObjectClass
        with self._locked(exclusive=True):
            doc = self._meta(uri)
            present = {int(v["version"]) for v in doc["versions"]}
            targets = present if version is None else {version}
            if targets - present:
                raise KeyNotFoundError(f"{uri} has no version {min(targets - present)}")
            for t in sorted(targets):
                for obj in self._find({A.CLASS: OC.SECRET_KEY, A.LABEL: self._name(uri),
                                       A.ID: _version_id(t)}):
                    obj.destroy()
            for v in doc["versions"]:
                if v["version"] in targets:
                    v["state"] = "destroyed"
            self._save_meta(uri, doc)
        info = self._info(doc)
        try:
            self.changes.notify_info(info, "destroy", versions=targets)
        finally:
            emit(self.audit, "key.destroy", key=uri, versions=sorted(targets))
        return info

    def describe(self, uri: str) -> KeyInfo:
        """Public metadata from the token; never key bytes."""
        with self._locked():
            return self._info(self._meta(uri))

    def list(self) -> list[KeyInfo]:
        """Every pets KEK in this token, sorted by URI."""
        A, OC = self._pk.Attribute, self._pk.ObjectClass
        with self._locked():
            labels = sorted(
                str(o[A.LABEL]) for o in self._find({A.CLASS: OC.DATA, A.APPLICATION: "pets"})
                if str(o[A.LABEL]).startswith(_META_PREFIX)
            )
            return [
                self._info(self._meta(f"{self.scheme}://{self.token_label}/"
                                      f"{label[len(_META_PREFIX):]}"))
                for label in labels
            ]


_CONF_MARKER = "# written by pets.keys init_softhsm_tokens"


def _is_ours(conf: Path) -> bool:
    try:
        return conf.is_file() and conf.read_text().startswith(_CONF_MARKER)
    except OSError:
        return False


def init_softhsm_tokens(
    directory: str | os.PathLike[str],
    labels: Sequence[str],
    *,
    pin: str,
    so_pin: str,
    set_env: bool = True,
) -> Path:
    """Create a SoftHSM2 token directory with one initialised token per label (for tests/demos).

    Writes ``<directory>/softhsm2.conf`` and runs ``softhsm2-util --init-token --free`` for each
    label not yet present (the PINs appear on that command line: use it for test tokens only).
    With ``set_env``, points ``SOFTHSM2_CONF`` at the file. SoftHSM reads it when the library is
    first loaded and a process loads the library once, with one configuration; so with
    ``set_env``, when ``SOFTHSM2_CONF`` already names a configuration written by this function
    (earlier in this process, or inherited from a parent), that directory is reused and
    ``directory`` is ignored — test suites of several packages then share one token directory.
    Call it *before* the first :class:`Pkcs11Keyring` of the process: tokens created after the
    library is loaded are only seen by new processes.

    Returns:
        The configuration file in use.

    Raises:
        KeyServiceError: ``softhsm2-util`` is missing or fails.
    """
    util = shutil.which("softhsm2-util")
    if util is None:
        raise KeyServiceError("softhsm2-util not found (apt-get install softhsm2)")
    base = Path(directory)
    current = os.environ.get("SOFTHSM2_CONF")
    if set_env and current and _is_ours(Path(current)):
        base = Path(current).parent
    tokens = base / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = base / "softhsm2.conf"
    text = (f"{_CONF_MARKER}\ndirectories.tokendir = {tokens}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n")
    if not conf.is_file() or conf.read_text() != text:
        conf.write_text(text)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    shown = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [util, "--show-slots"], env=env, capture_output=True, text=True, check=False,
    ).stdout
    existing = {line.split(":", 1)[1].strip() for line in shown.splitlines()
                if line.strip().startswith("Label:")}
    for label in labels:
        if label in existing:
            continue
        r = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
            env=env, capture_output=True, text=True, check=False,
        )
        if r.returncode != 0:
            raise KeyServiceError(f"softhsm2-util could not create token {label!r}")
    if set_env:
        os.environ["SOFTHSM2_CONF"] = str(conf)
    return conf

"""The embedded default key service: a directory keystore with KEKs encrypted at rest.

Layout of a keyring directory (every file 0600, the directory 0700, every write atomic)::

    <dir>/keyring.json      {"format": "pets-local-keyring", "format_version": 1, "name": "eu",
                             "kdf": {"name": "none"} | {"name": "scrypt", "salt", "n", "r", "p"},
                             "check": b64(nonce ‖ AES-256-GCM(check-key, "pets-keyring-check"))}
    <dir>/keys/<name>.json  {"uri", "jurisdiction", "created", "primary_version",
                             "min_decryption_version", "generation",
                             "versions": [{"version", "state", "created",
                                           "kek": b64(nonce ‖ AES-256-GCM(kek-key, KEK, AAD))
                                                  | null once destroyed}],
                             "mac": hex HMAC-SHA256(meta-key, canonical JSON of the rest)}
    <dir>/.lock             lock file serialising writers across processes

The *root key* is the 32-byte master key (``PETS_MASTER_KEY``) or scrypt of a passphrase with the
stored salt. Three keys are derived from it with HKDF-SHA256 (info names the purpose and the
keyring): ``check`` proves the master key is right when the keyring is opened, ``kek`` encrypts
each KEK version, ``meta`` authenticates each key file. Each KEK version's AAD is the canonical
JSON of ``keyring, uri, jurisdiction, version, state``: editing any of them in the file (for
instance re-scoping a key from EU to US, or reviving a retired version) makes the key unusable
with :class:`~pets.IntegrityError`, never re-scoped.

Destroying a version deletes its encrypted KEK from the file and overwrites the previous file's
bytes in place before unlinking them (crypto-shredding as far as the filesystem allows: copy-on-
write filesystems, snapshots and backups may still hold old copies, each still encrypted under
the master key).

**Rollback.** An old copy of a key file is still authentic (same master key), so someone who can
write the directory and kept a copy can restore it and revive a version destroyed or retired
since. No check inside the directory can tell, because the whole directory can be rolled back
together. Each key file therefore carries a ``generation`` counter, raised by every write and
covered by the MAC: the process refuses a file older than one it has already read or written
through any :class:`LocalKeyring` on that keyring (:class:`~pets.IntegrityError`), and
``describe`` and every ``key.*`` audit event report the
generation, so an audit log kept elsewhere (``pets.boundary``) records the high-water mark a
verifier can compare with. Across restarts, only such external state detects a rollback.

**Errors name the file.** A key file that does not authenticate under the master key (bytes
flipped, truncated, replaced by another keyring's file), that authenticates but holds another
key (swapped with a sibling's file), or that was rolled back is reported as
:class:`~pets.KeyStoreIntegrityError` naming the file and the key URI: the key store is at fault,
not the data being decrypted (whose failures stay opaque) and not the master key (a wrong one is
refused when the keyring is opened, by its check value, with :class:`~pets.KeyServiceError`).

Writers hold an exclusive lock on ``<dir>/.lock`` (:func:`pets._lock.exclusive`, portable to
macOS and Windows); every write goes to a temporary
file (0600 from creation), is ``fsync``-ed, renamed over the old file, and the directory is
``fsync``-ed, so a rotation that returned survives a crash. Readers take no lock: a reader that
raced a rename and read the replaced file's shredded bytes reads the new file again instead of
reporting tampering.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pets._errors import (
    InputError,
    IntegrityError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
    KeyStoreIntegrityError,
)
from pets._events import AuditHook, emit
from pets._io import atomic_path
from pets._lock import exclusive
from pets.jurisdiction import Context, Jurisdiction
from pets.keys._memory import wrapping_aad
from pets.keys._secret import Secret
from pets.keys._service import (
    KeyChanges,
    KeyInfo,
    KeyVersion,
    WrappedKey,
    canonical_context,
    check_dek,
    check_unwrap_allowed,
    check_version_usable,
    check_wrapped_matches,
    parse_key_uri,
)

__all__ = ["LocalKeyring"]

_FORMAT = "pets-local-keyring"
_FORMAT_VERSION = 1
_NONCE = 12
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CHECK_PLAINTEXT = b"pets-keyring-check"
_MAX_FILE = 1 << 20  # a key file larger than this is hostile
_SCRYPT_N = 1 << 15
_SCRYPT_MIN_N = 1 << 12
_SCRYPT_MAX_MEM = 1 << 28  # 128 * r * n bytes: refuse headers asking for more (hostile)
_SCRYPT_MAX_WORK = 1 << 21  # n * r * p: the same bound on time
_LOAD_ATTEMPTS = 4

State = Literal["active", "retired", "destroyed"]

# Highest key-file generation this process has read or written, per (keyring directory, keyring
# check value, key URI): every LocalKeyring object on the same keyring shares it, so a file
# rolled back while the process runs is refused whichever object reads it next.
_SEEN: dict[tuple[str, str, str], int] = {}
_SEEN_LOCK = threading.Lock()
# One change hub per keyring (directory, check value): a destroy made through any LocalKeyring
# object on the keyring reaches the caches subscribed through any other object in this process.
_CHANGES: dict[tuple[str, str], KeyChanges] = {}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


def _derive(root: bytes, purpose: str, name: str) -> Secret:
    info = b"pets-local-keyring-v1\x00" + purpose.encode() + b"\x00" + name.encode()
    return Secret(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root))


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _scrypt_params_ok(n: int, r: int, p: int) -> bool:
    """Power-of-two ``n`` of at least 2^12; at most 256 MiB and 2^21 ``n*r*p`` (a hostile
    header cannot make opening the keyring exhaust memory or time)."""
    return (_SCRYPT_MIN_N <= n and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
            and 128 * r * n <= _SCRYPT_MAX_MEM and n * r * p <= _SCRYPT_MAX_WORK)


@dataclass(frozen=True)
class _Keys:
    check: Secret
    kek: Secret
    meta: Secret


class LocalKeyring:
    """KEKs in a directory, encrypted at rest under a master key, named ``local://<ring>/<key>``.

    Args:
        path: The keyring directory (created by :meth:`init`).
        master_key: The 32-byte master key, for keyrings initialised with one.
        passphrase: The passphrase, for keyrings initialised with one (scrypt, stored salt).
            When neither is given they are read from ``PETS_MASTER_KEY`` (64 hex digits or
            base64 of 32 bytes) and ``PETS_KEYRING_PASSPHRASE`` in ``environ``.
        audit: Hook receiving ``key.create``/``rotate``/``retire``/``destroy``/``refused`` events.
        environ: Environment to read the secret from when none is passed (default
            ``os.environ``).

    Raises:
        KeyServiceError: No keyring at ``path``, or the master key/passphrase is wrong (the
            message names the keyring, never the secret).

    Examples:
        >>> import tempfile, pathlib
        >>> from pets import Context
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "ring"
        >>> ring = LocalKeyring.init(d, name="eu", master_key=Secret(bytes(32)))
        >>> info = ring.create("local://eu/customers", jurisdiction="EU")
        >>> w = ring.wrap("local://eu/customers", b"k" * 32, context=Context("EU"))
        >>> ring.unwrap(w, context=Context("EU")) == b"k" * 32
        True
        >>> ring.unwrap(w, context=Context("US", principal="bob"))
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: key local://eu/customers belongs to EU; unwrap refused for bob@US
        >>> LocalKeyring(d, master_key=Secret(b"x" * 32))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pets._errors.KeyServiceError: cannot open keyring 'eu' at ...: wrong master key or passphrase
    """

    scheme = "local"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        master_key: Secret | None = None,
        passphrase: str | None = None,
        audit: AuditHook | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.audit = audit
        if master_key is None and passphrase is None:
            from pets.keys._config import master_key_from_env

            master_key, passphrase = master_key_from_env(environ)
        head = self._read_header(self.path)
        self.name: str = head["name"]
        self._keys = self._open(head, master_key, passphrase)
        # This keyring's identity for the rollback high-water marks: its directory and its
        # random check value (a keyring deleted and re-created at the same path is another one).
        self._ident = (os.path.realpath(self.path), str(head["check"]))
        with _SEEN_LOCK:
            #: Subscribers told after each rotate / retire / destroy through any object on this
            #: keyring in this process (see :class:`~pets.keys.KeyServices.subscribe`).
            self.changes: KeyChanges = _CHANGES.setdefault(self._ident, KeyChanges())

    # ----------------------------------------------------------------- set-up

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """True when ``path`` holds an initialised keyring."""
        return (Path(path) / "keyring.json").is_file()

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str,
        master_key: Secret | None = None,
        passphrase: str | None = None,
        audit: AuditHook | None = None,
        scrypt_n: int = _SCRYPT_N,
    ) -> LocalKeyring:
        """Create an empty keyring named ``name`` (the authority of its ``local://`` URIs).

        Give exactly one of ``master_key`` (32 random bytes kept in a secret store) or
        ``passphrase`` (stretched with scrypt, ``n=scrypt_n, r=8, p=1``, random 16-byte salt).
        ``scrypt_n`` must be a power of two from 2^12 to 2^18 (default 2^15: 32 MiB).

        Raises:
            InputError: Bad name, bad ``scrypt_n``, or not exactly one of master key /
                passphrase.
            KeyServiceError: ``path`` already holds a keyring.
        """
        if not _NAME.match(name):
            raise InputError(f"invalid keyring name {name!r}: use 1-64 letters, digits, _ . -")
        if (master_key is None) == (passphrase is None):
            raise InputError("give exactly one of master_key or passphrase")
        path = Path(path)
        if cls.exists(path):
            raise KeyServiceError(f"{path} already holds a keyring")
        if master_key is not None:
            if len(master_key) != 32:
                raise InputError("master key must be 32 bytes")
            kdf: dict[str, Any] = {"name": "none"}
            root = master_key.expose()
        else:
            assert passphrase is not None
            if not passphrase:
                raise InputError("passphrase must not be empty")
            if not _scrypt_params_ok(scrypt_n, 8, 1):
                raise InputError(f"scrypt_n must be a power of two from 2^12 to 2^18, not "
                                 f"{scrypt_n}")
            salt = os.urandom(16)
            kdf = {"name": "scrypt", "salt": _b64(salt), "n": scrypt_n, "r": 8, "p": 1}
            root = _scrypt(passphrase, salt, scrypt_n, 8, 1)
        check_key = _derive(root, "check", name)
        nonce = os.urandom(_NONCE)
        check = nonce + AESGCM(check_key.expose()).encrypt(nonce, _CHECK_PLAINTEXT, name.encode())
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        (path / "keys").mkdir(mode=0o700, exist_ok=True)
        os.chmod(path / "keys", 0o700)  # also when it existed already, with looser modes
        head = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "name": name, "kdf": kdf,
                "check": _b64(check), "created": _now()}
        with _locked(path):
            if cls.exists(path):
                raise KeyServiceError(f"{path} already holds a keyring")
            _write_json(path / "keyring.json", head)
        emit(audit, "keyring.init", keyring=name, path=str(path), kdf=kdf["name"])
        return cls(path, master_key=master_key, passphrase=passphrase, audit=audit)

    @staticmethod
    def _read_header(path: Path) -> dict[str, Any]:
        file = path / "keyring.json"
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise KeyServiceError(
                f"no keyring at {path}: create one with `pets keys init`"
            ) from None
        except OSError as exc:
            raise KeyServiceError(f"cannot read {file}: {exc.strerror}") from None
        try:
            head = json.loads(raw)
            ok = (isinstance(head, dict) and head.get("format") == _FORMAT
                  and isinstance(head.get("name"), str) and _NAME.match(head["name"])
                  and isinstance(head.get("kdf"), dict))
        except (json.JSONDecodeError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise KeyServiceError(f"{file} is not a pets keyring")
        if head.get("format_version") != _FORMAT_VERSION:
            raise KeyServiceError(
                f"{file}: unsupported keyring format version {head.get('format_version')!r}"
            )
        return dict(head)

    def _open(self, head: dict[str, Any], master_key: Secret | None,
              passphrase: str | None) -> _Keys:
        kdf = head["kdf"]
        where = f"keyring {self.name!r} at {self.path}"
        try:
            if kdf.get("name") == "none":
                if master_key is None:
                    raise KeyServiceError(
                        f"{where} needs its master key: set PETS_MASTER_KEY"
                    )
                root = master_key.expose()
            elif kdf.get("name") == "scrypt":
                if passphrase is None:
                    raise KeyServiceError(
                        f"{where} needs its passphrase: set PETS_KEYRING_PASSPHRASE"
                    )
                n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
                if not _scrypt_params_ok(n, r, p):  # checked before any memory is spent
                    raise KeyServiceError(f"{where}: scrypt parameters out of range")
                root = _scrypt(passphrase, _unb64(kdf["salt"]), n, r, p)
            else:
                raise KeyServiceError(f"{where}: unknown key derivation {kdf.get('name')!r}")
            keys = _Keys(_derive(root, "check", self.name), _derive(root, "kek", self.name),
                         _derive(root, "meta", self.name))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise KeyServiceError(
                f"cannot open {where}: wrong master key or passphrase"
            ) from None
        try:
            check = _unb64(head["check"])
            AESGCM(keys.check.expose()).decrypt(check[:_NONCE], check[_NONCE:],
                                                self.name.encode())
        except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error):
            witness = self._authentic_key_file(keys)
            if witness is not None:  # the master key is right: keyring.json is the fault
                raise KeyStoreIntegrityError(
                    f"keyring file {self.path / 'keyring.json'} of {where} failed to "
                    f"authenticate: its check value is corrupted or replaced (the master key "
                    f"is right: {witness} authenticates under it)") from None
            raise KeyServiceError(
                f"cannot open {where}: wrong master key or passphrase"
            ) from None
        return keys

    def _authentic_key_file(self, keys: _Keys, limit: int = 8) -> Path | None:
        """A key file (of the first ``limit``) whose MAC verifies under ``keys``, if any."""
        try:
            files = sorted((self.path / "keys").glob("*.json"))[:limit]
        except OSError:
            return None
        for file in files:
            try:
                raw = file.read_bytes()[: _MAX_FILE + 1]
            except OSError:
                continue
            doc, _ = _verify(keys.meta, raw)
            if doc is not None:
                return file
        return None

    # ---------------------------------------------------------------- helpers

    def __repr__(self) -> str:
        return f"LocalKeyring(name={self.name!r}, path={str(self.path)!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("LocalKeyring cannot be pickled: open it where it is used")

    def supports(self, uri: str) -> bool:
        """True for ``local://<this keyring's name>/...`` URIs."""
        try:
            scheme, authority, _ = parse_key_uri(uri)
        except InputError:
            return False
        return scheme == self.scheme and authority == self.name

    def _file(self, uri: str) -> Path:
        scheme, authority, name = parse_key_uri(uri)
        if scheme != self.scheme or authority != self.name:
            raise KeyNotFoundError(f"no key {uri} (this is keyring local://{self.name})", key=uri)
        if not _NAME.match(name):
            raise InputError(f"invalid key name in {uri!r}: use 1-64 letters, digits, _ . -")
        return self.path / "keys" / f"{name}.json"

    def _mac(self, body: Mapping[str, Any]) -> bytes:
        h = _hmac.HMAC(self._keys.meta.expose(), hashes.SHA256())
        h.update(b"pets-local-key-file-v1\x00" + _canonical(body))
        return h.finalize()

    def _kek_aad(self, uri: str, jurisdiction: str, version: int, state: str) -> bytes:
        return b"pets-local-kek-v1\x00" + canonical_context({
            "keyring": self.name, "uri": uri, "jurisdiction": jurisdiction,
            "version": str(version), "state": state,
        })

    def _seal_kek(self, uri: str, jurisdiction: str, version: int, state: str,
                  kek: bytes) -> str:
        nonce = os.urandom(_NONCE)
        aad = self._kek_aad(uri, jurisdiction, version, state)
        return _b64(nonce + AESGCM(self._keys.kek.expose()).encrypt(nonce, kek, aad))

    def _open_kek(self, uri: str, body: Mapping[str, Any], version: int) -> bytes:
        v = _version_entry(body, version)
        sealed = v.get("kek")
        if sealed is None:
            raise KeyDestroyedError(f"{uri} v{version} is destroyed")
        try:
            blob = _unb64(sealed)
            aad = self._kek_aad(uri, body["jurisdiction"], version, v["state"])
            return AESGCM(self._keys.kek.expose()).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error):
            raise KeyStoreIntegrityError(
                f"keyring file {self._file(uri)} for {uri}: the KEK of version {version} failed "
                f"to authenticate under the master key: corrupted or replaced") from None

    def _load(self, uri: str) -> dict[str, Any]:
        """Read and authenticate the key file (no KEK is decrypted).

        A file that fails its check but was replaced meanwhile (a writer renamed a new one over
        it, and ``destroy`` overwrote the old bytes) is read again; one older than a generation
        this object already read is refused as a rollback.
        """
        file = self._file(uri)
        doc: dict[str, Any] | None = None
        why = ""
        gen = seen = -1
        for attempt in range(_LOAD_ATTEMPTS):
            try:
                fh = open(file, "rb")
            except FileNotFoundError:
                raise KeyNotFoundError(f"no key {uri}", key=uri) from None
            except OSError as exc:
                raise KeyServiceError(f"cannot read key file for {uri}: {exc.strerror}") from None
            # The file stays open until the replaced-check below: closed, its inode number could
            # be reused by the next write's file, which would then look "not replaced" and turn
            # a concurrent rotate/destroy into a false rollback alarm.
            with fh:
                try:
                    st = os.fstat(fh.fileno())
                    raw = fh.read(_MAX_FILE + 1)
                except OSError as exc:
                    raise KeyServiceError(
                        f"cannot read key file for {uri}: {exc.strerror}") from None
                doc, why = self._authenticate(uri, raw)
                if doc is not None:
                    gen = int(doc.get("generation", 0))
                    with _SEEN_LOCK:
                        seen = _SEEN.get((*self._ident, uri), -1)
                        if gen >= seen:
                            _SEEN[(*self._ident, uri)] = gen
                            return doc
                # Bad or older than already seen: a writer may have renamed a newer file over
                # the one we opened (and shredded it) — then read again; otherwise tampering.
                replaced = _replaced(file, st)
            if attempt + 1 == _LOAD_ATTEMPTS or not replaced:
                break
        if doc is None:
            raise KeyStoreIntegrityError(f"keyring file {file} for {uri} {why}")
        raise KeyStoreIntegrityError(
            f"keyring file {file} for {uri} is older (generation {gen}) than one already read "
            f"(generation {seen}): it was rolled back"
        )

    def _authenticate(self, uri: str, raw: bytes) -> tuple[dict[str, Any] | None, str]:
        """The key file's body if ``raw`` is authentic, well-formed and names ``uri``; else
        ``None`` and what is wrong with it (for the error message)."""
        doc, why = _verify(self._keys.meta, raw)
        if doc is None:
            return None, why
        if doc.get("uri") != uri:
            # authentic (the MAC verified), so the URI it states is this keyring's own word
            return None, (f"holds the key {doc.get('uri')!r}, not {uri}: swapped with another "
                          f"key's file")
        try:
            self._info(doc)  # structural check
            if not isinstance(doc.get("generation", 0), int):
                raise ValueError("generation")
        except (AttributeError, KeyError, TypeError, ValueError, InputError):
            return None, "authenticates but is malformed (written by an incompatible version?)"
        return doc, ""

    def _store(self, uri: str, body: dict[str, Any], *, shred_previous: bool = False) -> None:
        """Write ``body`` (generation raised by one, MAC added) atomically; call under the lock."""
        body["generation"] = int(body.get("generation", 0)) + 1
        doc = dict(body)
        doc["mac"] = self._mac(body).hex()
        file = self._file(uri)
        old = None
        if shred_previous:
            with contextlib.suppress(FileNotFoundError):
                old = open(file, "r+b")  # kept open across the rename
        try:
            _write_json(file, doc)
            if old is not None:
                size = os.fstat(old.fileno()).st_size
                old.seek(0)
                old.write(os.urandom(size))
                old.flush()
                os.fsync(old.fileno())
        finally:
            if old is not None:
                old.close()
        with _SEEN_LOCK:
            mark = (*self._ident, uri)
            _SEEN[mark] = max(_SEEN.get(mark, -1), body["generation"])

    def _info(self, body: Mapping[str, Any]) -> KeyInfo:
        versions = [KeyVersion(int(v["version"]), _state(v["state"]), str(v["created"]))
                    for v in body["versions"]]
        return KeyInfo(
            uri=str(body["uri"]),
            jurisdiction=Jurisdiction(str(body["jurisdiction"])).code,
            primary_version=int(body["primary_version"]),
            min_decryption_version=int(body["min_decryption_version"]),
            versions=versions,
            backend="local",
            attributes={"keyring": self.name, "created": str(body["created"]),
                        "generation": int(body.get("generation", 0))},
        )

    @contextlib.contextmanager
    def _mutate(self, uri: str) -> Iterator[dict[str, Any]]:
        with _locked(self.path):
            body = self._load(uri)
            yield body

    # ------------------------------------------------------------- protocol

    def create(self, uri: str, *, jurisdiction: str) -> KeyInfo:
        """Create a KEK (version 1, 32 random bytes) that belongs to ``jurisdiction``.

        Raises:
            KeyNotFoundError: ``uri`` names another keyring or scheme.
            KeyServiceError: A key with that URI already exists.
        """
        file = self._file(uri)
        code = Jurisdiction(jurisdiction).code
        now = _now()
        kek = AESGCM.generate_key(bit_length=256)
        body: dict[str, Any] = {
            "uri": uri, "jurisdiction": code, "created": now, "primary_version": 1,
            "min_decryption_version": 1,
            "versions": [{"version": 1, "state": "active", "created": now,
                          "kek": self._seal_kek(uri, code, 1, "active", kek)}],
        }
        with _locked(self.path):
            if file.exists():
                raise KeyServiceError(f"key {uri} already exists")
            self._store(uri, body)
        emit(self.audit, "key.create", key=uri, jurisdiction=code, version=1,
             generation=body["generation"])
        return self._info(body)

    def wrap(self, uri: str, dek: bytes, *, context: Context,
             enc_context: Mapping[str, str] | None = None) -> WrappedKey:
        """Wrap ``dek`` (AES-256-GCM) under the primary version with the wrapping AAD.

        Wrapping releases nothing, so it is allowed from any jurisdiction; note that it decrypts
        the KEK in this process (a local keyring has no separate key server).

        Raises:
            InputError: ``dek`` is not 1..1024 bytes.
            KeyDestroyedError: The primary version is destroyed.
        """
        dek = check_dek(dek)
        body = self._load(uri)
        primary = int(body["primary_version"])
        kek = self._open_kek(uri, body, primary)
        nonce = os.urandom(_NONCE)
        aad = wrapping_aad(uri, primary, enc_context)
        blob = nonce + AESGCM(kek).encrypt(nonce, dek, aad)
        return WrappedKey(uri, primary, str(body["jurisdiction"]), blob)

    def unwrap(self, wrapped: WrappedKey, *, context: Context,
               enc_context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap; the jurisdiction check runs before any KEK is decrypted.

        Raises:
            JurisdictionError: ``context`` is outside the key's jurisdiction (reported to audit).
            KeyNotFoundError: Unknown key or version.
            KeyDestroyedError: The version is destroyed or retired.
            IntegrityError: The blob, the encryption context or the key file do not authenticate,
                or the wrapped key states another jurisdiction than its KEK's.
        """
        body = self._load(wrapped.key_uri)
        info = self._info(body)
        check_unwrap_allowed(info, context, self.audit)
        check_wrapped_matches(wrapped, info)
        v = wrapped.version
        check_version_usable(info, v)
        kek = self._open_kek(wrapped.key_uri, body, v)
        blob = wrapped.blob
        try:
            return AESGCM(kek).decrypt(blob[:_NONCE], blob[_NONCE:],
                                       wrapping_aad(wrapped.key_uri, v, enc_context))
        except (InvalidTag, ValueError):
            raise IntegrityError("wrapped key failed to authenticate") from None

    def rotate(self, uri: str) -> KeyInfo:
        """Add a new version (fresh random KEK) and make it primary."""
        with self._mutate(uri) as body:
            new = max(int(v["version"]) for v in body["versions"]) + 1
            now = _now()
            body["versions"].append({
                "version": new, "state": "active", "created": now,
                "kek": self._seal_kek(uri, body["jurisdiction"], new, "active",
                                      AESGCM.generate_key(bit_length=256)),
            })
            body["primary_version"] = new
            self._store(uri, body)
        info = self._info(body)
        try:
            self.changes.notify_info(info, "rotate")
        finally:
            emit(self.audit, "key.rotate", key=uri, version=new, generation=body["generation"])
        return info

    def retire(self, uri: str, min_decryption_version: int) -> KeyInfo:
        """Refuse unwrap below ``min_decryption_version``; lowering it again revives versions.

        Each affected version's KEK is re-sealed with its new state in the AAD.
        """
        with self._mutate(uri) as body:
            primary = int(body["primary_version"])
            if not 1 <= min_decryption_version <= primary:
                raise InputError(f"{uri}: min_decryption_version must be 1..{primary}")
            for v in body["versions"]:
                n, state = int(v["version"]), v["state"]
                want = ("retired" if n < min_decryption_version else "active")
                if state in ("active", "retired") and state != want:
                    kek = self._open_kek(uri, body, n)
                    v["state"] = want
                    v["kek"] = self._seal_kek(uri, body["jurisdiction"], n, want, kek)
            body["min_decryption_version"] = min_decryption_version
            self._store(uri, body)
        info = self._info(body)
        try:
            self.changes.notify_info(info, "retire")
        finally:
            emit(self.audit, "key.retire", key=uri,
                 min_decryption_version=min_decryption_version, generation=body["generation"])
        return info

    def destroy(self, uri: str, version: int | None = None) -> KeyInfo:
        """Crypto-shred one version (or all): delete its KEK and overwrite the old file."""
        with self._mutate(uri) as body:
            present = {int(v["version"]) for v in body["versions"]}
            targets = present if version is None else {version}
            missing = targets - present
            if missing:
                raise KeyNotFoundError(f"{uri} has no version {min(missing)}")
            for v in body["versions"]:
                if int(v["version"]) in targets:
                    v["state"] = "destroyed"
                    v["kek"] = None
            self._store(uri, body, shred_previous=True)
        info = self._info(body)
        try:
            self.changes.notify_info(info, "destroy", versions=targets)
        finally:
            emit(self.audit, "key.destroy", key=uri, versions=sorted(targets),
                 generation=body["generation"])
        return info

    def describe(self, uri: str) -> KeyInfo:
        """Public metadata of ``uri`` (authenticated; never key bytes)."""
        return self._info(self._load(uri))

    def list(self) -> list[KeyInfo]:
        """Every key in this keyring, sorted by URI."""
        keys_dir = self.path / "keys"
        names = sorted(p.name[: -len(".json")] for p in keys_dir.glob("*.json")
                       if p.is_file() and _NAME.match(p.name[: -len(".json")]))
        out = []
        for name in names:
            with contextlib.suppress(KeyNotFoundError):  # deleted meanwhile
                out.append(self.describe(f"{self.scheme}://{self.name}/{name}"))
        return out


_UNAUTHENTIC = "failed to authenticate under the master key: corrupted or replaced"


def _verify(meta: Secret, raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """The body of a key file whose MAC verifies under ``meta``; else ``None`` and why."""
    if len(raw) > _MAX_FILE:
        return None, f"is larger than {_MAX_FILE} bytes: {_UNAUTHENTIC}"
    try:
        doc = json.loads(raw)
        mac = bytes.fromhex(doc.pop("mac"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"is not JSON (truncated or overwritten): {_UNAUTHENTIC}"
    except (AttributeError, KeyError, TypeError, ValueError):
        return None, f"has no valid MAC: {_UNAUTHENTIC}"
    h = _hmac.HMAC(meta.expose(), hashes.SHA256())
    try:
        h.update(b"pets-local-key-file-v1\x00" + _canonical(doc))
        h.verify(mac)
    except (InvalidSignature, TypeError, ValueError):
        return None, _UNAUTHENTIC
    return dict(doc), ""


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _state(value: Any) -> State:
    if value not in ("active", "retired", "destroyed"):
        raise ValueError("bad state")
    return value  # type: ignore[no-any-return]


def _version_entry(body: Mapping[str, Any], version: int) -> dict[str, Any]:
    for v in body["versions"]:
        if int(v["version"]) == version:
            return dict(v)
    raise KeyNotFoundError(f"{body['uri']} has no version {version}")


def _write_json(file: Path, doc: Mapping[str, Any]) -> None:
    """Atomic, durable write: temp file (0600, fsync-ed by ``atomic_path``), rename, then fsync
    the directory so the rename itself survives a crash."""
    try:
        with atomic_path(file, mode=0o600) as tmp:
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        _fsync_dir(file.parent)
    except OSError as exc:
        raise KeyServiceError(f"cannot write {file}: {exc.strerror}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replaced(file: Path, opened: os.stat_result) -> bool:
    """True when ``file`` now names another inode than the one that was read."""
    try:
        now = os.stat(file)
    except OSError:
        return False
    return (now.st_ino, now.st_dev) != (opened.st_ino, opened.st_dev)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``<path>/.lock`` (across processes and threads)."""
    lock = contextlib.ExitStack()
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock.enter_context(exclusive(path / ".lock"))
    except OSError as exc:
        raise KeyServiceError(f"cannot lock keyring {path}: {exc.strerror or exc}") from None
    with lock:
        yield

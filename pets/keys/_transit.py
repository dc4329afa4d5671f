"""A real key server behind the key-service protocol: OpenBao / HashiCorp Vault *transit*.

Keys are named ``vault://<server-name>/<key>``; ``<server-name>`` is a :class:`TransitServer`
from the configuration (its URL, transit mount, jurisdiction and how to log in), ``<key>`` the
transit key's name. On the server each KEK is a transit key of type ``aes256-gcm96``, created
non-exportable and without plaintext backup: **key bytes never leave the server.** pets versions
are transit's versions.

* ``wrap`` is ``POST <mount>/encrypt/<key>`` of the data key, with ``key_version`` = the primary
  version pets checked and ``associated_data`` = :func:`~pets.keys.canonical_context` of the
  encryption context; the blob is the server's ciphertext text ``vault:v<N>:<base64>`` (ASCII).
* ``unwrap`` is ``POST <mount>/decrypt/<key>`` with the same associated data. Another context, a
  flipped byte or a blob whose ``v<N>`` prefix is not the wrapped key's version fails with the
  same opaque :class:`~pets.IntegrityError` as every other backend.
* ``rotate`` → ``keys/<key>/rotate``; ``retire`` → ``min_decryption_version``; ``destroy`` of the
  whole key → ``deletion_allowed`` then ``DELETE keys/<key>``; ``destroy`` of one version →
  ``keys/<key>/trim``, which deletes every version below ``min_available_version`` for good.
  Transit can only trim *oldest first* and never the newest version, so destroying one version
  works for the oldest remaining version that is not the primary; other requests are refused
  with :class:`~pets.KeyServiceError` saying what to do. Before using a key, its metadata is read
  and refused (:class:`~pets.IntegrityError`) unless it is an ``aes256-gcm96`` key that was never
  exportable, never allowed plaintext backup, is not derived and was not imported (an imported
  key's bytes are known to whoever imported it).

**Who may use a key is decided by the server, from authentication.** The server's jurisdiction
is declared in the configuration; on first use the service logs in (AppRole, or a token from
the environment) and asks the server who it is (``auth/token/lookup-self``: policies, role,
metadata). The :class:`~pets.Context` a process passes is only a *hint*, checked three times:

1. locally, against the server's declared jurisdiction (a process that says it runs in the US
   is refused an EU key without a request, as with every backend);
2. against the identity the server vouches for: a token whose metadata carries
   ``pets_jurisdiction`` (set by the administrator on the AppRole secret-id or the token, never
   by the client) of another jurisdiction is refused before any key request;
3. by the server itself: its policies decide, and a ``403 permission denied`` becomes
   :class:`~pets.JurisdictionError` (exit 4) naming the key and server — also when the process
   claims ``Context("EU")``. A modified client skips 1 and 2; it cannot skip 3.

A ``403`` is told apart from a dead token by asking ``lookup-self`` again: if that fails too, the
token was revoked or expired — AppRole logs in again once, a static token is a
:class:`~pets.KeyServiceError`. Server down, timeouts, ``5xx``, an expired or wrong secret-id and
a missing credential are :class:`~pets.KeyServiceError` (exit 7) naming the server, never the
secret. Retries are bounded, with exponential backoff, by a ``urllib3`` :class:`Retry` mounted on
the ``requests`` session hvac uses: connection failures are retried for every request (nothing
reached the server), ``429/502/503/504`` and read timeouts only for requests that are safe to
repeat (reads, ``encrypt``, ``decrypt``, login, ``lookup-self``) — never ``rotate`` or ``trim``.

**Workers and the task graph.** :class:`TransitServer` is a frozen, picklable description that
holds *names* of environment variables and files, never a token or secret-id (nor does its
``repr``). A :class:`~pets.keys.KeyConfig` carrying servers can be shipped to a Dask worker; the
worker builds its own :class:`TransitKeyService`, which reads the credentials from the
*worker's* environment and logs in as the worker's own identity. So no key, token or secret-id
is ever in the task graph (which the scheduler stores and may spill or log), each worker is
answerable to the server's policies and audit device under its own identity, and revoking one
worker's secret-id cuts that worker off alone. :class:`TransitKeyService` itself refuses to be
pickled.

What this does not cover: wrapping and unwrapping send the data key over the connection, so use
``https`` (``http://`` is refused except to a loopback address); the server's operators (root
token, unseal keys, storage snapshots) can read every key; a trimmed or deleted version may
survive in the storage backend's old pages or snapshots, encrypted under the server's barrier
key, until those are gone; caches of unwrapped keys in *other* processes are not told about
changes (see ``docs/keys.md``).

Example (needs a running OpenBao/Vault; the runnable version lives in
``tests/keys/test_transit.py``)::

    >>> server = TransitServer.from_dict("eu-ireland", {
    ...     "url": "https://bao.eu-ireland.example:8200", "jurisdiction": "EU",
    ...     "auth": {"method": "approle", "role_id_file": "/run/secrets/role-id",
    ...              "secret_id_env": "PETS_VAULT_SECRET_ID"}})
    >>> server.auth.method, server.mount
    ('approle', 'transit')
    >>> svc = TransitKeyService(server)  # doctest: +SKIP
    >>> w = svc.wrap("vault://eu-ireland/customers", b"k" * 32,
    ...              context=Context("EU"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import ipaddress
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

from pets._errors import (
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
    require,
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
    check_version_usable,
    check_wrapped_matches,
    parse_key_uri,
)

__all__ = [
    "TransitAuth",
    "TransitIdentity",
    "TransitKeyService",
    "TransitServer",
    "transit_servers_from_dict",
]

T = TypeVar("T")

#: Token metadata key naming the identity's jurisdiction (set by the server's administrator).
IDENTITY_JURISDICTION = "pets_jurisdiction"
KEY_TYPE = "aes256-gcm96"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_MOUNT = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_CIPHERTEXT = re.compile(r"^vault:v(?P<version>[1-9][0-9]{0,9}):[A-Za-z0-9+/=]+$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
_SERVER_KEYS = ("url", "jurisdiction", "mount", "auth", "ca_cert", "timeout", "retries")
_AUTH_KEYS = {
    "token": ("method", "token_env"),
    "approle": ("method", "mount", "role_id_env", "role_id_file", "secret_id_env",
                "secret_id_file"),
}
_LITERAL_SECRETS = ("token", "secret_id", "role_id", "password")
#: Requests that may be repeated after a timeout or a 429/502/503/504 (path suffixes).
_REPEATABLE_POSTS = ("encrypt/", "decrypt/")


def _check_keys(spec: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(spec, Mapping):
        raise InputError(f"{where} must be a mapping, not {type(spec).__name__}")
    for key in spec:
        if key in _LITERAL_SECRETS:
            raise InputError(
                f"{where}: {key!r} is a secret and never goes in configuration: name an "
                f"environment variable ({key}_env) or a file ({key}_file) instead")
        if key not in allowed:
            raise InputError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _text(spec: Mapping[str, Any], key: str, where: str) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


@dataclass(frozen=True)
class TransitAuth:
    """How to log in to a transit server. Holds *where* secrets are, never a secret.

    ``method="token"`` reads a token from the environment variable ``token_env``.
    ``method="approle"`` reads the role-id and the secret-id each from an environment variable
    (``*_env``) or a file (``*_file``, e.g. written by an agent or a secrets mount), at each
    login — a rotated secret-id file is picked up at the next login.

    Examples:
        >>> TransitAuth("approle", role_id_env="ROLE", secret_id_file="/run/secrets/sid")
        TransitAuth(method='approle', token_env=None, role_id_env='ROLE', role_id_file=None, secret_id_env=None, secret_id_file='/run/secrets/sid', mount='approle')
        >>> TransitAuth("approle", role_id_env="ROLE")
        Traceback (most recent call last):
        ...
        pets._errors.InputError: AppRole auth needs exactly one of secret_id_env or secret_id_file
    """

    method: Literal["token", "approle"]
    token_env: str | None = None
    role_id_env: str | None = None
    role_id_file: str | None = None
    secret_id_env: str | None = None
    secret_id_file: str | None = None
    mount: str = "approle"

    def __post_init__(self) -> None:
        if self.method == "token":
            if not self.token_env:
                raise InputError("token auth needs token_env (the variable holding the token)")
            if any((self.role_id_env, self.role_id_file, self.secret_id_env,
                    self.secret_id_file)):
                raise InputError("token auth takes only token_env")
        elif self.method == "approle":
            if self.token_env:
                raise InputError("AppRole auth does not take token_env")
            for what in ("role_id", "secret_id"):
                if (getattr(self, f"{what}_env") is None) == (
                        getattr(self, f"{what}_file") is None):
                    raise InputError(f"AppRole auth needs exactly one of {what}_env or "
                                     f"{what}_file")
        else:
            raise InputError(f"unknown auth method {self.method!r}: use 'token' or 'approle'")
        for name in ("token_env", "role_id_env", "secret_id_env"):
            var = getattr(self, name)
            if var is not None and not _ENV.match(var):
                raise InputError(f"{name} must name an environment variable, not {var!r}")
        if not _MOUNT.match(self.mount):
            raise InputError(f"invalid auth mount {self.mount!r}")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, where: str = "auth") -> TransitAuth:
        """Parse ``{"method": ..., ...}``; unknown keys and literal secrets are refused."""
        if not isinstance(spec, Mapping):
            raise InputError(f"{where} must be a mapping, not {type(spec).__name__}")
        method = spec.get("method")
        if method not in _AUTH_KEYS:
            raise InputError(f"{where}: 'method' must be 'token' or 'approle', not {method!r}")
        _check_keys(spec, _AUTH_KEYS[method], where)
        fields = {k: _text(spec, k, where) for k in _AUTH_KEYS[method] if k != "method"}
        try:
            return cls(method, **{k: v for k, v in fields.items() if v is not None})
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    def _read(self, env_name: str | None, file_name: str | None, what: str, server: str,
              environ: Mapping[str, str]) -> str:
        if env_name is not None:
            value = environ.get(env_name, "").strip()
            if not value:
                raise KeyServiceError(f"transit server {server!r}: set {env_name} (the {what})")
            return value
        assert file_name is not None  # one of the two, checked in __post_init__
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise KeyServiceError(
                f"transit server {server!r}: cannot read the {what} file {file_name}: {reason}"
            ) from None
        if not value:
            raise KeyServiceError(f"transit server {server!r}: the {what} file {file_name} "
                                  "is empty")
        return value


@dataclass(frozen=True)
class TransitServer:
    """One OpenBao / Vault server with a transit engine, and the jurisdiction its keys are in.

    Args:
        name: The URI authority: keys are ``vault://<name>/<key>``.
        url: ``https://host:port`` (``http://`` only to a loopback address: data keys travel
            in the requests).
        jurisdiction: Where the server (and so every key on it) is.
        auth: How this process logs in (:class:`TransitAuth`).
        mount: The transit engine's mount path.
        ca_cert: CA bundle (PEM file) that signed the server's certificate; default: the
            system's trust store.
        timeout: Seconds per request (connect and read).
        retries: Extra attempts after a failure that is safe to repeat (0 .. 10).

    Examples:
        >>> s = TransitServer("eu-ireland", "http://127.0.0.1:8200", "eu",
        ...                   TransitAuth("token", token_env="BAO_TOKEN"))
        >>> s.jurisdiction, s.url
        ('EU', 'http://127.0.0.1:8200')
        >>> TransitServer("eu", "http://bao.example:8200", "EU",
        ...               TransitAuth("token", token_env="T"))
        Traceback (most recent call last):
        ...
        pets._errors.InputError: transit server 'eu': http:// is only allowed to a loopback address (data keys travel in the requests); use https://
    """

    name: str
    url: str
    jurisdiction: str
    auth: TransitAuth
    mount: str = "transit"
    ca_cert: str | None = None
    timeout: float = 5.0
    retries: int = 2

    def __post_init__(self) -> None:
        where = f"transit server {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InputError(f"{where}: the name must be 1-128 letters, digits, '_', '.', '-'")
        if not isinstance(self.auth, TransitAuth):
            raise InputError(f"{where}: auth must be a TransitAuth")
        object.__setattr__(self, "jurisdiction", Jurisdiction(self.jurisdiction).code)
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InputError(f"{where}: url must be https://host[:port], not {self.url!r}")
        if parts.username or parts.password or parts.query or parts.fragment or (
                parts.path not in ("", "/")):
            raise InputError(f"{where}: url must be https://host[:port] without a path, "
                             "credentials or query")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise InputError(f"{where}: http:// is only allowed to a loopback address (data "
                             "keys travel in the requests); use https://")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if not _MOUNT.match(self.mount):
            raise InputError(f"{where}: invalid mount {self.mount!r}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float) or not (
                0 < self.timeout <= 300):
            raise InputError(f"{where}: timeout must be a number of seconds in (0, 300]")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not (
                0 <= self.retries <= 10):
            raise InputError(f"{where}: retries must be an integer 0 .. 10")

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> TransitServer:
        """Parse one server's entry of the ``{name: {url, jurisdiction, mount, auth: {...},
        ca_cert, timeout, retries}}`` mapping (what a YAML configuration file holds).

        Unknown keys are refused (:class:`~pets.InputError` naming the key), and so is any
        literal secret (``token``, ``secret_id``...): name a variable or file instead.

        Examples:
            >>> TransitServer.from_dict("us-east", {"url": "http://127.0.0.1:8200",
            ...     "jurisdiction": "US", "auth": {"method": "token", "token_env": "T"},
            ...     "region": "us-east-1"})
            Traceback (most recent call last):
            ...
            pets._errors.InputError: transit server 'us-east': unknown key 'region' (allowed: url, jurisdiction, mount, auth, ca_cert, timeout, retries)
        """
        where = f"transit server {name!r}"
        _check_keys(spec, _SERVER_KEYS, where)
        for required in ("url", "jurisdiction", "auth"):
            if required not in spec:
                raise InputError(f"{where}: missing {required!r}")
        url, jurisdiction = _text(spec, "url", where), _text(spec, "jurisdiction", where)
        assert url is not None and jurisdiction is not None
        extra: dict[str, Any] = {}
        for key in ("mount", "ca_cert"):
            if (value := _text(spec, key, where)) is not None:
                extra[key] = value
        for key in ("timeout", "retries"):
            if key in spec:
                extra[key] = spec[key]
        auth = TransitAuth.from_dict(spec["auth"], where=f"{where} auth")
        return cls(name, url, jurisdiction, auth, **extra)

    def to_dict(self) -> dict[str, Any]:
        """The settings as :meth:`from_dict` reads them (names of variables and files only:
        no secret), e.g. to pin them in a boundary's ``boundary.json``.

        Examples:
            >>> s = TransitServer("eu", "http://127.0.0.1:8200", "EU",
            ...                   TransitAuth("token", token_env="T"))
            >>> TransitServer.from_dict("eu", s.to_dict()) == s
            True
            >>> s.to_dict()["auth"]
            {'method': 'token', 'token_env': 'T'}
        """
        auth: dict[str, Any] = {"method": self.auth.method}
        for key in _AUTH_KEYS[self.auth.method][1:]:
            value = getattr(self.auth, key)
            if value is not None and not (key == "mount" and value == "approle"):
                auth[key] = value
        out: dict[str, Any] = {"url": self.url, "jurisdiction": self.jurisdiction,
                               "mount": self.mount, "auth": auth,
                               "timeout": self.timeout, "retries": self.retries}
        if self.ca_cert is not None:
            out["ca_cert"] = self.ca_cert
        return out


def transit_servers_from_dict(mapping: Mapping[str, Any] | None) -> tuple[TransitServer, ...]:
    """Every server of a ``{name: {url, jurisdiction, mount, auth: {...}, ca_cert}}`` mapping.

    Examples:
        >>> servers = transit_servers_from_dict({
        ...     "eu-ireland": {"url": "http://127.0.0.1:8200", "jurisdiction": "EU",
        ...                    "auth": {"method": "approle", "role_id_env": "ROLE_ID",
        ...                             "secret_id_env": "SECRET_ID"}},
        ...     "us-east": {"url": "https://bao.us.example", "jurisdiction": "US",
        ...                 "mount": "pets-transit", "ca_cert": "/etc/pets/ca.pem",
        ...                 "auth": {"method": "token", "token_env": "US_TOKEN"}}})
        >>> [(s.name, s.jurisdiction, s.mount) for s in servers]
        [('eu-ireland', 'EU', 'transit'), ('us-east', 'US', 'pets-transit')]
        >>> transit_servers_from_dict({"eu": {"url": "http://127.0.0.1:1", "jurisdiction": "EU",
        ...     "auth": {"method": "approle", "role_id_env": "R", "secret_id": "s3cret"}}})
        Traceback (most recent call last):
        ...
        pets._errors.InputError: transit server 'eu' auth: 'secret_id' is a secret and never goes in configuration: name an environment variable (secret_id_env) or a file (secret_id_file) instead
    """
    if mapping is None:
        return ()
    if not isinstance(mapping, Mapping):
        raise InputError(f"transit servers must be a mapping of name to settings, not "
                         f"{type(mapping).__name__}")
    out = []
    for name, spec in mapping.items():
        if not isinstance(name, str):
            raise InputError(f"transit server names are strings, not {name!r}")
        out.append(TransitServer.from_dict(name, spec))
    return tuple(out)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TransitIdentity:
    """Who the server says this process is (from ``auth/token/lookup-self``; no token)."""

    server: str
    name: str
    jurisdiction: str | None
    policies: tuple[str, ...]
    entity_id: str = ""


def _now_iso(ts: Any) -> str:
    if ts in ("", None):
        return ""
    try:
        return _dt.datetime.fromtimestamp(int(ts), _dt.UTC).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ts)


_HUBS: dict[tuple[str, str], KeyChanges] = {}
_HUBS_LOCK = threading.Lock()


def _hub(server: TransitServer) -> KeyChanges:
    """One change hub per (url, mount) in this process, shared by its services."""
    with _HUBS_LOCK:
        return _HUBS.setdefault((server.url, server.mount), KeyChanges())


def _timed_out(exc: BaseException) -> bool:
    """A requests failure caused by a timeout (urllib3 wraps exhausted retries of a read
    timeout in ``MaxRetryError``, which requests raises as ``ConnectionError``)."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    if type(exc).__name__ in ("Timeout", "ReadTimeout", "ConnectTimeout"):
        return True
    for arg in getattr(exc, "args", ()):
        reason = arg.reason if isinstance(arg, MaxRetryError) else arg
        # NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError in urllib3
        if isinstance(reason, Urllib3Timeout) and not isinstance(reason, NewConnectionError):
            return True
    return False


class _DeadToken(Exception):
    """The server refused the token itself (revoked or expired)."""


class TransitKeyService:
    """KEKs held by an OpenBao / Vault transit engine, named ``vault://<server>/<key>``.

    Args:
        server: The server's settings (see :class:`TransitServer`).
        environ: Where credentials are read at login (default ``os.environ``).
        audit: Hook receiving ``key.login``, ``key.create`` … ``key.destroy`` and
            ``key.refused`` events (never a token, secret-id or key bytes).

    Raises:
        MissingDependencyError: ``hvac`` is not installed (``pip install 'pets[vault]'``).

    Nothing is sent before the first call; then the service logs in and reads its identity
    (:meth:`identity`). See the module documentation for who decides access.
    """

    scheme = "vault"

    def __init__(self, server: TransitServer, *, environ: Mapping[str, str] | None = None,
                 audit: AuditHook | None = None) -> None:
        self._hvac: Any = require("hvac", "vault")
        self._requests: Any = require("requests", "vault")
        if not isinstance(server, TransitServer):
            raise InputError("server must be a TransitServer")
        self.server = server
        self.jurisdiction = server.jurisdiction
        self.audit = audit
        self._environ = os.environ if environ is None else environ
        self._lock = threading.RLock()
        self._client: Any = None
        self._identity: TransitIdentity | None = None
        #: Subscribers told after each rotate / retire / destroy through any service on this
        #: server in this process (see :meth:`~pets.keys.KeyServices.subscribe`).
        self.changes: KeyChanges = _hub(server)

    def __repr__(self) -> str:
        return (f"TransitKeyService(server={self.server.name!r}, url={self.server.url!r}, "
                f"jurisdiction={self.jurisdiction!r})")

    def __reduce__(self) -> NoReturn:
        raise TypeError("TransitKeyService cannot be pickled: ship the TransitServer (or "
                        "KeyConfig) and open it where it is used, with that host's credentials")

    # ---------------------------------------------------------------- connection

    def _where(self) -> str:
        return f"transit server {self.server.name!r} ({self.server.url})"

    def _session(self) -> Any:
        """A ``requests`` session whose adapters retry with bounded exponential backoff."""
        from urllib3.util.retry import Retry

        adapters = self._requests.adapters
        n = self.server.retries
        safe = Retry(total=n, connect=n, read=n, status=n, other=0, backoff_factor=0.2,
                     backoff_max=2.0, status_forcelist=(429, 502, 503, 504),
                     allowed_methods=frozenset({"GET", "HEAD", "LIST"}),
                     raise_on_status=False, respect_retry_after_header=False)
        repeatable = safe.new(allowed_methods=frozenset({"GET", "HEAD", "LIST", "POST", "PUT"}))
        session = self._requests.Session()
        base = self.server.url
        # requests picks the adapter with the longest matching prefix
        session.mount(base + "/", adapters.HTTPAdapter(max_retries=safe))
        for path in (*(f"/v1/{self.server.mount}/{p}" for p in _REPEATABLE_POSTS),
                     f"/v1/auth/{self.server.auth.mount}/login", "/v1/auth/token/lookup-self"):
            session.mount(base + path, adapters.HTTPAdapter(max_retries=repeatable))
        return session

    def _connect(self) -> Any:
        """The logged-in client (logging in, and reading the identity, on first use)."""
        with self._lock:
            if self._client is not None:
                return self._client
            client = self._hvac.Client(
                url=self.server.url, timeout=self.server.timeout, session=self._session(),
                verify=self.server.ca_cert if self.server.ca_cert else True)
            auth = self.server.auth
            name = self.server.name
            if auth.method == "token":
                client.token = auth._read(auth.token_env, None, "token", name, self._environ)
                identity = self._lookup(client, login=True)
            else:
                role_id = auth._read(auth.role_id_env, auth.role_id_file, "AppRole role_id",
                                     name, self._environ)
                secret_id = auth._read(auth.secret_id_env, auth.secret_id_file,
                                       "AppRole secret_id", name, self._environ)
                try:
                    self._transport(lambda: client.auth.approle.login(
                        role_id=role_id, secret_id=secret_id, mount_point=auth.mount))
                except self._hvac.exceptions.InvalidRequest:
                    raise KeyServiceError(
                        f"AppRole login to {self._where()} failed: invalid role_id or "
                        "secret_id (wrong, expired or used up)") from None
                except (self._hvac.exceptions.Forbidden, self._hvac.exceptions.InvalidPath):
                    raise KeyServiceError(
                        f"AppRole login to {self._where()} refused (is AppRole enabled at "
                        f"auth/{auth.mount}?)") from None
                finally:
                    del secret_id
                identity = self._lookup(client, login=True)
            self._client, self._identity = client, identity
        emit(self.audit, "key.login", server=name, url=self.server.url,
             server_jurisdiction=self.jurisdiction, identity=identity.name,
             identity_jurisdiction=identity.jurisdiction, policies=list(identity.policies),
             method=auth.method)
        return client

    def _lookup(self, client: Any, *, login: bool = False) -> TransitIdentity:
        """``lookup-self``; :class:`_DeadToken` if the server refuses the token itself."""
        try:
            data = self._transport(lambda: client.auth.token.lookup_self())["data"]
        except self._hvac.exceptions.Forbidden:
            if login:
                raise KeyServiceError(f"{self._where()} refused the token (revoked, expired "
                                      "or wrong)") from None
            raise _DeadToken() from None
        except (KeyError, TypeError):
            raise KeyServiceError(f"{self._where()}: malformed lookup-self answer") from None
        meta = data.get("meta") or {}
        claimed = meta.get(IDENTITY_JURISDICTION)
        try:
            jurisdiction = Jurisdiction(str(claimed)).code if claimed else None
        except InputError:
            raise KeyServiceError(f"{self._where()}: the token's {IDENTITY_JURISDICTION} "
                                  f"metadata {claimed!r} is not a jurisdiction code") from None
        name = str(meta.get("role_name") or data.get("display_name") or "token")
        return TransitIdentity(self.server.name, name, jurisdiction,
                               tuple(str(p) for p in data.get("policies") or ()),
                               str(data.get("entity_id") or ""))

    def _transport(self, fn: Callable[[], T]) -> T:
        """Run one request; transport and server failures become KeyServiceError."""
        exc_mod = self._hvac.exceptions
        try:
            return fn()
        except (exc_mod.InternalServerError, exc_mod.VaultDown, exc_mod.BadGateway,
                exc_mod.VaultNotInitialized, exc_mod.RateLimitExceeded,
                exc_mod.UnexpectedError) as exc:
            status = {exc_mod.InternalServerError: "500", exc_mod.VaultDown: "503 (sealed or "
                      "standby)", exc_mod.BadGateway: "502", exc_mod.VaultNotInitialized: "501",
                      exc_mod.RateLimitExceeded: "429"}.get(type(exc), "unexpected status")
            raise KeyServiceError(f"{self._where()} failed: HTTP {status} after "
                                  f"{self.server.retries} retries") from None
        except self._requests.exceptions.SSLError:
            raise KeyServiceError(f"{self._where()}: TLS verification failed (check ca_cert)"
                                  ) from None
        except self._requests.exceptions.RequestException as exc:
            if _timed_out(exc):
                raise KeyServiceError(f"{self._where()} timed out ({self.server.timeout:g} s "
                                      f"per request, {self.server.retries} retries)") from None
            raise KeyServiceError(f"{self._where()} unreachable after {self.server.retries} "
                                  f"retries: {type(exc).__name__}") from None

    def _call(self, operation: str, uri: str, fn: Callable[[Any], T], *,
              context: Context | None = None) -> T:
        """One authenticated request about ``uri``, with the error mapping of this module.

        A 403 is checked against ``lookup-self``: a dead token is renewed once by logging in
        again (AppRole) or is a KeyServiceError (static token); a live one means the server's
        policy refused this identity: JurisdictionError, reported to the audit hook as
        ``key.refused`` unless the operation only reads metadata (``describe``, ``list``).
        """
        exc_mod = self._hvac.exceptions
        for attempt in (1, 2):
            client = self._connect()
            try:
                return self._transport(functools.partial(fn, client))
            except exc_mod.Forbidden:
                pass
            except exc_mod.Unauthorized:
                raise KeyServiceError(f"{self._where()} refused {operation} of {uri}: "
                                      "unauthorized") from None
            try:
                self._lookup(client)
            except _DeadToken:
                with self._lock:
                    if self._client is client:
                        self._client = None
                if self.server.auth.method == "approle" and attempt == 1:
                    continue  # log in again with the secret-id, once
                raise KeyServiceError(f"{self._where()} refused this process's token "
                                      f"(revoked or expired) during {operation} of {uri}"
                                      ) from None
            ident = self._identity
            if operation not in ("describe", "list"):
                emit(self.audit, "key.refused", key=uri, key_jurisdiction=self.jurisdiction,
                     jurisdiction=context.jurisdiction if context else None,
                     principal=context.principal if context else None,
                     server=self.server.name, identity=ident.name if ident else None,
                     identity_jurisdiction=ident.jurisdiction if ident else None,
                     operation=operation, reason="server permission denied")
            raise JurisdictionError(
                f"{self._where()} denied {operation} of {uri} (a {self.jurisdiction} key) to "
                f"identity {ident.name if ident else '?'!r}: permission denied by the server's "
                "policy")
        raise AssertionError("unreachable")  # pragma: no cover

    def identity(self) -> TransitIdentity:
        """Who the server says this process is (logs in on first use)."""
        self._connect()
        with self._lock:
            assert self._identity is not None
            return self._identity

    # ---------------------------------------------------------------- helpers

    def _name(self, uri: str) -> str:
        scheme, authority, name = parse_key_uri(uri)
        if scheme != self.scheme or authority != self.server.name:
            raise KeyNotFoundError(f"no key {uri} (this is transit server "
                                   f"vault://{self.server.name})")
        return name

    def _read(self, uri: str, operation: str, *,
              context: Context | None = None) -> dict[str, Any]:
        name = self._name(uri)
        try:
            data = self._call(operation, uri, lambda c: c.secrets.transit.read_key(
                name=name, mount_point=self.server.mount), context=context)["data"]
        except self._hvac.exceptions.InvalidPath:
            raise KeyNotFoundError(f"no key {uri} on {self._where()}") from None
        except (KeyError, TypeError):
            raise KeyServiceError(f"{self._where()}: malformed answer for {uri}") from None
        ok = (data.get("type") == KEY_TYPE and data.get("exportable") is False
              and data.get("allow_plaintext_backup") is False and data.get("derived") is False
              and not data.get("imported_key") and isinstance(data.get("keys"), dict)
              and isinstance(data.get("latest_version"), int))
        if not ok:
            raise IntegrityError(f"{uri}: the transit key is not a KEK pets created there "
                                 f"({KEY_TYPE}, never exportable, no plaintext backup, not "
                                 "derived or imported); refused")
        return dict(data)

    def _info(self, uri: str, data: Mapping[str, Any]) -> KeyInfo:
        latest = int(data["latest_version"])
        min_dec = int(data.get("min_decryption_version") or 1)
        min_avail = int(data.get("min_available_version") or 1)  # 0: never trimmed
        keys = {str(k): v for k, v in data["keys"].items()}  # only versions >= min_dec
        versions = []
        for v in range(1, latest + 1):
            if v < min_avail:
                versions.append(KeyVersion(v, "destroyed", ""))
            elif v < min_dec:
                versions.append(KeyVersion(v, "retired", _now_iso(keys.get(str(v), ""))))
            else:
                versions.append(KeyVersion(v, "active", _now_iso(keys.get(str(v), ""))))
        return KeyInfo(
            uri=uri, jurisdiction=self.jurisdiction, primary_version=latest,
            min_decryption_version=min_dec, versions=versions, backend="vault",
            attributes={"server": self.server.name, "url": self.server.url,
                        "mount": self.server.mount, "type": data.get("type"),
                        "exportable": False,
                        "min_available_version": int(data.get("min_available_version") or 0),
                        "deletion_allowed": bool(data.get("deletion_allowed")),
                        "soft_deleted": bool(data.get("soft_deleted"))})

    def _check_identity(self, uri: str, context: Context) -> None:
        """The server-vouched identity must be of the key's jurisdiction (when it says one)."""
        ident = self.identity()
        if ident.jurisdiction is not None and ident.jurisdiction != self.jurisdiction:
            emit(self.audit, "key.refused", key=uri, key_jurisdiction=self.jurisdiction,
                 jurisdiction=context.jurisdiction, principal=context.principal,
                 server=self.server.name, identity=ident.name,
                 identity_jurisdiction=ident.jurisdiction, operation="unwrap",
                 reason="server-authenticated identity in another jurisdiction")
            raise JurisdictionError(
                f"key {uri} belongs to {self.jurisdiction}; unwrap refused: "
                f"{self._where()} authenticated this process as {ident.name!r} of "
                f"{ident.jurisdiction} (the claimed {context.jurisdiction} is only a hint)")

    # ------------------------------------------------------------- protocol

    def supports(self, uri: str) -> bool:
        """True for ``vault://<this server's name>/...`` URIs."""
        try:
            scheme, authority, _ = parse_key_uri(uri)
        except InputError:
            return False
        return scheme == self.scheme and authority == self.server.name

    def create(self, uri: str, *, jurisdiction: str) -> KeyInfo:
        """Create a non-exportable ``aes256-gcm96`` transit key (version 1) on the server.

        Raises:
            InputError: ``jurisdiction`` is not the server's.
            KeyServiceError: The key already exists (transit would silently keep it).
            JurisdictionError: The server's policy refuses this identity.
        """
        code = Jurisdiction(jurisdiction).code
        if code != self.jurisdiction:
            raise InputError(f"transit server {self.server.name!r} holds {self.jurisdiction} "
                             f"keys; cannot create {uri} for {code}")
        name = self._name(uri)
        try:
            self._read(uri, "create")
        except KeyNotFoundError:
            pass
        else:
            raise KeyServiceError(f"key {uri} already exists")
        self._call("create", uri, lambda c: c.secrets.transit.create_key(
            name=name, key_type=KEY_TYPE, exportable=False, allow_plaintext_backup=False,
            mount_point=self.server.mount))
        info = self._info(uri, self._read(uri, "create"))
        emit(self.audit, "key.create", key=uri, jurisdiction=code, version=1,
             server=self.server.name)
        return info

    def wrap(self, uri: str, dek: bytes, *, context: Context,
             enc_context: Mapping[str, str] | None = None) -> WrappedKey:
        """Encrypt ``dek`` on the server under the primary version, the encryption context as
        associated data. Allowed to whoever the server's policy allows (it releases nothing).

        Raises:
            InputError: ``dek`` is not 1..1024 bytes, or a bad encryption context.
            KeyNotFoundError: No such key on the server (also after ``destroy`` of the key).
            KeyDestroyedError: The primary version is destroyed.
            JurisdictionError: The server's policy refuses this identity (HTTP 403).
            KeyServiceError: The server is unreachable or failed.
        """
        dek = check_dek(dek)
        aad = base64.b64encode(canonical_context(enc_context)).decode()
        name = self._name(uri)
        info = self._info(uri, self._read(uri, "wrap", context=context))
        primary = info.primary_version
        if info.versions[primary - 1].state == "destroyed":
            raise KeyDestroyedError(f"{uri} v{primary} is destroyed")
        resp = self._call("wrap", uri, lambda c: c.secrets.transit.encrypt_data(
            name=name, plaintext=base64.b64encode(dek).decode(), associated_data=aad,
            key_version=primary, mount_point=self.server.mount), context=context)
        try:
            ciphertext = str(resp["data"]["ciphertext"])
        except (KeyError, TypeError):
            raise KeyServiceError(f"{self._where()}: malformed encrypt answer for {uri}"
                                  ) from None
        m = _CIPHERTEXT.match(ciphertext)
        if m is None or int(m["version"]) != primary:
            raise KeyServiceError(f"{self._where()}: unexpected ciphertext for {uri}")
        return WrappedKey(uri, primary, self.jurisdiction, ciphertext.encode("ascii"))

    def unwrap(self, wrapped: WrappedKey, *, context: Context,
               enc_context: Mapping[str, str] | None = None) -> bytes:
        """Decrypt on the server. The claimed ``context`` is checked against the server's
        jurisdiction, then the server-vouched identity, then the server decides.

        Raises:
            JurisdictionError: ``context`` claims another jurisdiction, the server authenticated
                this process as an identity of another jurisdiction, or the server's policy
                refused (HTTP 403) — each reported to the audit hook as ``key.refused``.
            KeyDestroyedError: The version is retired or destroyed, or the key was destroyed.
            IntegrityError: The blob or the encryption context does not authenticate, or the
                wrapped key states another jurisdiction or version than its blob.
            KeyServiceError: The server is unreachable or failed, or the token is dead.
        """
        uri, v = wrapped.key_uri, wrapped.version
        name = self._name(uri)
        stub = KeyInfo(uri, self.jurisdiction, 0, 0, [], "vault")
        check_unwrap_allowed(stub, context, self.audit)  # 1. the claim, before any request
        self._check_identity(uri, context)  # 2. who the server says we are
        try:
            info = self._info(uri, self._read(uri, "unwrap", context=context))  # 3. the server's policy
        except KeyNotFoundError:
            raise KeyDestroyedError(f"{uri} is not on {self._where()}: the key was destroyed "
                                    "(or never created there)") from None
        check_wrapped_matches(wrapped, info)
        check_version_usable(info, v)
        try:
            text = wrapped.blob.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError("wrapped key failed to authenticate") from None
        m = _CIPHERTEXT.match(text)
        if m is None or int(m["version"]) != v:
            raise IntegrityError("wrapped key failed to authenticate")
        aad = base64.b64encode(canonical_context(enc_context)).decode()
        try:
            resp = self._call("unwrap", uri, lambda c: c.secrets.transit.decrypt_data(
                name=name, ciphertext=text, associated_data=aad,
                mount_point=self.server.mount), context=context)
        except self._hvac.exceptions.InvalidRequest as exc:
            if any("disallowed by policy" in str(e) for e in (exc.errors or ())):
                raise KeyDestroyedError(f"{uri} v{v} is retired or destroyed") from None
            raise IntegrityError("wrapped key failed to authenticate") from None
        except self._hvac.exceptions.InvalidPath:
            raise KeyDestroyedError(f"{uri} is not on {self._where()}: the key was "
                                    "destroyed") from None
        try:
            return base64.b64decode(resp["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error, ValueError):
            raise KeyServiceError(f"{self._where()}: malformed decrypt answer for {uri}"
                                  ) from None

    def rotate(self, uri: str) -> KeyInfo:
        """Add a new version on the server and make it primary (never retried)."""
        name = self._name(uri)
        self._read(uri, "rotate")
        self._call("rotate", uri, lambda c: c.secrets.transit.rotate_key(
            name=name, mount_point=self.server.mount))
        info = self._info(uri, self._read(uri, "rotate"))
        try:
            self.changes.notify_info(info, "rotate")
        finally:
            emit(self.audit, "key.rotate", key=uri, version=info.primary_version,
                 server=self.server.name)
        return info

    def retire(self, uri: str, min_decryption_version: int) -> KeyInfo:
        """Set the server's ``min_decryption_version`` (lowering it revives versions that are
        not destroyed; it is never set below the oldest version still on the server)."""
        name = self._name(uri)
        data = self._read(uri, "retire")
        primary = int(data["latest_version"])
        if isinstance(min_decryption_version, bool) or not isinstance(
                min_decryption_version, int) or not 1 <= min_decryption_version <= primary:
            raise InputError(f"{uri}: min_decryption_version must be 1..{primary}")
        target = max(min_decryption_version, int(data.get("min_available_version") or 0))
        self._call("retire", uri, lambda c: c.secrets.transit.update_key_configuration(
            name=name, min_decryption_version=target, mount_point=self.server.mount))
        info = self._info(uri, self._read(uri, "retire"))
        try:
            self.changes.notify_info(info, "retire")
        finally:
            emit(self.audit, "key.retire", key=uri,
                 min_decryption_version=info.min_decryption_version, server=self.server.name)
        return info

    def destroy(self, uri: str, version: int | None = None) -> KeyInfo:
        """Crypto-shred on the server: the whole key (``DELETE``), or its oldest remaining
        non-primary version (``trim``).

        Raises:
            KeyNotFoundError: No such key or version.
            KeyServiceError: ``version`` is the primary version while others remain, or not the
                oldest remaining one (transit deletes versions oldest first): the message says
                what to destroy first.
        """
        name = self._name(uri)
        data = self._read(uri, "destroy")
        info = self._info(uri, data)
        latest = info.primary_version
        alive = [x.version for x in info.versions if x.state != "destroyed"]
        if version is None or (alive == [version]):
            self._call("destroy", uri, lambda c: c.secrets.transit.update_key_configuration(
                name=name, deletion_allowed=True, mount_point=self.server.mount))
            self._call("destroy", uri, lambda c: c.secrets.transit.delete_key(
                name=name, mount_point=self.server.mount))
            targets = set(alive)
            info = KeyInfo(uri, self.jurisdiction, latest, info.min_decryption_version,
                           [KeyVersion(x.version, "destroyed", x.created)
                            for x in info.versions], "vault", dict(info.attributes))
        else:
            if not 1 <= version <= latest:
                raise KeyNotFoundError(f"{uri} has no version {version}")
            if version not in alive:
                targets = set()  # already destroyed
            elif version == latest:
                raise KeyServiceError(f"{uri}: transit cannot destroy the primary version "
                                      f"v{version} while older versions remain: rotate first, "
                                      "or destroy the whole key")
            elif version != alive[0]:
                raise KeyServiceError(f"{uri}: transit destroys versions oldest first; "
                                      f"destroy v{alive[0]}..v{version - 1} before v{version}")
            else:
                keep = version + 1
                min_dec = max(info.min_decryption_version, keep)
                min_enc = max(int(data.get("min_encryption_version") or 0), latest)
                self._call("destroy", uri,
                           lambda c: c.secrets.transit.update_key_configuration(
                               name=name, min_decryption_version=min_dec,
                               min_encryption_version=min_enc, mount_point=self.server.mount))
                self._call("destroy", uri, lambda c: c.secrets.transit.trim_key(
                    name=name, min_version=keep, mount_point=self.server.mount))
                targets = {version}
                info = self._info(uri, self._read(uri, "destroy"))
        try:
            self.changes.notify_info(info, "destroy", versions=targets)
        finally:
            emit(self.audit, "key.destroy", key=uri, versions=sorted(targets),
                 server=self.server.name)
        return info

    def describe(self, uri: str) -> KeyInfo:
        """Public metadata from the server; never key bytes."""
        return self._info(uri, self._read(uri, "describe"))

    def list(self) -> list[KeyInfo]:
        """Every transit key on this server's mount that pets may use, sorted by URI.

        Keys that are not pets KEKs (another type, exportable...) are left out.
        """
        base = f"{self.scheme}://{self.server.name}/"
        try:
            resp = self._call("list", base + "*", lambda c: c.secrets.transit.list_keys(
                mount_point=self.server.mount))
            names = sorted(str(k) for k in resp["data"]["keys"])
        except self._hvac.exceptions.InvalidPath:
            return []  # no key yet
        except (KeyError, TypeError):
            raise KeyServiceError(f"{self._where()}: malformed list answer") from None
        out = []
        for name in names:
            if not _NAME.match(name):
                continue
            try:
                out.append(self.describe(base + name))
            except (KeyNotFoundError, IntegrityError):
                continue  # deleted meanwhile, or not a pets KEK
        return out

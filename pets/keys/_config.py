"""Build the key services a process uses from explicit settings or the environment.

The CLI and every command that touches keys (envelope, boundary) go through
:func:`key_services`, so there is one place that decides where keys live:

=============================  ===================================  =========================
setting                        CLI option / environment variable    default
=============================  ===================================  =========================
local keyring directory        ``--keyring`` / ``PETS_KEYRING``     ``./.pets/keyring``
master key (32 bytes)          ``PETS_MASTER_KEY`` (base64 or hex)  —
… or a passphrase (scrypt)     ``PETS_KEYRING_PASSPHRASE``          —
PKCS#11 library                ``--pkcs11-library`` /               —
                               ``PETS_PKCS11_LIBRARY``
PKCS#11 token label(s)         ``--pkcs11-token`` /                 —
                               ``PETS_PKCS11_TOKEN`` (comma list)
token jurisdiction             ``LABEL=JURISDICTION`` in the token  ``PETS_PKCS11_JURISDICTION``
                               setting
PKCS#11 user PIN               ``PETS_PKCS11_PIN`` (never a flag)   —
transit key servers            ``--key-servers FILE`` /             —
(OpenBao / Vault)              ``PETS_KEY_SERVERS`` (YAML or JSON
                               ``{name: {url, jurisdiction, mount,
                               auth: {…}, ca_cert}}``)
transit token / AppRole        the variables or files each server's —
secret-id                      ``auth`` names (never a flag)
=============================  ===================================  =========================

Secrets (master key, passphrase, PIN, transit tokens and secret-ids) are read only from the
environment (or, for AppRole, files the configuration names), never from command line flags
(which other users can see in ``ps``), and are never echoed back.

**Shipping a KeyConfig to workers.** A :class:`KeyConfig` is the picklable *key source* a Dask
task graph carries: it holds paths, labels and :class:`~pets.keys.TransitServer` descriptions —
the names of the environment variables and files that hold secrets, never the secrets. A
worker calls :meth:`KeyConfig.services` with its own environment; each
:class:`~pets.keys.TransitKeyService` then logs in to its server with the *worker's* own
credentials and is answerable to the server's policy as the worker's identity. So no key,
token or secret-id travels in the task graph (which the scheduler keeps in memory, may spill to
disk and shows in its dashboard), a worker outside the key's jurisdiction is refused by the
server itself (whatever ``Context`` the task claims), and one worker is cut off by revoking its
secret-id alone. The key services themselves (keyrings, tokens, logged-in clients) refuse to
be pickled.

Examples:
    >>> import tempfile, pathlib
    >>> from pets.keys import LocalKeyring, Secret
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "ring"
    >>> env = {"PETS_MASTER_KEY": "00" * 32}
    >>> _ = LocalKeyring.init(d, name="eu", master_key=Secret(bytes(32)))
    >>> cfg = KeyConfig.from_env(env, keyring=d)
    >>> services = cfg.services(environ=env)
    >>> services.for_uri("local://eu/customers").__class__.__name__
    'LocalKeyring'
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pets._errors import InputError, KeyServiceError
from pets._events import AuditHook
from pets.jurisdiction import Jurisdiction
from pets.keys._secret import Secret
from pets.keys._service import KeyService, KeyServices
from pets.keys._transit import TransitServer, transit_servers_from_dict

__all__ = [
    "DEFAULT_KEYRING",
    "KeyConfig",
    "Pkcs11TokenConfig",
    "key_services",
    "load_key_servers",
    "master_key_from_env",
]

DEFAULT_KEYRING = Path(".pets") / "keyring"

ENV_KEYRING = "PETS_KEYRING"
ENV_MASTER_KEY = "PETS_MASTER_KEY"
ENV_PASSPHRASE = "PETS_KEYRING_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
ENV_PKCS11_LIBRARY = "PETS_PKCS11_LIBRARY"
ENV_PKCS11_TOKEN = "PETS_PKCS11_TOKEN"  # noqa: S105
ENV_PKCS11_JURISDICTION = "PETS_PKCS11_JURISDICTION"
ENV_PKCS11_PIN = "PETS_PKCS11_PIN"
ENV_KEY_SERVERS = "PETS_KEY_SERVERS"
_MAX_SERVERS_FILE = 1 << 20


def load_key_servers(path: str | os.PathLike[str]) -> tuple[TransitServer, ...]:
    """Read a key-servers file: YAML (or JSON, a subset) ``{name: {url, jurisdiction, mount,
    auth: {...}, ca_cert}}``, the mapping :func:`~pets.keys.transit_servers_from_dict` parses.

    The file names where secrets are (``secret_id_env``, ``role_id_file``...), never a secret
    (a literal ``token`` or ``secret_id`` is refused). Relative ``*_file`` and ``ca_cert``
    paths are taken from the file's own directory, so the same file works from any working
    directory. An optional top level ``servers:`` key holds the mapping.

    Raises:
        InputError: The file cannot be read, is not YAML/JSON, or a server's settings are
            invalid (the message names the file and the server).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "servers.yaml").write_text(
        ...     "eu-ireland:\\n  url: http://127.0.0.1:8200\\n  jurisdiction: EU\\n"
        ...     "  auth: {method: approle, role_id_file: role-id, secret_id_env: SID}\\n")
        >>> [s] = load_key_servers(d / "servers.yaml")
        >>> s.name, s.auth.role_id_file == str(d / "role-id")
        ('eu-ireland', True)
    """
    import yaml

    p = Path(path)
    try:
        if not p.is_file():
            raise InputError(f"key-servers file {p}: no such file")
        with open(p, "rb") as fh:
            raw = fh.read(_MAX_SERVERS_FILE + 1)
        if len(raw) > _MAX_SERVERS_FILE:
            raise InputError(f"key-servers file {p}: over {_MAX_SERVERS_FILE} bytes")
        doc = yaml.safe_load(raw.decode("utf-8"))
    except OSError as exc:
        raise InputError(f"key-servers file {p}: cannot read ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise InputError(f"key-servers file {p}: not YAML or JSON") from None
    if isinstance(doc, Mapping) and set(doc) == {"servers"}:
        doc = doc["servers"]
    if not isinstance(doc, Mapping) or not doc:
        raise InputError(f"key-servers file {p}: expected a mapping of server name to "
                         "settings {url, jurisdiction, mount, auth, ca_cert}")
    base = p.resolve().parent
    fixed: dict[str, Any] = {}
    for name, spec in doc.items():
        if isinstance(spec, Mapping):
            spec = dict(spec)
            if isinstance(spec.get("ca_cert"), str):
                spec["ca_cert"] = str(base / spec["ca_cert"])
            if isinstance(spec.get("auth"), Mapping):
                auth = dict(spec["auth"])
                for key in ("role_id_file", "secret_id_file"):
                    if isinstance(auth.get(key), str) and auth[key].strip():
                        auth[key] = str(base / auth[key].strip())
                spec["auth"] = auth
        fixed[name] = spec
    try:
        return transit_servers_from_dict(fixed)
    except InputError as exc:
        raise InputError(f"key-servers file {p}: {exc}") from None


def master_key_from_env(environ: Mapping[str, str] | None = None) -> tuple[Secret | None, str | None]:
    """Read ``(master_key, passphrase)`` from ``PETS_MASTER_KEY`` / ``PETS_KEYRING_PASSPHRASE``.

    ``PETS_MASTER_KEY`` holds 32 bytes as 64 hex digits or base64. The value is never put in an
    error message.

    Examples:
        >>> key, phrase = master_key_from_env({"PETS_MASTER_KEY": "ab" * 32})
        >>> key, phrase
        (Secret(<32 bytes>), None)
        >>> master_key_from_env({"PETS_MASTER_KEY": "too-short"})
        Traceback (most recent call last):
        ...
        pets._errors.InputError: PETS_MASTER_KEY must be 32 bytes as 64 hex digits or base64
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_MASTER_KEY, "").strip()
    phrase = env.get(ENV_PASSPHRASE) or None
    if not raw:
        return None, phrase
    key: bytes | None = None
    if len(raw) == 64:
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            key = None
    if key is None:
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != 32:
        raise InputError(f"{ENV_MASTER_KEY} must be 32 bytes as 64 hex digits or base64")
    return Secret(key), phrase


@dataclass(frozen=True)
class Pkcs11TokenConfig:
    """One PKCS#11 token: its label and the jurisdiction its keys belong to."""

    label: str
    jurisdiction: str

    @classmethod
    def parse(cls, spec: str, default_jurisdiction: str | None) -> Pkcs11TokenConfig:
        """Parse ``LABEL`` or ``LABEL=JURISDICTION``.

        Examples:
            >>> Pkcs11TokenConfig.parse("eu-hsm=eu", None)
            Pkcs11TokenConfig(label='eu-hsm', jurisdiction='EU')
            >>> Pkcs11TokenConfig.parse("EU", None)
            Traceback (most recent call last):
            ...
            pets._errors.InputError: PKCS#11 token 'EU' needs a jurisdiction: use EU=<CODE> or set PETS_PKCS11_JURISDICTION
        """
        label, sep, jur = spec.strip().partition("=")
        label = label.strip()
        if not label:
            raise InputError(f"invalid PKCS#11 token setting {spec!r}: expected LABEL[=JURISDICTION]")
        code = jur.strip() if sep else (default_jurisdiction or "")
        if not code:
            raise InputError(
                f"PKCS#11 token {label!r} needs a jurisdiction: use {label}=<CODE> or set "
                f"{ENV_PKCS11_JURISDICTION}"
            )
        return cls(label, Jurisdiction(code).code)


@dataclass(frozen=True)
class KeyConfig:
    """Where this process finds its keys. Holds no secrets (those come from the environment).

    Attributes:
        keyring: The local keyring directory, or ``None`` for the default ``./.pets/keyring``.
        keyring_explicit: True when the directory was named by the user (then it must exist).
        pkcs11_library: Path of the PKCS#11 module (e.g. ``/usr/lib/softhsm/libsofthsm2.so``).
        pkcs11_tokens: Tokens to open through that library.
        transit_servers: OpenBao / Vault transit servers (``vault://<name>/<key>``); each
            logs in with credentials read, where the services are opened, from the variables
            or files its ``auth`` names.

    Examples:
        >>> from pets.keys import TransitAuth, TransitServer
        >>> import pickle
        >>> eu = TransitServer("eu-ireland", "http://127.0.0.1:8200", "EU",
        ...                    TransitAuth("approle", role_id_env="PETS_VAULT_ROLE_ID",
        ...                                secret_id_env="PETS_VAULT_SECRET_ID"))
        >>> cfg = KeyConfig(transit_servers=(eu,))
        >>> pickle.loads(pickle.dumps(cfg)) == cfg  # ships to workers: no secret inside
        True
    """

    keyring: Path = DEFAULT_KEYRING
    keyring_explicit: bool = False
    pkcs11_library: str | None = None
    pkcs11_tokens: tuple[Pkcs11TokenConfig, ...] = field(default_factory=tuple)
    transit_servers: tuple[TransitServer, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        servers = tuple(self.transit_servers)
        if not all(isinstance(s, TransitServer) for s in servers):
            raise InputError("transit_servers must be TransitServer objects (see "
                             "transit_servers_from_dict for a mapping)")
        names = [s.name for s in servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"transit server {dupes[0]!r} is configured twice")
        object.__setattr__(self, "transit_servers", servers)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        keyring: str | os.PathLike[str] | None = None,
        pkcs11_library: str | None = None,
        pkcs11_tokens: Sequence[str] = (),
        pkcs11_jurisdiction: str | None = None,
        transit_servers: Mapping[str, Any] | Sequence[TransitServer] | None = None,
        key_servers: str | os.PathLike[str] | None = None,
    ) -> KeyConfig:
        """Explicit arguments first, then ``PETS_*`` environment variables, then defaults.

        ``transit_servers`` is a ``{name: {url, jurisdiction, mount, auth: {...}, ca_cert}}``
        mapping (as read from a configuration file; see
        :func:`~pets.keys.transit_servers_from_dict`) or :class:`~pets.keys.TransitServer`
        objects. Without it, ``key_servers`` (else ``PETS_KEY_SERVERS``) names a YAML/JSON
        file holding that mapping (:func:`load_key_servers`).
        """
        env = os.environ if environ is None else environ
        ring = keyring if keyring is not None else env.get(ENV_KEYRING) or None
        lib = pkcs11_library or env.get(ENV_PKCS11_LIBRARY) or None
        specs = list(pkcs11_tokens) or [
            s for s in env.get(ENV_PKCS11_TOKEN, "").split(",") if s.strip()
        ]
        default_jur = pkcs11_jurisdiction or env.get(ENV_PKCS11_JURISDICTION) or None
        tokens = tuple(Pkcs11TokenConfig.parse(s, default_jur) for s in specs)
        if tokens and not lib:
            raise InputError(
                f"a PKCS#11 token was named but no library: set --pkcs11-library or "
                f"{ENV_PKCS11_LIBRARY}"
            )
        if isinstance(transit_servers, Mapping):
            servers = transit_servers_from_dict(transit_servers)
        elif transit_servers:
            servers = tuple(transit_servers)
        else:
            servers_file = key_servers or env.get(ENV_KEY_SERVERS) or None
            servers = load_key_servers(servers_file) if servers_file else ()
        return cls(
            keyring=Path(ring) if ring is not None else DEFAULT_KEYRING,
            keyring_explicit=ring is not None,
            pkcs11_library=lib,
            pkcs11_tokens=tokens,
            transit_servers=servers,
        )

    def local_keyring(
        self, *, environ: Mapping[str, str] | None = None, audit: AuditHook | None = None
    ) -> KeyService:
        """Open the local keyring with the master key or passphrase from the environment."""
        from pets.keys._local import LocalKeyring

        env = os.environ if environ is None else environ
        return LocalKeyring(self.keyring, audit=audit, environ=env)

    def services(
        self, *, environ: Mapping[str, str] | None = None, audit: AuditHook | None = None
    ) -> KeyServices:
        """Open every configured key service.

        The local keyring is included when its directory is initialised; a keyring the user
        named explicitly must exist. With no PKCS#11 token or transit server configured, a
        missing keyring is an error that says how to create one. Transit services send nothing
        until first used; then each logs in with the credentials of ``environ``.

        ``audit`` goes to every backend (``key.create`` … ``key.refused``) and to the
        registry (``key.wrap`` / ``key.unwrap`` / ``key.failed`` for each use of a key).

        Raises:
            KeyServiceError: A keyring or token cannot be opened (wrong master key, wrong PIN,
                unknown token); the message names the keyring or token, never the secret.
        """
        from pets.keys._local import LocalKeyring

        env = os.environ if environ is None else environ
        out: list[KeyService] = []
        if LocalKeyring.exists(self.keyring):
            out.append(self.local_keyring(environ=env, audit=audit))
        elif self.keyring_explicit or not (self.pkcs11_tokens or self.transit_servers):
            raise KeyServiceError(
                f"no keyring at {self.keyring}: create one with `pets keys init --name <NAME>` "
                f"(or set --keyring / {ENV_KEYRING})"
            )
        if self.pkcs11_tokens:
            from pets.keys._pkcs11 import Pkcs11Keyring

            assert self.pkcs11_library is not None  # checked in from_env
            pin = env.get(ENV_PKCS11_PIN)
            if not pin:
                raise KeyServiceError(f"set {ENV_PKCS11_PIN} to log in to PKCS#11 tokens")
            for tok in self.pkcs11_tokens:
                out.append(Pkcs11Keyring(self.pkcs11_library, tok.label, pin,
                                         jurisdiction=tok.jurisdiction, audit=audit))
        if self.transit_servers:
            from pets.keys._transit import TransitKeyService

            out.extend(TransitKeyService(server, environ=env, audit=audit)
                       for server in self.transit_servers)
        return KeyServices(out, audit=audit)


def key_services(
    *,
    keyring: str | os.PathLike[str] | None = None,
    pkcs11_library: str | None = None,
    pkcs11_tokens: Sequence[str] = (),
    pkcs11_jurisdiction: str | None = None,
    environ: Mapping[str, str] | None = None,
    audit: AuditHook | None = None,
) -> KeyServices:
    """One call from settings (or the environment) to a ready :class:`KeyServices`.

    Args:
        keyring: Local keyring directory (else ``PETS_KEYRING``, else ``./.pets/keyring``).
        pkcs11_library: PKCS#11 module path (else ``PETS_PKCS11_LIBRARY``).
        pkcs11_tokens: ``LABEL`` or ``LABEL=JURISDICTION`` entries (else ``PETS_PKCS11_TOKEN``).
        pkcs11_jurisdiction: Jurisdiction for tokens given without one.
        environ: Environment to read (default ``os.environ``); secrets come only from here.
        audit: Hook that receives key events (creation, rotation, refusals, and every wrap
            and unwrap made through the returned registry).

    Returns:
        The key services, chosen by key URI.
    """
    cfg = KeyConfig.from_env(environ, keyring=keyring, pkcs11_library=pkcs11_library,
                             pkcs11_tokens=pkcs11_tokens, pkcs11_jurisdiction=pkcs11_jurisdiction)
    return cfg.services(environ=environ, audit=audit)

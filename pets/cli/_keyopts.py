"""Key-service options shared by every command that touches keys.

Usage in a command module::

    from pets.cli._keyopts import keyring_options, services_from_options

    @click.command()
    @keyring_options
    def encrypt(..., key_config: KeyConfig) -> None:
        services = services_from_options(key_config, audit=hook)

:func:`keyring_options` adds ``--keyring``, ``--pkcs11-library``, ``--pkcs11-token``,
``--pkcs11-jurisdiction`` and ``--key-servers`` (transit servers; each with its ``PETS_*`` environment variable) and passes the command
one keyword argument, ``key_config`` (a :class:`~pets.keys.KeyConfig`), so new options never
change a command's signature. Secrets (master key, passphrase, PIN, transit tokens and secret-ids) are read from the environment
only, never from flags.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from pets._errors import InputError
from pets._events import AuditHook
from pets.keys._config import KeyConfig
from pets.keys._service import KeyServices

__all__ = [
    "check_pinned_servers",
    "keyring_options",
    "pinned_key_config",
    "services_from_options",
]

F = TypeVar("F", bound=Callable[..., Any])


def keyring_options(f: F) -> F:
    """Add the key-service options; the command receives ``key_config: KeyConfig``."""

    @functools.wraps(f)
    def wrapper(*args: Any, keyring: Path | None, pkcs11_library: str | None,
                pkcs11_token: tuple[str, ...], pkcs11_jurisdiction: str | None,
                key_servers: Path | None, **kwargs: Any) -> Any:
        kwargs["key_config"] = KeyConfig.from_env(
            keyring=keyring, pkcs11_library=pkcs11_library,
            pkcs11_tokens=pkcs11_token, pkcs11_jurisdiction=pkcs11_jurisdiction,
            key_servers=key_servers,
        )
        return f(*args, **kwargs)

    opts = [
        click.option("--key-servers", "key_servers", default=None, metavar="FILE",
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="OpenBao/Vault transit servers (vault://NAME/KEY): a YAML or JSON "
                          "file {NAME: {url, jurisdiction, mount, auth, ca_cert}} naming the "
                          "variables/files that hold credentials, never a secret. A boundary "
                          "pins the servers it was set up with. [env: PETS_KEY_SERVERS]"),
        click.option("--pkcs11-jurisdiction", default=None, metavar="CODE",
                     help="Jurisdiction of tokens named without one. "
                          "[env: PETS_PKCS11_JURISDICTION]"),
        click.option("--pkcs11-token", multiple=True, metavar="LABEL[=CODE]",
                     help="PKCS#11 token to open (repeatable); PIN from PETS_PKCS11_PIN. "
                          "[env: PETS_PKCS11_TOKEN, comma-separated]"),
        click.option("--pkcs11-library", default=None, metavar="PATH",
                     help="PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so. "
                          "[env: PETS_PKCS11_LIBRARY]"),
        click.option("--keyring", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Local keyring directory; master key from PETS_MASTER_KEY or "
                          "PETS_KEYRING_PASSPHRASE. [env: PETS_KEYRING; default ./.pets/keyring]"),
    ]
    out: Callable[..., Any] = wrapper
    for opt in opts:
        out = opt(out)
    return out  # type: ignore[return-value]


def services_from_options(
    key_config: KeyConfig,
    *,
    audit: AuditHook | None = None,
    environ: Mapping[str, str] | None = None,
) -> KeyServices:
    """Open the key services ``key_config`` names (secrets from the environment).

    ``audit`` receives the backends' key events and one ``key.wrap`` / ``key.unwrap`` /
    ``key.failed`` event per use of a key made through the returned registry.
    """
    return key_config.services(environ=environ, audit=audit)


def pinned_key_config(key_config: KeyConfig, directory: Path) -> KeyConfig:
    """``key_config`` with the transit servers pinned in ``directory``'s ``boundary.json``
    when the caller names none (checked again, verified, by :func:`check_pinned_servers`).

    Raises:
        InputError: A server the caller names differs from the pinned one of that name, or
            is not pinned at all (the message names the server).
    """
    import json

    from pets.boundary import Anchors

    path = directory / "boundary.json"
    try:
        anchors = Anchors.from_dict(json.loads(path.read_text()), str(path))
    except (OSError, ValueError):
        return key_config  # BoundaryKeys.open says what is wrong
    pinned = anchors.key_services.get("transit_servers") or {}
    if not key_config.transit_servers:
        if not pinned:
            return key_config
        # boundary.json is verified only by a key those servers unwrap: taking their
        # addresses from it first would let an edited file send the credentials (and later
        # data keys) to a server of the editor's choosing. The operator names them.
        raise InputError(f"the boundary at {directory} uses transit server(s) "
                         f"{', '.join(sorted(pinned))}: name them with --key-servers FILE or "
                         "PETS_KEY_SERVERS (their addresses are never read from boundary.json "
                         "before it is verified)")
    check_pinned_servers(key_config, anchors.key_services, directory)
    return key_config


def check_pinned_servers(key_config: KeyConfig, key_services: Any, directory: Path) -> None:
    """Every transit server of ``key_config`` must be pinned, with the same settings, in the
    boundary's (verified) ``key_services``: a caller cannot send data keys, or its
    credentials, to a server the boundary was not set up with.

    Raises:
        InputError: A server differs from the pinned one of its name, or is not pinned.
    """
    pinned = dict(key_services.get("transit_servers") or {})
    for server in key_config.transit_servers:
        if server.name not in pinned:
            raise InputError(f"transit server {server.name!r} is not pinned for the boundary "
                             f"at {directory} (pinned: {', '.join(sorted(pinned)) or 'none'})")
        if pinned[server.name] != server.to_dict():
            raise InputError(f"transit server {server.name!r} differs from the one pinned for "
                             f"the boundary at {directory} (url, jurisdiction, mount, auth or "
                             "ca_cert changed)")

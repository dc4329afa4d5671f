"""Key-service options shared by every command that touches keys.

Usage in a command module::

    from pets.cli._keyopts import keyring_options, services_from_options

    @click.command()
    @keyring_options
    def encrypt(..., key_config: KeyConfig) -> None:
        services = services_from_options(key_config, audit=hook)

:func:`keyring_options` adds ``--keyring``, ``--pkcs11-library``, ``--pkcs11-token`` and
``--pkcs11-jurisdiction`` (each with its ``PETS_*`` environment variable) and passes the command
one keyword argument, ``key_config`` (a :class:`~pets.keys.KeyConfig`), so new options never
change a command's signature. Secrets (master key, passphrase, PIN) are read from the environment
only, never from flags.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from pets._events import AuditHook
from pets.keys._config import KeyConfig
from pets.keys._service import KeyServices

__all__ = ["keyring_options", "services_from_options"]

F = TypeVar("F", bound=Callable[..., Any])


def keyring_options(f: F) -> F:
    """Add the key-service options; the command receives ``key_config: KeyConfig``."""

    @functools.wraps(f)
    def wrapper(*args: Any, keyring: Path | None, pkcs11_library: str | None,
                pkcs11_token: tuple[str, ...], pkcs11_jurisdiction: str | None,
                **kwargs: Any) -> Any:
        kwargs["key_config"] = KeyConfig.from_env(
            keyring=keyring, pkcs11_library=pkcs11_library,
            pkcs11_tokens=pkcs11_token, pkcs11_jurisdiction=pkcs11_jurisdiction,
        )
        return f(*args, **kwargs)

    opts = [
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

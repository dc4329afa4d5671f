"""``pets keys``: create and manage jurisdiction-scoped key-encryption keys.

Every sub-command takes the key-service options of :mod:`pets.cli._keyopts` (``--keyring``,
``--pkcs11-*``; secrets from ``PETS_MASTER_KEY`` / ``PETS_KEYRING_PASSPHRASE`` /
``PETS_PKCS11_PIN``) and ``--json``. ``create``, ``rotate``, ``retire``, ``destroy`` and
``migrate`` also take ``--boundary`` (as ``pets protect`` does) and need the boundary set up by
``pets boundary init``: their ``key.*`` events are appended to the boundary's pinned, signed
audit log, with ``PETS_PRINCIPAL@PETS_JURISDICTION`` as the actor (``migrate`` also records the
``key.unwrap`` and ``key.wrap`` it makes). There is no bootstrap state in which they run
unlogged: ``pets keys init`` makes an empty keyring, ``pets boundary init`` creates the signing
KEK in it and opens the log, and every key operation after that is on the record. ``rotate``, ``retire`` and ``destroy`` go through
:class:`~pets.keys.KeyServices`, so caches of unwrapped keys in this process (a
``ParquetCrypto``, worker key references) drop the key before the command returns. Failures
raise :class:`~pets.PetsError` subclasses that the CLI maps to exit codes (4 jurisdiction,
5 integrity, 7 key service, 1 bad input).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pets._errors import InputError
from pets.cli._cmd_boundary import _audit_option, _boundary_option, open_key_audit
from pets.cli._common import (
    check_out,
    context_options,
    emit,
    json_option,
    make_context,
    overwrite_option,
    parse_pairs,
)
from pets.cli._keyopts import keyring_options, services_from_options
from pets.keys._config import KeyConfig, master_key_from_env
from pets.keys._service import KeyInfo, KeyServices, WrappedKey

if TYPE_CHECKING:
    from pets.boundary import AuditLog
    from pets.jurisdiction import Context

__all__ = ["COMMANDS"]

_MAX_WRAPPED_FILE = 1 << 16  # a WrappedKey JSON is a few hundred bytes


def _info_text(info: KeyInfo) -> str:
    versions = ", ".join(f"v{v.version} {v.state}" for v in info.versions)
    return (f"{info.uri}  jurisdiction={info.jurisdiction}  primary=v{info.primary_version}  "
            f"min_decryption=v{info.min_decryption_version}  backend={info.backend}  "
            f"[{versions}]")


def _show(info: KeyInfo, as_json: bool) -> None:
    emit(info.to_dict(), as_json, lambda: _info_text(info))


def _services(key_config: KeyConfig) -> KeyServices:
    return services_from_options(key_config)


def _logged(key_config: KeyConfig, audit_log: Path | None, boundary_keys: Path | None,
            ctx: Context | None = None) -> tuple[KeyServices, AuditLog]:
    """Key services wired to the boundary's signed audit log (``pets boundary init`` first:
    no key operation runs unlogged)."""
    from pets.jurisdiction import Context

    return open_key_audit(key_config, boundary_keys, audit_log, ctx or Context.from_env())


@click.group()
def keys() -> None:
    """Key-encryption keys: local keyring or PKCS#11 HSM, scoped to one jurisdiction."""


@keys.command("new-master-key")
def new_master_key_cmd() -> None:
    """Print a fresh 32-byte master key (64 hex digits, from the OS CSPRNG) for a keyring.

    Use it as `export PETS_MASTER_KEY=$(pets keys new-master-key)` and keep it in your
    secret store: without it the keyring cannot be opened. Nothing is written or logged.
    """
    import secrets

    click.echo(secrets.token_hex(32))


@keys.command("init")
@click.option("--name", required=True,
              help="Keyring name: the authority of its URIs, local://NAME/<key>.")
@keyring_options
@json_option
def init_cmd(name: str, key_config: KeyConfig, as_json: bool) -> None:
    """Create an empty local keyring.

    The master key comes from PETS_MASTER_KEY (or a passphrase from PETS_KEYRING_PASSPHRASE).
    Generate a master key with `export PETS_MASTER_KEY=$(pets keys new-master-key)` and keep
    it in your secret store; without it the keyring cannot be opened.
    """
    from pets.keys._local import LocalKeyring

    master_key, passphrase = master_key_from_env()
    if master_key is None and passphrase is None:
        raise InputError("set PETS_MASTER_KEY (e.g. export PETS_MASTER_KEY=$(pets keys "
                         "new-master-key)) or "
                         "PETS_KEYRING_PASSPHRASE before `pets keys init`")
    ring = LocalKeyring.init(key_config.keyring, name=name, master_key=master_key,
                             passphrase=None if master_key is not None else passphrase)
    payload = {"keyring": str(ring.path), "name": ring.name,
               "kdf": "none" if master_key is not None else "scrypt"}
    emit(payload, as_json, f"initialised keyring {ring.name!r} at {ring.path} "
                           f"(keys: local://{ring.name}/<name>)")


@keys.command("create")
@click.argument("uri")
@click.option("--jurisdiction", envvar="PETS_JURISDICTION", default="EU", show_default=True,
              help="Jurisdiction the key belongs to. [env: PETS_JURISDICTION]")
@_audit_option
@_boundary_option
@keyring_options
@json_option
def create_cmd(uri: str, jurisdiction: str, audit_log: Path, boundary_keys: Path | None,
               key_config: KeyConfig, as_json: bool) -> None:
    """Create a KEK named URI.

    URI is local://RING/NAME (local keyring) or pkcs11://TOKEN/LABEL (HSM).
    """
    services, _ = _logged(key_config, audit_log, boundary_keys)
    info = services.for_uri(uri).create(uri, jurisdiction=jurisdiction)
    _show(info, as_json)


@keys.command("list")
@keyring_options
@json_option
def list_cmd(key_config: KeyConfig, as_json: bool) -> None:
    """List keys (metadata only, never key bytes)."""
    infos = [info for svc in _services(key_config) for info in svc.list()]
    emit([i.to_dict() for i in infos], as_json,
         lambda: "\n".join(_info_text(i) for i in infos) or "no keys")


@keys.command("describe")
@click.argument("uri")
@keyring_options
@json_option
def describe_cmd(uri: str, key_config: KeyConfig, as_json: bool) -> None:
    """Show one key's metadata.

    Jurisdiction, primary and minimum decryption versions, and every version's state.
    """
    _show(_services(key_config).for_uri(uri).describe(uri), as_json)


@keys.command("rotate")
@click.argument("uri")
@_audit_option
@_boundary_option
@keyring_options
@json_option
def rotate_cmd(uri: str, audit_log: Path, boundary_keys: Path | None, key_config: KeyConfig,
               as_json: bool) -> None:
    """Add a new primary key version.

    New wraps use it; older versions still unwrap until retired or destroyed.
    """
    services, _ = _logged(key_config, audit_log, boundary_keys)
    _show(services.rotate(uri), as_json)


@keys.command("retire")
@click.argument("uri")
@click.option("--min-version", "min_version", type=click.IntRange(min=1), required=True,
              help="Refuse unwrap for versions below this one (reversible).")
@_audit_option
@_boundary_option
@keyring_options
@json_option
def retire_cmd(uri: str, min_version: int, audit_log: Path, boundary_keys: Path | None,
               key_config: KeyConfig, as_json: bool) -> None:
    """Set the minimum decryption version.

    Versions below it are refused (like Vault's min_decryption_version); lowering it again
    re-enables them.
    """
    services, _ = _logged(key_config, audit_log, boundary_keys)
    _show(services.retire(uri, min_version), as_json)


@keys.command("destroy")
@click.argument("uri")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Version to destroy (default: every version).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_audit_option
@_boundary_option
@keyring_options
@json_option
def destroy_cmd(uri: str, version: int | None, yes: bool, audit_log: Path,
                boundary_keys: Path | None, key_config: KeyConfig, as_json: bool) -> None:
    """Crypto-shred a key version (irreversible).

    Destroys one version (--version) or all; data wrapped under it becomes unrecoverable.
    """
    what = f"{uri} v{version}" if version is not None else f"every version of {uri}"
    if not yes:
        if not sys.stdin.isatty():
            raise InputError(f"refusing to destroy {what} without --yes (no terminal to confirm)")
        click.confirm(f"destroy {what}? Data wrapped under it becomes unrecoverable",
                      abort=True, err=True)
    services, _ = _logged(key_config, audit_log, boundary_keys)
    _show(services.destroy(uri, version), as_json)


@keys.command("migrate")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "target_uri", required=True,
              help="Key URI to re-wrap under (its primary version).")
@click.option("--context", "enc_context", multiple=True, metavar="KEY=VALUE",
              help="Encryption context the data key was wrapped with (repeatable).")
@click.option("--allow-jurisdiction-change", is_flag=True,
              help="Allow a target key of another jurisdiction (moves where data can be read).")
@overwrite_option
@_audit_option
@_boundary_option
@context_options
@keyring_options
@json_option
def migrate_cmd(src: Path, dest: Path, target_uri: str, enc_context: tuple[str, ...],
                allow_jurisdiction_change: bool, overwrite: bool, audit_log: Path,
                boundary_keys: Path | None,
                jurisdiction: str, principal: str | None, key_config: KeyConfig,
                as_json: bool) -> None:
    """Re-wrap a wrapped data key under another key.

    Reads SRC (WrappedKey JSON), re-wraps it under --to's primary version, writes DEST.

    The data key is unwrapped and re-wrapped inside pets; the data it protects is untouched.
    DEST is written atomically (mode 0600). It may not be SRC (nor a symlink, hard link or
    `..` path to it: check the new file, then move it over SRC), nor lie in the keyring or the
    boundary directory; an existing DEST is replaced only with --overwrite.
    """
    from pets._io import atomic_path
    from pets.keys._rewrap import rewrap

    target = check_out(dest, option="DEST", inputs=[src], key_config=key_config,
                       audit_log=audit_log, boundary_keys=boundary_keys, overwrite=overwrite)
    if not src.is_file():  # a FIFO would block the read forever
        raise InputError(f"cannot read wrapped key {src}: not a regular file")
    try:
        with open(src, "rb") as fh:
            raw = fh.read(_MAX_WRAPPED_FILE + 1)
        if len(raw) > _MAX_WRAPPED_FILE:
            raise InputError(f"{src}: not a wrapped key (over {_MAX_WRAPPED_FILE} bytes)")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read wrapped key {src}: {exc.__class__.__name__}") from None
    try:
        wrapped = WrappedKey.from_json(text)
    except InputError as exc:
        raise InputError(f"{src}: {exc}") from None
    ctx = make_context(jurisdiction, principal)
    services, log = _logged(key_config, audit_log, boundary_keys, ctx)
    new = rewrap(wrapped, source=services, target_uri=target_uri, target=services,
                 context=ctx, enc_context=parse_pairs(enc_context),
                 allow_jurisdiction_change=allow_jurisdiction_change,
                 audit=log.hook)
    with atomic_path(target, mode=0o600) as tmp:
        tmp.write_text(new.to_json() + "\n")
    payload: dict[str, Any] = {"from": wrapped.key_uri, "from_version": wrapped.version,
                               "to": new.key_uri, "to_version": new.version, "out": str(dest)}
    emit(payload, as_json, f"re-wrapped {wrapped.key_uri} v{wrapped.version} -> "
                           f"{new.key_uri} v{new.version}: {dest}")


COMMANDS = [keys]

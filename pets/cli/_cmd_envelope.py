"""``pets encrypt``, ``pets decrypt``, ``pets rewrap``: envelope encryption of files.

Keys come from the key-service options (``--keyring``, ``--pkcs11-*``; secrets from the
environment). Like ``pets keys``, each command takes ``--audit-log`` / ``--boundary-keys``: once
the boundary signing key exists, every use of a key (``key.wrap``, ``key.unwrap``, refusals and
failures: one entry per wrap or unwrap, never per segment) and the ``envelope.*`` events are
appended to the signed audit log, with ``--principal@--jurisdiction`` as the actor; a signing
key that cannot be opened stops the command before any key is used. Before the signing key
exists (a fresh keyring) the commands run without a log. Failures raise :class:`~pets.PetsError` subclasses that the CLI maps to exit
codes: 4 jurisdiction refused, 5 integrity (tampered, wrong key or context), 7 key service
(e.g. a destroyed or retired key version), 1 bad input. Nothing is written on failure.

OUT (and ``rewrap --out``) may not be the input (nor a symlink, a hard link or a ``..`` path to
it), nor lie in the keyring, the boundary directory (``.pets``), the audit log or the ledger; an
existing OUT is replaced only with ``--overwrite`` (exit 1 otherwise, before any key is used).
Decrypted plaintext is written to a 0600 temporary file beside OUT and renamed onto it once
every segment authenticates; a signal (SIGTERM, SIGINT, SIGHUP) removes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

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
from pets.cli._keyopts import keyring_options
from pets.keys._config import KeyConfig

if TYPE_CHECKING:
    from pets._events import AuditHook
    from pets.jurisdiction import Context
    from pets.keys._service import KeyServices

__all__ = ["COMMANDS"]

_context_opt = click.option(
    "--context", "enc_context", multiple=True, metavar="KEY=VALUE",
    help="Encryption context entry (repeatable); bound to the ciphertext, stored in clear.")


def _logged(key_config: KeyConfig, audit_log: Path | None, boundary_keys: Path | None,
            ctx: Context) -> tuple[KeyServices, AuditHook]:
    """Key services (and the hook for ``envelope.*`` events) wired to the boundary's signed
    audit log: no key use without the boundary (``pets boundary init``)."""
    services, log = open_key_audit(key_config, boundary_keys, audit_log, ctx)
    return services, log.hook


def _keys_text(payload: dict[str, Any]) -> str:
    return ", ".join(f"{w['key_uri']} v{w['version']} ({w['jurisdiction']})"
                     for w in payload["wrapped_keys"])


@click.command("encrypt")
@click.argument("src", metavar="IN", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key_uris", multiple=True, required=True, metavar="URI",
              help="KEK URI to wrap the data key under (repeatable: any one decrypts).")
@_context_opt
@click.option("--segment-size", type=click.IntRange(min=64), default=1 << 20, show_default=True,
              help="Plaintext bytes per authenticated segment.")
@overwrite_option
@_audit_option
@_boundary_option
@context_options
@keyring_options
@json_option
def encrypt_cmd(src: Path, dst: Path, key_uris: tuple[str, ...], enc_context: tuple[str, ...],
                segment_size: int, overwrite: bool, audit_log: Path,
                boundary_keys: Path | None, jurisdiction: str, principal: str | None,
                key_config: KeyConfig, as_json: bool) -> None:
    """Encrypt file IN into a pets envelope OUT (streaming, atomic)."""
    from pets.envelope import encrypt_file

    target = check_out(dst, option="OUT", inputs=[src], key_config=key_config,
                       audit_log=audit_log, boundary_keys=boundary_keys, overwrite=overwrite)
    pairs = parse_pairs(enc_context)
    ctx = make_context(jurisdiction, principal)
    services, hook = _logged(key_config, audit_log, boundary_keys, ctx)
    info = encrypt_file(src, target, keys=services, key_uris=key_uris, context=ctx,
                        enc_context=pairs, segment_size=segment_size,
                        audit=hook)
    payload = {"in": str(src), "out": str(dst), **info.to_dict()}
    emit(payload, as_json, lambda: f"encrypted {src} -> {dst} ({info.plaintext_size} bytes) "
                                   f"under {_keys_text(payload)}")


@click.command("decrypt")
@click.argument("src", metavar="IN", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--context", "enc_context", multiple=True, metavar="KEY=VALUE",
              help="Expected encryption context (repeatable); when given it must match "
                   "the envelope's exactly.")
@overwrite_option
@_audit_option
@_boundary_option
@context_options
@keyring_options
@json_option
def decrypt_cmd(src: Path, dst: Path, enc_context: tuple[str, ...], overwrite: bool,
                audit_log: Path, boundary_keys: Path | None, jurisdiction: str,
                principal: str | None, key_config: KeyConfig, as_json: bool) -> None:
    """Decrypt envelope IN into OUT; OUT appears only once every segment authenticates."""
    from pets.envelope import decrypt_file

    target = check_out(dst, option="OUT", inputs=[src], key_config=key_config,
                       audit_log=audit_log, boundary_keys=boundary_keys, overwrite=overwrite)
    expected = parse_pairs(enc_context) if enc_context else None
    ctx = make_context(jurisdiction, principal)
    services, hook = _logged(key_config, audit_log, boundary_keys, ctx)
    info = decrypt_file(src, target, keys=services, context=ctx,
                        enc_context=expected,
                        audit=hook)
    payload = {"in": str(src), "out": str(dst), **info.to_dict()}
    emit(payload, as_json, lambda: f"decrypted {src} -> {dst} ({info.plaintext_size} bytes; "
                                   f"context {dict(info.enc_context)})")


@click.command("rewrap")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to_uris", multiple=True, required=True, metavar="URI",
              help="KEK URI to re-wrap under, at its primary version (repeatable). The old "
                   "wrapped keys are replaced.")
@click.option("--out", "dst", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of replacing FILE in place (not FILE itself: omit "
                   "--out to re-wrap in place).")
@overwrite_option
@click.option("--allow-jurisdiction-change", is_flag=True,
              help="Allow a KEK of another jurisdiction (moves where the data can be read).")
@_audit_option
@_boundary_option
@context_options
@keyring_options
@json_option
def rewrap_cmd(file: Path, to_uris: tuple[str, ...], dst: Path | None, overwrite: bool,
               allow_jurisdiction_change: bool, audit_log: Path, boundary_keys: Path | None,
               jurisdiction: str, principal: str | None, key_config: KeyConfig,
               as_json: bool) -> None:
    """Re-wrap FILE's data key under --to (rotation, retirement, migration), atomically.

    Only the header changes; the encrypted segments are copied byte for byte.
    """
    from pets.envelope import read_header, rewrap_file

    # in place (no --out) FILE is replaced: it may not be in the keyring, the log, the ledger
    target = check_out(dst or file, option="--out" if dst else "FILE",
                       inputs=[file] if dst else [], key_config=key_config,
                       audit_log=audit_log, boundary_keys=boundary_keys,
                       overwrite=overwrite or dst is None)
    before = read_header(file)
    ctx = make_context(jurisdiction, principal)
    services, hook = _logged(key_config, audit_log, boundary_keys, ctx)
    info = rewrap_file(file, keys=services, context=ctx, to=list(to_uris), dst=target if dst else None,
                       allow_jurisdiction_change=allow_jurisdiction_change, audit=hook)
    payload = {"file": str(dst or file),
               "from": before.to_dict()["wrapped_keys"], **info.to_dict()}
    emit(payload, as_json, lambda: f"re-wrapped {dst or file}: "
                                   f"{_keys_text({'wrapped_keys': payload['from']})} -> "
                                   f"{_keys_text(payload)}")


COMMANDS = [encrypt_cmd, decrypt_cmd, rewrap_cmd]

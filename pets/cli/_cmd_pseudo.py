"""``pets pseudonymize``: apply keyed pseudonyms, tokens, FF1 and generalizers to a table.

The root secret (32 bytes) is a data key wrapped under a KEK of a jurisdiction key service,
stored as a WrappedKey JSON file (``--secret``); ``--create-secret KEY_URI`` makes a fresh one.
The key service refuses to unwrap outside the KEK's jurisdiction. For EU-only local experiments
``--secret-env VAR`` reads 64 hex digits from an environment variable instead (refused unless
the context jurisdiction is EU).

DEST may not be SRC or the ``--secret`` file (nor a symlink, hard link or ``..`` path to them),
nor lie in the keyring or the boundary directory (``.pets``); an existing DEST is replaced only
with ``--overwrite``. A ``--create-secret`` file is never overwritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from pets._errors import InputError, JurisdictionError
from pets.cli._common import (
    check_out,
    context_options,
    emit,
    json_option,
    make_context,
    overwrite_option,
)
from pets.cli._keyopts import keyring_options
from pets.keys._config import KeyConfig

__all__ = ["COMMANDS"]


def _read_table(path: Path) -> Any:
    import pandas as pd

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():  # a directory, or a FIFO that would block the reader forever
        raise InputError(f"{path}: not a regular file")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype="string")
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read table ({type(exc).__name__})") from None


def _write_table(frame: Any, path: Path) -> None:
    from pets._io import atomic_path, write_parquet

    if path.suffix.lower() == ".csv":
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    else:
        write_parquet(frame, path)


def _parse_columns(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        col, sep, spec = item.partition("=")
        if not sep or not col or not spec:
            raise InputError(f"invalid --column {item!r}: expected COLUMN=TRANSFORM[:ARGS]")
        if col in out:
            raise InputError(f"--column {col!r} given twice")
        out[col] = spec
    return out


@click.command("pseudonymize")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--column", "columns", multiple=True, required=True, metavar="COL=SPEC",
              help="Column and transform, e.g. email=keyed-hash:crm:casefold, phone=ff1-phone:crm, "
                   "birth_date=age-band:2026-01-01, ip=ip-prefix:v4=24 (repeatable).")
@click.option("--secret", "secret_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="WrappedKey JSON file holding the root secret.")
@click.option("--create-secret", "create_uri", default=None, metavar="KEY_URI",
              help="Create a fresh root secret wrapped under KEY_URI and write it to --secret "
                   "(which must not exist).")
@click.option("--secret-env", default=None, metavar="VAR",
              help="Read the root secret (64 hex digits) from environment variable VAR "
                   "(EU-only local use).")
@click.option("--quasi", default=None, metavar="COL,COL",
              help="Also report k-anonymity of the output on these quasi-identifiers.")
@click.option("--k", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Target k for --quasi.")
@overwrite_option
@context_options
@keyring_options
@json_option
def pseudonymize_cmd(src: Path, dest: Path, columns: tuple[str, ...], secret_file: Path | None,
                     create_uri: str | None, secret_env: str | None, quasi: str | None, k: int,
                     overwrite: bool, jurisdiction: str, principal: str | None, key_config: KeyConfig,
                     as_json: bool) -> None:
    """Pseudonymize columns of SRC (Parquet or CSV) into DEST, atomically.

    Deterministic transforms (keyed-hash, token, ff1) link equal values within their domain;
    see docs/pseudonymization.md.
    """
    from pets.keys import Secret, WrappedKey
    from pets.pseudo import KeyOrigin, anonymity_report, pseudonymize, transform_from_spec

    context = make_context(jurisdiction, principal)
    specs = _parse_columns(columns)
    root: Secret | None = None
    origin = KeyOrigin()
    if secret_env is not None and (secret_file is not None or create_uri is not None):
        raise InputError("use either --secret/--create-secret or --secret-env, not both")
    if create_uri is not None:
        if secret_file is None:
            raise InputError("--create-secret needs --secret FILE to write the wrapped key to")
        if secret_file.exists():
            raise InputError(f"{secret_file}: already exists; refusing to overwrite a secret")
        secret_file = check_out(secret_file, option="--secret", inputs=[src, dest],
                                key_config=key_config)
    target = check_out(dest, option="DEST", inputs=[src, secret_file], key_config=key_config,
                       overwrite=overwrite)
    new_secret: str | None = None
    if secret_file is not None:
        from pets.cli._keyopts import services_from_options

        services = services_from_options(key_config)
        if create_uri is not None:
            fresh = Secret.generate(32)
            wrapped = services.wrap(create_uri, fresh.expose(), context=context)
            new_secret = wrapped.to_json() + "\n"  # written only once the run has succeeded
        else:
            if not secret_file.exists():
                raise InputError(f"{secret_file}: no such file")
            wrapped = WrappedKey.from_json(secret_file.read_bytes())
        root = Secret(services.unwrap(wrapped, context=context))
        origin = KeyOrigin(wrapped.key_uri, wrapped.version, wrapped.jurisdiction)
    elif secret_env is not None:
        if context.jurisdiction != "EU":
            raise JurisdictionError(
                f"--secret-env is for EU-only local use; refused for {context.access_token}")
        raw = os.environ.get(secret_env)
        if raw is None:
            raise InputError(f"environment variable {secret_env} is not set")
        try:
            value = bytes.fromhex(raw.strip())
        except ValueError:
            raise InputError(f"environment variable {secret_env} must hold 64 hex digits") \
                from None
        if len(value) != 32:
            raise InputError(f"environment variable {secret_env} must hold 64 hex digits")
        root = Secret(value)
        origin = KeyOrigin(jurisdiction="EU")
    transforms = {col: transform_from_spec(spec, root=root, origin=origin)
                  for col, spec in specs.items()}
    frame = _read_table(src)
    out = pseudonymize(frame, transforms)
    result: dict[str, Any] = {
        "source": str(src), "output": str(dest), "rows": len(out),
        "columns": {col: t.describe() for col, t in transforms.items()},
    }
    if quasi:  # before anything is written: a bad --quasi must not leave output behind
        qis = [q.strip() for q in quasi.split(",") if q.strip()]
        result["anonymity"] = anonymity_report(out, qis, k=k).to_dict()
    if new_secret is not None and secret_file is not None:
        from pets._io import atomic_path

        if secret_file.exists():
            raise InputError(f"{secret_file}: already exists; refusing to overwrite a secret")
        with atomic_path(secret_file, mode=0o600) as tmp:
            tmp.write_text(new_secret)
    _write_table(out, target)

    def text() -> str:
        lines = [f"wrote {dest} ({len(out)} rows)"]
        for col, d in result["columns"].items():
            lines.append(f"  {col}: {d['name']}"
                         + (f" (domain {d['domain']})" if "domain" in d else "")
                         + f" — links: {d['links']}")
        if "anonymity" in result:
            a = result["anonymity"]
            lines.append(f"  k-anonymity on {','.join(a['quasi_identifiers'])}: k={a['k']} "
                         f"(target {a['k_target']}), {a['share_below_k']:.2%} of rows below")
        return "\n".join(lines)

    emit(json.loads(json.dumps(result, default=str)), as_json, text)


COMMANDS = [pseudonymize_cmd]

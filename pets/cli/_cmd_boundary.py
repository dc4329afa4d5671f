"""``pets protect``, ``pets export``, ``pets reidentify`` and ``pets audit``: the boundary CLI.

A whole ETL step is one command with a YAML policy::

    pets protect users.parquet --policy users-policy.yaml --out protected/
    pets protect raw/ --policy users-policy.yaml --out protected/ --engine dask --workers 4
    pets protect raw/ --policy users-policy.yaml --out protected/ --engine dask \
        --scheduler tcp://scheduler:8786
    pets protect raw/ --policy users-policy.yaml --out protected/ --engine dask \
        --parquet-encrypt local://eu/columns:email,phone --footer-key local://eu/columns
    pets export protected/ --to US --out us/users.parquet --columns user_id,email,country
    pets export protected/ --to US --out us/users --columns allowed   # a Dask dataset
    pets audit verify .pets/audit.jsonl --public-key .pets/keyring/boundary/signing-key.pub.pem
    pets policy check users-policy.yaml --data users.parquet

Where things live (each with an option and an environment variable):

* the audit log: ``--audit-log`` / ``PETS_AUDIT_LOG`` (default ``./.pets/audit.jsonl``);
* the boundary keys (signing key, wrapped root secrets, public key PEM): ``--boundary-keys`` /
  ``PETS_BOUNDARY_KEYS`` (default ``<keyring>/boundary``);
* the KEKs: the key-service options of ``pets keys`` (``--keyring``, ``PETS_MASTER_KEY``…).

Exit codes: 0 success, 1 bad input, 2 usage, 3 policy refusal, 4 jurisdiction refusal,
5 integrity failure (tampered data, bad signature, audit log that does not verify), 7 key
service failure.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from pets._errors import InputError, IntegrityError, JurisdictionError
from pets.cli._common import (
    context_options,
    dask_options,
    dask_target,
    emit,
    json_option,
    make_context,
)
from pets.cli._keyopts import keyring_options, services_from_options

if TYPE_CHECKING:
    import pandas as pd

    from pets._events import AuditEvent
    from pets.boundary import AuditLog, BoundaryKeys, Policy
    from pets.jurisdiction import Context
    from pets.keys._config import KeyConfig
    from pets.keys._service import KeyServices

__all__ = ["COMMANDS"]

DEFAULT_AUDIT_LOG = Path(".pets") / "audit.jsonl"
DEFAULT_LEDGER = Path(".pets") / "ledger.sqlite"
_POLICY_COPY = "policy.yaml"


def _audit_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--audit-log``, kept only to refuse it: the audit log is pinned in ``boundary.json``
    by ``pets boundary init`` and no command lets its caller choose another one."""
    return click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, hidden=True, expose_value=True)(f)


def _boundary_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--boundary", "--boundary-keys", "boundary_keys",
                        type=click.Path(file_okay=False, path_type=Path),
                        envvar=["PETS_BOUNDARY", "PETS_BOUNDARY_KEYS"], default=None,
                        help="The boundary directory set up by `pets boundary init` (signing "
                             "key, pinned anchors, wrapped root secrets). "
                             "[env: PETS_BOUNDARY; default <keyring>/boundary]")(f)


def refuse_caller_audit_log(audit_log: Path | None) -> None:
    """A caller-chosen audit log is refused: the boundary pins where its log lives.

    Raises:
        click.UsageError: ``--audit-log`` was given, or ``PETS_AUDIT_LOG`` is set.
    """
    import os

    if audit_log is not None or os.environ.get("PETS_AUDIT_LOG"):
        raise click.UsageError(
            "the audit log is pinned when the boundary is set up (pets boundary init "
            "--audit-log); --audit-log / PETS_AUDIT_LOG cannot choose another one per command")


class _LateLog:
    """An audit hook for the key services and boundary keys opened *before* the log they
    report to (the log needs the signing key those open). Events before ``log`` is set are
    held and written, in order, as soon as it is: the signing key's own unwrap is on the
    record too. Events of a command that fails before the log opens are lost with it; that
    command did nothing (it could not even open the signing key)."""

    def __init__(self) -> None:
        self._log: AuditLog | None = None
        self._held: list[AuditEvent] = []

    @property
    def log(self) -> AuditLog | None:
        return self._log

    @log.setter
    def log(self, log: AuditLog) -> None:
        from pets._errors import AuditHookError

        self._log = log
        held, self._held = self._held, []
        for event in held:
            try:
                log.hook(event)
            except Exception as exc:  # fail closed, as a key use the log cannot record does
                key = event.fields.get("key") or event.fields.get("kek") or ""
                raise AuditHookError(f"key use refused: the audit hook could not record "
                                     f"{event.kind}{' of ' + str(key) if key else ''} "
                                     f"({type(exc).__name__})") from None

    def __call__(self, event: AuditEvent) -> None:
        if self._log is None:
            self._held.append(event)
        else:
            self._log.hook(event)


_PIN = "boundary.pin.json"
_PIN_FORMAT = "pets.boundary-pin/1"


def _keyring_pin(key_config: KeyConfig) -> Path | None:
    """Where a local keyring records the one boundary it serves (``None``: no keyring)."""
    from pets.keys import LocalKeyring

    ring = key_config.keyring
    return ring / _PIN if LocalKeyring.exists(ring) else None


def _check_keyring_pin(key_config: KeyConfig, directory: Path, *, creating: bool) -> None:
    """One local keyring serves one boundary: a second boundary on it would keep key
    operations, re-identifications and spends in a log nobody watches.

    Raises:
        InputError: The keyring serves another boundary (or, when ``creating``, any).
    """
    pin = _keyring_pin(key_config)
    if pin is None or not pin.exists():
        return
    try:
        doc = json.loads(pin.read_text())
        pinned = Path(doc["boundary"])
        if doc.get("format") != _PIN_FORMAT:
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{pin}: not a pets boundary pin ({_PIN_FORMAT}); the keyring's "
                         "boundary cannot be established") from None
    if creating or pinned != directory.resolve():
        raise InputError(f"keyring {key_config.keyring} serves the boundary at {pinned}: "
                         f"{'a second boundary' if creating else 'the boundary at ' + str(directory)} "
                         "on it would record key use and spends in another log (one keyring, "
                         "one boundary)")


def _write_keyring_pin(key_config: KeyConfig, directory: Path, signer: str) -> None:
    from pets._io import atomic_path

    pin = _keyring_pin(key_config)
    if pin is None:
        return
    doc = {"format": _PIN_FORMAT, "boundary": str(directory.resolve()), "signer": signer}
    with atomic_path(pin, mode=0o600) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _boundary_dir(key_config: KeyConfig, boundary_dir: Path | None) -> Path:
    """The boundary directory: ``--boundary`` or ``<keyring>/boundary``."""
    return boundary_dir or key_config.keyring / "boundary"


def open_boundary(key_config: KeyConfig, boundary_dir: Path | None, ctx: Context,
                  audit_log: Path | None = None) -> tuple[BoundaryKeys, AuditLog]:
    """Open the boundary set up by ``pets boundary init``: key services, the signing key, the
    pinned anchors and the audit log they name, wired so every key event is signed into it.

    Every command that acts at the boundary (protect, export, reidentify, release, the key
    and envelope commands) goes through here: there is no way to run them unlogged.

    Raises:
        click.UsageError: A caller-chosen audit log (``--audit-log``, ``PETS_AUDIT_LOG``).
        InputError: No boundary was set up there; an explicit keyring other than the pinned.
        JurisdictionError: ``ctx`` is outside the home (the signing key does not unwrap).
        IntegrityError: The anchors do not verify under the signing key.
    """
    from pets.boundary import AuditLog, BoundaryKeys

    refuse_caller_audit_log(audit_log)
    directory = _boundary_dir(key_config, boundary_dir)
    if not BoundaryKeys.exists(directory):
        from pets.keys import KeyServices as _Services

        BoundaryKeys.open(directory, _Services([]), context=ctx)  # raises, naming the fix
    from pets.cli._keyopts import check_pinned_servers, pinned_key_config

    _check_keyring_pin(key_config, directory, creating=False)
    hook = _LateLog()
    key_config = pinned_key_config(key_config, directory)
    services = services_from_options(key_config, audit=hook)
    keys = BoundaryKeys.open(directory, services, context=ctx, audit=hook)
    assert keys.anchors is not None
    check_pinned_servers(key_config, keys.anchors.key_services, directory)
    pinned_ring = keys.anchors.key_services.get("keyring")
    if key_config.keyring_explicit and pinned_ring is not None and \
            key_config.keyring.resolve() != Path(pinned_ring):
        raise InputError(f"--keyring/PETS_KEYRING {key_config.keyring} is not the keyring "
                         f"pinned for the boundary at {directory} ({pinned_ring})")
    log = AuditLog(keys.anchors.audit_log, signer=keys.signer, actor=ctx)
    hook.log = log
    keys.audit = log.hook
    return keys, log


def _open(key_config: KeyConfig, boundary_dir: Path | None, audit_log: Path | None,
          ctx: Context, policy: Policy | None, *, protecting: bool = False
          ) -> tuple[BoundaryKeys, AuditLog]:
    """:func:`open_boundary`; to protect, a policy's ``keys.signing`` must be the KEK of the
    boundary's signing key (exports of tables protected before a migration of that key keep
    their policy, and are checked against the pinned signing keys instead)."""
    from pets._errors import PolicyError

    keys, log = open_boundary(key_config, boundary_dir, ctx, audit_log)
    assert keys.anchors is not None
    if policy is not None and protecting:
        signing = policy.keys.get("signing")
        if signing is not None and signing != keys.anchors.signing_kek:
            raise PolicyError(f"{policy.source}: keys.signing {signing} is not the KEK of the "
                              f"boundary's pinned signing key ({keys.anchors.signing_kek})")
    return keys, log


def open_key_audit(key_config: KeyConfig, boundary_dir: Path | None, audit_log: Path | None,
                   ctx: Context) -> tuple[KeyServices, AuditLog]:
    """Key services whose events (``key.create``, ``key.wrap``…) land in the signed log.

    Used by ``pets keys`` and ``pets encrypt``/``decrypt``. There is no bootstrap state: a key
    operation or key use needs the boundary (``pets boundary init`` first), and failing to
    open it (wrong master key, wrong jurisdiction) is an error, never an unlogged run.
    """
    keys, log = open_boundary(key_config, boundary_dir, ctx, audit_log)
    return keys.services, log


def _read_parquet(path: Path) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read Parquet ({type(exc).__name__})") from None


def _protected_file(src: Path) -> Path:
    """What ``pets export SRC`` exports: a protected file or a protected dataset directory.

    ``SRC`` may be the file, the dataset directory (it holds ``_manifest.json``), or the
    ``--out`` directory of ``pets protect`` holding exactly one of them. A directory of several
    Parquet files without ``_manifest.json`` is returned as is: the gate refuses it as
    unprotected (and records the refusal).
    """
    from pets.boundary._dataset import is_dataset

    if not src.exists():
        raise InputError(f"{src}: no such file or directory")
    if not src.is_dir() or is_dataset(src):
        return src
    files = sorted(p for p in src.glob("*.parquet") if not p.name.startswith("."))
    datasets = sorted(p for p in src.iterdir() if p.is_dir() and is_dataset(p))
    found = files + datasets
    if len(found) == 1:
        return found[0]
    if not datasets and len(files) > 1:
        return src  # raw part files: the gate says why it refuses
    raise InputError(f"{src}: expected exactly one protected .parquet file or dataset "
                     f"directory, found {len(found)}")


# -- protect ------------------------------------------------------------------------------------

def parse_parquet_encryption(items: tuple[str, ...], footer_key: str | None
                             ) -> dict[str, list[str]] | None:
    """``--parquet-encrypt KEK_URI:COL,COL`` (repeatable) and ``--footer-key KEK_URI``.

    Both options go together (a usage error otherwise): pyarrow encrypts at least one column,
    and the footer key must be chosen, not guessed. The columns follow the URI's last ``:``
    (pyarrow's column-key syntax reserves ``:`` and ``,`` in column names); a KEK given twice
    collects its columns; a column under two KEKs is refused.

    Returns:
        ``{kek_uri: [column, ...]}``, or ``None`` when neither option is given.

    Raises:
        click.UsageError: One option without the other, or a malformed value.

    Examples:
        >>> parse_parquet_encryption(("local://eu/pii:email,phone", "local://eu/x:ip"),
        ...                          "local://eu/pii")
        {'local://eu/pii': ['email', 'phone'], 'local://eu/x': ['ip']}
        >>> parse_parquet_encryption((), None) is None
        True
        >>> parse_parquet_encryption(("local://eu/pii",), "local://eu/pii")
        Traceback (most recent call last):
        ...
        click.exceptions.UsageError: --parquet-encrypt 'local://eu/pii': expected KEK_URI:COL[,COL...]
    """
    from pets.keys import parse_key_uri

    if not items and footer_key is None:
        return None
    if not items:
        raise click.UsageError("--footer-key needs --parquet-encrypt KEK_URI:COL[,COL...] "
                               "(at least one encrypted column)")
    if footer_key is None:
        raise click.UsageError("--parquet-encrypt needs --footer-key KEK_URI (the KEK of the "
                               "footer: schema, statistics, key metadata)")
    try:
        parse_key_uri(footer_key)
    except InputError:
        raise click.UsageError(f"--footer-key {footer_key!r}: expected a key URI "
                               "scheme://authority/name") from None
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for item in items:
        uri, sep, cols_text = item.rpartition(":")
        cols = [c.strip() for c in cols_text.split(",")]
        try:
            if not sep or not uri or "://" not in uri or not all(cols):
                raise InputError(item)
            parse_key_uri(uri)
        except InputError:
            raise click.UsageError(f"--parquet-encrypt {item!r}: expected "
                                   "KEK_URI:COL[,COL...]") from None
        for c in cols:
            if c in owner:
                raise click.UsageError(f"--parquet-encrypt: column {c!r} is listed twice"
                                       + (f" (under {owner[c]} and {uri})"
                                          if owner[c] != uri else ""))
            owner[c] = uri
        out.setdefault(uri, []).extend(cols)
    return out


def _check_encrypted_columns(policy: Policy, columns: dict[str, list[str]]) -> None:
    """Every ``--parquet-encrypt`` column must be one the policy writes (before any work)."""
    written = [r.name for r in policy.columns if r.output is not None]
    missing = [c for cols in columns.values() for c in cols if c not in written]
    if missing:
        raise InputError(f"--parquet-encrypt names column(s) {', '.join(map(repr, missing))} "
                         f"that {policy.source} does not write; its output columns: "
                         f"{', '.join(written)}")


@click.command()
@click.argument("infile", type=click.Path(path_type=Path))
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="The dataset's policy (YAML).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory: <dataset>.parquet (manifest in its metadata) or, with "
                   "--engine dask, <dataset>/part.*.parquet + _manifest.json; and "
                   "manifest.json, policy.yaml, signing-key.pub.pem.")
@dask_options(
    engine_help="pandas: in memory, one file. dask: a local cluster of worker processes, a "
                "partitioned dataset (needs pip install 'pets[dask]').",
    scheduler_help="Run on an existing Dask cluster: its scheduler's address, e.g. "
                   "tcp://host:8786. Its workers need the keyring path and PETS_MASTER_KEY in "
                   "their own environment")
@click.option("--parquet-encrypt", "parquet_encrypt", multiple=True,
              metavar="KEK_URI:COL[,COL...]",
              help="With --engine dask: encrypt these output columns of every part file with "
                   "Parquet modular encryption, their data keys wrapped by KEK_URI "
                   "(repeatable; needs --footer-key). Such a dataset stays home: the export "
                   "gate refuses it.")
@click.option("--footer-key", default=None, metavar="KEK_URI",
              help="With --parquet-encrypt: the KEK of each part's (encrypted) footer.")
@click.option("--overwrite", is_flag=True,
              help="Replace the outputs of an earlier run in --out (never an input, the "
                   "keyring, the boundary, the audit log or the ledger).")
@_audit_option
@_boundary_option
@keyring_options
@context_options
@json_option
def protect(infile: Path, policy_path: Path, out: Path, engine: str, workers: int | None,
            scheduler: str | None, connect_timeout: float, parquet_encrypt: tuple[str, ...],
            footer_key: str | None, overwrite: bool, audit_log: Path | None,
            boundary_keys: Path | None, jurisdiction: str, principal: str | None,
            as_json: bool, key_config: KeyConfig) -> None:
    """Protect a raw Parquet table under a policy (runs in the policy's home only).

    With --engine dask, INFILE may be a Parquet file or a directory of them; the result is
    identical to the pandas engine's on the same rows and keys (same pseudonyms).
    --parquet-encrypt and --footer-key add Parquet modular encryption to its part files
    (read them back with pets release --engine dask and the same key services).
    """
    from pets._io import staged_files
    from pets.boundary import load_policy
    from pets.boundary import protect as do_protect

    scheduler = dask_target(engine, workers, scheduler)
    if (parquet_encrypt or footer_key is not None) and engine != "dask":
        raise click.UsageError("--parquet-encrypt and --footer-key need --engine dask")
    encrypt = parse_parquet_encryption(parquet_encrypt, footer_key)
    ctx = make_context(jurisdiction, principal)
    policy = load_policy(policy_path)
    out = _check_protect_out(out, infile, policy_path, policy, engine, key_config,
                             boundary_keys, overwrite)
    if engine == "dask":
        if encrypt is not None:
            _check_encrypted_columns(policy, encrypt)
        _protect_dask(infile, policy_path, policy, out, workers, scheduler, connect_timeout,
                      audit_log, boundary_keys, ctx, as_json, key_config, encrypt, footer_key)
        return
    frame = _read_parquet(infile)
    keys, log = _open(key_config, boundary_keys, audit_log, ctx, policy, protecting=True)
    pf = do_protect(frame, policy, keys, ctx, audit=log)
    target = out / f"{policy.dataset}.parquet"
    m = pf.manifest
    with staged_files(out) as stage:  # the four files land together, or none does
        pf.write(stage / target.name)
        (stage / "manifest.json").write_text(json.dumps(m.to_dict(), indent=2,
                                                        sort_keys=True) + "\n")
        shutil.copyfile(policy_path, stage / _POLICY_COPY)
        (stage / "signing-key.pub.pem").write_bytes(keys.signer.public_pem())
    result = {"out": str(target), "dataset": m.dataset, "rows_in": len(frame), "rows": m.rows,
              "columns": m.treatments(), "k_anonymity": dict(m.k_anonymity),
              "signer": m.signer, "policy_digest": m.policy_digest, "engine": "pandas",
              "audit_log": str(log.path)}

    def text() -> str:
        lines = [f"protected {m.dataset}: {len(frame)} rows in, {m.rows} out -> {target}"]
        lines += [f"  {c.name:<16} {c.role:<17} {c.treatment}"
                  + (f" ({c.mode})" if c.mode else "") + f" -> {c.output}" for c in m.columns]
        k = m.k_anonymity
        if k.get("quasi_identifiers"):
            lines.append(f"  k-anonymity: k={k['k']} (min {k['min_k']}) over "
                         f"{', '.join(k['quasi_identifiers'])}; "
                         f"{k.get('suppressed_rows', 0)} rows suppressed")
        lines.append(f"  manifest signed by {m.signer}; audit log {log.path}")
        return "\n".join(lines)

    emit(result, as_json, text)


def _check_protect_out(out: Path, infile: Path, policy_path: Path, policy: Policy, engine: str,
                       key_config: KeyConfig, boundary_keys: Path | None,
                       overwrite: bool) -> Path:
    """Before any work: ``--out`` may not be, hold or lie in an input or a protected location
    (keyring, boundary, audit log, ledger), and the files protect writes there may replace an
    earlier run's only with ``--overwrite``. Returns the resolved directory."""
    from pets.cli._common import check_out

    inputs = [infile, policy_path]
    target = check_out(out, option="--out", inputs=inputs, key_config=key_config,
                       boundary_keys=boundary_keys, overwrite=True)
    data = policy.dataset if engine == "dask" else f"{policy.dataset}.parquet"
    for name in (data, "manifest.json", _POLICY_COPY, "signing-key.pub.pem"):
        check_out(target / name, option="--out", inputs=inputs, key_config=key_config,
                  boundary_keys=boundary_keys, overwrite=overwrite)
    return target


def _copy_policy(out: Path, policy_path: Path) -> None:
    """The policy copy beside the output, which ``pets export`` reads by default."""
    from pets._io import atomic_path

    with atomic_path(out / _POLICY_COPY) as tmp:
        shutil.copyfile(policy_path, tmp)


def _protect_dask(infile: Path, policy_path: Path, policy: Policy, out: Path,
                  workers: int | None, scheduler: str | None, connect_timeout: float,
                  audit_log: Path | None, boundary_keys: Path | None, ctx: Context,
                  as_json: bool,
                  key_config: KeyConfig, encrypt: dict[str, list[str]] | None = None,
                  footer_key: str | None = None) -> None:
    import os

    from pets._errors import require

    require("dask", "dask")
    require("distributed", "dask")
    from pets.engines.dask import run_protect_dask

    if not infile.exists():
        raise InputError(f"{infile}: no such file or directory")
    keys, log = _open(key_config, boundary_keys, audit_log, ctx, policy, protecting=True)
    for uri in dict.fromkeys([*(encrypt or {}), *([footer_key] if footer_key else [])]):
        # before any work: an unknown KEK (exit 7), or one of another jurisdiction, which
        # would let the data encrypted at rest be read there (exit 4)
        home = keys.services.for_uri(uri).describe(uri).jurisdiction
        if home != ctx.jurisdiction:
            raise JurisdictionError(f"{uri} belongs to {home}: Parquet modular encryption of "
                                    f"{policy.dataset} needs a KEK of {ctx.jurisdiction}, "
                                    "where the data stays")
    summary = run_protect_dask(
        infile, policy, out, workers=None if scheduler else workers or os.cpu_count() or 1,
        scheduler=scheduler, connect_timeout=connect_timeout, keys=keys, key_source=key_config,
        context=ctx, audit=log, parquet_encryption=encrypt, footer_key=footer_key)
    _copy_policy(out, policy_path)  # run_protect_dask wrote manifest.json and the PEM
    summary["audit_log"] = str(log.path)
    # which columns are encrypted at rest, under which KEK (URIs only: no key material)
    summary["encrypted_columns"] = {c: uri for uri, cols in (encrypt or {}).items()
                                    for c in cols}
    summary["footer_key"] = footer_key if encrypt else None
    columns: dict[str, str] = summary["columns"]

    def text() -> str:
        source = click.get_current_context().get_parameter_source("scheduler")
        env = " from PETS_DASK_SCHEDULER" if source is click.core.ParameterSource.ENVIRONMENT \
            else ""
        where = f" at {summary['scheduler']}{env}" if scheduler else ""
        lines = [f"protected {summary['dataset']} with dask ({summary['workers']} workers"
                 f"{where}): "
                 f"{summary['rows_in']} rows in, {summary['rows']} out, {summary['parts']} "
                 f"parts -> {summary['out']}"]
        lines += [f"  {name:<16} {treatment}" for name, treatment in columns.items()]
        k = summary["k_anonymity"]
        if k.get("quasi_identifiers"):
            lines.append(f"  k-anonymity: k={k['k']} (min {k['min_k']}) over "
                         f"{', '.join(k['quasi_identifiers'])}; "
                         f"{k.get('suppressed_rows', 0)} rows suppressed")
        if encrypt:
            lines.append("  Parquet modular encryption: "
                         + "; ".join(f"{', '.join(cols)} under {uri}"
                                     for uri, cols in encrypt.items())
                         + f"; footer under {footer_key} (stays home: export refuses it)")
        lines.append(f"  manifest signed by {summary['signer']}; audit log {log.path}")
        return "\n".join(lines)

    emit(summary, as_json, text)


# -- export -------------------------------------------------------------------------------------

@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--to", "destination", required=True, help="Destination jurisdiction, e.g. US.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The file to write for the destination or, for a dataset (pets protect "
                   "--engine dask), the directory (atomically; nothing on refusal).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The policy (default: policy.yaml beside the protected file "
                                 "or dataset directory).")
@click.option("--columns", default=None,
              help="Comma-separated columns to export, or 'allowed' for every column the "
                   "policy lets go to the destination (default: all; columns the policy keeps "
                   "home must be left out).")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              hidden=True)
@_audit_option
@_boundary_option
@keyring_options
@context_options
@json_option
def export(src: Path, destination: str, out: Path, policy_path: Path | None,
           columns: str | None, public_key: Path | None, audit_log: Path | None,
           boundary_keys: Path | None, jurisdiction: str, principal: str | None,
           as_json: bool, key_config: KeyConfig) -> None:
    """Export a protected table through the gate (verifies signature, data and policy).

    SRC is a protected file, a protected dataset directory (pets protect --engine dask: part
    files and _manifest.json; every part is verified and --out names the directory to write),
    or the --out directory of pets protect holding one of them.
    """
    from pets.boundary import export as do_export
    from pets.boundary import load_policy

    if public_key is not None:
        raise click.UsageError(
            "--public-key: the gate verifies manifests only against the boundary's pinned "
            "signing keys (pets boundary show); a public key is for a receiver verifying "
            "what arrived (pets.boundary.verify_dataset)")
    refuse_caller_audit_log(audit_log)
    ctx = make_context(jurisdiction, principal)
    file = _protected_file(src)
    policy = load_policy(policy_path or file.parent / _POLICY_COPY)
    keys, log = _open(key_config, boundary_keys, audit_log, ctx, policy)
    from pets.cli._common import check_out

    assert keys.anchors is not None
    # the gate decides whether an earlier export may be replaced; never an input or a file
    # of the boundary (keyring, boundary directory, audit log, ledger)
    check_out(out, option="--out", inputs=[file, policy_path or file.parent / _POLICY_COPY],
              key_config=key_config, boundary_keys=keys.directory,
              audit_log=keys.anchors.audit_log, ledger=keys.anchors.ledger, overwrite=True)
    cols: list[str] | Literal["allowed"] | None = None
    if columns == "allowed":
        cols = "allowed"
    elif columns:
        cols = [c.strip() for c in columns.split(",") if c.strip()]
    receipt = do_export(file, destination, out, policy=policy,
                        keys=keys, context=ctx,
                        audit=log, columns=cols)
    parts = "" if receipt.parts is None else f" in {receipt.parts} parts"
    emit(receipt.to_dict(), as_json,
         lambda: (f"exported {receipt.name} to {receipt.destination}: {receipt.rows} rows"
                  f"{parts}, columns {', '.join(receipt.columns)} -> {receipt.path}\n"
                  f"  sha256 {receipt.sha256}"
                  f"{' (of every file: LC_ALL=C sha256sum * | sha256sum)' if parts else ''}"
                  f"; audit entry {receipt.audit_seq}"))


# -- reidentify ---------------------------------------------------------------------------------

@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--column", required=True, help="The protected column to reverse.")
@click.option("--value", "values", multiple=True, help="A protected value (repeatable).")
@click.option("--values-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A text file of protected values, one per line.")
@click.option("--reason", default="", help="Why (recorded in the audit log, e.g. a ticket).")
@_audit_option
@_boundary_option
@keyring_options
@context_options
@json_option
def reidentify(src: Path, column: str, values: tuple[str, ...], values_file: Path | None,
               reason: str, audit_log: Path | None, boundary_keys: Path | None,
               jurisdiction: str,
               principal: str | None, as_json: bool, key_config: KeyConfig) -> None:
    """Reverse tokens, FF1 or encrypted values of a protected table (home jurisdiction only).

    Every call is recorded; a refused call (wrong jurisdiction, irreversible column) is an
    incident.
    """
    import pandas as pd

    from pets.boundary import ProtectedFrame
    from pets.boundary import reidentify as do_reidentify

    ctx = make_context(jurisdiction, principal)
    file = _protected_file(src)
    pf = ProtectedFrame.read(file)
    keys, log = _open(key_config, boundary_keys, audit_log, ctx, None)
    pf.manifest.verify(keys.pinned_public_keys)
    items = list(values)
    if values_file is not None:
        try:
            items += [v for v in values_file.read_text().splitlines() if v]
        except OSError as exc:
            raise InputError(f"{values_file}: cannot read ({exc.strerror})") from None
    col = pf.manifest.column(column)
    if not items:
        raise InputError("give --value or --values-file")
    series: Any = pd.Series(items, dtype="string")
    if col.treatment == "encrypt":
        import base64

        try:
            series = pd.Series([base64.b64decode(v, validate=True) for v in items],
                               dtype=object)
        except ValueError:
            raise InputError("encrypted values are given base64-encoded") from None
    out = do_reidentify(pf, column, series, keys, ctx, audit=log, reason=reason)
    pairs = [{"protected": p, "original": None if pd.isna(o) else str(o)}
             for p, o in zip(items, out.tolist(), strict=True)]
    emit(pairs, as_json, lambda: "\n".join(f"{r['protected']}\t{r['original']}"
                                           for r in pairs))


# -- policy -------------------------------------------------------------------------------------

@click.group("policy")
def policy_group() -> None:
    """Check boundary policies before a pipeline runs them."""


_EXAMPLES = ("events", "users")


@policy_group.command("example")
@click.argument("name", type=click.Choice(_EXAMPLES))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write it to this file (atomically) instead of printing it.")
def example(name: str, out: Path | None) -> None:
    """Print (or write) the example policy shipped for the synthetic NAME table.

    ``users`` fits ``pets datasets generate``'s users table, ``events`` its events table; edit
    the copy for your own data and check it with ``pets policy check``.
    """
    from importlib import resources

    from pets._io import atomic_path

    text = resources.files("pets").joinpath(f"examples/{name}-policy.yaml").read_text()
    if out is None:
        click.echo(text, nl=False)
        return
    from pets.cli._common import check_out

    out = check_out(out, option="--out")
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    click.echo(f"wrote the {name} example policy to {out}")


@policy_group.command("check")
@click.argument("policy_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also check a Parquet table against the policy (columns and dtypes).")
@json_option
def check(policy_path: Path, data: Path | None, as_json: bool) -> None:
    """Validate a policy (exit 3 naming the line and column of the first problem)."""
    from pets.boundary import load_policy

    p = load_policy(policy_path)
    if data is not None:
        p.check_frame(_read_parquet(data))
    result = {
        "policy": str(policy_path), "dataset": p.dataset, "home": p.home, "digest": p.digest(),
        "columns": {r.name: {"role": r.role, "treatment": r.treatment, "output": r.output}
                    for r in p.columns},
        "quasi_identifiers": p.quasi_identifiers, "min_k": p.min_k,
        "destinations": {k: list(v) for k, v in p.destinations.items()},
        "checked_data": str(data) if data is not None else None,
    }

    def text() -> str:
        lines = [f"OK: {policy_path}: dataset {p.dataset}, home {p.home}, digest "
                 f"{p.digest()[:16]}…" + (f"; fits {data}" if data is not None else "")]
        lines += [f"  {r.name:<16} {r.role:<17} {r.treatment:<16} -> {r.output or 'dropped'}"
                  for r in p.columns]
        lines += [f"  {kind} may go to: {', '.join(v) or 'nowhere (stays home)'}"
                  for kind, v in p.destinations.items()]
        return "\n".join(lines)

    emit(result, as_json, text)


# -- audit --------------------------------------------------------------------------------------

@click.group()
def audit() -> None:
    """Verify the audit log and report flows and incidents (needs only the public key)."""


@audit.command("verify")
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--public-key", "public_keys", type=click.Path(dir_okay=False, path_type=Path),
              required=True, multiple=True,
              help="The signer's Ed25519 public key (PEM); repeat it for each key the log was "
                   "signed with across rotations.")
@click.option("--expect-head", default=None, metavar="SEQ:HASH",
              help="A head noted at an earlier audit (SEQ and >= 16 hex digits of its hash): "
                   "the log must still hold it, which catches a cut of the newest entries.")
@json_option
def verify(log: Path, public_keys: tuple[Path, ...], expect_head: str | None,
           as_json: bool) -> None:
    """Check every entry's sequence, hash chain and signature; name the first bad one.

    Exit code 5 when an entry is edited, dropped, reordered or inserted (or, with
    --expect-head, when the noted head is gone). A torn last line (an interrupted write) is
    reported but does not fail the check. Note the printed head for the next audit.
    """
    from pets.boundary import verify_log

    head = None
    if expect_head is not None:
        seq_text, sep, digest = expect_head.partition(":")
        if not sep or not seq_text.isdigit():
            raise InputError(f"--expect-head {expect_head!r}: expected SEQ:HASH")
        head = (int(seq_text), digest)
    report = verify_log(log, list(public_keys), expect_head=head)
    emit(report.to_dict(), as_json, report.summary)
    if not report.ok:
        raise IntegrityError(f"audit log {log}: entry at line {report.first_bad.line} "
                             f"(seq {report.first_bad.seq}) fails verification"
                             if report.first_bad else f"audit log {log} fails verification")


def _table(frame: pd.DataFrame, as_json: bool, empty: str) -> None:
    if as_json:
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        emit(records, True)
    elif frame.empty:
        click.echo(empty)
    else:
        import pandas as pd

        with pd.option_context("display.max_colwidth", 60, "display.width", 200,
                               "display.max_columns", 20):
            click.echo(frame.to_string(index=False))


@audit.command("flows")
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wide", is_flag=True, help="Every column (digests, paths, δ, ρ).")
@json_option
def flows(log: Path, wide: bool, as_json: bool) -> None:
    """What left, where to, under which protection, and how much privacy budget."""
    from pets.boundary import flows as get_flows

    table = get_flows(log)
    if not wide and not as_json:
        table = table[["seq", "at", "destination", "output", "name", "rows", "protection",
                       "epsilon"]].assign(at=table["at"].str.slice(0, 19))
    _table(table, as_json, "no flows: nothing has left")


@audit.command("incidents")
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def incidents(log: Path, as_json: bool) -> None:
    """Refusals and other incidents, in order."""
    from pets.boundary import incidents as get_incidents

    table = get_incidents(log)
    if not as_json:
        table = table.assign(at=table["at"].str.slice(0, 19))
    _table(table, as_json, "no incidents")


# -- boundary init / show / rotate-signing-key --------------------------------------------------

@click.group("boundary")
def boundary_group() -> None:
    """Set up the boundary once and inspect its pinned trust anchors."""


@boundary_group.command("init")
@click.option("--signing-kek", required=True, metavar="KEK_URI",
              help="The home KEK that wraps the boundary's Ed25519 signing key (created in "
                   "its key service, in the home jurisdiction, if it does not exist).")
@click.option("--home", default=None, metavar="CODE",
              help="The home jurisdiction. [default: the context's, PETS_JURISDICTION]")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_AUDIT_LOG, show_default=True,
              help="The signed audit log to pin (created if missing).")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_LEDGER, show_default=True,
              help="The privacy-budget ledger to pin.")
@click.option("--max-epsilon", type=float, default=10.0, show_default=True,
              help="Cap on the ε spent by every release from the ledger, over all datasets "
                   "and units together (a copy of the data or another unit column opens no "
                   "fresh budget).")
@click.option("--max-delta", type=float, default=1e-4, show_default=True,
              help="Cap on the total δ over all releases.")
@click.option("--max-rho", type=float, default=5.0, show_default=True,
              help="Cap on the total ρ (zCDP) over all releases.")
@_boundary_option
@keyring_options
@context_options
@json_option
def init_cmd(signing_kek: str, home: str | None, log_path: Path, ledger_path: Path,
             max_epsilon: float, max_delta: float, max_rho: float, boundary_keys: Path | None, jurisdiction: str, principal: str | None,
             as_json: bool, key_config: KeyConfig) -> None:
    """Set up the boundary: signing key, pinned anchors, audit log (once; never implicit).

    Writes boundary.json (home, pinned signing public keys, audit log, ledger, key-service
    settings; signed by the signing key, which only the home KEK unwraps) and the first
    audit entries: the KEK's creation if it was made here, the signing key's creation and
    boundary.init. Every later command reads these anchors; none creates a key or chooses
    a log of its own. Run it after `pets keys init` (local keyring) and before any other
    key operation.
    """
    from pets._errors import KeyNotFoundError
    from pets.boundary import AuditLog, BoundaryKeys
    from pets.jurisdiction import Jurisdiction

    ctx = make_context(jurisdiction, principal)
    code = Jurisdiction(home).code if home else ctx.jurisdiction
    if ctx.jurisdiction != code:
        raise JurisdictionError(f"a boundary at home in {code} is set up from {code}; "
                                f"{ctx.access_token} is outside it")
    directory = _boundary_dir(key_config, boundary_keys)
    if BoundaryKeys.exists(directory):
        raise InputError(f"{directory}: a boundary is already set up here (boundary.json); "
                         "nothing changed")
    _check_keyring_pin(key_config, directory, creating=True)
    import math

    for value, what in ((max_epsilon, "--max-epsilon"), (max_delta, "--max-delta"),
                        (max_rho, "--max-rho")):
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"{what} must be a finite number >= 0, got {value}")
    for path, what in ((log_path, "--log"), (ledger_path, "--ledger")):
        if path.exists() and not path.is_file():
            raise InputError(f"{what} {path}: not a regular file")
        path.parent.mkdir(parents=True, exist_ok=True)
    hook = _LateLog()
    services = services_from_options(key_config, audit=hook)
    service = services.for_uri(signing_kek)
    try:
        kek_home = service.describe(signing_kek).jurisdiction
    except KeyNotFoundError:
        kek_home = service.create(signing_kek, jurisdiction=code).jurisdiction
    if kek_home != code:
        raise JurisdictionError(f"{signing_kek} belongs to {kek_home}: the signing key of a "
                                f"boundary at home in {code} needs a KEK of {code}")
    settings: dict[str, Any] = {"keyring": str(key_config.keyring.resolve())}
    if key_config.pkcs11_library:
        settings["pkcs11_library"] = key_config.pkcs11_library
        settings["pkcs11_tokens"] = {t.label: t.jurisdiction for t in key_config.pkcs11_tokens}
    if key_config.transit_servers:  # pinned: later commands may not point elsewhere
        settings["transit_servers"] = {s.name: s.to_dict() for s in key_config.transit_servers}
    keys = BoundaryKeys.create(directory, services, context=ctx, signing_kek=signing_kek,
                               audit_log=log_path, ledger=ledger_path, key_services=settings,
                               audit=hook)
    anchors = keys.anchors
    assert anchors is not None
    log = AuditLog(anchors.audit_log, signer=keys.signer, actor=ctx)
    hook.log = log
    keys.audit = log.hook
    from pets.dp import Ledger

    Ledger(anchors.ledger).set_cap(max_epsilon, max_delta, max_rho)
    _write_keyring_pin(key_config, directory, keys.signer.key_id)
    entry = log.append("boundary.init", ledger_cap={"epsilon": max_epsilon,
                                                    "delta": max_delta, "rho": max_rho}, directory=str(directory.resolve()), home=anchors.home,
                       signing_kek=anchors.signing_kek, pinned=list(anchors.pinned),
                       audit_log=str(anchors.audit_log), ledger=str(anchors.ledger),
                       key_services=settings)
    out = {**_anchors_dict(keys), "audit_seq": entry["seq"]}
    emit(out, as_json, lambda: _anchors_text(keys)
         + f"\n  recorded as audit entry {entry['seq']}")


def _anchors_dict(keys: BoundaryKeys) -> dict[str, Any]:
    from pets.boundary import BoundaryKeys

    a = keys.anchors
    assert a is not None and keys.directory is not None
    return {"boundary": str(keys.directory), "home": a.home, "signing_kek": a.signing_kek,
            "signer": keys.signer.key_id, "pinned": list(a.pinned),
            "public_key": str(BoundaryKeys.public_key_path(keys.directory)),
            "audit_log": str(a.audit_log), "ledger": str(a.ledger),
            "key_services": dict(a.key_services), "created": a.created}


def _anchors_text(keys: BoundaryKeys) -> str:
    d = _anchors_dict(keys)
    return "\n".join([
        f"boundary {d['boundary']}: home {d['home']}, set up {d['created']}",
        f"  signing key {d['signer']} (Ed25519, wrapped under {d['signing_kek']}); "
        f"public key {d['public_key']}",
        f"  pinned signing keys: {', '.join(d['pinned'])}",
        f"  audit log {d['audit_log']}",
        f"  ledger    {d['ledger']}",
    ])


@boundary_group.command("show")
@_boundary_option
@keyring_options
@context_options
@json_option
def show_cmd(boundary_keys: Path | None, jurisdiction: str, principal: str | None,
             as_json: bool, key_config: KeyConfig) -> None:
    """Print the boundary's pinned anchors (verified under its signing key)."""
    ctx = make_context(jurisdiction, principal)
    keys, _ = open_boundary(key_config, boundary_keys, ctx)
    emit(_anchors_dict(keys), as_json, lambda: _anchors_text(keys))


@boundary_group.command("rotate-signing-key")
@click.option("--kek", default=None, metavar="KEK_URI",
              help="Wrap the new signing key under this home KEK [default: the current one].")
@_boundary_option
@keyring_options
@context_options
@json_option
def rotate_signing_cmd(kek: str | None, boundary_keys: Path | None, jurisdiction: str,
                       principal: str | None, as_json: bool, key_config: KeyConfig) -> None:
    """Make a new signing key current and pin it beside the old ones (audited).

    Manifests and audit entries signed before stay valid (their keys stay pinned); give the
    new public key to auditors and receivers.
    """
    ctx = make_context(jurisdiction, principal)
    keys, _ = open_boundary(key_config, boundary_keys, ctx)
    if kek is not None:
        home = keys.services.for_uri(kek).describe(kek).jurisdiction
        if keys.anchors is not None and home != keys.anchors.home:
            raise JurisdictionError(f"{kek} belongs to {home}: the boundary's signing key "
                                    f"needs a KEK of {keys.anchors.home}")
    keys.rotate_signing_key(context=ctx, kek=kek)
    emit(_anchors_dict(keys), as_json, lambda: _anchors_text(keys))


COMMANDS = [boundary_group, protect, export, reidentify, audit, policy_group]

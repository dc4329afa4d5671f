"""The export gate: the only function in pets that writes for another jurisdiction.

:func:`export` takes a :class:`~pets.boundary.ProtectedFrame` (or the path of a file
:func:`~pets.boundary.protect` wrote, or of a protected *dataset directory* that
``pets protect --engine dask`` wrote) or a :class:`pets.dp.Release`, and a destination. For a
table it checks, in order, and refuses on the first failure:

1. the caller runs in the policy's home (the gate stands at the border, on the inside);
2. it is protected data at all — a raw DataFrame, or a file without a manifest (a directory
   without ``_manifest.json``), is refused (:class:`~pets.PolicyError` /
   :class:`~pets.IntegrityError`);
3. the manifest's Ed25519 signature verifies under the home's public key
   (:class:`~pets.IntegrityError`);
4. the data matches the manifest's digests — nothing was edited, added or removed
   (:class:`~pets.IntegrityError`);
5. the manifest was made under *this* policy (its digest) (:class:`~pets.PolicyError`);
6. every exported column's kind of output (``pseudonymized``, ``generalized``, ``encrypted``,
   ``kept``) may go to the destination under the policy (:class:`~pets.PolicyError`).

DP releases (a :class:`pets.dp.Release`, or a release file ``pets release --out`` wrote) may go
wherever the policy's ``dp_release`` destinations allow, and only as recorded: the gate
recomputes the release's digest (:func:`pets.dp.release_digest`: table values and metadata) and
requires the ledger given as ``ledger=`` to hold the release's id with that digest
(:meth:`pets.dp.Ledger.check_release`). A release edited after it was made (frame replaced,
estimates overwritten, metadata changed on a copy), made with another ledger, or given without
a ledger is refused (:class:`~pets.IntegrityError`) and recorded as an incident.

Only signed values leave: each output is written anew from the verified values, without the
input's ``DataFrame.attrs`` or unused categories (a reader restores both, no digest covers
them).

On refusal nothing is written and the refusal is recorded as an incident
(``boundary.refused``: what, where to, why) — on every failure path, an ``OSError`` or an
unexpected exception included. On success the output is renamed into place and only then
recorded (an entry that cannot be written undoes the rename: no export entry for a failed
rename, no output without its entry short of a crash between the two). The file is written
atomically (Parquet with the manifest and an export record in its metadata; for a release, the
release table with its metadata) and a ``boundary.export`` entry records the destination,
columns, treatments, row count and the SHA-256 of the file that left.

A dataset directory passes the same checks in the same order: steps 3 and 4 cover every part
(:mod:`pets.boundary._dataset`: the signed dataset manifest, the listing, each part's signed
manifest and the chain from the footers first, then each part's values), reading one part at a
time. The output is a dataset directory (built in a hidden directory, renamed into place when
complete): each part with the selected columns, its original signed manifest and the export
record, and ``_manifest.json`` with the original signed dataset manifest plus the same record.
It verifies on the receiving side (:func:`pets.boundary._dataset.verify_dataset`). Its
``boundary.export`` entry counts the parts and records one digest over every file that left:
the SHA-256 of ``sha256sum``'s listing of the directory
(:func:`~pets.boundary._dataset.files_digest`; ``LC_ALL=C sha256sum * | sha256sum`` in the
directory recomputes it). Parts written with Parquet modular encryption are refused
(:class:`~pets.InputError`): the gate reads plain parts only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pets._errors import InputError, IntegrityError, JurisdictionError, PetsError, PolicyError
from pets._io import atomic_path
from pets.boundary._audit import AuditLog
from pets.boundary._keys import BoundaryKeys
from pets.boundary._manifest import EXPORT_KEY, Manifest, ProtectedFrame, sign_export_record
from pets.boundary._policy import Policy
from pets.boundary._signing import SigningKey
from pets.jurisdiction import Context, Jurisdiction

__all__ = ["ExportReceipt", "export"]

RELEASE_KEY = b"pets.release"

if TYPE_CHECKING:
    from pets.dp import Ledger


@dataclass(frozen=True)
class ExportReceipt:
    """What left: destination, path, kind of output, columns, rows and the file's SHA-256.

    For a dataset directory, ``parts`` counts its part files and ``sha256`` is the digest of
    every file in it (:func:`~pets.boundary._dataset.files_digest`).
    """

    destination: str
    path: str
    output: str
    name: str
    columns: tuple[str, ...]
    rows: int
    sha256: str
    audit_seq: int
    parts: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "columns": list(self.columns)}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe(obj: Any) -> str:
    if isinstance(obj, str | os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, ProtectedFrame):
        return obj.manifest.dataset
    return type(obj).__name__


def export(obj: Any, to: str, path: str | os.PathLike[str], *, policy: Policy,
           keys: BoundaryKeys, context: Context,
           audit: AuditLog,
           columns: Sequence[str] | Literal["allowed"] | None = None,
           ledger: Ledger | str | os.PathLike[str] | None = None) -> ExportReceipt:
    """Check ``obj`` against ``policy`` and, if it may go ``to`` the destination, write it.

    Args:
        obj: A :class:`ProtectedFrame`, the path of a protected Parquet file or of a protected
            dataset directory (``pets protect --engine dask``), or a :class:`pets.dp.Release`.
            Anything else (a raw DataFrame, a directory without ``_manifest.json``) is
            refused.
        to: The destination jurisdiction, e.g. ``"US"``.
        path: Where to write (atomically; nothing is written on refusal). For a dataset, a
            directory that does not exist yet, or an earlier export to be replaced.
        policy: The policy the data was protected under.
        keys: The boundary's keys: manifests verify only under its *pinned* public keys
            (:attr:`BoundaryKeys.pinned_public_keys`, fixed when the boundary was set up and
            extended only by an audited rotation) — never under a key the caller hands in.
        context: Who exports: must run in the policy's home jurisdiction.
        audit: The audit log: receives ``boundary.export`` or ``boundary.refused``.
        columns: Export only these columns of a table (default: all). Columns whose output may
            not leave (e.g. encrypted ones) must be left out this way, or by asking for
            ``"allowed"``: exactly the columns the policy lets go to ``to`` (the receipt and the
            audit entry list them).
        ledger: For a DP release (object or release file): the :class:`pets.dp.Ledger` (or its
            path) the release was made with. The release leaves only if the ledger holds its
            id with the digest recomputed now from the table and metadata being exported;
            without a ledger every release is refused.

    Returns:
        An :class:`ExportReceipt`.

    Raises:
        PolicyError: Raw data, another policy, or a column/output the policy keeps home.
        IntegrityError: No manifest, a bad signature, or data that does not match it; for a
            dataset also a missing, added, reordered or swapped part.
        JurisdictionError: The caller is not in the policy's home.
        InputError: Unwritable destination; a dataset with Parquet modular encryption or one
            that is already an export.

    Examples:
        >>> import pathlib, tempfile
        >>> import pandas as pd
        >>> from pets import Context
        >>> from pets.keys import KeyServices, MemoryKeyring
        >>> from pets.boundary import AuditLog, BoundaryKeys, Policy, SigningKey, protect
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/p", jurisdiction="EU")
        >>> keys = BoundaryKeys(KeyServices([ring]), SigningKey.generate())
        >>> policy = Policy.from_yaml('''
        ... dataset: users
        ... keys: {pseudonyms: "memory://eu/p"}
        ... destinations: {pseudonymized: [US], kept: [US]}
        ... columns:
        ...   user_id: {role: identifier, treatment: keyed-hash}
        ...   minutes: {role: metric, treatment: keep}
        ... ''')
        >>> eu, d = Context("EU"), pathlib.Path(tempfile.mkdtemp())
        >>> log = AuditLog(d / "audit.jsonl", signer=keys.signer, actor=eu)
        >>> raw = pd.DataFrame({"user_id": ["u1", "u2"], "minutes": [3.0, 4.5]})
        >>> pf = protect(raw, policy, keys, eu, audit=log)
        >>> export(pf, "US", d / "us.parquet", policy=policy,
        ...        keys=keys, context=eu, audit=log).rows
        2
        >>> export(raw, "US", d / "raw.parquet", policy=policy,
        ...        keys=keys, context=eu, audit=log)
        Traceback (most recent call last):
        ...
        pets._errors.PolicyError: raw data cannot be exported: it has no manifest (run protect under the dataset's policy first)
        >>> [e["kind"] for e in log.entries()], (d / "raw.parquet").exists()
        (['boundary.protect', 'boundary.export', 'boundary.refused'], False)
    """
    dest = Path(path)
    audit = keys.pinned_audit(audit, context)
    try:
        code = Jurisdiction(to).code
    except InputError:
        audit.append("boundary.refused", actor=context, operation="export",
                     target=_describe(obj), destination=str(to),
                     reason="InputError: invalid destination")
        raise
    try:
        try:
            if context.jurisdiction != policy.home:
                raise JurisdictionError(f"exports leave from the policy's home {policy.home}; "
                                        f"{context.access_token} is outside it")
            try:
                dataset = isinstance(obj, str | os.PathLike) and Path(obj).is_dir()
            except OSError as exc:
                raise InputError(f"{os.fspath(obj)}: cannot read "
                                 f"({exc.strerror or type(exc).__name__})") from None
            if dest.is_dir() and not dataset:
                raise InputError(f"{dest}: cannot write (is a directory)")
            _not_over(dest, obj, audit)
            if _is_release(obj):
                return _export_release(obj, code, dest, policy, context, audit,
                                       _pinned_ledger(keys, ledger))
            if dataset:
                return _export_dataset(Path(obj), code, dest, policy, keys.pinned_public_keys,
                                       context, audit, columns, keys.signer)
            return _export_table(obj, code, dest, policy, keys.pinned_public_keys, context, audit,
                                 columns, keys.signer)
        except PetsError:
            raise
        except OSError as exc:
            raise InputError(f"{dest}: cannot write ({exc.strerror or type(exc).__name__})"
                             ) from None
    except PetsError as exc:
        audit.append("boundary.refused", actor=context, operation="export",
                     target=_describe(obj), destination=code, path=str(dest),
                     reason=f"{type(exc).__name__}: {exc}")
        raise
    except Exception as exc:  # a bug or an unforeseen input: still an incident on the record
        audit.append("boundary.refused", actor=context, operation="export",
                     target=_describe(obj), destination=code, path=str(dest),
                     reason=f"{type(exc).__name__} (unexpected)")  # no message: may hold values
        raise


def _not_over(dest: Path, obj: Any, audit: AuditLog) -> None:
    """Refuse a destination that is (or holds) the audit log, or is the source file itself.

    The rename would put the export in the log's place (the whole signed trail gone) or in
    the protected file's.
    """
    target = dest.resolve()
    log = getattr(audit, "path", None)
    if log is not None:
        log_real = Path(log).resolve()
        if target == log_real or target in log_real.parents:
            raise InputError(f"{dest}: cannot write over the audit log {log}")
    if isinstance(obj, str | os.PathLike) and Path(obj).resolve() == target:
        raise InputError(f"{dest}: cannot write an export into or over its source {obj}")
    if dest.is_file() and not _is_export_file(dest):
        # an export replaces only an earlier export: never the raw table next to it, a
        # policy, or any other file that happens to be at that path
        raise InputError(f"{dest}: exists and is not an earlier export of the gate; not "
                         "replaced (choose another --out or remove it)", path=dest)


def _is_export_file(path: Path) -> bool:
    """A Parquet file whose footer carries the gate's export record."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # unreadable: not an earlier export
        return False
    return EXPORT_KEY in meta


def _is_release(obj: Any) -> bool:
    """A :class:`pets.dp.Release`, or the path of a regular Parquet file holding a release
    (``pets.release`` metadata and no manifest). Never opens anything but a regular file (a
    FIFO would block)."""
    try:
        from pets.dp import Release
    except ImportError:  # pragma: no cover - pets.dp is part of the package
        return False
    if isinstance(obj, Release):
        return True
    if not isinstance(obj, str | os.PathLike):
        return False
    import pyarrow.parquet as pq

    from pets.boundary._manifest import MANIFEST_KEY

    try:
        if not Path(obj).is_file():
            return False
        meta = pq.read_schema(obj).metadata or {}
    except Exception:  # not Parquet (or unreadable): the table branch refuses it
        return False
    return RELEASE_KEY in meta and MANIFEST_KEY not in meta


def _export_table(obj: Any, to: str, dest: Path, policy: Policy,
                  public_key: Sequence[Ed25519PublicKey],
                  context: Context, audit: AuditLog,
                  columns: Sequence[str] | Literal["allowed"] | None,
                  signer: SigningKey) -> ExportReceipt:
    if isinstance(obj, pd.DataFrame):
        raise PolicyError("raw data cannot be exported: it has no manifest (run protect "
                          "under the dataset's policy first)")
    if isinstance(obj, str | os.PathLike):
        try:
            obj = ProtectedFrame.read(obj)
        except PetsError:
            raise
        except (ValueError, KeyError, TypeError):  # e.g. pandas metadata no reader can parse
            raise IntegrityError("data does not match its manifest") from None
    if not isinstance(obj, ProtectedFrame):
        raise PolicyError(f"cannot export a {type(obj).__name__}: only protected tables and "
                          "DP releases may leave")
    manifest = obj.manifest.verify(public_key)
    manifest.verify_data(obj.data)
    ordered = _select(manifest, policy, to, columns)
    record = sign_export_record(
        {"destination": to, "columns": ordered, "exported_by": context.access_token,
         "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")},
        signer, manifest)
    subset = ProtectedFrame(_signed_only(obj.data, ordered), manifest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        subset.write(tmp, extra_metadata={EXPORT_KEY: json.dumps(record).encode()})
        os.chmod(tmp, 0o644)
        digest = _file_sha256(tmp)  # fsynced by write (atomic_path)
        entry = _publish(tmp, dest, lambda: audit.append(
            "boundary.export", actor=context, destination=to, output="table",
            name=manifest.dataset, columns=ordered,
            treatments={c: t for c, t in manifest.treatments().items() if c in ordered},
            outputs={c.name: c.output for c in manifest.columns if c.name in ordered},
            rows=manifest.rows, digest=digest, path=str(dest),
            policy_digest=manifest.policy_digest, data_digest=manifest.data_digest,
            signer=manifest.signer))
    finally:
        _remove(tmp)
    return ExportReceipt(to, str(dest), "table", manifest.dataset, tuple(ordered),
                         manifest.rows, digest, int(entry["seq"]))


def _signed_only(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The selected columns, carrying nothing a reader restores that the digests do not cover.

    The manifest signs values. A verified frame can still carry other data that a Parquet
    round trip restores: ``DataFrame.attrs`` (written into the ``pandas`` metadata) and a
    categorical column's categories, of which only the *used* ones are values. Both are
    dropped; the used categories of an unordered categorical are put in order of first
    appearance (a function of the signed values), an ordered one keeps its order.

    Examples:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"c": pd.Categorical(["b", "a"], categories=["x", "a", "b"])})
        >>> f.attrs["note"] = "raw"
        >>> out = _signed_only(f, ["c"])
        >>> out.attrs, list(out["c"].cat.categories)
        ({}, ['b', 'a'])
    """
    out = frame[list(columns)].copy()
    out.attrs = {}
    for name in columns:
        col = out[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            used = col.cat.remove_unused_categories()
            if not used.cat.ordered:
                used = used.cat.reorder_categories(list(pd.unique(used.dropna())))
            out[name] = used
    return out


def _select(manifest: Manifest, policy: Policy, to: str,
            columns: Sequence[str] | Literal["allowed"] | None) -> list[str]:
    """Steps 5 and 6 of the gate: this policy, and columns that may go ``to``; in order."""
    if manifest.policy_digest != policy.digest():
        raise PolicyError(f"{manifest.dataset!r} was protected under another policy "
                          f"(digest {manifest.policy_digest[:12]}…, this policy "
                          f"{policy.digest()[:12]}…)")
    if columns == "allowed":
        names = [c.name for c in manifest.columns if policy.allows(c.output, to)]
        if not names:
            raise PolicyError(f"policy {policy.source} lets no column of "
                              f"{manifest.dataset!r} go to {to}")
    else:
        names = [c.name for c in manifest.columns] if columns is None else list(columns)
    for n in names:
        manifest.column(n)
    if not names:
        raise InputError("nothing to export: no columns selected")
    refused = [f"{c.name} ({c.output})" for c in manifest.columns
               if c.name in names and not policy.allows(c.output, to)]
    if refused:
        raise PolicyError(f"policy {policy.source} keeps these columns from {to}: "
                          f"{', '.join(refused)}")
    return [c.name for c in manifest.columns if c.name in names]


def _export_dataset(src: Path, to: str, dest: Path, policy: Policy,
                    public_key: Sequence[Ed25519PublicKey], context: Context,
                    audit: AuditLog,
                    columns: Sequence[str] | Literal["allowed"] | None,
                    signer: SigningKey) -> ExportReceipt:
    """The gate for a protected dataset directory: same checks, one part at a time."""
    from pets.boundary._dataset import (
        DATASET_MANIFEST,
        DatasetIndex,
        files_digest,
        is_dataset,
        iter_parts,
        read_index,
        verify_structure,
    )

    if not is_dataset(src):
        raise IntegrityError(f"{src}: no pets dataset manifest ({DATASET_MANIFEST}; not "
                             "produced by protect)")
    index = read_index(src)
    if index.export is not None:
        raise InputError(f"{src}: already exported (to {index.export.get('destination')}); "
                         "export from the protected dataset itself")
    if index.encrypted:
        raise InputError(f"{src}: its parts use Parquet modular encryption, which the export "
                         "gate does not read (data encrypted at rest stays home); protect it "
                         "again without --parquet-encrypt (encryption= in Python) to export it")
    src_real, dest_real = src.resolve(), dest.resolve()
    if dest_real == src_real or src_real in dest_real.parents or dest_real in src_real.parents:
        raise InputError(f"{dest}: cannot write an export into or over its source {src}")
    replace = dest.exists()
    if replace and not _is_export(dest):
        raise InputError(f"{dest}: already exists and is not an earlier export; name a new "
                         "directory")
    parts = verify_structure(index, public_key)              # 3 and 4 from the footers
    manifest = index.manifest
    try:
        ordered = _select(manifest, policy, to, columns)      # 5 and 6 (signed facts only)
    except PetsError as refusal:
        for checked in iter_parts(index, parts):              # 4: values first, as for a file
            del checked
        raise refusal from None
    record = sign_export_record(
        {"destination": to, "columns": ordered, "exported_by": context.access_token,
         "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")},
        signer, index.manifest, dataset=True)
    meta = {EXPORT_KEY: json.dumps(record).encode()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)  # noqa: S103 - a dataset directory, like mkdir's default
        files: dict[str, str] = {}
        for part, frame in iter_parts(index, parts):          # 4: each part's values
            out = tmp / part.name
            ProtectedFrame(_signed_only(frame, ordered), part.manifest).write(
                out, extra_metadata=meta)
            del frame  # one part in memory at a time
            files[part.name] = _file_sha256(out)
        exported = DatasetIndex(tmp, manifest, index.parts, False, record)
        with atomic_path(tmp / DATASET_MANIFEST) as doc:  # fsynced, as every part
            doc.write_text(exported.to_json(), encoding="utf-8")
        files[DATASET_MANIFEST] = _file_sha256(tmp / DATASET_MANIFEST)
        digest = files_digest(files)
        if dest.exists() != replace or (replace and not _is_export(dest)):
            raise InputError(f"{dest}: changed while the export was written; try again")
        entry = _publish(tmp, dest, lambda: audit.append(
            "boundary.export", actor=context, destination=to, output="table",
            name=manifest.dataset, columns=ordered,
            treatments={c: t for c, t in manifest.treatments().items() if c in ordered},
            outputs={c.name: c.output for c in manifest.columns if c.name in ordered},
            rows=manifest.rows, parts=len(parts), digest=digest, path=str(dest),
            policy_digest=manifest.policy_digest, data_digest=manifest.data_digest,
            signer=manifest.signer))
    finally:
        _remove(tmp)
    return ExportReceipt(to, str(dest), "table", manifest.dataset, tuple(ordered),
                         manifest.rows, digest, int(entry["seq"]), len(parts))


def _remove(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists (never following a symlink)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _publish(tmp: Path, dest: Path, record: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Rename the complete ``tmp`` onto ``dest``, *then* record the export; undo if it fails.

    The audit entry is written only once the output is in place, so no entry claims an export
    whose rename failed; an entry that cannot be written removes the new output and puts back
    what ``dest`` held (an earlier export), so nothing leaves unrecorded. Only a crash between
    the rename and the append (no exception to handle) can leave an output without its entry.

    Raises:
        InputError: The audit log cannot record the export (nothing was left in place).
    """
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.urandom(4).hex()}")
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    try:
        entry = record()
    except BaseException as exc:
        _remove(dest)
        if old is not None:
            os.replace(old, dest)
        if isinstance(exc, OSError):
            raise InputError(f"{dest}: not exported: the audit log cannot record it "
                             f"({exc.strerror or type(exc).__name__})") from None
        raise
    if old is not None:
        _remove(old)
    return entry


def _is_export(path: Path) -> bool:
    """An earlier export of the gate (the only kind of directory an export replaces).

    It must hold nothing but its ``_manifest.json`` (with an export record) and the parts it
    lists: a directory with anything else in it is not replaced (and not deleted).
    """
    from pets.boundary._dataset import _check_directory, read_index

    try:
        if not path.is_dir():
            return False
        index = read_index(path)
        _check_directory(index)
        return index.export is not None
    except PetsError:
        return False


def _pinned_ledger(keys: BoundaryKeys, ledger: Any) -> Any:
    """The ledger a release is checked against: the boundary's pinned one when it has anchors
    (a caller's ledger must be that one), else the caller's (a boundary built in memory)."""
    if keys.anchors is None:
        return ledger
    pinned = keys.anchors.ledger
    if ledger is None:
        return pinned
    path = getattr(ledger, "path", ledger)
    if path is None or Path(os.fspath(path)).resolve() != pinned:
        raise IntegrityError(f"release ledger {os.fspath(path) if path else '(in memory)'} is "
                             f"not the boundary's pinned ledger {pinned}: a release leaves only "
                             "on the record of the ledger it was spent from")
    return ledger


def _open_ledger(ledger: Any) -> Any:
    from pets.dp import Ledger

    if ledger is None or isinstance(ledger, Ledger):
        return ledger
    if isinstance(ledger, str | os.PathLike):
        if not Path(ledger).is_file():
            raise InputError(f"ledger {os.fspath(ledger)!r} does not exist")
        return Ledger(ledger)
    raise InputError(f"ledger must be a pets.dp.Ledger or its path, got "
                     f"{type(ledger).__name__}")


def _release_evidence(release: Any, dest: Path,
                      ledger: Any) -> tuple[pd.DataFrame, dict[str, Any], str]:
    """The release's table and metadata as they will be written, if its ledger record matches.

    The table is copied once; that copy is digested and that copy is written.
    """
    from pets.dp import Release, release_digest

    if isinstance(release, Release):
        frame = release.frame.copy(deep=True)
        meta = json.loads(json.dumps(release.metadata(), default=str))
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(release)
            raw = (table.schema.metadata or {})[RELEASE_KEY]
            meta = json.loads(raw)
            frame = table.to_pandas()
        except PetsError:
            raise
        except Exception:  # unparseable metadata or pandas metadata: not as it was made
            raise IntegrityError(f"release file {os.fspath(release)} does not match its ledger "
                                 "record (edited after it was made?): it cannot be read back"
                                 ) from None
        if not isinstance(meta, dict):
            raise IntegrityError(f"release file {os.fspath(release)} does not match its ledger "
                                 "record (edited after it was made?): no release metadata")
    rid = meta.get("release_id")
    led = _open_ledger(ledger)
    if led is None:
        raise IntegrityError(f"release {rid!r} does not match its ledger record (edited after "
                             "it was made?): no ledger was given to the gate (ledger=)")
    if led.path is not None and dest.resolve() == Path(led.path).resolve():
        raise InputError(f"{dest}: cannot write an export over the ledger {led.path}")
    digest = release_digest(frame, meta)
    led.check_release(rid, digest)
    return frame, meta, digest


_RELEASE_COLUMNS = frozenset({"statistic", "column", "param", "estimate", "ci_low", "ci_high",
                               "mechanism", "scale", "epsilon", "delta", "rho"})


def _check_release_names(frame: pd.DataFrame, meta: dict[str, Any], policy: Policy) -> None:
    """Every caller-chosen name or value in a release is one the policy vouches for.

    A release is the caller's query over raw data: its group keys, column names and unit are
    whatever the caller asked for. It leaves only if (1) each of them is a column of this
    policy's dataset, (2) no group column is an identifier, and (3) group keys given by the
    caller (public keys) are among the column's ``public_values`` in the policy — keys chosen
    privately (DP key selection with a threshold) need no list. Otherwise the table could carry
    raw values (e.g. grouped by e-mail with every address given as a "public" key).

    Raises:
        PolicyError: Naming the column and the rule, never the values.
    """
    query = meta.get("query") if isinstance(meta.get("query"), dict) else {}
    assert isinstance(query, dict)
    by = [str(c) for c in (query.get("by") or [])]
    aggregated = [str(a.get("column")) for a in (query.get("aggregates") or [])
                  if isinstance(a, dict) and a.get("column") is not None]
    rules = {r.name: r for r in policy.columns}
    unit = meta.get("privacy_unit")
    for name in [*by, *aggregated, *([str(unit)] if unit is not None else [])]:
        if name not in rules:
            raise PolicyError(f"the release names column {name!r}, which policy "
                              f"{policy.source} ({policy.dataset}) does not have: a release "
                              "leaves under the policy of the data it was made from")
    extra = [str(c) for c in frame.columns if c not in _RELEASE_COLUMNS and c not in by]
    if extra:
        raise PolicyError(f"the release has column(s) {', '.join(map(repr, extra))} that are "
                          "neither its group columns nor release fields")
    if "column" in frame.columns:
        named = {str(v) for v in frame["column"].dropna().unique()} - {""}
        unknown = sorted(named - set(rules))
        if unknown:
            raise PolicyError(f"the release's 'column' field names {len(unknown)} column(s) "
                              f"that policy {policy.source} does not have")
    public = str(query.get("keys", "")).startswith("public")
    for name in by:
        rule = rules[name]
        if rule.role == "identifier":
            raise PolicyError(f"the release is grouped by {name!r}, an identifier in policy "
                              f"{policy.source}: its group keys would be raw identifiers")
        if not public:
            continue
        if rule.public_values is None:
            raise PolicyError(f"the release is grouped by {name!r} with keys given by its "
                              f"caller, and policy {policy.source} declares no public_values "
                              f"for {name!r}: caller-given group keys leave only if the policy "
                              "declares them public (or select the keys privately)")
        values = {str(v) for v in frame[name].dropna().unique()} if name in frame.columns \
            else set()
        outside = values - set(rule.public_values)
        if outside:
            raise PolicyError(f"{len(outside)} group key(s) of {name!r} are not among its "
                              f"public_values in policy {policy.source}")


def _export_release(release: Any, to: str, dest: Path, policy: Policy, context: Context,
                    audit: AuditLog, ledger: Any) -> ExportReceipt:
    if not policy.allows("dp_release", to):
        raise PolicyError(f"policy {policy.source} does not let DP releases go to {to}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame, meta, release_digest = _release_evidence(release, dest, ledger)
    _check_release_names(frame, meta, policy)
    # what leaves names the dataset by its policy, not by a caller-chosen id (a path, or any
    # text given as --dataset-id); the ledger record keeps the original
    meta = {**meta, "dataset_id": policy.dataset}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    record = {"destination": to, "exported_by": context.access_token,
              "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    table = table.replace_schema_metadata({
        **(table.schema.metadata or {}),
        RELEASE_KEY: json.dumps(meta, default=str, sort_keys=True).encode(),
        EXPORT_KEY: json.dumps(record).encode(),
    })
    name = str(meta.get("dataset_id") or "release")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with atomic_path(tmp) as part:  # fsynced
            pq.write_table(table, part)
        digest = _file_sha256(tmp)
        entry = _publish(tmp, dest, lambda: audit.append(
            "boundary.export", actor=context, destination=to, output="dp_release", name=name,
            columns=[str(c) for c in frame.columns], treatments={}, rows=len(frame),
            digest=digest, path=str(dest), budget=dict(meta.get("loss") or {}),
            privacy_unit=meta.get("privacy_unit"), query=meta.get("query"),
            release_id=meta.get("release_id"), release_digest=release_digest))
    finally:
        _remove(tmp)
    return ExportReceipt(to, str(dest), "dp_release", name,
                         tuple(str(c) for c in frame.columns), len(frame), digest,
                         int(entry["seq"]))

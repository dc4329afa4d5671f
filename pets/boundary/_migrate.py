"""Move everything that depends on some KEKs to another KEK, without re-encrypting any data.

The data-centre migration (local keyring → OpenBao in Ireland, Ireland → Norway…) in three
steps, each a function here and a ``pets migrate`` command:

1. :func:`plan_migration` finds every *item* under the given paths whose data keys are wrapped
   under a source KEK, plus the boundary's own key files:

   ==============  ==========================================================================
   kind            what is re-wrapped (what must not change)
   ==============  ==========================================================================
   ``signing-key`` ``signing-key.json`` (and ``boundary.json``'s ``signing_kek``, re-signed);
                   the Ed25519 key id stays the same
   ``roots``       ``roots.json``: each root secret moves to the target's entry (so a policy
                   naming the target keeps the same pseudonyms); a keyed fingerprint of each
                   root stays the same
   ``table``       a protected Parquet table: the column-key headers in its signed manifest
                   (encrypted columns) and the key of its reversible pseudonym columns; the
                   manifest is re-signed; the encrypted columns' cell bytes stay the same
   ``envelope``    a ``.pets`` envelope file: its header's wrapped keys; the segment bytes
                   stay the same
   ``parquet``     a Parquet file with external key material: the ``_KEY_MATERIAL_FOR_*``
                   side file; the Parquet file's bytes stay the same
   ==============  ==========================================================================

2. :func:`run_migration` re-wraps item after item through a :class:`~pets.keys._migrate.
   MigrationJournal` (``begin`` with the digest of what must not change → the re-wrap, written
   to a temporary file renamed over the item → ``done`` with the digest after → the signed
   ``key.migrate`` audit entry → ``audited``). Killed at any instant, a second run finishes the
   job: an item whose ``begin`` has no ``done`` is inspected — if it no longer uses a source
   KEK, the rename happened and only the bookkeeping is completed (digests compared); else it
   is re-wrapped. An audit entry already in the log for (plan, item) is never written twice.
3. :func:`verify_migration` opens every item through a registry that refuses the source KEKs
   (:func:`~pets.keys._migrate.without_keys`) and checks that none still names them: then the
   old KEKs can be crypto-shredded (``pets keys destroy``).

Protected *datasets* (``_manifest.json`` with column-encrypted parts) are listed as blocked:
their chained dataset manifest is not re-written here (re-protect them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pets._errors import InputError, IntegrityError, PetsError
from pets._io import atomic_path
from pets.boundary._audit import AuditLog
from pets.boundary._keys import (
    _ANCHORS,
    _ROOTS,
    _ROOTS_FORMAT,
    _SIGNING,
    Anchors,
    BoundaryKeys,
    _locked,
    _read_anchors,
    _write_anchors,
)
from pets.boundary._manifest import MANIFEST_KEY, ColumnManifest, Manifest
from pets.boundary._signing import SigningKey, read_key_file
from pets.jurisdiction import Context
from pets.keys import KeyServices, WrappedKey, rewrap
from pets.keys._migrate import MigrationJournal, check_migration_target, without_keys

__all__ = [
    "MigrationItem",
    "MigrationPlan",
    "MigrationReport",
    "plan_migration",
    "run_migration",
    "verify_migration",
]

PLAN_FORMAT = "pets.migration-plan/1"
KINDS = ("signing-key", "roots", "table", "envelope", "parquet")
_ENVELOPE_MAGIC = b"PETS"
_KM_PREFIX = "_KEY_MATERIAL_FOR_"
_FINGERPRINT = b"pets.migrate.root-fingerprint/1"


@dataclass(frozen=True)
class MigrationItem:
    """One file to re-wrap: its kind, path (absolute) and the source KEKs it uses."""

    kind: str
    path: str
    keys: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "keys": list(self.keys)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MigrationItem:
        if d.get("kind") not in KINDS or not isinstance(d.get("path"), str):
            raise ValueError
        return cls(str(d["kind"]), str(d["path"]), tuple(str(k) for k in d["keys"]))


@dataclass(frozen=True)
class MigrationPlan:
    """What a migration will do (JSON-able; :meth:`write` / :meth:`read`)."""

    target: str
    sources: tuple[str, ...]
    boundary: str
    items: tuple[MigrationItem, ...]
    jurisdictions: Mapping[str, str]
    allow_jurisdiction_change: bool = False
    blocked: tuple[tuple[str, str], ...] = ()
    created: str = ""

    @property
    def id(self) -> str:
        """A digest of what the plan does (target, sources, items): names its journal."""
        body = {"target": self.target, "sources": list(self.sources),
                "items": [i.to_dict() for i in self.items], "boundary": self.boundary}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def changes_jurisdiction(self) -> bool:
        target = self.jurisdictions.get(self.target)
        return any(self.jurisdictions.get(s) not in ("", None, target) for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "id": self.id, "target": self.target,
                "sources": list(self.sources), "boundary": self.boundary,
                "jurisdictions": dict(self.jurisdictions),
                "allow_jurisdiction_change": self.allow_jurisdiction_change,
                "items": [i.to_dict() for i in self.items],
                "blocked": [{"path": p, "reason": r} for p, r in self.blocked],
                "created": self.created}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "plan") -> MigrationPlan:
        try:
            if d.get("format") != PLAN_FORMAT:
                raise ValueError
            plan = cls(str(d["target"]), tuple(str(s) for s in d["sources"]),
                       str(d["boundary"]), tuple(MigrationItem.from_dict(i) for i in d["items"]),
                       {str(k): str(v) for k, v in d["jurisdictions"].items()},
                       bool(d["allow_jurisdiction_change"]),
                       tuple((str(b["path"]), str(b["reason"])) for b in d.get("blocked", [])),
                       str(d.get("created", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"{where}: not a pets migration plan ({PLAN_FORMAT})") from None
        if d.get("id") != plan.id:
            raise IntegrityError(f"{where}: the plan was edited (its id does not match its "
                                 "items): make a new one with `pets migrate plan`")
        return plan

    def write(self, path: str | os.PathLike[str]) -> Path:
        with atomic_path(path, mode=0o600) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> MigrationPlan:
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
        except OSError as exc:
            raise InputError(f"{p}: cannot read the plan ({exc.strerror})") from None
        except ValueError:
            raise InputError(f"{p}: not a pets migration plan (not JSON)") from None
        if not isinstance(doc, dict):
            raise InputError(f"{p}: not a pets migration plan")
        return cls.from_dict(doc, str(p))

    def journal_path(self, plan_path: str | os.PathLike[str] | None = None) -> Path:
        """Next to the plan file, else in the boundary's ``migrations/`` directory."""
        if plan_path is not None:
            p = Path(plan_path)
            return p.with_name(p.name + ".journal")
        return Path(self.boundary) / "migrations" / f"{self.id}.journal"


@dataclass
class MigrationReport:
    """What a run or a verification did, item by item."""

    plan: str
    migrated: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "migrated": self.migrated, "recovered": self.recovered,
                "skipped": self.skipped,
                "failed": [{"item": i, "reason": r} for i, r in self.failed],
                "seconds": round(self.seconds, 3)}


# -- reading items ------------------------------------------------------------------------------

def _key_material_uris(path: Path) -> set[str]:
    from pets.envelope._parquet import uri_from_master_key_id

    try:
        doc = json.loads(path.read_text())
        out = set()
        for value in doc.values():
            entry = json.loads(value)
            if isinstance(entry, dict) and "masterKeyID" in entry:
                out.add(uri_from_master_key_id(str(entry["masterKeyID"])))
        return out
    except (OSError, ValueError, TypeError, AttributeError, InputError):
        raise IntegrityError(f"{path}: Parquet key material is malformed") from None


def _read_manifest(path: Path) -> Manifest | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None  # not Parquet, or an encrypted footer (its key material is its own item)
    raw = meta.get(MANIFEST_KEY)
    return Manifest.from_json(raw) if raw is not None else None


def _manifest_uris(manifest: Manifest) -> set[str]:
    out: set[str] = set()
    for col in manifest.columns:
        if col.header:
            for ck in col.header.get("columns", []):
                out.update(str(w["key_uri"]) for w in ck.get("wrapped_keys", []))
        elif col.reversible and col.key_uri:
            out.add(col.key_uri)
    return out


def _is_envelope(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == _ENVELOPE_MAGIC
    except OSError:
        return False


def _envelope_uris(path: Path) -> list[str]:
    from pets.envelope import read_header

    return [w.key_uri for w in read_header(path).wrapped_keys]


def _roots_doc(directory: Path) -> dict[str, Any]:
    path = directory / _ROOTS
    if not path.exists():
        return {"format": _ROOTS_FORMAT, "roots": {}}
    doc = json.loads(path.read_text())
    if doc.get("format") != _ROOTS_FORMAT:
        raise InputError(f"{path}: not a pets roots file")
    return dict(doc)


def uses(item: MigrationItem, sources: Iterable[str]) -> set[str]:
    """The source KEKs ``item`` still depends on (read from the file as it is now)."""
    src = set(sources)
    p = Path(item.path)
    if item.kind == "envelope":
        return set(_envelope_uris(p)) & src
    if item.kind == "parquet":
        from pets.envelope._parquet import key_material_path

        return _key_material_uris(key_material_path(p)) & src
    if item.kind == "table":
        manifest = _read_manifest(p)
        return _manifest_uris(manifest) & src if manifest is not None else set()
    if item.kind == "roots":
        doc = _roots_doc(p.parent)
        return {u for u, w in doc["roots"].items() if u in src or w.get("key_uri") in src}
    if item.kind == "signing-key":
        used = {str(read_key_file(p)["wrapped"].get("key_uri"))}
        anchors = json.loads((p.parent / _ANCHORS).read_text())
        used.add(str(anchors.get("signing_kek")))
        return used & src
    raise InputError(f"unknown item kind {item.kind!r}")


def _walk(paths: Sequence[str | os.PathLike[str]]) -> Iterable[Path]:
    for raw in paths:
        p = Path(raw).resolve()
        if not p.exists():
            raise InputError(f"{raw}: no such file or directory")
        if p.is_file():
            yield p
        else:
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.name.startswith(".") and not f.is_symlink():
                    yield f


def _inside_dataset(path: Path) -> Path | None:
    from pets.boundary._dataset import is_dataset

    for parent in path.parents:
        if is_dataset(parent):
            return parent
    return None


def plan_migration(paths: Sequence[str | os.PathLike[str]], keys: BoundaryKeys, *,
                   target: str, sources: Sequence[str] = (), context: Context,
                   allow_jurisdiction_change: bool = False,
                   audit: Callable[..., Any] | None = None) -> MigrationPlan:
    """Find every item under ``paths`` (and the boundary's key files) wrapped under a source.

    Args:
        paths: Files and directories to search (envelopes, Parquet files and their key
            material, protected tables).
        keys: The opened boundary (its key services and directory).
        target: The KEK everything moves to (it must exist).
        sources: The KEKs to move away from; default every KEK the items use but the target.
        context: Who plans (only metadata is read: no key is unwrapped).
        allow_jurisdiction_change: Allow a target of another jurisdiction than a source.
        audit: Receives ``key.migrate_refused`` when the target is refused.

    Raises:
        JurisdictionError: The target belongs to another jurisdiction and that is not allowed.
        KeyNotFoundError: The target does not exist.
        InputError: Two root secrets would land on one target entry, or the target already
            has a root secret (pseudonyms would change); a path does not exist.
    """
    from pets.envelope._parquet import key_material_path

    if keys.directory is None:
        raise InputError("a migration needs a boundary opened from its directory")
    found: list[tuple[str, Path, set[str]]] = []
    blocked: dict[str, str] = {}
    seen: set[Path] = set()
    for f in _walk(paths):
        if f in seen:
            continue
        if f.name.startswith(_KM_PREFIX) and f.suffix == ".json":
            data = f.with_name(f.name[len(_KM_PREFIX):-len(".json")])
            if data.is_file() and data not in seen:
                seen.add(data)
                found.append(("parquet", data, _key_material_uris(f)))
            continue
        if f.suffix == ".parquet":
            if key_material_path(f).is_file():
                if f not in seen:
                    seen.add(f)
                    found.append(("parquet", f, _key_material_uris(key_material_path(f))))
                continue
            manifest = _read_manifest(f)
            if manifest is not None and _manifest_uris(manifest):
                dataset = _inside_dataset(f)
                if dataset is not None:
                    blocked[str(dataset)] = ("protected dataset whose parts' manifests hold "
                                             "wrapped column keys: re-protect it")
                    seen.add(f)
                    continue
                seen.add(f)
                found.append(("table", f, _manifest_uris(manifest)))
            continue
        if _is_envelope(f):
            seen.add(f)
            found.append(("envelope", f, set(_envelope_uris(f))))
    d = keys.directory.resolve()
    signing = d / _SIGNING
    signing_uses = {str(read_key_file(signing)["wrapped"].get("key_uri"))}
    if keys.anchors is not None:
        signing_uses.add(keys.anchors.signing_kek)
    roots = _roots_doc(d)["roots"]
    boundary_items = [("signing-key", signing, signing_uses),
                      ("roots", d / _ROOTS, set(roots))]
    all_uses = set().union(*(u for _, _, u in found + boundary_items))
    srcs = tuple(dict.fromkeys(sources)) if sources else tuple(sorted(all_uses - {target}))
    jurisdictions = check_migration_target(
        keys.services, srcs, target, allow_jurisdiction_change=allow_jurisdiction_change,
        context=context, audit=audit)
    moving_roots = sorted(set(roots) & set(srcs))
    if moving_roots and target in roots:
        raise InputError(f"roots.json already holds a root secret under {target}: moving the "
                         f"one under {moving_roots[0]} onto it would change every pseudonym "
                         "made with either")
    if len(moving_roots) > 1:
        raise InputError(f"roots.json holds root secrets under {', '.join(moving_roots)}: "
                         "they cannot all move to one target (migrate them one at a time)")
    home = keys.anchors.home if keys.anchors is not None else None
    if signing_uses & set(srcs) and home and jurisdictions[target] != home:
        raise InputError(f"the boundary's signing key must stay under a KEK of its home "
                         f"{home}; {target} is {jurisdictions[target]}: pass --from without "
                         "the signing KEK")
    order = {k: i for i, k in enumerate(KINDS)}
    items = [MigrationItem(kind, str(p), tuple(sorted(u & set(srcs))))
             for kind, p, u in boundary_items + found if u & set(srcs)]
    items.sort(key=lambda i: (order[i.kind], i.path))
    return MigrationPlan(
        target=target, sources=srcs, boundary=str(d), items=tuple(items),
        jurisdictions=jurisdictions, allow_jurisdiction_change=allow_jurisdiction_change,
        blocked=tuple(sorted(blocked.items())),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))


# -- digests of what must not change ------------------------------------------------------------

def _sha256_file(path: Path, offset: int = 0) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _table_digest(path: Path, manifest: Manifest) -> str:
    """SHA-256 over the cells of the encrypted columns (offsets and bytes) and the manifest's
    signed data digest (the values of every column)."""
    import pyarrow.parquet as pq

    enc = [c.name for c in manifest.columns if c.header]
    h = hashlib.sha256(manifest.data_digest.encode())
    if enc:
        table = pq.read_table(path, columns=enc)
        for name in enc:
            col = table.column(name).combine_chunks()
            h.update(name.encode() + b"\x00")
            for buf in col.buffers()[1:]:
                if buf is not None:
                    h.update(bytes(buf))
    return h.hexdigest()


def _root_fingerprint(services: KeyServices, wrapped: WrappedKey, context: Context) -> str:
    root = services.unwrap(wrapped, context=context, purpose="migrate-check")
    try:
        return hmac.new(root, _FINGERPRINT, hashlib.sha256).hexdigest()[:32]
    finally:
        del root


def _digest(item: MigrationItem, keys: BoundaryKeys, context: Context) -> str:
    p = Path(item.path)
    if item.kind == "envelope":
        from pets.envelope import read_header

        return _sha256_file(p, read_header(p).header_size)
    if item.kind == "parquet":
        return _sha256_file(p)
    if item.kind == "table":
        manifest = _read_manifest(p)
        if manifest is None:
            raise IntegrityError(f"{p}: the protected table lost its manifest")
        return _table_digest(p, manifest)
    if item.kind == "roots":
        roots = _roots_doc(p.parent)["roots"]
        prints = {u: _root_fingerprint(keys.services, WrappedKey.from_dict(w), context)
                  for u, w in sorted(roots.items())}
        return hashlib.sha256(json.dumps(sorted(prints.values())).encode()).hexdigest()
    if item.kind == "signing-key":
        return str(read_key_file(p)["key_id"])
    raise InputError(f"unknown item kind {item.kind!r}")


# -- re-wrapping one item -----------------------------------------------------------------------

def _column_wrap_context(enc_context: Mapping[str, str], column: str, mode: str
                         ) -> dict[str, str]:
    # the context pets.envelope binds to each column's wrapped data key (format fact of
    # encrypt_columns; a divergence fails the decrypt in verify_migration)
    return {**enc_context, "pets.column": column, "pets.column_mode": mode}


def _rewrap_list(wrapped: Sequence[WrappedKey], sources: set[str], target: str,
                 services: KeyServices, context: Context, enc_context: Mapping[str, str] | None,
                 allow: bool) -> list[WrappedKey]:
    out: list[WrappedKey] = []
    for w in wrapped:
        if w.key_uri in sources:
            new = rewrap(w, source=services, target_uri=target, target=services,
                         context=context, enc_context=enc_context,
                         allow_jurisdiction_change=allow)
            if all(o.key_uri != new.key_uri for o in out):
                out.append(new)
        elif all(o.key_uri != w.key_uri for o in out):
            out.append(w)
    return out


def _migrate_table(item: MigrationItem, plan: MigrationPlan, keys: BoundaryKeys,
                   context: Context) -> None:
    import pyarrow.parquet as pq

    p = Path(item.path)
    manifest = _read_manifest(p)
    if manifest is None:
        raise IntegrityError(f"{p}: no pets manifest")
    manifest.verify(keys.pinned_public_keys)  # never re-sign what the boundary did not sign
    src = set(plan.sources)
    columns: list[ColumnManifest] = []
    for col in manifest.columns:
        if col.header:
            header = dict(col.header)
            new_cols = []
            for ck in header["columns"]:
                ctx = _column_wrap_context(header["enc_context"], ck["column"], ck["mode"])
                wrapped = [WrappedKey.from_dict(w) for w in ck["wrapped_keys"]]
                moved = _rewrap_list(wrapped, src, plan.target, keys.services, context, ctx,
                                     plan.allow_jurisdiction_change)
                new_cols.append({**ck, "wrapped_keys": [w.to_dict() for w in moved]})
            header["columns"] = new_cols
            first = new_cols[0]["wrapped_keys"][0]
            col = dataclasses.replace(col, header=header, key_uri=first["key_uri"],
                                      key_version=first["version"],
                                      key_jurisdiction=first["jurisdiction"])
        elif col.reversible and col.key_uri in src:
            root = keys.root_for(plan.target, context=context, create=False)
            col = dataclasses.replace(col, key_uri=plan.target, key_version=root.version,
                                      key_jurisdiction=root.jurisdiction)
        columns.append(col)
    signed = dataclasses.replace(manifest, columns=tuple(columns)).sign(keys.signer)
    table = pq.read_table(p)
    meta = dict(table.schema.metadata or {})
    meta[MANIFEST_KEY] = signed.to_json().encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(p, mode=p.stat().st_mode & 0o777) as tmp:
        pq.write_table(table, tmp)


def _migrate_roots(plan: MigrationPlan, keys: BoundaryKeys, context: Context) -> None:
    assert keys.directory is not None
    d = keys.directory
    with _locked(d):
        doc = _roots_doc(d)
        roots = dict(doc["roots"])
        for uri in sorted(set(roots) & set(plan.sources)):
            if plan.target in roots:
                raise InputError(f"roots.json already holds a root secret under {plan.target}")
            new = rewrap(WrappedKey.from_dict(roots.pop(uri)), source=keys.services,
                         target_uri=plan.target, target=keys.services, context=context,
                         allow_jurisdiction_change=plan.allow_jurisdiction_change)
            roots[plan.target] = new.to_dict()
        doc = {"format": _ROOTS_FORMAT, "roots": dict(sorted(roots.items()))}
        with atomic_path(d / _ROOTS, mode=0o600) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        keys._roots = keys._read_roots()


def _migrate_signing_key(plan: MigrationPlan, keys: BoundaryKeys, context: Context) -> None:
    assert keys.directory is not None
    d = keys.directory
    with _locked(d):
        wrapped_under = str(read_key_file(d / _SIGNING)["wrapped"].get("key_uri"))
        if wrapped_under in plan.sources:
            keys.signer.save(d / _SIGNING, keys.services, plan.target, context=context)
        current = _read_anchors(d, keys.signer)
        if current.signing_kek != plan.target:
            anchors = dataclasses.replace(current, signing_kek=plan.target)
            _write_anchors(d, anchors, keys.signer)
            keys.anchors = anchors


def _migrate_item(item: MigrationItem, plan: MigrationPlan, keys: BoundaryKeys,
                  context: Context) -> None:
    p = Path(item.path)
    src = set(plan.sources)
    if item.kind == "envelope":
        from pets.envelope import rewrap_file

        uris = _envelope_uris(p)
        to = list(dict.fromkeys(plan.target if u in src else u for u in uris))
        rewrap_file(p, keys=keys.services, context=context, to=to,
                    allow_jurisdiction_change=plan.allow_jurisdiction_change)
    elif item.kind == "parquet":
        from pets.envelope import ParquetCrypto
        from pets.envelope._parquet import key_material_path

        used = _key_material_uris(key_material_path(p)) & src
        ParquetCrypto(keys.services).migrate(
            p, context=context, to=dict.fromkeys(sorted(used), plan.target),
            allow_jurisdiction_change=plan.allow_jurisdiction_change)
    elif item.kind == "table":
        _migrate_table(item, plan, keys, context)
    elif item.kind == "roots":
        _migrate_roots(plan, keys, context)
    elif item.kind == "signing-key":
        _migrate_signing_key(plan, keys, context)
    else:
        raise InputError(f"unknown item kind {item.kind!r}")


# -- the run ------------------------------------------------------------------------------------

def _audited(log: AuditLog, plan_id: str) -> set[str]:
    out = set()
    for entry in log.entries():
        fields = entry.get("fields") or {}
        if entry.get("kind") == "key.migrate" and fields.get("plan") == plan_id:
            out.add(str(fields.get("item")))
    return out


def run_migration(plan: MigrationPlan, keys: BoundaryKeys, log: AuditLog, *,
                  context: Context, journal: str | os.PathLike[str] | None = None,
                  progress: bool | None = None,
                  on_item: Callable[[MigrationItem], None] | None = None) -> MigrationReport:
    """Re-wrap every item of ``plan`` (resumable; see the module documentation).

    Args:
        plan: From :func:`plan_migration` (or :meth:`MigrationPlan.read`).
        keys: The opened boundary (the same as the plan's).
        log: The boundary's signed audit log: one ``key.migrate`` entry per item (item, kind,
            from, to, digests before and after, plan id).
        context: Who runs it (the key services check its jurisdiction).
        journal: The journal file (default :meth:`MigrationPlan.journal_path`).
        progress: Show a tqdm bar (default: when stderr is a terminal).
        on_item: Called after each item is journaled done (tests use it to be killed there).

    Raises:
        InputError: ``keys`` is not the plan's boundary.
        IntegrityError: What must not change did (an item's digest differs after the
            re-wrap, or a resumed item's differs from its ``begin``): the run stops there.
        JurisdictionError: A target of another jurisdiction, not allowed by the plan.
    """
    import time

    t0 = time.perf_counter()
    if keys.directory is None or str(keys.directory.resolve()) != plan.boundary:
        raise InputError(f"the plan is for the boundary at {plan.boundary}, not "
                         f"{keys.directory}")
    check_migration_target(keys.services, plan.sources, plan.target,
                           allow_jurisdiction_change=plan.allow_jurisdiction_change,
                           context=context, audit=log.hook)
    jpath = Path(journal) if journal is not None else plan.journal_path()
    jpath.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    j = MigrationJournal(jpath)
    lock_fd = os.open(jpath.with_name(jpath.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        import fcntl

        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)
        raise InputError(f"another `pets migrate run` holds {jpath}: wait for it") from None
    try:
        return _run(plan, keys, log, context, j, progress, on_item, t0)
    finally:
        os.close(lock_fd)


def _drop_stale_temp(item: MigrationItem) -> None:
    """A run killed mid-write leaves ``.<name>.*.tmp`` beside the item (never the item
    half-written): remove it before the item is done again."""
    p = Path(item.path)
    names = [p.name]
    if item.kind == "parquet":
        from pets.envelope._parquet import key_material_path

        names.append(key_material_path(p).name)
    for name in names:
        for tmp in p.parent.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _run(plan: MigrationPlan, keys: BoundaryKeys, log: AuditLog, context: Context,
         j: MigrationJournal, progress: bool | None,
         on_item: Callable[[MigrationItem], None] | None, t0: float) -> MigrationReport:
    import sys
    import time

    steps = j.steps()
    done_in_log = _audited(log, plan.id)
    report = MigrationReport(plan.id)
    if plan.changes_jurisdiction and "*" not in steps:
        log.append("key.migrate_jurisdiction_change", plan=plan.id, target=plan.target,
                   jurisdictions=dict(plan.jurisdictions), actor=context)
        j.record("*", "jurisdiction-change-logged")
    show = sys.stderr.isatty() if progress is None else progress
    bar: Any = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(plan.items), unit="item", desc="migrate", leave=False)
    try:
        for item in plan.items:
            st = steps.get(item.path, [])
            recovered = False
            if "audited" in st:
                report.skipped.append(item.path)
            else:
                if "done" not in st:
                    if "begin" in st:
                        _drop_stale_temp(item)
                    if "begin" in st and not uses(item, plan.sources):
                        begin = j.last(item.path, "begin") or {}
                        after = _digest(item, keys, context)
                        if after != begin.get("before"):
                            raise IntegrityError(
                                f"{item.path}: re-wrapped by an interrupted run, but what must "
                                "not change did (digest differs from the journal's begin)")
                        j.record(item.path, "done", after=after, recovered=True)
                        recovered = True
                    else:
                        before = _digest(item, keys, context)
                        j.record(item.path, "begin", kind=item.kind, before=before)
                        _migrate_item(item, plan, keys, context)
                        after = _digest(item, keys, context)
                        if after != before:
                            j.record(item.path, "failed", after=after)
                            raise IntegrityError(f"{item.path}: the re-wrap changed what must "
                                                 f"not change ({item.kind} digest differs)")
                        j.record(item.path, "done", after=after)
                else:
                    recovered = True
                if on_item is not None:
                    on_item(item)
                if item.path not in done_in_log:
                    begin = j.last(item.path, "begin") or {}
                    end = j.last(item.path, "done") or {}
                    log.append("key.migrate", actor=context, plan=plan.id, item=item.path,
                               item_kind=item.kind, **{"from": list(item.keys)}, to=plan.target,
                               before=begin.get("before"), after=end.get("after"),
                               recovered=recovered)
                j.record(item.path, "audited")
                (report.recovered if recovered else report.migrated).append(item.path)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        report.seconds = time.perf_counter() - t0
    return report


# -- verification -------------------------------------------------------------------------------

def _open_item(item: MigrationItem, services: KeyServices, keys: BoundaryKeys,
               context: Context) -> None:
    """Open ``item`` through ``services`` (which refuses the source KEKs)."""
    p = Path(item.path)
    if item.kind == "envelope":
        from pets.envelope import EnvelopeHeader
        from pets.envelope._envelope import open_dek

        with open(p, "rb") as fh:
            header, _ = EnvelopeHeader.read(fh.read)
        dek, _ = open_dek(header, services, context)
        del dek
    elif item.kind == "parquet":
        from pets.envelope import ParquetCrypto

        ParquetCrypto(services).read_table(p, context=context)
    elif item.kind == "table":
        import pandas as pd

        from pets.boundary._manifest import ProtectedFrame
        from pets.envelope import decrypt_columns

        pf = ProtectedFrame.read(p)
        pf.manifest.verify(keys.pinned_public_keys).verify_data(pf.data)
        for col in pf.manifest.columns:
            if col.header:
                decrypt_columns(pd.DataFrame({col.name: pf.data[col.name]}), col.header,
                                keys=services, context=context)
            elif col.reversible and col.key_uri:
                root = keys.root_for(col.key_uri, context=context, create=False)
                if root.version != col.key_version:
                    raise IntegrityError(f"column {col.name!r}: its root secret "
                                         f"{col.key_uri} v{col.key_version} is not in roots.json")
                services.unwrap(root, context=context, purpose="migrate-verify")
    elif item.kind == "roots":
        for w in _roots_doc(p.parent)["roots"].values():
            services.unwrap(WrappedKey.from_dict(w), context=context, purpose="migrate-verify")
    elif item.kind == "signing-key":
        SigningKey.load(p, services, context=context)
        assert keys.directory is not None
        anchors = Anchors.from_dict(json.loads((keys.directory / _ANCHORS).read_text()),
                                    str(keys.directory / _ANCHORS))
        if anchors.signing_kek in set(item.keys):
            raise IntegrityError(f"{keys.directory / _ANCHORS} still names {anchors.signing_kek}")


def verify_migration(plan: MigrationPlan, keys: BoundaryKeys, *,
                     context: Context) -> MigrationReport:
    """Prove each item opens without the source KEKs and names none of them.

    Returns:
        A report: ``migrated`` lists the items that open under the new service alone,
        ``failed`` the others with the reason. The caller exits non-zero when ``failed``.
    """
    import time

    t0 = time.perf_counter()
    report = MigrationReport(plan.id)
    restricted = without_keys(keys.services, plan.sources)
    for item in plan.items:
        try:
            still = uses(item, plan.sources)
            if still:
                raise IntegrityError(f"still wrapped under {', '.join(sorted(still))}")
            _open_item(item, restricted, keys, context)
        except (PetsError, OSError) as exc:
            report.failed.append((item.path, f"{type(exc).__name__}: {exc}"))
            continue
        report.migrated.append(item.path)
    for path, reason in plan.blocked:
        report.failed.append((path, f"blocked: {reason}"))
    report.seconds = time.perf_counter() - t0
    return report


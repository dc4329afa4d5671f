"""``protect`` on Dask: the boundary's policy applied partition by partition.

:func:`protect` builds every column's treatment on the driver exactly as
:func:`pets.boundary.protect` does (same policy checks, same transforms, same manifest
entries), ships keyed transforms to the workers as key references, checks k-anonymity of the
quasi-identifiers *globally* (group sizes over the whole dataset, suppressing rows of small
classes when the policy says ``enforce_k``), and encrypts ``encrypt`` columns under column keys
made once on the driver. The result, :class:`DaskProtected`, is lazy; it becomes

* a pandas :class:`~pets.boundary.ProtectedFrame` with :meth:`DaskProtected.compute` (small
  data; the same object the pandas path returns), or
* a **protected dataset** with :meth:`DaskProtected.write`: one Parquet file per partition, each
  a complete :class:`~pets.boundary.ProtectedFrame` file with its own signed manifest (so the
  export gate and ``ProtectedFrame.read`` work file by file), plus ``_manifest.json``: a signed
  dataset manifest whose column digests chain the parts' digests in order
  (:func:`verify_dataset` checks all of it).

Manifests are signed on the driver; the signing key never reaches a worker.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pets._errors import InputError, JurisdictionError, PetsError, PolicyError
from pets._io import atomic_directory
from pets.boundary._dataset import DATASET_MANIFEST, chain_digest, part_name
from pets.engines._keyref import WorkerKeys
from pets.engines._parquet import ParquetEncryption, write_table
from pets.engines._plan import PartitionFn, Step, ship
from pets.engines._ship import keyed_shipper
from pets.jurisdiction import Context

if TYPE_CHECKING:
    import dask.dataframe as dd

    from pets.boundary import BoundaryKeys, Manifest, Policy, ProtectedFrame

__all__ = ["DaskProtected", "QuantileBucket", "protect", "verify_dataset"]


# -- global state computed on the driver -------------------------------------------------------


@dataclass(frozen=True)
class QuantileBucket:
    """``Bucket(quantiles=n)`` with its edges computed once over the *whole* column.

    On a partition, a quantile bucket would compute edges from that partition only; the Dask
    engine computes the edges on the driver (``np.quantile`` of every non-null value, exactly
    as the pandas path) and ships them, so every partition buckets alike.
    """

    edges: tuple[float, ...]
    quantiles: int
    origin: float = 0.0
    name: str = "bucket"

    def apply(self, series: pd.Series) -> pd.Series:
        """Bucket ``series`` by the global edges (labels as ``Bucket(quantiles=n)``)."""
        from pets.pseudo._generalize import bucket_by_quantile_edges

        return bucket_by_quantile_edges(series, self.edges)


def _fit(transform: Any, column: dd.Series) -> Any:
    """Replace transforms that need whole-column state by a fitted, partition-safe form."""
    if type(transform).__name__ == "Bucket" and getattr(transform, "quantiles", None):
        from pets.engines._progress import compute
        from pets.pseudo._generalize import quantile_edges

        (values,) = compute(column, progress=False)  # nulls too: errors name pandas' position
        edges = quantile_edges(values.reset_index(drop=True), int(transform.quantiles))
        return QuantileBucket(tuple(float(e) for e in edges), int(transform.quantiles),
                              float(transform.origin))
    return transform


@dataclass(frozen=True)
class _Suppress:
    """Drop the rows of k-anonymity classes smaller than ``min_k`` (found globally)."""

    columns: tuple[str, ...]
    small: tuple[tuple[Any, ...], ...]

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        if not self.small:
            return frame
        rows = pd.MultiIndex.from_frame(frame[list(self.columns)].astype(object))
        bad = pd.MultiIndex.from_tuples(list(self.small), names=list(self.columns))
        keep = ~rows.isin(bad)
        return frame.loc[keep]


@dataclass(frozen=True)
class _CountUnchanged:
    """Per partition: for each generalized column, its non-null rows (``p<i>``) and the rows
    its generalizer left shown as they were (``u<i>``; see
    :func:`pets.pseudo._generalize.left_unchanged`). Summed over the whole dataset, they let
    the driver refuse a generalizer that is the identity on the data before anything is
    written or signed."""

    checks: tuple[tuple[str, str, Any], ...]  # (column, treatment, shipped transform)

    def columns(self) -> list[str]:
        return [f"{k}{i}" for i in range(len(self.checks)) for k in ("p", "u")]

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        from pets.pseudo._generalize import left_unchanged

        row: dict[str, int] = {}
        for i, (column, treatment, transform) in enumerate(self.checks):
            before = frame[column]
            after = transform.apply(before)
            row[f"p{i}"] = int(before.notna().sum())
            row[f"u{i}"] = int(left_unchanged(treatment, before, after).sum())
        return pd.DataFrame([row], columns=self.columns(), dtype="int64")


def _policy_error(where: str, treatment: str, exc: Exception) -> PolicyError:
    return PolicyError(f"{where}: {treatment} failed: {exc}")


@dataclass(frozen=True)
class _Guarded:
    """A shipped transform whose failures read like the pandas ``protect`` (PolicyError)."""

    inner: Any
    where: str
    treatment: str

    @property
    def name(self) -> str:
        return self.treatment

    def _transform(self) -> Any:
        return self.inner.build() if hasattr(self.inner, "build") and not hasattr(
            self.inner, "apply") else self.inner

    @property
    def by(self) -> str | None:
        """The user column of per-user transforms (date shift), else ``None``."""
        by = getattr(self._transform(), "by", None)
        return by if isinstance(by, str) else None

    def apply(self, series: pd.Series, **kw: Any) -> pd.Series:
        t = self._transform()
        try:
            out: pd.Series = t.apply(series, **kw)
        except (InputError, TypeError, ValueError) as exc:
            if isinstance(exc, PetsError) and not isinstance(exc, InputError):
                raise
            raise _policy_error(self.where, self.treatment, exc) from None
        return out


@dataclass
class DaskProtected:
    """The lazy result of :func:`protect`: protected data plus its manifest entries.

    Attributes:
        data: The protected Dask DataFrame (lazy; its index is not meaningful). Computing it
            directly gives protected rows without a manifest — they cannot pass the export
            gate — and records nothing; :meth:`compute` and :meth:`write` sign the manifest
            and record ``boundary.protect``.
        columns: The manifest's column entries (without digests), in output order.
        k_anonymity: The global k-anonymity outcome (as the pandas manifest records it).
        rows_in: Rows of the input.
    """

    data: dd.DataFrame
    columns: tuple[dict[str, Any], ...]
    k_anonymity: dict[str, Any]
    rows_in: int
    policy: Policy = field(repr=False)
    keys: BoundaryKeys = field(repr=False)
    context: Context = field(repr=False)
    audit: Any = field(default=None, repr=False)
    dropped: tuple[str, ...] = ()

    def _column_manifests(self) -> list[Any]:
        from pets.boundary import ColumnManifest

        return [ColumnManifest(**e) for e in self.columns]

    def compute(self, *, progress: bool | None = None) -> ProtectedFrame:
        """Materialise on the driver as a pandas :class:`~pets.boundary.ProtectedFrame`.

        Use for results that fit in memory; :meth:`write` scales.
        """
        from pets.boundary import Manifest, ProtectedFrame
        from pets.engines._progress import compute

        (frame,) = compute(self.data, progress=progress)
        frame = frame.reset_index(drop=True)
        frame.attrs.clear()
        manifest = Manifest.build(
            frame, dataset=self.policy.dataset, policy_digest=self.policy.digest(),
            home=self.policy.home, created_by=self.context.access_token,
            columns=self._column_manifests(), k_anonymity=self.k_anonymity,
        ).sign(self.keys.signer)
        self._record(manifest)
        return ProtectedFrame(frame, manifest)

    def _record(self, manifest: Manifest, **extra: Any) -> None:
        from pets.boundary._protect import _record

        _record(self.audit, "boundary.protect", self.context, dataset=self.policy.dataset,
                rows_in=self.rows_in, rows=manifest.rows,
                columns=[c.name for c in manifest.columns], treatments=manifest.treatments(),
                dropped=list(self.dropped), k=self.k_anonymity["k"], min_k=self.policy.min_k,
                suppressed_rows=self.k_anonymity["suppressed_rows"],
                policy_digest=manifest.policy_digest, data_digest=manifest.data_digest,
                signer=manifest.signer, engine="dask", **extra)

    def write(self, dest: str | os.PathLike[str], *, encryption: ParquetEncryption | None = None,
              row_group_size: int | None = 128_000, compression: str = "zstd",
              overwrite: bool = False, progress: bool | None = None) -> Manifest:
        """Write the protected dataset: part files with signed manifests, plus ``_manifest.json``.

        Three steps, all atomic together: (1) workers write each protected partition to a
        staging directory and return its value digests; (2) the driver builds and signs one
        manifest per part and the dataset manifest; (3) workers rewrite each part with its
        manifest in the Parquet schema metadata (and Parquet modular encryption when
        ``encryption`` is given) into a hidden directory that is renamed onto ``dest`` only
        when complete. No step re-runs the transforms (randomized ciphertexts are written once).

        Args:
            dest: The dataset directory (must not exist unless ``overwrite``).
            encryption: Parquet modular encryption for every part file.
            row_group_size: Rows per row group.
            compression: Parquet codec of the final files.
            overwrite: Replace an existing ``dest`` once the new one is complete.
            progress: Show progress (default: when interactive).

        Returns:
            The signed dataset manifest.
        """
        from pets.engines._progress import compute

        dask: Any = importlib.import_module("dask")
        with atomic_directory(dest, overwrite=overwrite) as final:
            staging = Path(tempfile.mkdtemp(prefix=f".{Path(dest).name}.", suffix=".stage",
                                            dir=final.parent))
            try:
                names = [str(c) for c in self.data.columns]
                parts = self.data.to_delayed()  # type: ignore[no-untyped-call]
                stage = dask.delayed(_stage_part, pure=False)
                digests = compute(*[stage(p, str(staging / part_name(i)), names)
                                    for i, p in enumerate(parts)], progress=progress)
                schema = _unified_schema([staging / part_name(i) for i in range(len(digests))])
                manifests, dataset = self._manifests(digests)
                finish = dask.delayed(_finish_part, pure=False)
                compute(*[finish(str(staging / part_name(i)), str(final / part_name(i)),
                                 manifests[i].to_json(), schema, row_group_size, compression,
                                 encryption)
                          for i in range(len(manifests))], progress=progress)
                doc = {"format": "pets.dataset/1", "manifest": dataset.to_dict(),
                       "parts": [{"file": part_name(i), "rows": m.rows}
                                 for i, m in enumerate(manifests)],
                       "encrypted": encryption is not None}
                (final / DATASET_MANIFEST).write_text(_json(doc))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        self._record(dataset, path=str(dest), parts=len(manifests))
        return dataset

    def _manifests(self, digests: Sequence[tuple[int, dict[str, str]]]
                   ) -> tuple[list[Manifest], Manifest]:
        import datetime as _dt

        from pets.boundary import Manifest
        from pets.boundary._manifest import data_digest

        cols = self._column_manifests()
        when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        common = dict(dataset=self.policy.dataset, policy_digest=self.policy.digest(),
                      home=self.policy.home, created_at=when,
                      created_by=self.context.access_token, k_anonymity=dict(self.k_anonymity))
        parts = []
        for rows, dig in digests:
            pc = tuple(dataclasses.replace(c, digest=dig[c.name]) for c in cols)
            m = Manifest(rows=rows, data_digest=data_digest(rows, [(c.name, c.digest) for c in pc]),
                         columns=pc, **common)  # type: ignore[arg-type]
            parts.append(m.sign(self.keys.signer))
        total = sum(r for r, _ in digests)
        chained = tuple(dataclasses.replace(c, digest=chain_digest(c.name, [
            (m.rows, m.column(c.name).digest) for m in parts])) for c in cols)
        dataset = Manifest(rows=total, columns=chained,
                           data_digest=data_digest(total, [(c.name, c.digest) for c in chained]),
                           **common).sign(self.keys.signer)  # type: ignore[arg-type]
        return parts, dataset


def _json(doc: Any) -> str:
    import json

    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _unified_schema(files: Sequence[Path]) -> pa.Schema:
    """One schema for every part: each column's first non-null type among the staged parts."""
    schemas = [pq.read_schema(f) for f in files]
    base = next((s for s in schemas if all(not pa.types.is_null(t) for t in s.types)),
                schemas[0])
    fields = []
    for f in base:
        typ = next((s.field(f.name).type for s in schemas
                    if not pa.types.is_null(s.field(f.name).type)), f.type)
        fields.append(pa.field(f.name, typ))
    return pa.schema(fields, metadata=base.metadata)


def _stage_part(frame: pd.DataFrame, path: str, names: list[str]) -> tuple[int, dict[str, str]]:
    """Worker: write one protected partition to staging; return its rows and value digests."""
    from pets.boundary._manifest import column_digest

    frame = frame.reset_index(drop=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, compression="lz4")
    return len(frame), {n: column_digest(n, frame[n]) for n in names}


def _finish_part(staged: str, path: str, manifest_json: str, schema: pa.Schema,
                 row_group_size: int | None, compression: str,
                 encryption: ParquetEncryption | None) -> int:
    """Worker: rewrite a staged part with its signed manifest (and modular encryption)."""
    from pets.boundary._manifest import MANIFEST_KEY

    table = pq.read_table(staged).cast(schema)
    meta = dict(schema.metadata or {})
    meta[MANIFEST_KEY] = manifest_json.encode()
    return write_table(table.replace_schema_metadata(meta), path,
                       row_group_size=row_group_size, compression=compression,
                       encryption=encryption)


def protect(
    ddf: dd.DataFrame,
    policy: Policy,
    keys: BoundaryKeys,
    context: Context,
    *,
    workers: WorkerKeys,
    audit: Any = None,
    progress: bool | None = None,
) -> DaskProtected:
    """:func:`pets.boundary.protect` for a Dask DataFrame.

    Args:
        ddf: The raw data.
        policy: The dataset's policy (it must cover exactly ``ddf``'s columns).
        keys: The home jurisdiction's boundary keys (driver side: roots, signing key).
        context: Who protects, and where (the policy's home).
        workers: How keyed transforms and column keys reach the workers (key references).
        audit: The audit log (or hook): ``boundary.protect`` when data is written/computed,
            ``boundary.refused`` on refusal.
        progress: Show progress of the k-anonymity pass (default: when interactive).

    Returns:
        A :class:`DaskProtected` (lazy data; k-anonymity already checked).

    Raises:
        JurisdictionError: ``context`` is outside the policy's home.
        PolicyError: As the pandas ``protect`` (policy does not fit, k-anonymity not reached).
    """
    from pets.boundary._protect import _record

    try:
        return _protect(ddf, policy, keys, context, workers, audit, progress)
    except PetsError as exc:
        _record(audit, "boundary.refused", context, operation="protect", target=policy.dataset,
                reason=f"{type(exc).__name__}: {exc}")
        raise


def _protect(ddf: dd.DataFrame, policy: Policy, keys: BoundaryKeys, context: Context,
             workers: WorkerKeys, audit: Any, progress: bool | None) -> DaskProtected:
    from pets.boundary._protect import _build, _hook, _where, check_key_jurisdictions
    from pets.engines._dask import _meta_series, encrypt_columns
    from pets.engines._progress import compute

    if context.jurisdiction != policy.home:
        raise JurisdictionError(f"protect runs in the policy's home {policy.home}, not for "
                                f"{context.access_token}")
    if workers.context.jurisdiction != policy.home:
        raise JurisdictionError(f"workers run as {workers.context.access_token}, outside the "
                                f"policy's home {policy.home}")
    check_key_jurisdictions(policy, keys)
    policy.check_frame(ddf._meta, values=False)
    hook = _hook(audit)
    entries = _entries(ddf, policy, keys, context)
    shippers = [keyed_shipper(workers)]
    steps: dict[str, Step] = {}
    encrypt: list[Any] = []
    meta = ddf._meta.copy()
    meta_ne = ddf._meta_nonempty
    for rule in policy.columns:
        if rule.output is None or rule.treatment == "keep":
            continue
        if rule.treatment == "encrypt":
            encrypt.append(rule)
            continue
        transform = _build(rule, policy, keys, context, hook)
        by = getattr(transform, "by", None) if rule.treatment == "date-shift" else None
        if rule.treatment == "date-shift" and (not isinstance(by, str) or by not in ddf.columns):
            raise PolicyError(f"{_where(policy, rule)}: date-shift needs params.by "
                              "naming the user id column")
        fitted = _fit(transform, ddf[rule.name])
        meta[rule.name] = _meta_series(fitted, meta_ne[rule.name], ddf._meta[rule.name],
                                       meta_ne, ddf._meta)
        steps[rule.name] = Step(rule.name, _Guarded(ship(fitted, shippers),
                                                    _where(policy, rule), rule.treatment))
    out_cols = tuple(entries)
    fn = PartitionFn(tuple(steps.values()), columns=out_cols)
    data: dd.DataFrame = ddf.map_partitions(fn, meta=meta[list(out_cols)])  # type: ignore[no-untyped-call]

    # -- in one pass over the whole dataset: k-anonymity (only the quasi-identifier columns are
    # computed) and, for each generalized column, how many values it left unchanged
    qis = tuple(policy.quasi_identifiers)
    checked = tuple(r for r in policy.columns if r.output == "generalized" and r.name in steps
                    and r.treatment not in ("suppress", "age-band"))
    counter = _CountUnchanged(tuple((r.name, r.treatment, steps[r.name].transform)
                                    for r in checked))
    graphs: list[Any] = []
    if qis:
        qfn = PartitionFn(tuple(steps[c] for c in qis if c in steps), columns=qis)
        qdata = ddf[list(qis)].map_partitions(qfn, meta=meta[list(qis)])  # type: ignore[no-untyped-call]
        graphs.append(qdata.groupby(list(qis), dropna=False, observed=True).size())
    else:
        graphs.append(ddf.map_partitions(len).sum())  # type: ignore[no-untyped-call]
    if checked:
        cmeta = pd.DataFrame({c: pd.Series(dtype="int64") for c in counter.columns()})
        graphs.append(ddf[[r.name for r in checked]].map_partitions(  # type: ignore[no-untyped-call]
            counter, meta=cmeta).sum())
    results = compute(*graphs, progress=progress if qis else False)
    if checked:
        counts = results[-1]
        for i, rule in enumerate(checked):
            policy.refuse_unchanged(rule, int(counts[f"p{i}"]), int(counts[f"u{i}"]))
    if qis:
        sizes = results[0]
        rows_in = int(sizes.sum())
    else:
        rows_in, sizes = int(results[0]), None
    info, small = _k_anonymity(policy, list(qis), rows_in, sizes)
    if small:
        data = data.map_partitions(_Suppress(qis, small), meta=data._meta)  # type: ignore[no-untyped-call]

    for rule in encrypt:
        assert rule.key is not None
        data, header = encrypt_columns(
            data, {rule.name: rule.mode or "randomized"}, keys=workers,
            key_uris=policy.keys[rule.key], enc_context={"dataset": policy.dataset},
            services=keys.services, wrap_context=context)
        first = header.to_dict()["columns"][0]["wrapped_keys"][0]
        entries[rule.name].update(header=header.to_dict(), key_uri=first["key_uri"],
                                  key_version=first["version"],
                                  key_jurisdiction=first["jurisdiction"])
    dropped = tuple(r.name for r in policy.columns if r.output is None)
    return DaskProtected(data, tuple(entries[c] for c in out_cols), info, rows_in, policy, keys,
                         context, audit, dropped)


def _entries(ddf: dd.DataFrame, policy: Policy, keys: BoundaryKeys,
             context: Context) -> dict[str, dict[str, Any]]:
    """The manifest's column entries, made by the pandas boundary itself on a few real rows.

    ``pets.boundary.protect`` runs on the first rows (k-anonymity relaxed: it is checked over
    the whole dataset separately), so the descriptions (links, parameters, key URIs and
    versions) are exactly the pandas path's. Digests and encryption headers are replaced later.
    """
    import dataclasses as dc

    from pets.boundary._protect import _protect as pd_protect

    with warnings.catch_warnings():  # a first partition shorter than 16 rows is fine here
        warnings.filterwarnings("ignore", message="Insufficient elements for `head`")
        sample = ddf.head(16, compute=True)  # first partition only
    relaxed = dc.replace(policy, min_k=1, enforce_k=False)
    # values unchanged on 16 rows say nothing of the column: the whole column is checked
    manifest = pd_protect(sample, relaxed, keys, context, None, check_values=False).manifest
    return {c.name: {k: v for k, v in c.to_dict().items() if k not in ("digest", "header")}
            for c in manifest.columns}


def _k_anonymity(policy: Policy, qis: list[str], n: int, sizes: pd.Series | None
                 ) -> tuple[dict[str, Any], tuple[tuple[Any, ...], ...]]:
    """The pandas boundary's k-anonymity outcome, from global class sizes.

    Mirrors :func:`pets.boundary._protect._check_k` (``anonymity_report`` + suppression-only
    ``enforce_k`` with the policy's ``max_suppression``); returns the manifest's
    ``k_anonymity`` entry and the classes to suppress.
    """
    info: dict[str, Any] = {"quasi_identifiers": qis, "min_k": policy.min_k, "k": n,
                            "suppressed_rows": 0}
    if not qis or n == 0 or sizes is None:
        return info, ()

    def report(s: pd.Series) -> dict[str, Any]:
        k = int(s.min()) if len(s) else 0
        return {"k": k, "classes": len(s), "risk_max": 1.0 / k if k else 0.0}

    info.update(report(sizes))
    if info["k"] >= policy.min_k:
        return info, ()
    if not policy.enforce_k:
        raise PolicyError(
            f"{policy.source}: k-anonymity of ({', '.join(qis)}) is {info['k']} < min_k "
            f"{policy.min_k}; generalize the quasi-identifiers more, or set enforce_k: true")
    small = sizes[sizes < policy.min_k]
    suppressed = int(small.sum())
    if suppressed > math.floor(policy.max_suppression * n + 1e-9):
        raise PolicyError(
            f"k={policy.min_k} cannot be met on {qis} even at the most general levels with at "
            f"most {policy.max_suppression:.2%} of rows suppressed: add coarser levels or allow "
            "more suppression")
    info.update(report(sizes[sizes >= policy.min_k]), suppressed_rows=suppressed,
                method="suppress")
    return info, tuple(t if isinstance(t, tuple) else (t,) for t in small.index)


def verify_dataset(path: str | os.PathLike[str], public_key: Any, *,
                   encryption: ParquetEncryption | None = None) -> Manifest:
    """Check a dataset written by :meth:`DaskProtected.write` against the signer's public key.

    Every part's manifest signature and value digests are checked, and the signed dataset
    manifest must chain exactly those parts in that order (a missing, extra, reordered or
    altered part fails). One part is in memory at a time. Datasets the export gate wrote
    verify too (see :func:`pets.boundary._dataset.verify_dataset`, which this calls with a
    reader for Parquet modular encryption).

    Raises:
        IntegrityError: Any signature, digest or listing check fails (opaque on purpose).
        InputError: ``path`` is not a protected dataset.
    """
    from pets.boundary._dataset import verify_dataset as verify

    if encryption is None:
        return verify(path, public_key)

    def read(file: Path, columns: Sequence[str] | None) -> pa.Table:
        table: pa.Table = encryption._crypto().read_table(str(file), context=encryption.context,
                                                          columns=columns)
        return table

    return verify(path, public_key, reader=read)

"""Protected datasets on disk: the partitioned format and its verification, part by part.

A *protected dataset* is the directory :meth:`pets.engines.dask.DaskProtected.write` (``pets
protect --engine dask``) writes:

* ``part.00000.parquet`` …: each a complete protected file — the part's rows, with the part's
  own signed :class:`~pets.boundary.Manifest` in the Parquet schema metadata (``pets.manifest``);
* ``_manifest.json``: ``{"format": "pets.dataset/1", "manifest": <signed dataset manifest>,
  "parts": [{"file": …, "rows": …}, …], "encrypted": <Parquet modular encryption?>}``. Each
  column digest of the dataset manifest *chains* that column's digests in the part manifests,
  in order (:func:`chain_digest`), and its data digest chains those: one signature covers every
  part, its order and its row count.

The export gate (:func:`pets.boundary.export`) writes the same layout for a destination. Each
exported part holds only the exported columns but keeps its original signed part manifest, plus
an export record (``pets.export``: destination, columns, who, when); ``_manifest.json`` keeps
the original signed dataset manifest and adds the same record under ``"export"``. The chain is
computed from the part *manifests* (their signed column digests), not from the data, so leaving
columns out does not break it: the receiver checks every signature, the chain of every column
(also of the columns it did not get) and the values of every column it got.

:func:`verify_dataset` reads one part at a time: footers first (signatures, listing, chain:
no column data), then each part's values against its verified manifest. Memory is bounded by
the largest part.

Examples:
    >>> a = chain_digest("x", [(2, "ab"), (3, "cd")])
    >>> a == chain_digest("x", [(3, "cd"), (2, "ab")]), len(a)
    (False, 64)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa

from pets._errors import InputError, IntegrityError, PetsError
from pets.boundary._manifest import EXPORT_KEY, MANIFEST_KEY, Manifest, data_digest
from pets.boundary._signing import PublicKeyLike

__all__ = [
    "DATASET_FORMAT",
    "DATASET_MANIFEST",
    "DatasetIndex",
    "Reader",
    "VerifiedPart",
    "chain_digest",
    "files_digest",
    "is_dataset",
    "iter_parts",
    "part_name",
    "read_index",
    "verify_dataset",
    "verify_structure",
]

DATASET_MANIFEST = "_manifest.json"
DATASET_FORMAT = "pets.dataset/1"

Reader = Callable[[Path, Sequence[str] | None], pa.Table]
"""Reads one part file (``None``: every column; ``[]``: only the schema and its metadata)."""

_MISMATCH = "dataset does not match its manifest"


def chain_digest(column: str, parts: Sequence[tuple[int, str]]) -> str:
    """A dataset column's digest: SHA-256 over its name and each part's (rows, digest), in order.

    Examples:
        >>> chain_digest("x", [(2, "ab")]) == chain_digest("y", [(2, "ab")])
        False
    """
    h = hashlib.sha256(b"pets.dataset-column/1\x00" + column.encode() + b"\x00")
    for rows, digest in parts:
        h.update(rows.to_bytes(8, "little") + digest.encode() + b"\x00")
    return h.hexdigest()


def files_digest(files: Mapping[str, str]) -> str:
    """SHA-256 of ``sha256sum``'s output for ``{file name: SHA-256 hex}``, sorted by name.

    The digest the export gate records for a dataset directory: it covers every file that left.
    An auditor recomputes it in the directory with ``LC_ALL=C sha256sum * | sha256sum``.

    Examples:
        >>> import hashlib
        >>> files_digest({"b": "22", "a": "11"}) == hashlib.sha256(
        ...     b"11  a\\n22  b\\n").hexdigest()
        True
    """
    text = "".join(f"{files[name]}  {name}\n" for name in sorted(files, key=str.encode))
    return hashlib.sha256(text.encode()).hexdigest()


def is_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory with a dataset manifest (``_manifest.json``)."""
    return (Path(path) / DATASET_MANIFEST).is_file()


@dataclass(frozen=True)
class DatasetIndex:
    """``_manifest.json`` parsed (nothing verified yet: see :func:`verify_structure`).

    Attributes:
        root: The dataset directory.
        manifest: The dataset manifest (signature not checked).
        parts: ``(file name, rows)`` of every part, in order.
        encrypted: The parts use Parquet modular encryption.
        export: The export record of a dataset the gate wrote, else ``None``.
    """

    root: Path
    manifest: Manifest
    parts: tuple[tuple[str, int], ...]
    encrypted: bool = False
    export: Mapping[str, Any] | None = None

    def to_json(self) -> str:
        """The ``_manifest.json`` text for this index."""
        doc: dict[str, Any] = {"format": DATASET_FORMAT, "manifest": self.manifest.to_dict(),
                               "parts": [{"file": f, "rows": r} for f, r in self.parts],
                               "encrypted": self.encrypted}
        if self.export is not None:
            doc["export"] = dict(self.export)
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @property
    def columns(self) -> list[str] | None:
        """The columns an exported dataset holds (``None``: every column of the manifest)."""
        return None if self.export is None else [str(c) for c in self.export["columns"]]


def read_index(path: str | os.PathLike[str]) -> DatasetIndex:
    """Parse a dataset's ``_manifest.json``.

    Raises:
        InputError: ``path`` has no ``_manifest.json`` (not a protected dataset).
        IntegrityError: The file is malformed.
    """
    root = Path(path)
    file = root / DATASET_MANIFEST
    if not file.is_file():
        raise InputError(f"{root}: not a pets protected dataset (no {DATASET_MANIFEST})")
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise InputError(f"{file}: cannot read ({exc.strerror or type(exc).__name__})"
                         ) from None
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != DATASET_FORMAT:
            raise ValueError
        manifest = Manifest.from_json(json.dumps(doc["manifest"]))
        parts = tuple((p["file"], p["rows"]) for p in doc["parts"])
        export = doc.get("export")
        encrypted = doc.get("encrypted", False)
        if not parts or not isinstance(encrypted, bool) or any(
                not isinstance(f, str) or Path(f).name != f or not f.endswith(".parquet")
                or not isinstance(r, int) or isinstance(r, bool) for f, r in parts):
            raise ValueError
        if export is not None:
            cols = export.get("columns") if isinstance(export, dict) else None
            names = [c.name for c in manifest.columns]
            if not isinstance(cols, list) or not cols or cols != [n for n in names if n in cols]:
                raise ValueError
    except (ValueError, TypeError, KeyError, AttributeError, IntegrityError):
        raise IntegrityError("malformed dataset manifest") from None
    return DatasetIndex(root, manifest, parts, encrypted, export)


@dataclass(frozen=True)
class VerifiedPart:
    """A part whose manifest verified and fits the dataset manifest (values not yet checked)."""

    name: str
    manifest: Manifest
    raw: bytes  # the manifest as stored in the file, to detect a file swapped in afterwards


def part_name(i: int) -> str:
    """The name of a dataset's ``i``-th part file (the only names a listing may hold).

    Examples:
        >>> part_name(3)
        'part.00003.parquet'
    """
    return f"part.{i:05d}.parquet"


def _open_regular(file: Path) -> BinaryIO:
    """Open ``file`` for reading only if it is a regular file and not a symlink.

    A FIFO or device would block or never end; a symlink points outside the dataset. Opened
    without following links and non-blocking, then checked on the open descriptor (no race
    with a swap of the path).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(file, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IntegrityError(_MISMATCH)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _plain_reader(file: Path, columns: Sequence[str] | None) -> pa.Table:
    import pyarrow.parquet as pq

    with _open_regular(file) as fh:
        if columns is not None and not list(columns):
            return pq.read_schema(fh).empty_table()
        return pq.read_table(fh, columns=None if columns is None else list(columns))


def _check_directory(index: DatasetIndex) -> None:
    """The directory holds ``_manifest.json`` and the listed parts, as regular files, only.

    Parts must be named ``part.00000.parquet``, ``part.00001.parquet``, … in listing order.
    Anything else — a hidden or differently spelled file, a sub-directory, a symlink — is
    refused: a reader of the directory (``pandas.read_parquet(dir)``) would pick it up.
    """
    listed = [name for name, _ in index.parts]
    if listed != [part_name(i) for i in range(len(listed))]:
        raise IntegrityError(_MISMATCH)
    try:
        with os.scandir(index.root) as it:
            entries = {e.name: e.is_file(follow_symlinks=False) for e in it}
    except OSError as exc:
        raise InputError(f"{index.root}: cannot read ({exc.strerror or type(exc).__name__})"
                         ) from None
    if set(entries) != {DATASET_MANIFEST, *listed} or not all(entries.values()):
        raise IntegrityError(_MISMATCH)


def _read(reader: Reader | None, file: Path, columns: Sequence[str] | None) -> pa.Table:
    """Read a part; any failure to parse it is an integrity failure (opaque)."""
    try:
        return (reader or _plain_reader)(file, columns)
    except PetsError:
        raise
    except (OSError, pa.ArrowException, ValueError):
        raise IntegrityError(_MISMATCH) from None


def _same_dataset(part: Manifest, dataset: Manifest) -> bool:
    same = ("dataset", "policy_digest", "home", "created_by", "created_at", "k_anonymity",
            "signer")
    return all(getattr(part, a) == getattr(dataset, a) for a in same) and [
        dataclasses.replace(c, digest="") for c in part.columns] == [
        dataclasses.replace(c, digest="") for c in dataset.columns]


def verify_structure(index: DatasetIndex,
                     public_key: PublicKeyLike | Sequence[PublicKeyLike], *,
                     reader: Reader | None = None) -> tuple[VerifiedPart, ...]:
    """Check everything but the values, from the part footers alone (no column data is read).

    The dataset manifest's signature; that the directory holds exactly ``_manifest.json`` and
    the listed parts (regular files named ``part.00000.parquet``, … in order; nothing else, no
    symlink, no sub-directory); each
    part manifest's signature, its facts (dataset, policy, home, creator, time, columns) equal
    to the dataset manifest's and its rows to the listing; and that the part manifests' column
    digests chain, in the listed order, to the dataset manifest's digests.

    Raises:
        IntegrityError: Any check fails (opaque on purpose).
    """
    dataset = index.manifest.verify(public_key)
    if index.export is not None:
        from pets.boundary._manifest import verify_export_record

        verify_export_record(index.export, public_key, dataset, index.columns or [],
                             dataset=True)
    _check_directory(index)
    parts: list[VerifiedPart] = []
    for name, rows in index.parts:
        meta = _read(reader, index.root / name, []).schema.metadata or {}
        raw = meta.get(MANIFEST_KEY)
        if raw is None:
            raise IntegrityError(_MISMATCH)
        m = Manifest.from_json(raw).verify(public_key)
        if m.rows != rows or not _same_dataset(m, dataset):
            raise IntegrityError(_MISMATCH)
        parts.append(VerifiedPart(name, m, raw))
    total = sum(p.manifest.rows for p in parts)
    chained = [(c.name, chain_digest(c.name, [(p.manifest.rows, p.manifest.column(c.name).digest)
                                              for p in parts]))
               for c in dataset.columns]
    if total != dataset.rows or any(d != dataset.column(n).digest for n, d in chained) or \
            data_digest(total, chained) != dataset.data_digest:
        raise IntegrityError(_MISMATCH)
    return tuple(parts)


def iter_parts(index: DatasetIndex, parts: Sequence[VerifiedPart], *,
               reader: Reader | None = None) -> Iterator[tuple[VerifiedPart, pd.DataFrame]]:
    """Each part's values, read and checked against its verified manifest, one at a time.

    A protected dataset's part must hold exactly its manifest's values (every column, the data
    digest); an exported dataset's part exactly the exported columns, each matching its digest,
    with the dataset's export record.

    Raises:
        IntegrityError: A part differs from its manifest, or was replaced since
            :func:`verify_structure` read it.
    """
    columns = index.columns
    for part in parts:
        table = _read(reader, index.root / part.name, None)
        meta = table.schema.metadata or {}
        if meta.get(MANIFEST_KEY) != part.raw:
            raise IntegrityError(_MISMATCH)
        if columns is not None:
            try:
                record = json.loads(meta.get(EXPORT_KEY, b"null"))
            except ValueError:
                raise IntegrityError(_MISMATCH) from None
            if record != index.export or table.column_names != columns:
                raise IntegrityError(_MISMATCH)
        try:
            frame = table.to_pandas()
        except (pa.ArrowException, ValueError, KeyError, TypeError):  # e.g. broken pandas metadata
            raise IntegrityError(_MISMATCH) from None
        del table, meta
        part.manifest.verify_data(frame, subset=columns is not None)
        yield part, frame
        del frame  # hold no part while the next one is read


def verify_dataset(path: str | os.PathLike[str],
                   public_key: PublicKeyLike | Sequence[PublicKeyLike], *,
                   reader: Reader | None = None) -> Manifest:
    """Check a protected dataset, or one the export gate wrote, with the signer's public key.

    Every signature and digest (see :func:`verify_structure` and :func:`iter_parts`): a
    missing, extra, reordered, swapped or altered part fails. For an exported dataset the
    values of the exported columns are checked, and the chain of every column from the signed
    part manifests. One part in memory at a time.

    Args:
        path: The dataset directory.
        public_key: The home's Ed25519 public key (or PEM / PEM file, or a list of them).
        reader: How to read a part (default plain Parquet; the Dask engine passes one that
            decrypts Parquet modular encryption).

    Returns:
        The signed dataset manifest (for an exported dataset: the home's original one; the
        export record is :func:`read_index`'s ``export``).

    Raises:
        IntegrityError: Any signature, digest or listing check fails (opaque on purpose).
        InputError: ``path`` is not a protected dataset.
    """
    index = read_index(path)
    parts = verify_structure(index, public_key, reader=reader)
    for checked in iter_parts(index, parts, reader=reader):
        del checked  # one part in memory at a time
    return index.manifest

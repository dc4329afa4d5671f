"""Parquet datasets in and out of Dask, with atomic completion and optional modular encryption.

:func:`write_dataset` writes one file per partition (``part.00000.parquet`` …) into a hidden
temporary directory beside the destination and renames it onto the destination only when every
partition has been written: readers never see half a dataset, and a failed run leaves nothing.
Each file may carry Parquet modular encryption (:class:`ParquetEncryption`): the object is
picklable and secret-free; each worker writes through :class:`pets.envelope.ParquetCrypto` over
key services it opens itself, so every file gets its own data keys wrapped by the KEKs.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pets._errors import InputError
from pets._io import atomic_directory
from pets.engines._keyref import KeyRef, KeySource, on_invalidate, services_for
from pets.jurisdiction import Context

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd

__all__ = ["ParquetEncryption", "read_dataset", "write_dataset", "write_table"]


@dataclass(frozen=True)
class ParquetEncryption:
    """Parquet modular encryption for every file of a dataset (picklable, secret-free).

    Each worker opens the key services from ``source`` once and keeps one
    :class:`pets.envelope.ParquetCrypto` per process (pyarrow's key cache, partitioned by
    ``context.access_token``); every file gets fresh data keys wrapped under the KEKs named here.
    :func:`~pets.engines._keyref.forget_keys` (``client.run(forget_keys)``) drops that object,
    its cached keys and its key services (e.g. a transit login) on the worker.

    Attributes:
        source: How workers open the key services (a ``KeyConfig`` on real clusters).
        context: Who writes/reads, and where (the key service checks the jurisdiction).
        footer_key: KEK URI for the footer.
        column_keys: ``(kek_uri, (column, ...))`` pairs; unlisted columns stay in clear.
        plaintext_footer: Keep the footer readable by legacy readers.
    """

    source: KeySource
    context: Context
    footer_key: str
    column_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()
    plaintext_footer: bool = False

    @classmethod
    def of(cls, source: KeySource, context: Context, *, footer_key: str,
           column_keys: Mapping[str, Sequence[str]], plaintext_footer: bool = False,
           ) -> ParquetEncryption:
        """Build from ``{kek_uri: [columns]}`` as :meth:`pets.envelope.ParquetCrypto.write`."""
        return cls(source, context, footer_key,
                   tuple((u, tuple(c)) for u, c in column_keys.items()), plaintext_footer)

    @classmethod
    def reader(cls, source: KeySource, context: Context) -> ParquetEncryption:
        """For reading only: pyarrow finds each file's footer and column KEK URIs in the file.

        Examples:
            >>> from pets.engines._keyref import InProcessKeys
            >>> from pets.keys import KeyServices, MemoryKeyring
            >>> enc = ParquetEncryption.reader(InProcessKeys(KeyServices([MemoryKeyring()])),
            ...                                Context("EU"))
            >>> enc.footer_key, enc.column_keys
            ('', ())
        """
        return cls(source, context, footer_key="")

    def _crypto(self) -> Any:
        with _LOCK:
            hit = _CRYPTO.get(self.source)
        if hit is None:
            from pets.envelope import ParquetCrypto

            hit = ParquetCrypto(services_for(self.source))
            with _LOCK:
                hit = _CRYPTO.setdefault(self.source, hit)
        return hit

    def write(self, table: pa.Table, path: str, **write_options: Any) -> None:
        """Write one encrypted file (on the worker)."""
        self._crypto().write(table, path, context=self.context, footer_key=self.footer_key,
                             column_keys={u: list(c) for u, c in self.column_keys},
                             plaintext_footer=self.plaintext_footer, **write_options)

    def schema(self, path: str | os.PathLike[str]) -> pa.Schema:
        """The Arrow schema of one encrypted file: decrypts its footer, reads no column data.

        Raises:
            JurisdictionError: ``context`` may not unwrap the footer key.
            KeyDestroyedError: The footer KEK version was destroyed or retired.
            IntegrityError: The footer failed to authenticate.
        """
        table: pa.Table = self._crypto().read_table(os.fspath(path), context=self.context,
                                                    columns=[])
        return table.schema

    def read(self, path: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Read one encrypted file (on the worker)."""
        frame: pd.DataFrame = self._crypto().read(path, context=self.context, columns=columns)
        return frame


_LOCK = threading.Lock()
_CRYPTO: dict[object, Any] = {}


def _forget_crypto(refs: frozenset[KeyRef] | None) -> None:
    """:func:`~pets.engines._keyref.forget_keys` in this process: drop every
    :class:`~pets.envelope.ParquetCrypto` (pyarrow's cached data keys) and the key services
    it holds (a transit login), so the next file opens them again from this process's
    environment. A KEK destroyed or retired here reaches each one through its own
    subscription instead (``refs`` is then not ``None``).
    """
    if refs is not None:
        return
    with _LOCK:
        gone = list(_CRYPTO.values())
        _CRYPTO.clear()
    for crypto in gone:
        crypto.forget()


on_invalidate(_forget_crypto)


def read_dataset(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    columns: Sequence[str] | None = None,
    split_row_groups: bool | str | int = "infer",
    encryption: ParquetEncryption | None = None,
    **kwargs: Any,
) -> dd.DataFrame:
    """Read a Parquet file, directory of files, or list of files into a Dask DataFrame.

    Args:
        path: A file, a dataset directory, a glob, or a list of files.
        columns: Columns to read (default all).
        split_row_groups: Passed to ``dask.dataframe.read_parquet``: ``"infer"`` makes a
            partition per row group when files are large.
        encryption: For files written with Parquet modular encryption: how workers reach the
            key service that unwraps their keys.
        kwargs: Further ``dask.dataframe.read_parquet`` arguments.

    Raises:
        InputError: Nothing exists at ``path``.
    """
    ddm: Any = importlib.import_module("dask.dataframe")
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    for p in paths:
        if not any(ch in str(p) for ch in "*?[") and not Path(p).exists():
            raise InputError(f"no Parquet input at {os.fspath(p)}")
    if encryption is not None:
        return _read_encrypted([os.fspath(p) for p in paths], columns, encryption)
    out: dd.DataFrame = ddm.read_parquet(
        [os.fspath(p) for p in paths] if len(paths) > 1 else os.fspath(paths[0]),
        columns=list(columns) if columns is not None else None,
        split_row_groups=split_row_groups, **kwargs,
    )
    return out


def _files(paths: Sequence[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        q = Path(p)
        if q.is_dir():
            out += sorted(str(f) for f in q.rglob("*.parquet") if not f.name.startswith("."))
        else:
            out.append(str(q))
    if not out:
        raise InputError(f"no Parquet files under {', '.join(paths)}")
    return out


def _read_part(file: str, *, cols: list[str] | None, encryption: ParquetEncryption
               ) -> pd.DataFrame:
    return encryption.read(file, cols)


def _read_meta(file: str, cols: list[str] | None, encryption: ParquetEncryption
               ) -> pd.DataFrame:
    return _read_part(file, cols=cols, encryption=encryption).iloc[:0]


def _client_active() -> bool:
    """Whether a ``distributed`` client is active in this process."""
    try:
        from distributed import default_client
    except ImportError:
        return False
    try:
        default_client()  # type: ignore[no-untyped-call]
    except ValueError:
        return False
    return True


def _read_encrypted(paths: list[str], columns: Sequence[str] | None,
                    encryption: ParquetEncryption) -> dd.DataFrame:
    ddm: Any = importlib.import_module("dask.dataframe")
    files = _files(paths)
    cols = list(columns) if columns is not None else None
    # The footer (schema) is encrypted: find the schema where the data will be read (a worker
    # when a distributed client is active), not on the driver.
    dask: Any = importlib.import_module("dask")
    # Only an *active* client decides: a setting left pointing at a client that is gone
    # (dask's config after a closed client) would wait for it for ever.
    where: dict[str, Any] = {} if _client_active() else {"scheduler": "sync"}
    meta = dask.delayed(_read_meta)(files[0], cols, encryption).compute(**where)
    # each part's pandas types come from its Arrow schema already: Dask's object -> string
    # conversion would decode binary columns (ciphertext bytes) as UTF-8 and fail
    with dask.config.set({"dataframe.convert-string": False}):
        out: dd.DataFrame = ddm.from_map(_read_part, files, meta=meta, enforce_metadata=False,
                                         cols=cols, encryption=encryption)
    return out


def write_table(table: pa.Table, file: str, *, row_group_size: int | None, compression: str,
                encryption: ParquetEncryption | None) -> int:
    """Write one part file (with Parquet modular encryption when given); its row count."""
    if encryption is not None:
        encryption.write(table, file, row_group_size=row_group_size, compression=compression)
    else:
        pq.write_table(table, file, row_group_size=row_group_size, compression=compression)
    n: int = table.num_rows
    return n


def _write_part(frame: pd.DataFrame, file: str, schema: pa.Schema | None,
                row_group_size: int | None, compression: str,
                encryption: ParquetEncryption | None) -> int:
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return write_table(table, file, row_group_size=row_group_size, compression=compression,
                       encryption=encryption)


def write_dataset(
    ddf: dd.DataFrame,
    dest: str | os.PathLike[str],
    *,
    row_group_size: int | None = 128_000,
    compression: str = "zstd",
    encryption: ParquetEncryption | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> int:
    """Write ``ddf`` as a Parquet dataset directory at ``dest``, atomically.

    Args:
        ddf: The frame; one file per partition, its index is not written.
        dest: Destination directory (must not exist unless ``overwrite``).
        row_group_size: Rows per row group inside each file.
        compression: Parquet codec.
        encryption: Parquet modular encryption for every file (see :class:`ParquetEncryption`).
        overwrite: Replace an existing ``dest`` (only after the new dataset is complete).
        progress: Show progress (default: when interactive).

    Returns:
        The number of rows written.

    Raises:
        InputError: ``dest`` exists and ``overwrite`` is false.

    Examples:
        >>> import tempfile, pathlib, pandas as pd, dask.dataframe as dd
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> ddf = dd.from_pandas(pd.DataFrame({"x": range(10)}), npartitions=3)
        >>> write_dataset(ddf, d, progress=False)
        10
        >>> sorted(p.name for p in d.iterdir())
        ['part.00000.parquet', 'part.00001.parquet', 'part.00002.parquet']
        >>> read_dataset(d).compute()["x"].sum()
        np.int64(45)
    """
    from pets.engines._progress import compute

    dask: Any = importlib.import_module("dask")
    with atomic_directory(dest, overwrite=overwrite) as tmp:
        # object columns (e.g. ciphertext bytes) have no type in the empty meta: let each
        # partition infer them; every other column gets the meta's exact type
        meta = ddf._meta
        schema = (None if any(meta[c].dtype == object for c in meta.columns)
                  else pa.Schema.from_pandas(meta, preserve_index=False))
        parts = ddf.to_delayed()  # type: ignore[no-untyped-call]
        write = dask.delayed(_write_part, pure=False)
        tasks = [write(part, str(tmp / f"part.{i:05d}.parquet"), schema, row_group_size,
                       compression, encryption) for i, part in enumerate(parts)]
        counts = compute(*tasks, progress=progress)
    return sum(int(c) for c in counts)

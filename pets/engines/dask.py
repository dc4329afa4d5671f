"""The Dask engine's public API: pets protections on ``dask.dataframe`` frames.

Every function takes and returns a ``dask.dataframe.DataFrame`` lazily (``map_partitions``
with an explicit ``meta``) and gives results identical to the pandas path on the same rows.
Keys reach workers only as key references (:class:`~pets.engines.WorkerKeys`); DP noise is
added once, on the driver (:class:`DaskSession`). Guide: ``docs/scale-out.md``.

Examples:
    >>> import dask.dataframe as dd, pandas as pd
    >>> from pets.pseudo import Bucket
    >>> from pets.engines import dask as pets_dask
    >>> ddf = dd.from_pandas(pd.DataFrame({"age": [23, 37, 41, 58]}), npartitions=2)
    >>> out = pets_dask.pseudonymize(ddf, {"age": Bucket(width=20)})
    >>> out.compute()["age"].tolist()
    ['[20, 40)', '[20, 40)', '[40, 60)', '[40, 60)']
"""

from __future__ import annotations

from pets.engines._dask import decrypt_columns, encrypt_columns
from pets.engines._dask import transform_columns as pseudonymize
from pets.engines._dp import DaskQuery, DaskSession
from pets.engines._parquet import ParquetEncryption
from pets.engines._parquet import read_dataset as read_parquet
from pets.engines._parquet import write_dataset as write_parquet
from pets.engines._progress import compute
from pets.engines._protect import DaskProtected, QuantileBucket, protect, verify_dataset
from pets.engines._run import connect, local_client, run_protect_dask

__all__ = [
    "DaskProtected",
    "DaskQuery",
    "DaskSession",
    "ParquetEncryption",
    "QuantileBucket",
    "compute",
    "connect",
    "decrypt_columns",
    "encrypt_columns",
    "local_client",
    "protect",
    "pseudonymize",
    "read_parquet",
    "run_protect_dask",
    "verify_dataset",
    "write_parquet",
]

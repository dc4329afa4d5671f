"""One call for pipelines and the CLI: protect a Parquet dataset on a local Dask cluster.

``pets protect --engine dask --workers N`` is meant to map onto :func:`run_protect_dask`; it can also be
called from Python with an existing ``distributed.Client`` (a real cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pets._errors import InputError
from pets._io import atomic_path
from pets.jurisdiction import Context

if TYPE_CHECKING:
    from pets.boundary import BoundaryKeys, Policy
    from pets.engines._keyref import KeySource

__all__ = ["local_client", "run_protect_dask"]


@contextlib.contextmanager
def local_client(workers: int, *, threads_per_worker: int = 1,
                 memory_limit: str | int = "auto", env: Mapping[str, str] | None = None,
                 dashboard: bool = False) -> Iterator[Any]:
    """A ``distributed.LocalCluster`` of ``workers`` processes and a client, closed on exit.

    Processes (not threads): HMAC and AES on short values hold the GIL. Workers inherit this
    process's environment (so ``PETS_MASTER_KEY`` reaches them without entering a task);
    ``env`` adds variables.

    Raises:
        MissingDependencyError: ``distributed`` is not installed.
    """
    from pets._errors import require

    dist: Any = require("distributed", "dask")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # port/memory notices of cluster start-up
        cluster = dist.LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                                    processes=True, memory_limit=memory_limit,
                                    dashboard_address=":0" if dashboard else None,
                                    env=dict(env or {}), silence_logs=40)
        client = dist.Client(cluster)
    try:
        yield client
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.close()
            cluster.close()


def _worker_kek(policy: Policy) -> str:
    for name in ("pseudonyms", "signing", "columns"):
        if name in policy.keys:
            return str(policy.keys[name])
    if not policy.keys:
        raise InputError(f"{policy.source}: the policy names no key to reference worker keys")
    return str(next(iter(policy.keys.values())))


def run_protect_dask(
    in_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    policy: Policy,
    out_dir: str | os.PathLike[str],
    *,
    workers: int,
    keys: BoundaryKeys,
    key_source: KeySource,
    context: Context,
    audit: Any = None,
    client: Any = None,
    threads_per_worker: int = 1,
    memory_limit: str | int = "auto",
    parquet_encryption: Mapping[str, Sequence[str]] | None = None,
    footer_key: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Protect a Parquet dataset with Dask and write the protected dataset (atomically).

    Output in ``out_dir``: ``<dataset>/`` (one Parquet file per partition, each with its signed
    manifest, plus the signed ``_manifest.json``), ``manifest.json`` (the dataset manifest) and
    ``signing-key.pub.pem``.

    Args:
        in_path: A Parquet file, directory or list of files.
        policy: The dataset's policy.
        out_dir: Output directory.
        workers: Worker processes of the local cluster (ignored with ``client``).
        keys: The home jurisdiction's boundary keys (opened on the driver).
        key_source: How workers open the key services (the CLI's ``KeyConfig``; the master
            key/passphrase/PIN come from the workers' environment).
        context: Who protects, and where (the policy's home).
        audit: The audit log (``boundary.protect`` / ``boundary.refused``).
        client: An existing ``distributed.Client`` (default: a new local cluster).
        threads_per_worker: Threads per worker process.
        memory_limit: Per-worker memory limit of the local cluster (e.g. ``"2GiB"``).
        parquet_encryption: ``{kek_uri: [columns]}`` to encrypt part files with Parquet
            modular encryption (needs ``footer_key``).
        footer_key: KEK URI of the footer key for modular encryption.
        overwrite: Replace an existing dataset.
        progress: Show progress (default: when interactive).

    Returns:
        A JSON-able summary (output paths, rows, treatments, k-anonymity, signer, parts).

    Example (CLI side)::

        summary = run_protect_dask(infile, policy, out, workers=4, keys=keys,
                                   key_source=key_config, context=ctx, audit=log)
    """
    from pets.engines._keyref import WorkerKeys
    from pets.engines._parquet import ParquetEncryption, read_dataset
    from pets.engines._protect import protect

    if parquet_encryption and not footer_key:
        raise InputError("Parquet modular encryption needs a footer key URI")
    out = Path(out_dir)
    wk = WorkerKeys(key_source, _worker_kek(policy), context, services=keys.services)
    enc = (ParquetEncryption.of(key_source, context, footer_key=str(footer_key),
                                column_keys=parquet_encryption)
           if parquet_encryption else None)
    own = client is None
    with (local_client(workers, threads_per_worker=threads_per_worker,
                       memory_limit=memory_limit) if own else contextlib.nullcontext(client)
          ) as cl:
        ddf = read_dataset(in_path)
        lazy = protect(ddf, policy, keys, context, workers=wk, audit=audit, progress=progress)
        dest = out / policy.dataset
        manifest = lazy.write(dest, encryption=enc, overwrite=overwrite, progress=progress)
        n_workers = len(cl.scheduler_info().get("workers", {}))
        from pets.engines._keyref import forget_keys

        with contextlib.suppress(OSError, TimeoutError):
            cl.run(forget_keys)  # drop unwrapped keys from worker memory
    with atomic_path(out / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    with atomic_path(out / "signing-key.pub.pem") as tmp:
        tmp.write_bytes(keys.signer.public_pem())
    parts = sorted(p.name for p in dest.glob("part.*.parquet"))
    return {"out": str(dest), "dataset": manifest.dataset, "rows_in": lazy.rows_in,
            "rows": manifest.rows, "columns": manifest.treatments(),
            "k_anonymity": dict(manifest.k_anonymity), "signer": manifest.signer,
            "policy_digest": manifest.policy_digest, "parts": len(parts), "engine": "dask",
            "workers": n_workers,
            "parquet_encryption": enc is not None}


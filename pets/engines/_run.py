"""One call for pipelines and the CLI: protect a Parquet dataset on a Dask cluster.

``pets protect --engine dask --workers N`` maps onto :func:`run_protect_dask` on a local cluster
of ``N`` worker processes; ``--scheduler tcp://host:8786`` (or ``PETS_DASK_SCHEDULER``) onto
``run_protect_dask(..., scheduler=...)``, which connects to an existing cluster. From Python an
existing ``distributed.Client`` works too (``client=``).

Workers of an existing cluster open the key services themselves: the keyring directory (or
PKCS#11 library) must be at the same path on every worker, and ``PETS_MASTER_KEY`` (or the
passphrase / PIN) must be in *the workers' own environment* — it never travels in the task
graph. Input and output paths must be visible to every worker (a shared filesystem).
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

__all__ = ["connect", "local_client", "run_protect_dask"]


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
        _forget_closed_client()


@contextlib.contextmanager
def connect(address: str, *, timeout: float = 10.0) -> Iterator[Any]:
    """A ``distributed.Client`` of the running cluster at ``address``, closed on exit.

    Only the client is closed: the cluster belongs to whoever started it.

    Raises:
        InputError: Nothing answers at ``address`` within ``timeout`` seconds, or it is not a
            scheduler address.
        MissingDependencyError: ``distributed`` is not installed.

    Examples:
        >>> with connect("tcp://127.0.0.1:1", timeout=0.5):  # doctest: +ELLIPSIS
        ...     pass
        Traceback (most recent call last):
        ...
        pets._errors.InputError: cannot reach the Dask scheduler at tcp://127.0.0.1:1 within ...
    """
    from pets._errors import require

    dist: Any = require("distributed", "dask")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = dist.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s "
                         f"({type(exc).__name__})") from None
    try:
        yield client
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.close()
        _forget_closed_client()


def _forget_closed_client() -> None:
    """After our client closed: if dask's config still names the distributed scheduler but no
    client is active (a client restores the setting it found, which may itself have been left
    by a closed one), reset it, so a later plain ``compute()`` in this process (a notebook, a
    second command) runs locally instead of waiting for a client that is gone."""
    import dask

    if dask.config.get("scheduler", None) != "dask.distributed":
        return
    from distributed import default_client

    try:
        client = default_client()  # type: ignore[no-untyped-call]
        if getattr(client, "status", None) != "running":
            raise ValueError  # a client whose cluster is gone
    except ValueError:
        dask.config.set(scheduler=None)


def _absolute(source: KeySource) -> KeySource:
    """A key configuration whose keyring path means the same on a worker in another cwd."""
    import dataclasses

    ring = getattr(source, "keyring", None)
    if dataclasses.is_dataclass(source) and isinstance(ring, Path) and not ring.is_absolute():
        fixed: KeySource = dataclasses.replace(
            source, keyring=ring.absolute())  # type: ignore[type-var]
        return fixed
    return source


def _worker_kek(policy: Policy) -> str:
    for name in ("pseudonyms", "signing", "columns"):
        if name in policy.keys:
            return str(policy.keys[name])
    if not policy.keys:
        raise InputError(f"{policy.source}: the policy names no key to reference worker keys")
    return str(next(iter(policy.keys.values())))


def _on_cluster(audit: Any, where: str) -> Any:
    """The audit log (or hook) with ``cluster=<where>`` added to every event of the job.

    ``where`` is the scheduler's address (``--scheduler`` / ``PETS_DASK_SCHEDULER`` or a
    given client) or ``"local"``: the workers saw the raw rows, so an auditor must see which
    cluster they belonged to.
    """
    from pets._events import AuditEvent
    from pets.boundary import AuditLog

    if audit is None:
        return None
    sink = audit.hook if isinstance(audit, AuditLog) else audit

    def hook(event: AuditEvent) -> None:
        sink(AuditEvent(event.kind, {**event.fields, "cluster": where}, event.at))

    return hook


def run_protect_dask(
    in_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    policy: Policy,
    out_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    keys: BoundaryKeys,
    key_source: KeySource,
    context: Context,
    audit: Any = None,
    client: Any = None,
    scheduler: str | None = None,
    connect_timeout: float = 10.0,
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
        workers: Worker processes of a new local cluster (default: the CPU count); ignored
            with ``client``, refused with ``scheduler``.
        keys: The home jurisdiction's boundary keys (opened on the driver).
        key_source: How workers open the key services (the CLI's ``KeyConfig``; the master
            key/passphrase/PIN come from the workers' environment).
        context: Who protects, and where (the policy's home).
        audit: The audit log (``boundary.protect`` / ``boundary.refused``); each entry of the
            job names the cluster it ran on (``cluster``: the scheduler's address, or
            ``"local"``).
        client: An existing ``distributed.Client`` (default: a new local cluster).
        scheduler: The address of an existing cluster's scheduler (``tcp://host:8786``): the
            job connects with ``distributed.Client(scheduler)`` and closes only its client.
            Its workers need the key configuration in their own environment (see the module
            docstring); paths are made absolute for them.
        connect_timeout: Seconds to wait for ``scheduler`` before giving up.
        threads_per_worker: Threads per worker process.
        memory_limit: Per-worker memory limit of the local cluster (e.g. ``"2GiB"``).
        parquet_encryption: ``{kek_uri: [columns]}`` to encrypt part files with Parquet
            modular encryption (needs ``footer_key``).
        footer_key: KEK URI of the footer key for modular encryption.
        overwrite: Replace an existing dataset.
        progress: Show progress (default: when interactive).

    Returns:
        A JSON-able summary (output paths, rows, treatments, k-anonymity, signer, parts,
        workers, and the scheduler's address).

    Raises:
        InputError: ``scheduler`` cannot be reached within ``connect_timeout`` (or is not an
            address), or comes with ``client`` or ``workers``.

    Example (CLI side)::

        summary = run_protect_dask(infile, policy, out, workers=4, keys=keys,
                                   key_source=key_config, context=ctx, audit=log)
    """
    from pets.engines._keyref import WorkerKeys
    from pets.engines._parquet import ParquetEncryption, read_dataset
    from pets.engines._protect import protect

    if parquet_encryption and not footer_key:
        raise InputError("Parquet modular encryption needs a footer key URI")
    if scheduler is not None and (client is not None or workers is not None):
        raise InputError("scheduler= connects to an existing cluster: give neither client= "
                         "nor workers= with it")
    if scheduler is not None:  # remote workers resolve paths in their own working directory
        in_path = (Path(in_path).absolute() if isinstance(in_path, str | os.PathLike)
                   else [Path(p).absolute() for p in in_path])
        out_dir = Path(out_dir).absolute()
        key_source = _absolute(key_source)
    out = Path(out_dir)
    wk = WorkerKeys(key_source, _worker_kek(policy), context, services=keys.services)
    enc = (ParquetEncryption.of(key_source, context, footer_key=str(footer_key),
                                column_keys=parquet_encryption)
           if parquet_encryption else None)
    if client is not None:
        cluster: Any = contextlib.nullcontext(client)
    elif scheduler is not None:
        cluster = connect(scheduler, timeout=connect_timeout)
    else:
        cluster = local_client(workers or os.cpu_count() or 1,
                               threads_per_worker=threads_per_worker, memory_limit=memory_limit)
    with cluster as cl:
        address = str(cl.scheduler.address) if getattr(cl, "scheduler", None) else None
        where = address if scheduler is not None or client is not None else "local"
        ddf = read_dataset(in_path)
        lazy = protect(ddf, policy, keys, context, workers=wk,
                       audit=_on_cluster(audit, where or "unknown"), progress=progress)
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
            "workers": n_workers, "scheduler": address,
            "parquet_encryption": enc is not None}


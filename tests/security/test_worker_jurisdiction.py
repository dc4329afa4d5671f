"""Attack: a worker outside the key's jurisdiction unwraps because the driver said "EU".

A :class:`~pets.engines.KeyRef` carries the driver's context. A worker process — a real,
separate process whose *own* environment says ``PETS_JURISDICTION=US`` — must unwrap in its own
context, not in the one the reference claims: it is refused (``JurisdictionError``) and nothing
is unwrapped or cached there. The same worker with an EU environment succeeds; a reference whose
claimed context does not match the worker's own is refused too.

Two kinds of real processes: a ``multiprocessing`` spawn child and a ``distributed`` worker
whose Nanny environment says US.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import pickle
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pets import Context, JurisdictionError
from pets.engines import KeyRef, forget_keys
from pets.keys import KeyConfig, KeyServices, LocalKeyring, Secret

KEK = "local://eu/engine"


@dataclass(frozen=True)
class CountingConfig:
    """A ``KeyConfig`` key source whose key services count the unwraps made in this process."""

    config: KeyConfig
    unwraps: ClassVar[int] = 0

    def services(self, *, environ: Any = None) -> KeyServices:
        return _Counting(self.config.services(environ=environ))  # type: ignore[return-value]


class _Counting:
    def __init__(self, inner: KeyServices) -> None:
        self._inner = inner

    def unwrap(self, *args: Any, **kwargs: Any) -> bytes:
        CountingConfig.unwraps += 1
        return self._inner.unwrap(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _attempt(blob: bytes) -> tuple[str, str, int, int]:
    """In the worker: resolve the pickled reference; report outcome, unwrap calls, cache size.

    Returns ``(type name, message or digest of the secret, unwrap calls, cached secrets)``.
    """
    from pets.engines import _keyref

    ref = pickle.loads(blob)
    CountingConfig.unwraps = 0
    try:
        secret = ref.resolve()
    except Exception as exc:
        return type(exc).__name__, str(exc), CountingConfig.unwraps, len(_keyref._SECRETS)
    digest = hashlib.sha256(secret.expose()).hexdigest()
    return "ok", digest, CountingConfig.unwraps, len(_keyref._SECRETS)


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("ring") / "eu"
    master = secrets.token_bytes(32)
    keyring = LocalKeyring.init(path, name="eu", master_key=Secret(master))
    keyring.create(KEK, jurisdiction="EU")
    source = CountingConfig(KeyConfig(keyring=Path(path), keyring_explicit=True))
    return {"master": master, "source": source,
            "services": KeyServices([keyring])}


@pytest.fixture
def root() -> Secret:
    return Secret.generate()


@pytest.fixture
def eu_ref(ring: dict[str, Any], root: Secret) -> KeyRef:
    ref = KeyRef.wrap(root, KEK, source=ring["source"], context=Context("EU", principal="etl"),
                      services=ring["services"])
    forget_keys()
    return ref


def _in_spawned_child(blob: bytes, env: dict[str, str],
                      monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, int, int]:
    """Run :func:`_attempt` in a fresh ``spawn`` process whose environment is ``env``."""
    for name in ("PETS_JURISDICTION", "PETS_PRINCIPAL", "PETS_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # a spawn child starts with this process's environment
    with concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_attempt, blob).result(timeout=120)


class TestSpawnedWorker:
    def test_a_us_worker_is_refused_a_reference_claiming_eu(self, ring, eu_ref, monkeypatch):
        env = {"PETS_JURISDICTION": "US", "PETS_PRINCIPAL": "svc@us",
               "PETS_MASTER_KEY": ring["master"].hex()}
        kind, message, unwraps, cached = _in_spawned_child(pickle.dumps(eu_ref), env,
                                                           monkeypatch)
        assert kind == "JurisdictionError"
        assert f"key reference to {KEK} was made for EU" in message
        assert "own environment says US" in message
        assert (unwraps, cached) == (0, 0)  # the key service was never asked; nothing cached

    def test_a_us_worker_with_a_forged_us_claim_is_refused_by_the_key_service(
            self, ring, eu_ref, monkeypatch):
        forged = replace(eu_ref, context=Context("US", principal="etl"))
        env = {"PETS_JURISDICTION": "US", "PETS_MASTER_KEY": ring["master"].hex()}
        kind, message, _, cached = _in_spawned_child(pickle.dumps(forged), env, monkeypatch)
        assert kind == "JurisdictionError"
        assert f"key {KEK} belongs to EU; unwrap refused" in message
        assert cached == 0

    def test_an_eu_worker_unwraps(self, ring, eu_ref, root, monkeypatch):
        env = {"PETS_JURISDICTION": "EU", "PETS_MASTER_KEY": ring["master"].hex()}
        kind, digest, unwraps, cached = _in_spawned_child(pickle.dumps(eu_ref), env,
                                                          monkeypatch)
        assert (kind, unwraps, cached) == ("ok", 1, 1)
        assert digest == hashlib.sha256(root.expose()).hexdigest()

    def test_a_claim_that_does_not_match_the_eu_worker_is_refused(self, ring, eu_ref,
                                                                  monkeypatch):
        claims_sg = replace(eu_ref, context=Context("SG", principal="etl"))
        env = {"PETS_JURISDICTION": "EU", "PETS_MASTER_KEY": ring["master"].hex()}
        kind, message, unwraps, cached = _in_spawned_child(pickle.dumps(claims_sg), env,
                                                           monkeypatch)
        assert kind == "JurisdictionError"
        assert f"{KEK} was made for SG" in message and "own environment says EU" in message
        assert (unwraps, cached) == (0, 0)


@pytest.fixture(scope="module")
def us_cluster(ring: dict[str, Any]) -> Iterator[Any]:
    """One Dask worker process whose own (Nanny) environment says US — with the EU master key,
    as if the EU secret had leaked to it: the jurisdiction check alone must stop it."""
    from tests.conftest import require_service
    from tests.engines.conftest import DASK, HAVE_DASK

    require_service(HAVE_DASK, DASK)
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit="1GiB", silence_logs=40,
                               env={"PETS_JURISDICTION": "US", "PETS_PRINCIPAL": "worker@us",
                                    "PETS_MASTER_KEY": ring["master"].hex()})
        client = Client(cluster)
    try:
        yield client
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.close()
            cluster.close()


class TestDaskWorker:
    def test_a_us_dask_worker_is_refused_a_reference_claiming_eu(self, us_cluster, eu_ref):
        kind, message, unwraps, cached = us_cluster.submit(
            _attempt, pickle.dumps(eu_ref), pure=False).result(timeout=120)
        assert kind == "JurisdictionError"
        assert f"key reference to {KEK} was made for EU (driver principal etl)" in message
        assert "own environment says US (PETS_JURISDICTION; principal worker@us)" in message
        assert (unwraps, cached) == (0, 0)

    def test_the_reference_itself_raises_jurisdiction_error_on_the_worker(self, us_cluster,
                                                                          eu_ref):
        # the reference shipped as a task argument, as the engines do (Rebuild(..., KeyRef))
        with pytest.raises(JurisdictionError, match=f"{KEK} was made for EU"):
            us_cluster.submit(KeyRef.resolve, eu_ref, pure=False).result(timeout=120)

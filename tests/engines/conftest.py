"""Fixtures for the engine tests: one keyring, one 2-worker LocalCluster per module.

Workers get the keyring's master key through *their own* environment (the Nanny's ``env``), as
a real deployment would (a secret store / k8s secret), never through a task.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, require_service

HAVE_DASK = all(importlib.util.find_spec(m) is not None
                for m in ("dask", "dask.dataframe", "distributed"))
DASK = "dask[dataframe] and distributed (pip install 'pets[dask]')"


def require_dask() -> None:
    """Call at the top of a test module that imports dask: fails under CI, skips locally."""
    if HAVE_DASK:
        return
    if IN_CI:
        require_service(False, DASK)
    pytest.skip(f"not available: {DASK}", allow_module_level=True)
KEK = "local://eu/engine"
PSEUDONYMS = "local://eu/pseudonyms"
COLUMNS = "local://eu/columns"
SIGNING = "local://eu/boundary"

POLICY = f"""
dataset: users
home: EU
keys: {{pseudonyms: "{PSEUDONYMS}", columns: "{COLUMNS}", signing: "{SIGNING}"}}
min_k: 40
enforce_k: true
max_suppression: 0.1
columns:
  user_id: {{role: identifier, treatment: keyed-hash}}
  email: {{role: identifier, treatment: token}}
  phone: {{role: identifier, treatment: encrypt}}
  birth_date: {{role: drop}}
  postcode: {{role: identifier, treatment: encrypt, mode: deterministic}}
  country: {{role: quasi-identifier, treatment: keep}}
  ip: {{role: drop}}
  signup_ts: {{role: metric, treatment: truncate-date, params: {{unit: month}}}}
"""

EVENTS_POLICY = f"""
dataset: events
home: EU
keys: {{pseudonyms: "{PSEUDONYMS}", columns: "{COLUMNS}", signing: "{SIGNING}"}}
min_k: 5
enforce_k: true
max_suppression: 0.2
columns:
  user_id: {{role: identifier, treatment: keyed-hash}}
  country: {{role: quasi-identifier, treatment: keep}}
  ts: {{role: sensitive, treatment: date-shift, params: {{by: user_id, max_days: 20}}}}
  event: {{role: metric, treatment: keep}}
  watch_seconds: {{role: metric, treatment: bucket, params: {{quantiles: 4}}}}
"""


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A LocalKeyring with one EU KEK; the master key is only in the returned env mapping."""
    from pets.keys import KeyConfig, LocalKeyring, Secret

    path = tmp_path_factory.mktemp("ring") / "eu"
    master = secrets.token_bytes(32)
    ring = LocalKeyring.init(path, name="eu", master_key=Secret(master))
    for uri in (KEK, PSEUDONYMS, COLUMNS, SIGNING):
        ring.create(uri, jurisdiction="EU")
    env = {"PETS_MASTER_KEY": master.hex()}
    return {"path": Path(path), "env": env, "config": KeyConfig(keyring=Path(path),
                                                                keyring_explicit=True),
            "ring": ring, "master": master}


@pytest.fixture(scope="module")
def dask_client(keyring: dict[str, Any]) -> Iterator[Any]:
    """A ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``."""
    require_service(HAVE_DASK, DASK)
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        # Cluster start-up on a shared box may warn about ports/memory; those are not ours.
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit="1GiB",
                               env=dict(keyring["env"]), silence_logs=40)
        client = Client(cluster)
    try:
        yield client
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.close()
            cluster.close()


@pytest.fixture
def master_key_env(keyring: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Put the master key in this (driver) process's environment for the test's duration."""
    for k, v in keyring["env"].items():
        monkeypatch.setenv(k, v)
    return dict(os.environ)

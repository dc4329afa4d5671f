"""run_protect_dask on an existing cluster by its scheduler address, and when none answers."""

from __future__ import annotations

from tests.engines.conftest import require_dask

require_dask()

import dataclasses  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pets import Context, InputError  # noqa: E402
from pets.boundary import BoundaryKeys, Policy, SigningKey  # noqa: E402
from pets.datasets import synthetic_users  # noqa: E402
from pets.engines._run import _absolute, connect, run_protect_dask  # noqa: E402
from pets.keys import KeyConfig, KeyServices  # noqa: E402
from tests.engines.conftest import POLICY  # noqa: E402

EU = Context("EU", principal="etl@eu")


def _free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def job(keyring, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths below; the workers run elsewhere
    synthetic_users(2_500, seed=21).to_parquet(tmp_path / "users.parquet", index=False)
    keys = BoundaryKeys(KeyServices([keyring["ring"]]), SigningKey.generate())
    return {"keys": keys, "policy": Policy.from_yaml(POLICY), "source": keyring["config"]}


class TestScheduler:
    def test_runs_on_the_cluster_at_the_address_with_relative_paths(self, dask_client, job,
                                                                   tmp_path):
        from pets.engines.dask import verify_dataset

        address = dask_client.scheduler.address
        assert address.startswith("tcp://")
        summary = run_protect_dask("users.parquet", job["policy"], "out", scheduler=address,
                                   keys=job["keys"], key_source=job["source"], context=EU,
                                   progress=False)
        assert summary["scheduler"] == address and summary["workers"] == 2
        assert summary["out"] == str(tmp_path / "out" / "users")
        manifest = verify_dataset(tmp_path / "out" / "users", job["keys"].public_key)
        assert manifest.rows == summary["rows"] > 0
        # only our client was closed: the cluster still serves its own client
        assert dask_client.submit(sum, [1, 2]).result() == 3

    def test_unreachable_scheduler_is_an_input_error_and_writes_nothing(self, job, tmp_path):
        address = f"tcp://127.0.0.1:{_free_port()}"
        start = time.monotonic()
        with pytest.raises(InputError, match=f"cannot reach the Dask scheduler at {address} "
                                             "within 1 s"):
            run_protect_dask("users.parquet", job["policy"], "out", scheduler=address,
                             connect_timeout=1.0, keys=job["keys"], key_source=job["source"],
                             context=EU, progress=False)
        assert time.monotonic() - start < 15
        assert not (tmp_path / "out").exists()

    def test_not_an_address(self):
        with pytest.raises(InputError, match="cannot reach the Dask scheduler at nowhere"):
            with connect("nowhere://x", timeout=1):
                pass

    @pytest.mark.parametrize("other", [{"workers": 2}, {"client": object()}])
    def test_scheduler_excludes_workers_and_client(self, job, other):
        with pytest.raises(InputError, match="give neither client= nor workers="):
            run_protect_dask("users.parquet", job["policy"], "out", scheduler="tcp://x:1",
                             keys=job["keys"], key_source=job["source"], context=EU, **other)


class TestAbsoluteKeySource:
    def test_relative_keyring_becomes_absolute(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        got = _absolute(KeyConfig(keyring=Path(".pets/keyring")))
        assert isinstance(got, KeyConfig)
        assert got.keyring == tmp_path / ".pets" / "keyring"
        assert dataclasses.replace(got, keyring=Path(".pets/keyring")) == KeyConfig(
            keyring=Path(".pets/keyring"))

    def test_other_sources_are_unchanged(self):
        from pets.engines import InProcessKeys

        source = InProcessKeys(KeyServices([]))
        assert _absolute(source) is source
        absolute = KeyConfig(keyring=Path("/srv/keyring"))
        assert _absolute(absolute) is absolute


class TestWhereTheJobRan:
    """An auditor sees which cluster protected the data (the scheduler may come from an
    environment variable, PETS_DASK_SCHEDULER)."""

    def test_the_protect_entry_names_the_scheduler(self, dask_client, job, tmp_path):
        from pets.boundary import AuditLog

        log = AuditLog(tmp_path / "audit.jsonl", signer=job["keys"].signer, actor=EU)
        address = dask_client.scheduler.address
        run_protect_dask("users.parquet", job["policy"], "out", scheduler=address,
                         keys=job["keys"], key_source=job["source"], context=EU, audit=log,
                         progress=False)
        entries = [e for e in log.entries() if e["kind"] == "boundary.protect"]
        assert len(entries) == 1
        assert entries[0]["fields"]["cluster"] == address
        assert entries[0]["actor"] == EU.access_token

    def test_a_refusal_on_a_cluster_names_it_too(self, dask_client, job, tmp_path):
        from pets import JurisdictionError
        from pets.boundary import AuditLog

        log = AuditLog(tmp_path / "audit.jsonl", signer=job["keys"].signer, actor=EU)
        us = Context("US", principal="analyst")
        with pytest.raises(JurisdictionError):
            run_protect_dask("users.parquet", job["policy"], "out",
                             scheduler=dask_client.scheduler.address, keys=job["keys"],
                             key_source=job["source"], context=us, audit=log, progress=False)
        [entry] = log.entries()
        assert entry["kind"] == "boundary.refused"
        assert entry["fields"]["cluster"] == dask_client.scheduler.address


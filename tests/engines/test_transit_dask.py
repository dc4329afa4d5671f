"""Dask workers and Parquet modular encryption on real OpenBao transit servers
(tests/openbao.py): each worker process logs in to the key server with the AppRole
credentials of *its own* environment; no key, token or secret-id travels in a task.

* ``pets protect --engine dask --parquet-encrypt vault://…`` then ``pets release --engine dask``
  on a 1-worker local cluster (the workers inherit the CLI process's environment);
* :class:`pets.envelope.ParquetCrypto` over a :class:`~pets.keys.TransitKeyService`: round trip,
  and a process holding US credentials refused;
* a worker whose environment lacks the credentials fails with a ``KeyServiceError`` naming the
  missing variable (no hang);
* keyed columns (keyed-hash, token) under a ``vault://`` pseudonyms KEK: the dask engine writes
  the pandas engine's pseudonyms.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pets.cli import main
from tests.conftest import require_service
from tests.engines.conftest import DASK, HAVE_DASK
from tests.security._cli_env import ENV, UNSET, policy_text

# Deterministic columns of the example policy: equal on both engines for the same keys.
SAME = ["user_id", "email", "birth_date", "country", "signup_ts"]


@pytest.fixture
def transit(tmp_path, monkeypatch, openbao):
    """As tests/cli/test_transit_cli.py: a key-servers file for eu-ireland (EU AppRole,
    credentials in env vars that worker processes inherit), a local keyring, the boundary
    signed under a transit KEK, and a policy whose pseudonyms and columns KEKs are transit
    keys. Returns the transit KEK URIs."""
    require_service(HAVE_DASK, DASK)
    monkeypatch.chdir(tmp_path)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    for var in (*UNSET, "PETS_KEY_SERVERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EU_IRELAND_ROLE_ID", openbao["eu-ireland"].role_ids["pets-eu"])
    monkeypatch.setenv("EU_IRELAND_SECRET_ID", openbao.secret_id("eu-ireland", "pets-eu"))
    servers = {"eu-ireland": {"url": openbao["eu-ireland"].url, "jurisdiction": "EU",
                              "auth": {"method": "approle", "role_id_env": "EU_IRELAND_ROLE_ID",
                                       "secret_id_env": "EU_IRELAND_SECRET_ID"}}}
    Path("servers.yaml").write_text(yaml.safe_dump(servers))
    tag = uuid.uuid4().hex[:8]
    uris = {"signing": f"vault://eu-ireland/boundary-{tag}",
            "columns": f"vault://eu-ireland/cols-{tag}",
            "pseudonyms": f"vault://eu-ireland/pseudo-{tag}"}
    assert main(["keys", "init", "--name", "eu"]) == 0
    assert main(["boundary", "init", "--signing-kek", uris["signing"], "--key-servers",
                 "servers.yaml", "--log", "logs/audit.jsonl", "--ledger", "ledger.sqlite"]) == 0
    monkeypatch.setenv("PETS_KEY_SERVERS", str(tmp_path / "servers.yaml"))
    for name in ("columns", "pseudonyms"):
        assert main(["keys", "create", uris[name], "--jurisdiction", "EU"]) == 0
    Path("policy.yaml").write_text(
        policy_text().replace("local://eu/boundary", uris["signing"])
        .replace("local://eu/columns", uris["columns"])
        .replace("local://eu/pseudonyms", uris["pseudonyms"]))
    assert main(["datasets", "generate", "--users", "2000", "--out", "users.parquet"]) == 0
    return uris


def _paths(server: Any, what: str) -> list[str]:
    """Request paths of the server's audit log for transit ``what`` (encrypt / decrypt)."""
    return [e["request"]["path"] for e in server.audit_entries()
            if e.get("type") == "request"
            and e.get("request", {}).get("path", "").startswith(f"transit/{what}/")]


def _parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("part.*.parquet"), key=lambda p: int(p.name.split(".")[1]))


class TestProtectAndReleaseOnTransit:
    def test_modular_encryption_under_a_transit_kek_and_release_through_it(
            self, transit, openbao, capsys):
        from pets.boundary._dataset import read_index

        cols = transit["columns"]
        name = cols.rsplit("/", 1)[1]
        capsys.readouterr()
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "enc",
                     "--engine", "dask", "--workers", "1", "--parquet-encrypt",
                     f"{cols}:email", "--footer-key", cols, "--json"]) == 0, \
            capsys.readouterr().err
        text = capsys.readouterr().out
        summary = json.loads(text)
        assert summary["parquet_encryption"] is True and summary["workers"] == 1
        assert summary["encrypted_columns"] == {"email": cols} and summary["footer_key"] == cols
        assert os.environ["EU_IRELAND_SECRET_ID"] not in text
        dest = Path("enc/users")
        assert read_index(dest).encrypted
        for part in _parts(dest):
            with pytest.raises(OSError):  # encrypted footer: not even the schema
                pq.read_table(part)
        # the worker wrapped each part's keys on the server (double wrapping: per KEK)
        wrapped = _paths(openbao["eu-ireland"], "encrypt")
        assert f"transit/encrypt/{name}" in wrapped
        before = len(_paths(openbao["eu-ireland"], "decrypt"))

        # a second command is a second process, as in a pipeline (the workers of the first
        # are gone; its environment, credentials included, is the same)
        import subprocess
        import sys

        done = subprocess.run(
            [sys.executable, "-m", "pets.cli", "release", "enc/users", "--unit", "user_id",
             "--group-by", "country", "--keys", "DE,FR,IT", "--agg", "count", "--max-rows",
             "3", "--epsilon", "1", "--budget-epsilon", "2", "--ledger", "ledger.sqlite",
             "--out", "r.parquet", "--engine", "dask", "--workers", "1", "--json"],
            capture_output=True, text=True, timeout=240, env=dict(os.environ))
        assert done.returncode == 0, done.stderr
        rel = json.loads(done.stdout)["release"]
        assert rel["parquet_encryption"] is True and rel["workers"] == 1
        assert len(pq.read_table("r.parquet")) == 3
        after = _paths(openbao["eu-ireland"], "decrypt")
        assert f"transit/decrypt/{name}" in after[before:]  # read through the key server


class TestKeyedColumnsOnTransit:
    def test_dask_engine_writes_the_pandas_engines_pseudonyms(self, transit, capsys):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "pd"]) == 0
        capsys.readouterr()
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "dk",
                     "--engine", "dask", "--workers", "1", "--json"]) == 0, \
            capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["workers"] == 1
        pandas_out = pd.read_parquet("pd/users.parquet")
        dask_out = pd.concat([pq.read_table(p).to_pandas() for p in _parts(Path("dk/users"))],
                             ignore_index=True)
        assert list(dask_out.columns) == list(pandas_out.columns)
        assert len(dask_out) == len(pandas_out) > 0
        pd.testing.assert_frame_equal(
            dask_out[SAME].sort_values("user_id", ignore_index=True),
            pandas_out[SAME].sort_values("user_id", ignore_index=True))
        # a token the workers wrote reverses through the transit pseudonyms KEK
        raw = pd.read_parquet("users.parquet")
        row = dask_out.iloc[0]
        assert main(["reidentify", "pd", "--column", "email", "--value", row["email"]]) == 0
        token, email = capsys.readouterr().out.rstrip("\n").split("\t")
        assert token == row["email"] and email in set(raw["email"])


# -- the Python API ----------------------------------------------------------------------------

@pytest.fixture
def cols_key(openbao, tmp_path, monkeypatch) -> dict[str, Any]:
    """A transit KEK on eu-ireland, EU AppRole credentials in a mapping (not in os.environ)."""
    from pets.keys import KeyConfig, KeyServices, TransitKeyService

    monkeypatch.chdir(tmp_path)  # no keyring here: the KeyConfig has the server only
    for var in ("PETS_KEYRING", "PETS_MASTER_KEY", "PETS_JURISDICTION", "PETS_PRINCIPAL"):
        monkeypatch.delenv(var, raising=False)
    server, env = openbao.approle("eu-ireland", "pets-eu")
    uri = f"vault://eu-ireland/pq-{uuid.uuid4().hex[:8]}"
    service = TransitKeyService(server, environ=env)
    service.create(uri, jurisdiction="EU")
    services = KeyServices([service])
    return {"server": server, "env": env, "uri": uri, "services": services,
            "config": KeyConfig(transit_servers=(server,))}


FRAME = pd.DataFrame({"user_id": [1, 2, 3], "email": ["a@x.eu", "b@x.eu", "c@x.eu"],
                      "country": ["DE", "FR", "IT"]})


class TestParquetCryptoOnTransit:
    def test_roundtrip_and_a_us_credential_process_is_refused(self, cols_key, openbao,
                                                              tmp_path):
        from pets import Context, JurisdictionError
        from pets.envelope import ParquetCrypto
        from pets.keys import KeyServices, TransitKeyService

        uri = cols_key["uri"]
        path = tmp_path / "users.parquet"
        ParquetCrypto(cols_key["services"]).write(
            FRAME, path, context=Context("EU"), footer_key=uri, column_keys={uri: ["email"]})
        with pytest.raises(OSError):
            pq.read_table(path)
        back = ParquetCrypto(cols_key["services"]).read(path, context=Context("EU"))
        pd.testing.assert_frame_equal(back, FRAME)

        # a process holding the US AppRole's credentials (tagged US by the administrator)
        us_server, us_env = openbao.approle("eu-ireland", "pets-us")
        us = ParquetCrypto(KeyServices([TransitKeyService(us_server, environ=us_env)]))
        with pytest.raises(JurisdictionError, match=f"{uri} belongs to EU"):
            us.read(path, context=Context("US"))  # says so: refused locally
        with pytest.raises(JurisdictionError, match="eu-ireland"):
            us.read(path, context=Context("EU"))  # claims EU: its identity says US
        # untagged US secret-id claiming EU: the server's policy refuses (HTTP 403)
        raw_server, raw_env = openbao.approle("eu-ireland", "pets-us", tagged=False)
        raw = ParquetCrypto(KeyServices([TransitKeyService(raw_server, environ=raw_env)]))
        with pytest.raises(JurisdictionError, match="eu-ireland"):
            raw.read(path, context=Context("EU"))


def _cluster(env: dict[str, str]) -> Any:
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit="1GiB", env=env,
                               silence_logs=40)
        return cluster, Client(cluster)


@pytest.fixture
def cluster_factory() -> Iterator[Any]:
    require_service(HAVE_DASK, DASK)
    made: list[Any] = []

    def make(env: dict[str, str]) -> Any:
        cluster, client = _cluster(env)
        made.append((cluster, client))
        return client

    yield make
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cluster, client in made:
            client.close()
            cluster.close()


class TestWorkersOpenTransitThemselves:
    def test_workers_read_with_their_own_credentials_and_fail_without(
            self, cols_key, cluster_factory, tmp_path):
        import dask.dataframe as dd

        from pets import Context, KeyServiceError
        from pets.engines._parquet import ParquetEncryption, read_dataset, write_dataset

        uri, env = cols_key["uri"], cols_key["env"]
        assert not set(env) & set(os.environ)  # the credentials are only the workers'
        enc = ParquetEncryption.of(cols_key["config"], Context("EU"), footer_key=uri,
                                   column_keys={uri: ["email"]})
        client = cluster_factory(dict(env))
        ddf = dd.from_pandas(FRAME, npartitions=2)
        assert write_dataset(ddf, tmp_path / "ds", encryption=enc, progress=False) == 3
        back = read_dataset(tmp_path / "ds", encryption=enc).compute()
        back = back.sort_values("user_id", ignore_index=True)
        assert {c: back[c].tolist() for c in FRAME} == {c: FRAME[c].tolist() for c in FRAME}
        client.close()

        # a worker without the AppRole credentials: a KeyServiceError naming the variable
        cluster_factory({})
        started = time.monotonic()
        with pytest.raises(KeyServiceError) as info:
            read_dataset(tmp_path / "ds", encryption=enc).compute()
        assert time.monotonic() - started < 30  # refused at once, not retried or hung
        assert env[cols_key["server"].auth.secret_id_env] not in str(info.value)
        assert cols_key["server"].auth.role_id_env in str(info.value)

    def test_forget_keys_drops_the_workers_parquet_keys_and_login(
            self, cols_key, cluster_factory, tmp_path):
        import dask.dataframe as dd

        from pets import Context, KeyServiceError
        from pets.engines._keyref import forget_keys
        from pets.engines._parquet import ParquetEncryption, read_dataset, write_dataset

        uri, env = cols_key["uri"], cols_key["env"]
        enc = ParquetEncryption.of(cols_key["config"], Context("EU"), footer_key=uri,
                                   column_keys={uri: ["email"]})
        client = cluster_factory(dict(env))
        write_dataset(dd.from_pandas(FRAME, npartitions=1), tmp_path / "ds", encryption=enc,
                      progress=False)
        assert len(read_dataset(tmp_path / "ds", encryption=enc).compute()) == 3

        def drop_credentials() -> None:  # the worker's secret-id is withdrawn
            for var in env:
                os.environ.pop(var, None)

        client.run(drop_credentials)
        # warm: the worker still holds its login and the file's keys (until forget_keys)
        assert len(read_dataset(tmp_path / "ds", encryption=enc).compute()) == 3
        client.run(forget_keys)
        with pytest.raises(KeyServiceError, match=cols_key["server"].auth.role_id_env):
            read_dataset(tmp_path / "ds", encryption=enc).compute()

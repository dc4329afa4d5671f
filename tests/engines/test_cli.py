"""``pets protect --engine dask --workers N``: the CLI on a real 2-process LocalCluster."""

from __future__ import annotations

import json
import sys
from importlib.resources import files

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pets.cli import main
from tests.conftest import require_service
from tests.engines.conftest import DASK, HAVE_DASK

# Deterministic columns of the example policy: equal on both engines for the same keys.
SAME = ["user_id", "email", "birth_date", "country", "signup_ts"]


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PETS_MASTER_KEY", "22" * 32)  # workers inherit it from the environment
    monkeypatch.setenv("PETS_PRINCIPAL", "etl")
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    for var in ("PETS_KEYRING", "PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS", "PETS_PKCS11_TOKEN",
                "PETS_PKCS11_LIBRARY", "PETS_KEYRING_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["keys", "init", "--name", "eu"]) == 0
    for k in ("boundary", "pseudonyms", "columns"):
        assert main(["keys", "create", f"local://eu/{k}", "--jurisdiction", "EU"]) == 0
    assert main(["datasets", "generate", "--users", "2000", "--out", "users.parquet"]) == 0
    (tmp_path / "policy.yaml").write_text(
        (files("pets") / "examples" / "users-policy.yaml").read_text())
    capsys.readouterr()
    return tmp_path


def _dask_frame(directory):
    parts = sorted(directory.glob("part.*.parquet"), key=lambda p: int(p.name.split(".")[1]))
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


class TestProtectEngineDask:
    def test_dask_output_verifies_and_matches_the_pandas_engine(self, env, capsys):
        require_service(HAVE_DASK, DASK)
        from pets.boundary import verify_log
        from pets.engines.dask import verify_dataset

        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "pd"]) == 0
        capsys.readouterr()
        raw = pd.read_parquet(env / "users.parquet")
        (env / "raw").mkdir()
        for i, start in enumerate(range(0, len(raw), 700)):  # a directory of 3 files
            raw.iloc[start:start + 700].to_parquet(env / "raw" / f"part-{i}.parquet")
        assert main(["protect", "raw", "--policy", "policy.yaml", "--out", "dk",
                     "--engine", "dask", "--workers", "2", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["engine"] == "dask" and summary["workers"] == 2
        assert summary["parts"] == 3 and summary["rows_in"] == len(raw)
        out = env / "dk"
        assert sorted(p.name for p in out.iterdir()) == [
            "manifest.json", "policy.yaml", "signing-key.pub.pem", "users"]
        assert (out / "policy.yaml").read_text() == (env / "policy.yaml").read_text()
        manifest = verify_dataset(out / "users", out / "signing-key.pub.pem")
        assert manifest.rows == summary["rows"] > 0
        assert json.loads((out / "manifest.json").read_text()) == manifest.to_dict()

        pandas_out = pd.read_parquet(env / "pd" / "users.parquet")
        dask_out = _dask_frame(out / "users")
        assert list(dask_out.columns) == list(pandas_out.columns)
        # Same keys, same rows (k-anonymity suppresses the same ones): same pseudonyms.
        pd.testing.assert_frame_equal(
            dask_out[SAME].sort_values("user_id", ignore_index=True),
            pandas_out[SAME].sort_values("user_id", ignore_index=True))
        report = verify_log(env / ".pets" / "audit.jsonl", out / "signing-key.pub.pem")
        assert report.ok

    def test_policy_refusal_exits_3_and_writes_nothing(self, env, capsys):
        require_service(HAVE_DASK, DASK)
        pd.read_parquet(env / "users.parquet").assign(extra=1).to_parquet(env / "u2.parquet")
        assert main(["protect", "u2.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "dask", "--workers", "1"]) == 3
        assert "column 'extra'" in capsys.readouterr().err
        assert not (env / "x").exists()

    def test_workers_without_dask_engine_is_a_usage_error(self, env, capsys):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--workers", "2"]) == 2
        assert "--workers needs --engine dask" in capsys.readouterr().err
        assert not (env / "x").exists()

    def test_missing_dask_extra_names_the_pip_line(self, env, capsys, monkeypatch):
        monkeypatch.setitem(sys.modules, "distributed", None)  # import fails like a missing one
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "dask"]) == 1
        assert "pip install 'pets[dask]'" in capsys.readouterr().err
        assert not (env / "x").exists()

    def test_unknown_engine_is_a_usage_error(self, env, capsys):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "spark"]) == 2
        assert not (env / "x").exists()

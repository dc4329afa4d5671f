"""``pets protect --engine dask --workers N``: the CLI on a real 2-process LocalCluster."""

from __future__ import annotations

import json
import sys
from importlib.resources import files

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary"]) == 0
    for k in ("pseudonyms", "columns"):
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


@pytest.fixture
def cluster_env(tmp_path, monkeypatch, capsys, keyring):
    """The CLI's environment for a job on the shared cluster: its workers hold this keyring's
    master key in their own environment (conftest), the driver gets it here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PETS_MASTER_KEY", keyring["master"].hex())
    monkeypatch.setenv("PETS_KEYRING", str(keyring["path"]))
    monkeypatch.setenv("PETS_BOUNDARY_KEYS", str(tmp_path / "boundary"))
    monkeypatch.setenv("PETS_PRINCIPAL", "etl")
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    for var in ("PETS_AUDIT_LOG", "PETS_PKCS11_TOKEN", "PETS_PKCS11_LIBRARY",
                "PETS_KEYRING_PASSPHRASE", "PETS_DASK_SCHEDULER"):
        monkeypatch.delenv(var, raising=False)
    # the module's keyring (its workers hold the master key) serves one boundary per test
    (keyring["path"] / "boundary.pin.json").unlink(missing_ok=True)
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary"]) == 0
    assert main(["datasets", "generate", "--users", "2000", "--out", "users.parquet"]) == 0
    (tmp_path / "policy.yaml").write_text(
        (files("pets") / "examples" / "users-policy.yaml").read_text())
    capsys.readouterr()
    return tmp_path


ALLOWED = ["user_id", "email", "birth_date", "country", "signup_ts"]


class TestProtectOnSchedulerThenExport:
    def test_round_trip_protect_on_the_cluster_export_the_dataset(self, cluster_env,
                                                                  dask_client, capsys):
        from pets.boundary import verify_log
        from pets.boundary._dataset import read_index, verify_dataset

        env = cluster_env
        address = dask_client.scheduler.address
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "dk",
                     "--engine", "dask", "--scheduler", address, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["scheduler"] == address and summary["workers"] == 2
        pem = env / "dk" / "signing-key.pub.pem"

        # the protect --out directory (it holds one dataset) exports as a directory
        assert main(["export", "dk", "--to", "US", "--out", "us/users", "--columns",
                     "allowed", "--json"]) == 0
        receipt = json.loads(capsys.readouterr().out)
        assert receipt["parts"] == summary["parts"] and receipt["rows"] == summary["rows"]
        assert receipt["columns"] == ALLOWED and receipt["path"] == "us/users"
        assert verify_dataset(env / "us" / "users", pem).rows == summary["rows"]
        assert read_index(env / "us" / "users").export["destination"] == "US"
        frame = _dask_frame(env / "us" / "users")
        assert list(frame.columns) == ALLOWED and len(frame) == summary["rows"]

        # the dataset directory itself, text output
        assert main(["export", "dk/users", "--to", "US", "--out", "us/u2", "--columns",
                     ",".join(ALLOWED[:2])]) == 0
        text = capsys.readouterr().out
        assert f"in {summary['parts']} parts, columns user_id, email -> us/u2" in text
        assert "LC_ALL=C sha256sum * | sha256sum" in text

        # refusals: exit codes as for a file, nothing written, each one in the log
        assert main(["export", "dk", "--to", "US", "--out", "us/all"]) == 3
        assert "keeps these columns from US: phone (encrypted)" in capsys.readouterr().err
        part = next((env / "dk" / "users").glob("part.*.parquet"))
        part.rename(env / "moved.parquet")
        assert main(["export", "dk", "--to", "US", "--out", "us/gone", "--columns",
                     "allowed"]) == 5
        assert "dataset does not match its manifest" in capsys.readouterr().err
        assert main(["export", "dk", "--to", "US", "--out", "us/x", "--columns", "allowed",
                     "--jurisdiction", "US"]) == 4  # the EU signing key does not open abroad
        capsys.readouterr()
        assert sorted(p.name for p in (env / "us").iterdir()) == ["u2", "users"]
        kinds = [e["kind"] for e in _entries(env)]
        assert kinds.count("boundary.export") == 2 and kinds.count("boundary.refused") == 2
        assert verify_log(env / ".pets" / "audit.jsonl", pem).ok

    def test_a_directory_of_raw_parts_is_refused_as_unprotected(self, cluster_env, capsys):
        env = cluster_env
        raw = pd.read_parquet(env / "users.parquet")
        (env / "raw").mkdir()
        raw.iloc[:1000].to_parquet(env / "raw" / "part.00000.parquet")
        raw.iloc[1000:].to_parquet(env / "raw" / "part.00001.parquet")
        assert main(["export", "raw", "--policy", "policy.yaml", "--to", "US", "--out",
                     "us/users"]) == 5
        assert "no pets dataset manifest" in capsys.readouterr().err
        assert not (env / "us").exists()


def _entries(env):
    from pets.boundary import read_entries

    return read_entries(env / ".pets" / "audit.jsonl")


class TestSchedulerOption:
    def test_unreachable_scheduler_exits_1_and_writes_nothing(self, cluster_env, capsys):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{port}",
                     "--connect-timeout", "1"]) == 1
        assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 1 s" in \
            capsys.readouterr().err
        assert not (cluster_env / "x").exists()

    def test_scheduler_and_workers_exclude_each_other(self, cluster_env, capsys):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1",
                     "--workers", "2"]) == 2
        assert "--scheduler and --workers exclude each other" in capsys.readouterr().err
        assert not (cluster_env / "x").exists()

    def test_scheduler_needs_the_dask_engine(self, cluster_env, capsys):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--scheduler", "tcp://127.0.0.1:1"]) == 2
        assert "--scheduler needs --engine dask" in capsys.readouterr().err

    def test_the_summary_says_the_scheduler_came_from_the_environment(
            self, cluster_env, dask_client, capsys, monkeypatch):
        address = dask_client.scheduler.address
        monkeypatch.setenv("PETS_DASK_SCHEDULER", address)
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "envdk",
                     "--engine", "dask"]) == 0
        assert f"at {address} from PETS_DASK_SCHEDULER" in capsys.readouterr().out
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "clidk",
                     "--engine", "dask", "--scheduler", address]) == 0
        out = capsys.readouterr().out
        assert f"at {address}" in out and "PETS_DASK_SCHEDULER" not in out

    def test_environment_default_is_used_and_yields_to_the_command_line(
            self, cluster_env, capsys, monkeypatch):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setenv("PETS_DASK_SCHEDULER", f"tcp://127.0.0.1:{port}")
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "dask", "--connect-timeout", "0.5"]) == 1
        assert f"tcp://127.0.0.1:{port}" in capsys.readouterr().err
        # the pandas engine ignores it
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "pd"]) == 0
        assert (cluster_env / "pd" / "users.parquet").exists()


class TestProtectWithParquetModularEncryption:
    def test_encrypted_parts_need_the_keys_and_verify_with_them(self, cluster_env, dask_client,
                                                                keyring, capsys):
        from pets import IntegrityError
        from pets.boundary._dataset import read_index
        from pets.engines._parquet import ParquetEncryption, read_dataset
        from pets.engines.dask import verify_dataset
        from pets.jurisdiction import Context

        env = cluster_env
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "enc",
                     "--engine", "dask", "--scheduler", dask_client.scheduler.address,
                     "--parquet-encrypt", "local://eu/columns:email,phone",
                     "--parquet-encrypt", "local://eu/engine:signup_ts",
                     "--footer-key", "local://eu/engine", "--json"]) == 0
        text = capsys.readouterr().out
        summary = json.loads(text)
        assert summary["parquet_encryption"] is True
        assert summary["encrypted_columns"] == {"email": "local://eu/columns",
                                                "phone": "local://eu/columns",
                                                "signup_ts": "local://eu/engine"}
        assert summary["footer_key"] == "local://eu/engine"
        assert keyring["master"].hex() not in text  # names of keys, never key material
        dest = env / "enc" / "users"
        assert read_index(dest).encrypted
        for part in dest.glob("part.*.parquet"):
            with pytest.raises(OSError):  # encrypted footer: not even the schema
                pq.read_table(part)
        enc = ParquetEncryption.reader(keyring["config"], Context("EU", principal="etl"))
        pem = env / "enc" / "signing-key.pub.pem"
        assert verify_dataset(dest, pem, encryption=enc).rows == summary["rows"] > 0
        with pytest.raises(IntegrityError):  # without the keys it does not verify
            verify_dataset(dest, pem)
        back = read_dataset(dest, encryption=enc).compute()
        assert len(back) == summary["rows"] and back["email"].str.len().gt(0).all()

        # the gate refuses data encrypted at rest (it stays home), and writes nothing
        assert main(["export", "enc", "--to", "US", "--out", "us/users", "--columns",
                     "user_id,country"]) == 1
        assert "Parquet modular encryption" in capsys.readouterr().err
        assert not (env / "us").exists()

    def test_text_summary_names_the_encrypted_columns(self, cluster_env, dask_client, capsys):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "enc",
                     "--engine", "dask", "--scheduler", dask_client.scheduler.address,
                     "--parquet-encrypt", "local://eu/columns:email",
                     "--footer-key", "local://eu/columns"]) == 0
        assert ("Parquet modular encryption: email under local://eu/columns; footer under "
                "local://eu/columns") in capsys.readouterr().out

    @pytest.mark.parametrize(("args", "message"), [
        (["--parquet-encrypt", "local://eu/columns:email", "--footer-key",
          "local://eu/columns"], "need --engine dask"),
        (["--engine", "dask", "--parquet-encrypt", "local://eu/columns:email"],
         "--parquet-encrypt needs --footer-key"),
        (["--engine", "dask", "--footer-key", "local://eu/columns"],
         "--footer-key needs --parquet-encrypt"),
        (["--engine", "dask", "--parquet-encrypt", "email,phone", "--footer-key",
          "local://eu/columns"], "expected KEK_URI:COL[,COL...]"),
        (["--engine", "dask", "--parquet-encrypt", "local://eu/columns:", "--footer-key",
          "local://eu/columns"], "expected KEK_URI:COL[,COL...]"),
        (["--engine", "dask", "--parquet-encrypt", "local://eu/columns:email,,phone",
          "--footer-key", "local://eu/columns"], "expected KEK_URI:COL[,COL...]"),
        (["--engine", "dask", "--parquet-encrypt", "columns:email", "--footer-key",
          "local://eu/columns"], "expected KEK_URI:COL[,COL...]"),
        (["--engine", "dask", "--parquet-encrypt", "local://eu/columns:email",
          "--footer-key", "eu/columns"], "--footer-key 'eu/columns'"),
        (["--engine", "dask", "--parquet-encrypt", "local://eu/columns:email",
          "--parquet-encrypt", "local://eu/engine:email", "--footer-key",
          "local://eu/columns"], "column 'email' is listed twice"),
    ], ids=["pandas-engine", "no-footer-key", "no-columns", "no-uri", "empty-columns",
            "empty-column", "bad-uri", "bad-footer-uri", "column-twice"])
    def test_usage_errors_exit_2_and_write_nothing(self, cluster_env, capsys, args, message):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     *args]) == 2
        assert message in capsys.readouterr().err
        assert not (cluster_env / "x").exists()
        assert [e["kind"] for e in _entries(cluster_env)][-1] == "boundary.init"

    def test_a_column_the_policy_does_not_write_exits_1_before_any_work(self, cluster_env,
                                                                        capsys):
        # postcode is dropped by the policy; no cluster is needed to refuse it
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1",
                     "--parquet-encrypt", "local://eu/columns:email,postcode",
                     "--footer-key", "local://eu/columns"]) == 1
        err = capsys.readouterr().err
        assert "InputError" in err and "'postcode'" in err and "email" not in err.split(
            "does not write")[0]
        assert not (cluster_env / "x").exists()

    def test_an_unknown_kek_exits_7_before_any_work(self, cluster_env, capsys):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1",
                     "--parquet-encrypt", "local://eu/nope:email",
                     "--footer-key", "local://eu/columns"]) == 7
        assert "local://eu/nope" in capsys.readouterr().err
        assert not (cluster_env / "x").exists()


class TestParseParquetEncryption:
    @given(st.dictionaries(
        st.from_regex(r"(local|pkcs11)://[a-z]{1,4}/[a-z][a-z0-9-]{0,8}", fullmatch=True),
        st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_ ]{0,10}[A-Za-z0-9_]|[A-Za-z_]",
                               fullmatch=True), min_size=1, max_size=4, unique=True),
        min_size=1, max_size=3))
    def test_round_trip_of_the_option_values(self, mapping):
        from pets.cli._cmd_boundary import parse_parquet_encryption

        seen: set[str] = set()
        mapping = {u: [c for c in cols if c not in seen and not seen.add(c)]
                   for u, cols in mapping.items()}
        mapping = {u: cols for u, cols in mapping.items() if cols}
        items = tuple(f"{u}:{','.join(cols)}" for u, cols in mapping.items())
        footer = next(iter(mapping))
        assert parse_parquet_encryption(items, footer) == mapping

    def test_a_kek_given_twice_collects_its_columns(self):
        from pets.cli._cmd_boundary import parse_parquet_encryption

        assert parse_parquet_encryption(
            ("local://eu/a:x", "local://eu/b:y", "local://eu/a:z"), "local://eu/a") == {
                "local://eu/a": ["x", "z"], "local://eu/b": ["y"]}


class TestProtectParquetKekJurisdiction:
    def test_a_kek_of_another_jurisdiction_exits_4_before_any_work(self, cluster_env, capsys):
        # EU data encrypted at rest under a US KEK could be read in the US
        assert main(["keys", "create", "local://eu/held-in-us", "--jurisdiction", "US"]) == 0
        capsys.readouterr()
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "x",
                     "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1",
                     "--parquet-encrypt", "local://eu/columns:email",
                     "--footer-key", "local://eu/held-in-us"]) == 4
        err = capsys.readouterr().err
        assert "local://eu/held-in-us belongs to US" in err and "needs a KEK of EU" in err
        assert not (cluster_env / "x").exists()

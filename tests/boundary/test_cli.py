"""The boundary CLI: one command per ETL step, documented exit codes, --json."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pets.cli import main


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PETS_MASTER_KEY", "11" * 32)
    monkeypatch.setenv("PETS_PRINCIPAL", "etl")
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    for var in ("PETS_KEYRING", "PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS", "PETS_PKCS11_TOKEN",
                "PETS_PKCS11_LIBRARY"):
        monkeypatch.delenv(var, raising=False)
    assert main(["keys", "init", "--name", "eu"]) == 0
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary"]) == 0
    for k in ("pseudonyms", "columns"):
        assert main(["keys", "create", f"local://eu/{k}", "--jurisdiction", "EU"]) == 0
    assert main(["datasets", "generate", "--users", "3000", "--out", "users.parquet"]) == 0
    from importlib.resources import files

    (tmp_path / "policy.yaml").write_text(
        (files("pets") / "examples" / "users-policy.yaml").read_text())
    assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "prot"]) == 0
    capsys.readouterr()
    return tmp_path


SAFE = "user_id,email,birth_date,country,signup_ts"
PUB = "prot/signing-key.pub.pem"
LOG = ".pets/audit.jsonl"


def _json(capsys):
    return json.loads(capsys.readouterr().out)


class TestProtectCommand:
    def test_outputs(self, env, capsys):
        assert sorted(p.name for p in (env / "prot").iterdir()) == [
            "manifest.json", "policy.yaml", "signing-key.pub.pem", "users.parquet"]
        m = json.loads((env / "prot" / "manifest.json").read_text())
        assert m["dataset"] == "users" and m["signer"]
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "p2",
                     "--json"]) == 0
        out = _json(capsys)
        assert out["columns"]["phone"] == "encrypt:randomized" and out["k_anonymity"]["k"] >= 5

    def test_forgotten_column_exits_3_and_writes_nothing(self, env, capsys):
        pd.read_parquet(env / "users.parquet").assign(extra=1).to_parquet(env / "u2.parquet")
        assert main(["protect", "u2.parquet", "--policy", "policy.yaml", "--out", "p3"]) == 3
        assert "column 'extra'" in capsys.readouterr().err
        assert not (env / "p3").exists()

    def test_us_jurisdiction_exits_4(self, env, capsys):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "p4",
                     "--jurisdiction", "US"]) == 4
        assert not (env / "p4").exists()


class TestExportCommand:
    def test_allowed_columns(self, env, capsys):
        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet", "--columns", SAFE,
                     "--json"]) == 0
        receipt = _json(capsys)
        assert receipt["columns"] == SAFE.split(",") and receipt["destination"] == "US"
        assert (env / "us" / "u.parquet").exists()

    def test_columns_allowed(self, env, capsys):
        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet", "--columns",
                     "allowed", "--json"]) == 0
        assert _json(capsys)["columns"] == SAFE.split(",")

    @pytest.mark.parametrize("args, code", [
        (["prot", "--to", "US"], 3),                                   # encrypted column
        (["prot", "--to", "BR", "--columns", SAFE], 3),                # wrong destination
        (["users.parquet", "--to", "US", "--policy", "policy.yaml"], 5),  # raw, no manifest
    ])
    def test_refusals_exit_with_their_code_and_write_nothing(self, env, capsys, args, code):
        assert main(["export", *args, "--out", "us/x.parquet"]) == code
        assert not (env / "us").exists()
        assert main(["audit", "incidents", LOG, "--json"]) == 0
        assert _json(capsys)[-1]["kind"] == "boundary.refused"

    def test_edited_policy_copy_is_refused(self, env, capsys):
        pol = env / "prot" / "policy.yaml"
        pol.write_text(pol.read_text().replace("encrypted: []", "encrypted: [US]"))
        assert main(["export", "prot", "--to", "US", "--out", "us/x.parquet"]) == 3
        assert "protected under another policy" in capsys.readouterr().err


class TestReidentifyCommand:
    def test_token_in_eu_and_refused_from_us(self, env, capsys):
        token = pd.read_parquet(env / "prot" / "users.parquet")["email"][0]
        raw = pd.read_parquet(env / "users.parquet")
        assert main(["reidentify", "prot", "--column", "email", "--value", token,
                     "--reason", "T-1", "--json"]) == 0
        (pair,) = _json(capsys)
        assert pair["original"] in set(raw["email"])
        assert main(["reidentify", "prot", "--column", "email", "--value", token,
                     "--jurisdiction", "US"]) == 4

    def test_keyed_hash_exits_3(self, env, capsys):
        h = pd.read_parquet(env / "prot" / "users.parquet")["user_id"][0]
        assert main(["reidentify", "prot", "--column", "user_id", "--value", h]) == 3


class TestAuditCommands:
    def test_verify_ok_then_tampered(self, env, capsys):
        assert main(["audit", "verify", LOG, "--public-key", PUB]) == 0
        assert "OK:" in capsys.readouterr().out
        lines = (env / LOG).read_text().splitlines()
        i = next(n for n, line in enumerate(lines) if '"boundary.protect"' in line)
        edited = lines[i].replace('"rows_in":3000', '"rows_in":2999')
        assert edited != lines[i]
        lines[i] = edited
        (env / LOG).write_text("\n".join(lines) + "\n")
        assert main(["audit", "verify", LOG, "--public-key", PUB, "--json"]) == 5
        report = json.loads(capsys.readouterr().out)
        assert report["first_bad"]["line"] == i + 1 and not report["ok"]

    def test_expect_head(self, env, capsys):
        assert main(["audit", "verify", LOG, "--public-key", PUB, "--json"]) == 0
        report = _json(capsys)
        head = f"{report['head_seq']}:{report['head_hash'][:16]}"
        assert main(["audit", "verify", LOG, "--public-key", PUB, "--expect-head", head]) == 0
        lines = (env / LOG).read_text().splitlines()
        (env / LOG).write_text("\n".join(lines[:-1]) + "\n")
        assert main(["audit", "verify", LOG, "--public-key", PUB, "--expect-head", head]) == 5
        assert main(["audit", "verify", LOG, "--public-key", PUB, "--expect-head", "x"]) == 1

    def test_flows_and_incidents(self, env, capsys):
        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet",
                     "--columns", SAFE]) == 0
        assert main(["export", "prot", "--to", "US", "--out", "us/all.parquet"]) == 3
        capsys.readouterr()
        assert main(["audit", "flows", LOG]) == 0
        out = capsys.readouterr().out
        assert "US" in out and "user_id:keyed-hash" in out
        assert main(["audit", "flows", LOG, "--json"]) == 0
        (flow,) = _json(capsys)
        assert flow["rows"] > 0 and flow["output"] == "table"
        assert main(["audit", "incidents", LOG]) == 0
        assert "phone (encrypted)" in capsys.readouterr().out

    def test_missing_log_exits_1(self, env, capsys):
        assert main(["audit", "flows", "nope.jsonl"]) == 1


class TestPolicyCheckCommand:
    def test_good_policy_and_data(self, env, capsys):
        assert main(["policy", "check", "policy.yaml", "--data", "users.parquet",
                     "--json"]) == 0
        out = _json(capsys)
        assert out["columns"]["phone"]["output"] == "encrypted" and len(out["digest"]) == 64

    def test_bad_policy_exits_3_naming_line_and_column(self, env, capsys):
        text = (env / "policy.yaml").read_text().replace("treatment: token",
                                                         "treatment: tokenize")
        (env / "bad.yaml").write_text(text)
        assert main(["policy", "check", "bad.yaml"]) == 3
        err = capsys.readouterr().err
        assert "bad.yaml line" in err and "column 'email'" in err and "'tokenize'" in err

    def test_data_with_an_extra_column_exits_3(self, env, capsys):
        pd.read_parquet(env / "users.parquet").assign(x=1).to_parquet(env / "u3.parquet")
        assert main(["policy", "check", "policy.yaml", "--data", "u3.parquet"]) == 3


class TestPolicyExample:
    @pytest.mark.parametrize("name", ["users", "events"])
    def test_prints_the_shipped_policy_which_checks(self, name, tmp_path, capsys):
        from importlib import resources

        assert main(["policy", "example", name]) == 0
        printed = capsys.readouterr().out
        assert printed == resources.files("pets").joinpath(
            f"examples/{name}-policy.yaml").read_text()
        (tmp_path / "p.yaml").write_text(printed)
        assert main(["policy", "check", str(tmp_path / "p.yaml"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["dataset"] == name

    def test_writes_a_file_but_never_over_one(self, tmp_path, capsys):
        out = tmp_path / "users-policy.yaml"
        assert main(["policy", "example", "users", "--out", str(out)]) == 0
        assert out.read_text().startswith("# pets policy")
        out.write_text("mine")
        assert main(["policy", "example", "users", "--out", str(out)]) == 1
        assert "already exists" in capsys.readouterr().err and out.read_text() == "mine"

    def test_unknown_name_is_a_usage_error(self, capsys):
        assert main(["policy", "example", "nope"]) == 2

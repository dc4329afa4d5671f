"""``pets pseudonymize``: end to end with a real local keyring, refusals and atomic output."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pets.cli import main
from pets.datasets import synthetic_users


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PETS_MASTER_KEY", "11" * 32)
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    monkeypatch.chdir(tmp_path)
    assert main(["keys", "init", "--name", "eu", "--keyring", "ring"]) == 0
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary", "--keyring",
                 "ring"]) == 0
    assert main(["keys", "create", "local://eu/pseudo", "--jurisdiction", "EU",
                 "--keyring", "ring"]) == 0
    synthetic_users(500, seed=3).to_parquet("users.parquet")
    return tmp_path


def _run(*args: str) -> int:
    return main(["pseudonymize", *args])


class TestPseudonymizeCommand:
    def test_create_secret_then_reuse_it(self, env, capsys):
        cols = ["--column", "email=keyed-hash:crm:casefold", "--column", "phone=ff1-phone:crm",
                "--column", "birth_date=age-band:2026-01-01", "--column", "ip=ip-prefix",
                "--column", "user_id=token:crm"]
        capsys.readouterr()
        assert _run("users.parquet", "out.parquet", "--keyring", "ring", "--secret", "s.json",
                    "--create-secret", "local://eu/pseudo", *cols, "--quasi",
                    "birth_date,country", "--json") == 0
        result = json.loads(capsys.readouterr().out)
        assert result["rows"] == 500
        assert result["columns"]["email"]["key_uri"] == "local://eu/pseudo"
        assert result["anonymity"]["quasi_identifiers"] == ["birth_date", "country"]
        wrapped = json.loads((env / "s.json").read_text())
        assert wrapped["jurisdiction"] == "EU" and "blob" in wrapped
        users = pd.read_parquet("users.parquet")
        out1 = pd.read_parquet("out.parquet")
        assert not set(out1["email"]) & set(users["email"])
        assert (out1["phone"].str.len() == users["phone"].str.len()).all()
        # Same secret file: same pseudonyms.
        assert _run("users.parquet", "out2.parquet", "--keyring", "ring", "--secret", "s.json",
                    *cols) == 0
        assert pd.read_parquet("out2.parquet").equals(out1)

    def test_unwrap_is_refused_outside_the_eu_and_nothing_is_written(self, env, capsys):
        assert _run("users.parquet", "o.parquet", "--keyring", "ring", "--secret", "s.json",
                    "--create-secret", "local://eu/pseudo", "--column", "email=mask:3") == 0
        code = _run("users.parquet", "us.parquet", "--keyring", "ring", "--secret", "s.json",
                    "--jurisdiction", "US", "--column", "email=keyed-hash:crm")
        assert code == 4
        assert "JurisdictionError" in capsys.readouterr().err
        assert not (env / "us.parquet").exists()

    def test_secret_env_is_eu_only(self, env, monkeypatch, capsys):
        monkeypatch.setenv("PSEUDO_ROOT", "ab" * 32)
        assert _run("users.parquet", "e.parquet", "--secret-env", "PSEUDO_ROOT",
                    "--column", "email=keyed-hash:crm") == 0
        assert _run("users.parquet", "u.parquet", "--secret-env", "PSEUDO_ROOT",
                    "--jurisdiction", "US", "--column", "email=keyed-hash:crm") == 4
        monkeypatch.setenv("PSEUDO_ROOT", "abc")
        assert _run("users.parquet", "x.parquet", "--secret-env", "PSEUDO_ROOT",
                    "--column", "email=keyed-hash:crm") == 1
        assert "abc" not in capsys.readouterr().err

    def test_bad_input_fails_cleanly_without_partial_output(self, env, capsys):
        assert _run("users.parquet", "bad.parquet", "--column", "email=nope") == 1
        assert _run("users.parquet", "bad.parquet", "--column", "nocolumn=mask:2") == 1
        assert _run("missing.parquet", "bad.parquet", "--column", "email=mask:2") == 1
        assert _run("users.parquet", "bad.parquet", "--column", "email") == 1
        assert _run("users.parquet", "bad.parquet", "--column", "birth_date=mask:2") == 1
        assert not any(p.name.startswith("bad") or p.name.startswith(".bad")
                       for p in env.iterdir())

    def test_create_secret_never_overwrites(self, env):
        (env / "s.json").write_text("{}")
        assert _run("users.parquet", "o.parquet", "--keyring", "ring", "--secret", "s.json",
                    "--create-secret", "local://eu/pseudo", "--column", "email=mask:3") == 1
        assert (env / "s.json").read_text() == "{}"

    def test_csv_in_and_out(self, env):
        pd.read_parquet("users.parquet").to_csv("users.csv", index=False)
        assert _run("users.csv", "out.csv", "--column", "postcode=postcode-prefix:2") == 0
        out = pd.read_csv("out.csv", dtype=str)
        assert out["postcode"].str.len().max() <= 2


class TestReviewHardening:
    """Findings of the adversarial review (issue 4), each with the attack tried."""

    @pytest.mark.parametrize("extra", [
        ["--quasi", "no_such_column"],                       # fails after the transform
        ["--column", "postcode=bucket:width=5"],             # fails inside pseudonymize
    ])
    def test_a_failed_run_writes_neither_output_nor_a_new_secret(self, env, extra):
        # before: the output (and a freshly created secret) were written, then the run failed
        code = _run("users.parquet", "out.parquet", "--keyring", "ring", "--secret", "s.json",
                    "--create-secret", "local://eu/pseudo", "--column",
                    "email=keyed-hash:crm", *extra)
        assert code != 0
        assert not (env / "out.parquet").exists() and not (env / "s.json").exists()
        assert not [p for p in env.iterdir() if p.name.startswith((".out", "out", ".s.json"))]

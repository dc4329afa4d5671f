"""The whole CLI path on real OpenBao servers (tests/openbao.py): ``--key-servers FILE``,
a boundary whose signing KEK is a transit key, keys create, encrypt/decrypt, protect,
export, and the data-centre migrations local → eu-ireland → eu-norway (then the old keys
destroyed and everything still opens)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pets.cli import main
from tests.security._cli_env import ENV, UNSET, policy_text


def _segments(path: Path) -> str:
    from pets.envelope import read_header

    return hashlib.sha256(path.read_bytes()[read_header(path).header_size:]).hexdigest()


@pytest.fixture
def transit(tmp_path, monkeypatch, openbao):
    """A scratch directory, a key-servers file for eu-ireland and eu-norway (EU AppRole,
    credentials in env vars), a local keyring, and the boundary signed under a transit KEK."""
    monkeypatch.chdir(tmp_path)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    for var in (*UNSET, "PETS_KEY_SERVERS"):
        monkeypatch.delenv(var, raising=False)
    servers = {}
    for name in ("eu-ireland", "eu-norway"):
        var = name.replace("-", "_").upper()
        monkeypatch.setenv(f"{var}_ROLE_ID", openbao[name].role_ids["pets-eu"])
        monkeypatch.setenv(f"{var}_SECRET_ID", openbao.secret_id(name, "pets-eu"))
        servers[name] = {"url": openbao[name].url, "jurisdiction": "EU",
                         "auth": {"method": "approle", "role_id_env": f"{var}_ROLE_ID",
                                  "secret_id_env": f"{var}_SECRET_ID"}}
    Path("servers.yaml").write_text(yaml.safe_dump(servers))
    tag = uuid.uuid4().hex[:8]
    assert main(["keys", "init", "--name", "eu"]) == 0
    assert main(["boundary", "init", "--signing-kek", f"vault://eu-ireland/boundary-{tag}",
                 "--key-servers", "servers.yaml", "--log", "logs/audit.jsonl",
                 "--ledger", "ledger.sqlite"]) == 0
    # the operator's configuration names the servers from now on (as PETS_MASTER_KEY does
    # for a keyring): their addresses are never taken from the unverified boundary.json
    monkeypatch.setenv("PETS_KEY_SERVERS", str(tmp_path / "servers.yaml"))
    return tag


def _kinds(kind: str) -> list[dict]:
    out = []
    for line in Path("logs/audit.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["kind"] == kind:
            out.append(e)
    return out


class TestTransitCli:
    def test_boundary_pins_servers_and_keys_work_without_flag(self, transit, capsys):
        tag = transit
        capsys.readouterr()
        assert main(["boundary", "show", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert sorted(shown["key_services"]["transit_servers"]) == ["eu-ireland", "eu-norway"]
        pinned = Path(".pets/keyring/boundary/boundary.json").read_text()
        for var in ("EU_IRELAND_SECRET_ID", "EU_NORWAY_SECRET_ID", "EU_IRELAND_ROLE_ID"):
            assert os.environ[var] not in pinned  # names of variables only, no secret
        # without the operator's server list, nothing is read from the pinned file
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("PETS_KEY_SERVERS")
            assert main(["keys", "create", f"vault://eu-ireland/nope-{tag}"]) == 1
            assert "name them with --key-servers FILE or PETS_KEY_SERVERS" in \
                capsys.readouterr().err
        # PETS_KEY_SERVERS (the operator's file): checked against the pinned servers
        uri = f"vault://eu-ireland/customers-{tag}"
        assert main(["keys", "create", uri, "--jurisdiction", "EU"]) == 0
        Path("plain.txt").write_bytes(b"row,data\n" * 1000)
        assert main(["encrypt", "plain.txt", "c.pets", "--key", uri]) == 0
        assert main(["decrypt", "c.pets", "back.txt"]) == 0
        assert Path("back.txt").read_bytes() == Path("plain.txt").read_bytes()
        kinds = {e["kind"] for e in _kinds("key.create")} | {e["kind"] for e in _kinds(
            "key.wrap")}
        assert {"key.create", "key.wrap"} <= kinds

    def test_caller_server_differing_from_pinned_is_refused(self, transit, capsys, openbao):
        doc = yaml.safe_load(Path("servers.yaml").read_text())
        doc["eu-ireland"]["url"] = openbao["eu-norway"].url  # same name, another server
        Path("evil.yaml").write_text(yaml.safe_dump(doc))
        capsys.readouterr()
        assert main(["keys", "create", f"vault://eu-ireland/x-{transit}", "--key-servers",
                     "evil.yaml"]) == 1
        err = capsys.readouterr().err
        assert "transit server 'eu-ireland' differs from the one pinned" in err
        doc = {"us-east": {"url": openbao["us-east"].url, "jurisdiction": "US",
                           "auth": {"method": "token", "token_env": "T"}}}
        Path("other.yaml").write_text(yaml.safe_dump(doc))
        assert main(["keys", "create", "vault://us-east/x", "--key-servers", "other.yaml"]) == 1
        assert "transit server 'us-east' is not pinned" in capsys.readouterr().err
        created = [e["fields"]["key"] for e in _kinds("key.create")]
        assert created == [f"vault://eu-ireland/boundary-{transit}"]  # at init, nothing since

    def test_protect_export_and_migrate_local_to_ireland_to_norway(self, transit, capsys):
        tag = transit
        cols, pseudo = f"vault://eu-ireland/cols-{tag}", f"vault://eu-ireland/pseudo-{tag}"
        for uri in (cols, pseudo, "local://eu/users"):
            assert main(["keys", "create", uri, "--jurisdiction", "EU"]) == 0
        policy = (policy_text().replace("local://eu/boundary", f"vault://eu-ireland/boundary-{tag}")
                  .replace("local://eu/columns", cols).replace("local://eu/pseudonyms", pseudo))
        Path("policy.yaml").write_text(policy)
        assert main(["datasets", "generate", "--users", "3000", "--out", "users.parquet"]) == 0
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "prot"]) == 0
        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet", "--columns",
                     "user_id,email,country"]) == 0
        token = pd.read_parquet("prot/users.parquet")["email"].iloc[0]
        email = pd.read_parquet("users.parquet")["email"].iloc[0]
        Path("data").mkdir()
        for i in range(4):
            Path(f"p{i}").write_bytes(bytes([i]) * 5000)
            assert main(["encrypt", f"p{i}", f"data/f{i}.pets", "--key", "local://eu/users"]) == 0
        before = {p.name: _segments(p) for p in Path("data").glob("*.pets")}

        # 1. local keyring -> OpenBao eu-ireland
        dc1 = f"vault://eu-ireland/users-{tag}"
        assert main(["keys", "create", dc1, "--jurisdiction", "EU"]) == 0
        assert main(["migrate", "plan", "--to", dc1, "--from", "local://eu/users", "data",
                     "--out", "m1.json"]) == 0
        assert main(["migrate", "run", "m1.json"]) == 0
        assert main(["migrate", "verify", "m1.json"]) == 0
        assert main(["keys", "destroy", "local://eu/users", "--yes"]) == 0

        # 2. eu-ireland -> eu-norway: the envelopes, the table's column keys and the roots
        # (the signing key's migration is tested in tests/boundary/test_migrate.py: a table's
        # signed policy digest still names the old signing KEK, so its export would need
        # the table re-protected — see docs/migration.md)
        moves = {dc1: f"vault://eu-norway/users-{tag}", cols: f"vault://eu-norway/cols-{tag}",
                 pseudo: f"vault://eu-norway/pseudo-{tag}"}
        for i, (src, dst) in enumerate(moves.items()):
            assert main(["keys", "create", dst, "--jurisdiction", "EU"]) == 0
            capsys.readouterr()
            assert main(["migrate", "plan", "--to", dst, "--from", src, "data", "prot",
                         "--out", f"n{i}.json", "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["items"]
            assert main(["migrate", "run", f"n{i}.json"]) == 0
            assert main(["migrate", "verify", f"n{i}.json"]) == 0, capsys.readouterr().err
        for src in moves:
            assert main(["keys", "destroy", src, "--yes"]) == 0

        # everything still opens, with every old key crypto-shredded
        assert {p.name: _segments(p) for p in Path("data").glob("*.pets")} == before
        for i in range(4):
            assert main(["decrypt", f"data/f{i}.pets", f"o{i}"]) == 0
            assert Path(f"o{i}").read_bytes() == Path(f"p{i}").read_bytes()
        capsys.readouterr()
        assert main(["reidentify", "prot", "--column", "email", "--value", token]) == 0
        assert email in capsys.readouterr().out
        assert main(["export", "prot", "--to", "US", "--out", "us/u2.parquet", "--columns",
                     "user_id,email,country"]) == 0, capsys.readouterr().err
        assert pd.read_parquet("us/u2.parquet").equals(pd.read_parquet("us/u.parquet"))
        migrated = [e["fields"] for e in _kinds("key.migrate")]
        assert len(migrated) == 4 + 4 + 1 + 1 + 1  # envelopes twice, table twice, roots
        assert all(f["before"] == f["after"] for f in migrated)

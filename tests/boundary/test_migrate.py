"""``pets migrate`` on a local keyring: envelopes, a protected table, roots.json, the signing
key — planned, run, verified, then the old KEKs destroyed and everything still opens."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from pets.cli import main
from tests.security._cli_env import AUDIT, policy_text, setup_boundary


def _entries(root: Path, kind: str) -> list[dict]:
    out = []
    for line in (root / AUDIT).read_text().splitlines():
        e = json.loads(line)
        if e["kind"] == kind:
            out.append(e)
    return out


def _segments(path: Path) -> str:
    from pets.envelope import read_header

    return hashlib.sha256(path.read_bytes()[read_header(path).header_size:]).hexdigest()


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    setup_boundary(tmp_path, monkeypatch)
    assert main(["datasets", "generate", "--users", "3000", "--out", "users.parquet"]) == 0
    Path("policy.yaml").write_text(policy_text())
    assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "prot"]) == 0
    Path("data").mkdir()
    for i in range(3):
        Path(f"plain{i}.txt").write_bytes(f"secret {i} ".encode() * 500)
        assert main(["encrypt", f"plain{i}.txt", f"data/f{i}.pets", "--key",
                     "local://eu/users"]) == 0
    return tmp_path


class TestLocalMigration:
    def test_envelopes_plan_run_verify_destroy(self, scratch, capsys):
        before = {p.name: _segments(p) for p in Path("data").glob("*.pets")}
        assert main(["keys", "create", "local://eu/users2", "--jurisdiction", "EU"]) == 0
        capsys.readouterr()
        assert main(["migrate", "plan", "--to", "local://eu/users2", "--from",
                     "local://eu/users", "data", "prot", "--out", "plan.json", "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert sorted(i["kind"] for i in plan["items"]) == ["envelope"] * 3
        # before the run, verify names every item that still needs the old key
        assert main(["migrate", "verify", "plan.json"]) == 5
        assert "still wrapped under local://eu/users" in capsys.readouterr().err
        assert main(["migrate", "run", "plan.json", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert len(report["migrated"]) == 3
        assert {p.name: _segments(p) for p in Path("data").glob("*.pets")} == before
        entries = _entries(scratch, "key.migrate")
        assert len(entries) == 3
        f = entries[0]["fields"]
        assert f["to"] == "local://eu/users2" and f["from"] == ["local://eu/users"]
        assert f["before"] == f["after"] and f["plan"] == plan["id"]
        assert main(["migrate", "verify", "plan.json"]) == 0
        capsys.readouterr()
        assert main(["migrate", "run", "plan.json", "--json"]) == 0  # idempotent
        assert len(json.loads(capsys.readouterr().out)["skipped"]) == 3
        assert len(_entries(scratch, "key.migrate")) == 3
        assert main(["keys", "destroy", "local://eu/users", "--yes"]) == 0
        for i in range(3):
            assert main(["decrypt", f"data/f{i}.pets", f"out{i}.txt"]) == 0
            assert Path(f"out{i}.txt").read_bytes() == Path(f"plain{i}.txt").read_bytes()

    def test_table_roots_and_signing_key(self, scratch, capsys):
        prot = Path("prot/users.parquet")
        token = pd.read_parquet(prot)["email"].iloc[0]
        email = pd.read_parquet("users.parquet")["email"].iloc[0]
        for uri in ("local://eu/columns2", "local://eu/pseudo2", "local://eu/boundary2"):
            assert main(["keys", "create", uri, "--jurisdiction", "EU"]) == 0
        for src, dst in (("local://eu/columns", "local://eu/columns2"),
                         ("local://eu/pseudonyms", "local://eu/pseudo2"),
                         ("local://eu/boundary", "local://eu/boundary2")):
            capsys.readouterr()
            assert main(["migrate", "plan", "--to", dst, "--from", src, "prot", "--out",
                         f"{dst[-8:]}.json", "--json"]) == 0
            plan = json.loads(capsys.readouterr().out)
            assert plan["items"], src
            assert main(["migrate", "run", f"{dst[-8:]}.json"]) == 0
            assert main(["migrate", "verify", f"{dst[-8:]}.json"]) == 0, capsys.readouterr()
            assert main(["keys", "destroy", src, "--yes"]) == 0
        kinds = [e["fields"]["item_kind"] for e in _entries(scratch, "key.migrate")]
        assert sorted(kinds) == ["roots", "signing-key", "table", "table"]
        # everything still opens with the old keys destroyed
        capsys.readouterr()
        assert main(["reidentify", "prot", "--column", "email", "--value", token,
                     "--json"]) == 0
        assert email in capsys.readouterr().out
        assert main(["boundary", "show", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["signing_kek"] == "local://eu/boundary2"
        assert main(["audit", "verify", AUDIT, "--public-key",
                     ".pets/keyring/boundary/signing-key.pub.pem"]) == 0

    def test_refused_jurisdiction_is_logged(self, scratch, capsys):
        assert main(["keys", "create", "local://eu/sg", "--jurisdiction", "SG"]) == 0
        assert main(["migrate", "plan", "--to", "local://eu/sg", "--from", "local://eu/users",
                     "data"]) == 4
        assert "moves the data to another jurisdiction" in capsys.readouterr().err
        assert _entries(scratch, "key.migrate_refused")

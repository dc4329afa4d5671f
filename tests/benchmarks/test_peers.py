"""The peer protocol: a peer that fails is reported with its reason, never dropped."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import privacy_utility as pu

PEERS = Path(pu.__file__).resolve().parent / "peers"


def _request(tmp_path: Path, queries=("count", "sum", "mean", "median")) -> dict:
    ds = pu.events_dataset(2_000, 200, k=5)
    data = tmp_path / "events.parquet"
    ds.bounded.to_parquet(data, index=False)
    cfg = pu.Config(epsilons=(1.0,), trials=2, n_events=0, n_users=0, n_census=0)
    req = pu.build_request(ds, data, cfg)
    req["queries"] = list(queries)
    return req


def _adapter(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "run_fake.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PEERS)!r})
        from _protocol import serve
        {textwrap.indent(textwrap.dedent(body), '        ').strip()}
    """))
    return script


class TestRunAdapter:
    def test_crashing_adapter_is_failed_with_its_stderr(self, tmp_path):
        script = _adapter(tmp_path, 'raise ImportError("No module named tmlt_fake")')
        out = pu.run_adapter("fake", Path(sys.executable), script, _request(tmp_path),
                             tmp_path, timeout=60)
        assert out.status == "failed"
        assert "No module named tmlt_fake" in out.reason
        assert out.reason.startswith("exit 1")

    def test_query_that_raises_is_partial_and_named(self, tmp_path):
        script = _adapter(tmp_path, """
            def run_one(req, query, eps, trial):
                if query == "median":
                    raise ValueError("median is not supported")
                return {"AT": 1.0}, None
            sys.exit(serve("fake", "0.0", run_one))
        """)
        out = pu.run_adapter("fake", Path(sys.executable), script, _request(tmp_path),
                             tmp_path, timeout=60)
        assert out.status == "partial"
        assert out.reason == "median: ValueError: median is not supported"
        queries = {r["query"] for r in out.response["results"]}
        assert queries == {"count", "sum", "mean"}
        assert len(out.response["results"]) == 6  # 3 queries x 2 trials

    def test_every_query_failing_is_failed(self, tmp_path):
        script = _adapter(tmp_path, """
            def run_one(req, query, eps, trial):
                raise RuntimeError("spark died")
            sys.exit(serve("fake", "0.0", run_one))
        """)
        out = pu.run_adapter("fake", Path(sys.executable), script, _request(tmp_path, ["count"]),
                             tmp_path, timeout=60)
        assert out.status == "failed"
        assert "RuntimeError: spark died" in out.reason

    def test_hanging_adapter_times_out(self, tmp_path):
        script = _adapter(tmp_path, "import time; time.sleep(30)")
        out = pu.run_adapter("fake", Path(sys.executable), script, _request(tmp_path),
                             tmp_path, timeout=1)
        assert out.status == "failed"
        assert out.reason == "timed out after 1 s"

    def test_garbage_response_is_failed(self, tmp_path):
        script = _adapter(tmp_path, "open(sys.argv[2], 'w').write('{not json')")
        out = pu.run_adapter("fake", Path(sys.executable), script, _request(tmp_path),
                             tmp_path, timeout=60)
        assert out.status == "failed"
        assert out.reason.startswith("unreadable response")


class TestEnsureVenv:
    def test_missing_requirements_file_is_unavailable(self, tmp_path):
        python, secs, reason = pu.ensure_venv("nopeer", venvs=tmp_path / "v", peers=tmp_path)
        assert python is None and secs is None
        assert "no requirements file" in reason

    def test_failed_install_reports_pip_error(self, tmp_path):
        (tmp_path / "broken.txt").write_text("this is (not a requirement\n")
        python, secs, reason = pu.ensure_venv("broken", venvs=tmp_path / "v", peers=tmp_path,
                                              timeout=120)
        assert python is None
        assert secs is not None and secs > 0
        assert reason.startswith("pip install failed:")
        assert "requirement" in reason.lower()

    def test_up_to_date_venv_is_reused(self, tmp_path):
        (tmp_path / "ok.txt").write_text("# nothing to install\n")
        venvs = tmp_path / "v"
        first = pu.ensure_venv("ok", venvs=venvs, peers=tmp_path, timeout=120)
        assert first[0] is not None and first[1] is not None
        second = pu.ensure_venv("ok", venvs=venvs, peers=tmp_path)
        assert second == (first[0], None, "")
        recorded = pu.recorded_install_seconds("ok", venvs=venvs)
        assert recorded == pytest.approx(first[1], abs=0.06)

    def test_changed_requirements_rebuild_the_venv(self, tmp_path):
        req = tmp_path / "ok.txt"
        req.write_text("# v1\n")
        venvs = tmp_path / "v"
        pu.ensure_venv("ok", venvs=venvs, peers=tmp_path, timeout=120)
        req.write_text("# v2\n")
        python, secs, reason = pu.ensure_venv("ok", venvs=venvs, peers=tmp_path, timeout=120)
        assert python is not None and secs is not None and reason == ""


class TestRunReportsEveryLibrary:
    def test_failing_peer_stays_in_the_results(self, tmp_path, monkeypatch):
        monkeypatch.setattr(pu, "LIBRARIES", (*pu.LIBRARIES, "nosuchpeer"))
        cfg = pu.Config(epsilons=(1.0,), trials=1, n_events=1_000, n_users=100, n_census=300,
                        workers=1)
        result = pu.run(libraries=("pets", "nosuchpeer"), config=cfg, log=lambda _m: None)
        statuses = {(o["dataset"], o["library"]): o["status"] for o in result.outcomes}
        assert statuses[("events", "nosuchpeer")] == "failed"
        assert statuses[("census", "nosuchpeer")] == "failed"
        assert statuses[("events", "pets")] == "ok"
        result.write(tmp_path)
        md = (tmp_path / "utility.md").read_text()
        assert "| events | nosuchpeer |  | failed |" in md
        assert "run_nosuchpeer.py" in md
        payload = json.loads((tmp_path / "utility.json").read_text())
        assert {p["library"] for p in payload["peers"]} == {"pets", "nosuchpeer"}
        csv_rows = pd.read_csv(tmp_path / "utility.csv")
        assert set(csv_rows["library"]) == {"pets"}
        assert set(csv_rows["query"]) == set(pu.QUERIES)
        assert (tmp_path / "utility_events.png").stat().st_size > 1000


class TestPetsAdapter:
    def test_answers_every_query_with_intervals_for_count_sum_mean(self, tmp_path):
        out = pu.run_adapter("pets", Path(sys.executable), PEERS / "run_pets.py",
                             _request(tmp_path), tmp_path, timeout=120)
        assert out.status == "ok", out.reason
        by_query = {r["query"]: r for r in out.response["results"]}
        assert set(by_query) == set(pu.QUERIES)
        for q in ("count", "sum", "mean"):
            assert by_query[q]["ci"], q
        assert "ci" not in by_query["median"]
        assert len(by_query["count"]["estimates"]) == 27


class TestLibrarySelection:
    def test_environment_selects_libraries(self, monkeypatch):
        monkeypatch.setenv("PETS_BENCH_LIBRARIES", "pets")
        cfg = pu.Config(epsilons=(1.0,), trials=1, n_events=500, n_users=50, n_census=200,
                        workers=1)
        result = pu.run(config=cfg, log=lambda _m: None)
        assert {o["library"] for o in result.outcomes} == {"pets"}
        assert result.config["libraries"] == ["pets"]


class TestQuickResults:
    def test_quick_utility_run_writes_its_own_files(self, tmp_path):
        cfg = pu.Config(epsilons=(1.0,), trials=1, n_events=500, n_users=50, n_census=200,
                        workers=1)
        result = pu.run(quick=True, libraries=("pets",), config=cfg, log=lambda _m: None)
        jpath, _mpath = result.write(tmp_path)
        assert jpath.name == "utility-quick.json"
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "utility-quick.csv", "utility-quick.json", "utility-quick.md",
            "utility-quick_census.png", "utility-quick_events.png"]

"""The throughput harness: figures per row, and a broken component reported, not raised."""

from __future__ import annotations

from benchmarks import throughput as tp


def _boom(n, tmp):
    raise ImportError("cannot import name 'encrypt_columns' from 'pets.envelope'")


class TestMeasure:
    def test_missing_component_is_reported_with_the_reason(self, tmp_path):
        case = tp.Case("column encryption", "loop", _boom, lambda st: None, lambda st: None)
        row = tp.measure(case, 1_000, tmp_path, repeat=1)
        assert row["status"].startswith("unavailable: ImportError: cannot import name")
        assert "median_s" not in row

    def test_figures_are_consistent(self, tmp_path):
        case = tp.Case("noop", "noop", lambda n, tmp: list(range(n)), lambda st: sum(st),
                       lambda st: len(st), bytes_per_row=8)
        row = tp.measure(case, 10_000, tmp_path, repeat=3)
        assert row["status"] == "ok"
        assert row["rows_per_s"] == 10_000 / row["median_s"]
        assert row["ns_per_row"] == 1e9 * row["median_s"] / 10_000
        assert row["ratio"] == row["baseline_s"] / row["median_s"]
        assert row["mb_per_s"] == 10_000 * 8 / row["median_s"] / 1e6

    def test_temporary_files_are_removed_between_cases(self, tmp_path):
        def setup(n, tmp):
            (tmp / "x.bin").write_bytes(b"x" * n)
            return None

        tp.measure(tp.Case("f", "f", setup, lambda st: None, lambda st: None), 10, tmp_path, 1)
        assert list(tmp_path.iterdir()) == []

    def test_every_case_runs_on_a_small_size(self, tmp_path):
        result = tp.run(sizes=(2_000,), repeat=1)
        assert [r["case"] for r in result.rows] == [c.name for c in tp.CASES]
        assert all(r["status"] == "ok" for r in result.rows), [r["status"] for r in result.rows]
        result.write(tmp_path)
        assert (tmp_path / "throughput.png").stat().st_size > 1000
        assert "| keyed hash (HMAC-SHA256) | 2000 | ok |" in (tmp_path / "throughput.md").read_text()

    def test_quick_run_never_overwrites_the_full_results(self, tmp_path):
        result = tp.run(quick=True, sizes=(1_000,), cases=tp.CASES[:1], repeat=1)
        jpath, mpath = result.write(tmp_path)
        assert jpath.name == "throughput-quick.json"
        assert (tmp_path / "throughput-quick.png").exists()
        assert "](throughput-quick.png)" in mpath.read_text()
        assert not (tmp_path / "throughput.json").exists()

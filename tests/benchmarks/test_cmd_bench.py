"""``pets bench``: runs the checkout's benchmarks, refuses clearly without a checkout."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pets.cli import _cmd_bench, cli


def _fake_checkout(tmp_path: Path) -> Path:
    (tmp_path / "pets").mkdir()
    b = tmp_path / "benchmarks"
    b.mkdir()
    (b / "__init__.py").write_text("")
    (b / "bench_utility.py").write_text("")
    (b / "bench_anonymity.py").write_text("")
    (b / "__main__.py").write_text(
        "import sys, pathlib\n"
        "pathlib.Path('args.txt').write_text(' '.join(sys.argv[1:]))\n")
    return tmp_path


class TestBench:
    def test_real_checkout_is_found_with_its_benchmarks(self):
        root = _cmd_bench.find_checkout()
        assert root is not None
        assert {"utility", "throughput", "anonymity"} <= set(_cmd_bench.available(root))

    def test_runs_benchmarks_module_in_the_checkout(self, tmp_path, monkeypatch):
        root = _fake_checkout(tmp_path)
        monkeypatch.setattr(_cmd_bench, "find_checkout", lambda: root)
        res = CliRunner().invoke(cli, ["bench", "anonymity", "--quick"])
        assert res.exit_code == 0, res.output
        assert (root / "args.txt").read_text() == "anonymity --quick"

    def test_unknown_name_is_a_usage_error_listing_the_names(self, tmp_path, monkeypatch):
        root = _fake_checkout(tmp_path)
        monkeypatch.setattr(_cmd_bench, "find_checkout", lambda: root)
        res = CliRunner().invoke(cli, ["bench", "speed"])
        assert res.exit_code == 2
        assert "unknown benchmark(s) speed; available: anonymity, utility" in res.output
        assert not (root / "args.txt").exists()

    def test_without_checkout_says_so(self, monkeypatch):
        monkeypatch.setattr(_cmd_bench, "find_checkout", lambda: None)
        res = CliRunner().invoke(cli, ["bench", "utility"])
        assert res.exit_code == 1
        assert "benchmarks are not available" in res.output
        assert "source checkout" in res.output

    def test_failing_benchmark_exit_status_is_reported(self, tmp_path, monkeypatch):
        root = _fake_checkout(tmp_path)
        (root / "benchmarks" / "__main__.py").write_text("raise SystemExit(3)\n")
        monkeypatch.setattr(_cmd_bench, "find_checkout", lambda: root)
        res = CliRunner().invoke(cli, ["bench"])
        assert res.exit_code == 1
        assert "benchmarks exited with status 3" in res.output

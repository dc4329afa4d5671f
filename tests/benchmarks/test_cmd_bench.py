"""``pets bench``: runs the checkout's benchmarks, refuses clearly without a checkout, writes
where it is told and installs peer venvs only when asked."""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from pets.cli import _cmd_bench, cli

ROOT = Path(__file__).resolve().parents[2]


def _fake_checkout(tmp_path: Path) -> Path:
    (tmp_path / "pets").mkdir(parents=True)
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
        root = _fake_checkout(tmp_path / "checkout")
        monkeypatch.setattr(_cmd_bench, "find_checkout", lambda: root)
        monkeypatch.chdir(tmp_path)
        res = CliRunner().invoke(cli, ["bench", "anonymity", "--quick"])
        assert res.exit_code == 0, res.output
        assert (root / "args.txt").read_text() == (
            f"anonymity --quick --out {tmp_path.resolve() / 'pets-bench-results'}")

    def test_out_is_passed_as_an_absolute_path_from_the_callers_directory(
            self, tmp_path, monkeypatch):
        root = _fake_checkout(tmp_path / "checkout")
        monkeypatch.setattr(_cmd_bench, "find_checkout", lambda: root)
        monkeypatch.chdir(tmp_path)
        res = CliRunner().invoke(cli, ["bench", "--out", "mine", "utility"])
        assert res.exit_code == 0, res.output
        args = (root / "args.txt").read_text().split()
        assert args == ["utility", "--out", str(tmp_path.resolve() / "mine")]

    def test_build_peers_is_forwarded_only_when_given(self, tmp_path, monkeypatch):
        root = _fake_checkout(tmp_path / "checkout")
        monkeypatch.setattr(_cmd_bench, "find_checkout", lambda: root)
        monkeypatch.chdir(tmp_path)
        assert CliRunner().invoke(cli, ["bench", "utility"]).exit_code == 0
        assert "--build-peers" not in (root / "args.txt").read_text()
        assert CliRunner().invoke(cli, ["bench", "--build-peers", "utility"]).exit_code == 0
        assert (root / "args.txt").read_text().split()[-1] == "--build-peers"

    def test_unknown_name_is_a_usage_error_listing_the_names(self, tmp_path, monkeypatch):
        root = _fake_checkout(tmp_path)
        monkeypatch.chdir(tmp_path)
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
        monkeypatch.chdir(tmp_path)
        (root / "benchmarks" / "__main__.py").write_text("raise SystemExit(3)\n")
        monkeypatch.setattr(_cmd_bench, "find_checkout", lambda: root)
        res = CliRunner().invoke(cli, ["bench"])
        assert res.exit_code == 1
        assert "benchmarks exited with status 3" in res.output


class _TinyResult:
    """Stands in for a benchmark's result: records where it was asked to write."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md = directory / f"{self.name}.md"
        md.write_text(f"# {self.name}\n")
        return directory / f"{self.name}.json", md


class TestBenchmarksMain:
    """``python -m benchmarks`` (what ``pets bench`` runs), in-process with a tiny benchmark."""

    def _main(self, monkeypatch):
        monkeypatch.syspath_prepend(str(ROOT))
        from benchmarks import __main__ as bmain
        from benchmarks import _peers

        built: list[tuple[str, ...]] = []
        monkeypatch.setattr(bmain, "run_benchmark", lambda name, quick: _TinyResult(name))

        def fake_build(names, **kw):
            names = tuple(names)
            built.append(names)
            print(_peers.describe(names))
            return {}

        monkeypatch.setattr(_peers, "build", fake_build)
        return bmain, built

    def test_out_is_honoured(self, tmp_path, monkeypatch):
        bmain, _ = self._main(monkeypatch)
        assert bmain.main(["utility", "--quick", "--out", str(tmp_path / "res")]) == 0
        assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["utility-quick.md"]

    def test_no_peer_venv_is_built_without_the_flag(self, tmp_path, monkeypatch):
        bmain, built = self._main(monkeypatch)
        assert bmain.main(["utility", "--out", str(tmp_path)]) == 0
        assert built == []

    def test_build_peers_lists_packages_and_versions_then_builds(self, tmp_path, monkeypatch,
                                                                 capsys):
        bmain, built = self._main(monkeypatch)
        assert bmain.main(["utility", "--build-peers", "--out", str(tmp_path)]) == 0
        assert built == [("diffprivlib", "pipelinedp", "tumult")]
        out = capsys.readouterr().out
        assert "diffprivlib: diffprivlib==0.6.6, scikit-learn==1.5.2" in out
        assert "tumult: tmlt.analytics==0.21.0" in out
        assert out.index("Building peer venvs in") < out.index("== utility")

    def test_build_peers_is_not_needed_by_benchmarks_without_peers(self, tmp_path, monkeypatch):
        bmain, built = self._main(monkeypatch)
        assert bmain.main(["anonymity", "--build-peers", "--out", str(tmp_path)]) == 0
        assert built == []


class TestPeerVenvs:
    def test_missing_venv_is_skipped_with_the_build_command_and_nothing_created(
            self, tmp_path, monkeypatch):
        monkeypatch.syspath_prepend(str(ROOT))
        from benchmarks import privacy_utility as pu

        (tmp_path / "peer.txt").write_text("somepkg==1.0\n")
        calls: list[object] = []
        monkeypatch.setattr(pu.subprocess, "run", lambda *a, **k: calls.append(a))
        python, secs, reason = pu.ensure_venv("peer", venvs=tmp_path / "v", peers=tmp_path,
                                              build=False)
        assert (python, secs) == (None, None)
        assert reason.startswith("skipped")
        assert "`pets bench --build-peers utility`" in reason
        assert calls == []
        assert not (tmp_path / "v").exists()

    def test_venvs_live_in_the_user_cache_not_the_checkout(self, tmp_path, monkeypatch):
        monkeypatch.syspath_prepend(str(ROOT))
        from benchmarks import _peers

        monkeypatch.delenv("PETS_BENCH_PEERS_DIR", raising=False)
        where = _peers.peer_venvs_dir()
        assert where.name == "peers"
        assert ROOT not in where.parents
        monkeypatch.setenv("PETS_BENCH_PEERS_DIR", str(tmp_path / "p"))
        assert _peers.peer_venvs_dir() == tmp_path / "p"

    def test_without_platformdirs_xdg_cache_home_is_used(self, tmp_path, monkeypatch):
        monkeypatch.syspath_prepend(str(ROOT))
        from benchmarks import _peers

        monkeypatch.delenv("PETS_BENCH_PEERS_DIR", raising=False)
        monkeypatch.setitem(sys.modules, "platformdirs", None)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert _peers.peer_venvs_dir() == tmp_path / "pets" / "peers"
        monkeypatch.delenv("XDG_CACHE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert _peers.peer_venvs_dir() == tmp_path / "home" / ".cache" / "pets" / "peers"

    def test_the_utility_run_asks_for_no_build_and_reports_skipped(self, tmp_path, monkeypatch):
        monkeypatch.syspath_prepend(str(ROOT))
        from benchmarks import privacy_utility as pu

        asked: list[bool] = []

        def fake_ensure(name, **kw):
            asked.append(kw.get("build", True))
            return None, None, "skipped: peer venv not built; build it with `x`"

        monkeypatch.setattr(pu, "ensure_venv", fake_ensure)
        out = pu.run_library("tumult", None, {}, tmp_path, pu.QUICK, {})  # type: ignore[arg-type]
        assert asked == [False]
        assert (out.library, out.status) == ("tumult", "skipped")
        assert "build it with" in out.reason

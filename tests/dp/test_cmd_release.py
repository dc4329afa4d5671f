"""``pets release`` (tests for pets/cli/_cmd_release.py live with the DP tests)."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pets import InputError
from pets.cli import main
from pets.cli._cmd_release import parse_agg, split_aggs
from pets.datasets import synthetic_events
from pets.dp import Ledger


@pytest.fixture(autouse=True)
def boundary(tmp_path, monkeypatch):
    """A boundary whose pinned ledger is ``tmp_path / "l.db"`` (every release spends from the
    boundary's ledger and is signed into its log)."""
    import os

    monkeypatch.setenv("PETS_MASTER_KEY", os.urandom(32).hex())
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    for var in ("PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS", "PETS_BOUNDARY", "PETS_PKCS11_TOKEN",
                "PETS_PKCS11_LIBRARY", "PETS_KEYRING_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)
    ring = tmp_path / "boundary-ring"
    monkeypatch.setenv("PETS_KEYRING", str(ring))
    assert main(["keys", "init", "--name", "eu"]) == 0
    _boundary_at(tmp_path / "boundary", tmp_path / "audit.jsonl", tmp_path / "l.db",
                 monkeypatch)
    return tmp_path / "boundary"


def _boundary_at(directory, log, ledger, monkeypatch):
    import os

    # module keyrings serve one boundary per test: a fresh pin each time
    ring = Path(os.environ.get("PETS_KEYRING", ".pets/keyring"))
    (ring / "boundary.pin.json").unlink(missing_ok=True)
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary", "--boundary",
                 str(directory), "--log", str(log), "--ledger", str(ledger)]) == 0
    monkeypatch.setenv("PETS_BOUNDARY", str(directory))


@pytest.fixture
def events(tmp_path):
    p = tmp_path / "events.parquet"
    synthetic_events(3000, n_users=400, seed=2).to_parquet(p, index=False)
    return p


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


class TestReleaseCommand:
    def test_release_writes_parquet_with_metadata_and_spends(self, tmp_path, events, capsys):
        out, led = tmp_path / "r.parquet", tmp_path / "l.db"
        code, stdout, _ = run(capsys, "release", events, "--unit", "user_id", "--group-by",
                              "country", "--keys", "DE,FR,IT",
                              "--agg", "count,mean:watch_seconds[0,7200]", "--max-rows", "5",
                              "--epsilon", "1", "--budget-epsilon", "3", "--ledger", led,
                              "--out", out, "--status", "--json")
        assert code == 0
        payload = json.loads(stdout)
        assert payload["status"]["spent"]["epsilon"] == pytest.approx(1.0)
        table = pq.read_table(out)
        meta = json.loads(table.schema.metadata[b"pets.release"])
        assert meta["privacy_unit"] == "user_id" and meta["loss"]["epsilon"] == pytest.approx(1)
        df = table.to_pandas()
        assert sorted(df["country"].unique()) == ["DE", "FR", "IT"]
        assert set(df["statistic"]) == {"count", "mean"}

    def test_budget_exhausted_exits_6_and_writes_nothing(self, tmp_path, events, capsys):
        led = tmp_path / "l.db"
        args = ["release", events, "--unit", "user_id", "--agg", "count", "--ledger", led]
        assert run(capsys, *args, "--epsilon", "1", "--budget-epsilon", "1.5",
                   "--out", tmp_path / "a.parquet")[0] == 0
        code, _, err = run(capsys, *args, "--epsilon", "1", "--out", tmp_path / "b.parquet")
        assert code == 6 and "BudgetExhausted" in err
        assert not (tmp_path / "b.parquet").exists()
        code, stdout, _ = run(capsys, "release", events, "--unit", "user_id", "--ledger", led,
                              "--status")
        assert code == 0 and "remaining 0.5" in stdout

    def test_new_ledger_needs_a_budget(self, tmp_path, events, capsys):
        code, _, err = run(capsys, "release", events, "--unit", "user_id", "--agg", "count",
                           "--epsilon", "1", "--ledger", tmp_path / "l.db", "--out",
                           tmp_path / "r.parquet")
        assert code == 1 and "--budget-epsilon" in err

    def test_private_keys_with_delta(self, tmp_path, events, capsys):
        code, stdout, _ = run(capsys, "release", events, "--unit", "user_id", "--group-by",
                              "country", "--private-keys", "--agg", "count", "--epsilon", "1",
                              "--delta", "1e-6", "--budget-epsilon", "2", "--budget-delta",
                              "1e-5", "--ledger", tmp_path / "l.db", "--out",
                              tmp_path / "r.parquet", "--json")
        assert code == 0
        assert json.loads(stdout)["release"]["loss"]["delta"] > 0

    @pytest.mark.parametrize("engine", ["pandas", "dask"])
    def test_private_keys_of_a_dictionary_column_write_no_withheld_key(self, tmp_path, capsys,
                                                                       engine, monkeypatch):
        # a Parquet column written from a pandas categorical is read back as one, with every
        # key present as a category: the release file's dictionary must not carry them
        if engine == "dask":
            from tests.conftest import require_service
            from tests.engines.conftest import DASK, HAVE_DASK

            require_service(HAVE_DASK, DASK)
            import contextlib

            from pets.engines import _run

            # Dask's local scheduler instead of a cluster of processes (covered elsewhere)
            monkeypatch.setattr(_run, "local_client",
                                lambda workers, **kw: contextlib.nullcontext(None))
        frame = synthetic_events(3000, n_users=400, seed=2)
        frame.loc[frame["user_id"] == frame["user_id"].iloc[0], "country"] = "ZZ"
        frame["country"] = frame["country"].astype("category")
        src = tmp_path / "cat.parquet"
        frame.to_parquet(src, index=False)
        code, _, err = run(capsys, "release", src, "--unit", "user_id", "--group-by", "country",
                           "--private-keys", "--agg", "count", "--max-rows", "3",
                           "--epsilon", "1", "--delta", "1e-6", "--budget-epsilon", "2",
                           "--budget-delta", "1e-5", "--ledger", tmp_path / "l.db",
                           "--out", tmp_path / "r.parquet", "--engine", engine,
                           *(["--workers", "1"] if engine == "dask" else []))
        assert code == 0, err
        col = pq.read_table(tmp_path / "r.parquet").column("country")
        assert not str(col.type).startswith("dictionary")
        assert "ZZ" not in col.to_pylist() and len(col) >= 1

    def test_grouping_needs_keys(self, tmp_path, events, capsys):
        code, _, err = run(capsys, "release", events, "--unit", "user_id", "--group-by",
                           "country", "--agg", "count", "--epsilon", "1", "--budget-epsilon",
                           "2", "--ledger", tmp_path / "l.db", "--out", tmp_path / "r.parquet")
        assert code == 1 and "--private-keys" in err

    def test_the_issue_example_names_every_missing_option_and_registers_nothing(
            self, tmp_path, events, capsys):
        led = tmp_path / "l.db"
        code, _, err = run(capsys, "release", events, "--unit", "user_id", "--group-by",
                           "country", "--agg", "count,mean:watch_seconds[0,7200]", "--epsilon",
                           "1", "--ledger", led, "--out", tmp_path / "release.parquet")
        assert code == 1
        for option in ("--keys V1,V2", "--keys-file", "--private-keys --delta",
                       "--budget-epsilon E"):
            assert option in err, option
        assert "reveal which groups exist" in err  # says why keys are not read from the data
        assert Ledger(led).budget_of(str(events.resolve()), "user_id") is None
        assert not (tmp_path / "release.parquet").exists()

    def test_a_refused_command_does_not_register_its_budget(self, tmp_path, events, capsys):
        led = tmp_path / "l.db"
        code, _, err = run(capsys, "release", events, "--unit", "user_id", "--group-by",
                           "country", "--agg", "count", "--epsilon", "1", "--budget-epsilon",
                           "100", "--ledger", led, "--out", tmp_path / "r.parquet")
        assert code == 1 and "--keys" in err and "--budget-epsilon" not in err
        # a typo must not fix the dataset's total budget for ever
        assert Ledger(led).budget_of(str(events.resolve()), "user_id") is None

    def test_missing_epsilon_and_out_are_named(self, tmp_path, events, capsys):
        code, _, err = run(capsys, "release", events, "--unit", "user_id", "--agg", "count",
                           "--budget-epsilon", "1", "--ledger", tmp_path / "l.db")
        assert code == 1 and "--epsilon E" in err and "--out FILE" in err

    @pytest.mark.parametrize(("args", "message"), [
        (["--budget-rho", "1", "--epsilon", "1"], "pass --rho R instead of --epsilon"),
        (["--budget-epsilon", "1", "--rho", "0.1"], "pass --epsilon E instead of --rho"),
        (["--budget-epsilon", "1", "--epsilon", "1", "--delta", "1e-6"],
         "--delta is only spent by --private-keys")])
    def test_spend_flags_that_do_not_fit_the_budget_are_named(self, tmp_path, events, capsys,
                                                             args, message):
        code, _, err = run(capsys, "release", events, "--unit", "user_id", "--agg", "count",
                           "--ledger", tmp_path / "l.db", "--out", tmp_path / "r.parquet",
                           *args)
        assert code == 1 and message in err
        assert Ledger(tmp_path / "l.db").budget_of(str(events.resolve()), "user_id") is None

    def test_keys_file_with_two_columns_and_postprocessing(self, tmp_path, events, capsys):
        keys = tmp_path / "keys.csv"
        keys.write_text("country,event\nDE,play\nFR,play\nXX,play\n")
        out = tmp_path / "r.parquet"
        code, _, err = run(capsys, "release", events, "--unit", "user_id", "--group-by",
                           "country,event", "--keys-file", keys, "--agg",
                           "count,histogram:watch_seconds[0,60,600,7200]", "--max-groups", "3",
                           "--max-rows", "4", "--epsilon", "0.5", "--budget-epsilon", "1",
                           "--ledger", tmp_path / "l.db", "--out", out, "--nonnegative",
                           "--decimals", "0")
        assert code == 0, err
        df = pq.read_table(out).to_pandas()
        assert list(df.drop_duplicates(["country", "event"])[["country", "event"]].itertuples(
            index=False, name=None)) == [("DE", "play"), ("FR", "play"), ("XX", "play")]
        assert (df["estimate"] >= 0).all() and (df["estimate"] == df["estimate"].round()).all()

    def test_missing_input_file(self, tmp_path, capsys):
        code, _, err = run(capsys, "release", tmp_path / "none.parquet", "--unit", "u",
                           "--ledger", tmp_path / "l.db", "--status")
        assert code == 1 and "does not exist" in err


class TestAggSpecs:
    def test_split_respects_brackets(self):
        assert split_aggs(("count,histogram:w[0,1,2],sum:w[0,9]",)) == [
            "count", "histogram:w[0,1,2]", "sum:w[0,9]"]

    @pytest.mark.parametrize("bad", ["mean:w", "mean:w[0]", "count:w[0,1]", "quantile:w[0,1]",
                                     "sum:w[0,1]@0.5", "mean:w[a,b]"])
    def test_bad_specs_are_input_errors(self, bad):
        with pytest.raises(InputError):
            parse_agg(bad)


@pytest.fixture
def dataset(tmp_path):
    """The events as a directory of 3 part files (users straddle files) and a side file."""
    from tests.conftest import require_service
    from tests.engines.conftest import DASK, HAVE_DASK

    require_service(HAVE_DASK, DASK)
    frame = synthetic_events(3000, n_users=400, seed=2)
    d = tmp_path / "events"
    d.mkdir()
    for i, start in enumerate(range(0, 3000, 1000)):
        frame.iloc[start:start + 1000].to_parquet(d / f"part.{i}.parquet", index=False)
    (d / "_manifest.json").write_text("{}")  # not a part: skipped like pyarrow skips it
    frame.to_parquet(tmp_path / "events.parquet", index=False)
    return d


@pytest.fixture
def no_cluster(monkeypatch):
    """``local_client`` that starts nothing (Dask's local scheduler runs the tasks)."""
    import contextlib

    from pets.engines import _run

    started: list[int] = []

    @contextlib.contextmanager
    def fake(workers, **kw):
        started.append(workers)
        yield None

    monkeypatch.setattr(_run, "local_client", fake)
    return started


AGGS = "count,histogram:watch_seconds[0,60,600,7200],median:watch_seconds[0,7200]"
SAME = ["country", "statistic", "param", "mechanism", "scale", "epsilon", "delta", "rho"]


class TestReleaseEngineDask:
    def _args(self, src, tmp_path, out="r.parquet", *extra):
        return ["release", src, "--unit", "user_id", "--group-by", "country", "--keys",
                "DE,FR,IT", "--agg", AGGS, "--max-rows", "3", "--ledger", tmp_path / "l.db",
                "--out", tmp_path / out, *extra]

    def test_a_dataset_directory_on_a_local_cluster_releases_as_pandas(self, tmp_path,
                                                                        dataset, capsys):
        code, stdout, err = run(capsys, *self._args(dataset, tmp_path), "--engine", "dask",
                                "--workers", "1", "--epsilon", "1", "--budget-epsilon", "2",
                                "--json", "--status")
        assert code == 0, err
        payload = json.loads(stdout)
        assert payload["release"]["engine"] == "dask" and payload["release"]["workers"] == 1
        assert payload["release"]["query"]["engine"] == "dask"
        assert payload["status"]["spent"]["epsilon"] == pytest.approx(1.0)
        code, stdout, err = run(capsys, *self._args(tmp_path / "events.parquet", tmp_path,
                                                    "p.parquet"),
                                "--epsilon", "1", "--budget-epsilon", "2", "--dataset-id", "p",
                                "--json")
        assert code == 0, err
        assert json.loads(stdout)["release"]["engine"] == "pandas"
        dask_frame = pq.read_table(tmp_path / "r.parquet").to_pandas()
        pandas_frame = pq.read_table(tmp_path / "p.parquet").to_pandas()
        assert len(dask_frame) == 3 * (1 + 3 + 1)  # per key: count, 3 bins, median
        assert dask_frame[SAME].equals(pandas_frame[SAME])

    def test_budget_exhausted_exits_6_and_writes_nothing(self, tmp_path, dataset, capsys,
                                                        no_cluster):
        first = run(capsys, *self._args(dataset, tmp_path), "--engine", "dask", "--workers",
                    "2", "--epsilon", "1", "--budget-epsilon", "1.5")
        assert first[0] == 0, first[2]
        assert no_cluster == [2]
        code, _, err = run(capsys, *self._args(dataset, tmp_path, "again.parquet"), "--engine",
                           "dask", "--epsilon", "1")
        assert code == 6 and "BudgetExhausted" in err
        assert not (tmp_path / "again.parquet").exists()
        st = Ledger(tmp_path / "l.db").status(str(dataset.resolve()), "user_id")
        assert st.spent.epsilon == pytest.approx(1.0)

    @pytest.mark.parametrize(("extra", "match"), [
        (["--budget-epsilon", "1", "--rho", "0.5"], "pass --epsilon E instead of --rho"),
        (["--budget-epsilon", "1", "--epsilon", "0.5", "--level", "1.5"], "level"),
        (["--budget-epsilon", "1", "--epsilon", "0.5", "--agg", "median:nope[0,1]"], "nope"),
    ], ids=["rho-on-pure", "level", "unknown-column"])
    def test_refusals_exit_1_before_a_cluster_starts(self, tmp_path, dataset, capsys,
                                                     no_cluster, extra, match):
        code, _, err = run(capsys, *self._args(dataset, tmp_path), "--engine", "dask", *extra)
        assert code == 1 and match in err
        assert no_cluster == [] and not (tmp_path / "r.parquet").exists()
        led, dsid = Ledger(tmp_path / "l.db"), str(dataset.resolve())
        assert led.budget_of(dsid, "user_id") is None or \
            led.status(dsid, "user_id").spent.epsilon == 0

    def test_workers_without_the_dask_engine_is_a_usage_error(self, tmp_path, events, capsys):
        code, _, err = run(capsys, *self._args(events, tmp_path), "--workers", "2",
                           "--epsilon", "1", "--budget-epsilon", "2")
        assert code == 2 and "--workers needs --engine dask" in err
        assert not (tmp_path / "r.parquet").exists()

    def test_a_directory_needs_the_dask_engine(self, tmp_path, dataset, capsys):
        code, _, err = run(capsys, *self._args(dataset, tmp_path), "--epsilon", "1",
                           "--budget-epsilon", "2")
        assert code == 1 and "use --engine dask" in err

    @pytest.mark.parametrize(("damage", "which"), [
        ("garbage", 1), ("truncated", 1), ("garbage", 0), ("truncated", 0)])
    def test_an_unreadable_part_exits_1_spends_and_writes_nothing(self, tmp_path, dataset,
                                                                  capsys, no_cluster, damage,
                                                                  which):
        part = dataset / f"part.{which}.parquet"
        data = part.read_bytes()
        part.write_bytes(b"PAR1 not a parquet file PAR1" if damage == "garbage"
                         else data[: len(data) // 2] + data[-8:])
        code, _, err = run(capsys, *self._args(dataset, tmp_path), "--engine", "dask",
                           "--epsilon", "1", "--budget-epsilon", "2")
        assert code == 1 and "cannot read" in err and "Traceback" not in err
        assert f"part.{which}.parquet" in err  # the message names the part at fault
        assert not (tmp_path / "r.parquet").exists()
        led, dsid = Ledger(tmp_path / "l.db"), str(dataset.resolve())
        assert led.budget_of(dsid, "user_id") is None or \
            led.status(dsid, "user_id").releases == 0

    @pytest.mark.parametrize("engine", ["pandas", "dask"])
    def test_an_unwritable_out_is_refused_before_anything_is_spent(self, tmp_path, dataset,
                                                                   capsys, no_cluster, engine):
        # the release used to be drawn and spent, then the write failed with a raw OSError
        (tmp_path / "plain").write_text("a file")
        out = tmp_path / "plain" / "r.parquet"  # its "directory" is a file
        src = dataset if engine == "dask" else tmp_path / "events.parquet"
        code, _, err = run(capsys, "release", src, "--unit", "user_id", "--agg", "count",
                           "--epsilon", "1", "--budget-epsilon", "2", "--ledger",
                           tmp_path / "l.db", "--out", out, "--engine", engine)
        assert code == 1 and "cannot write --out" in err and "Traceback" not in err
        assert no_cluster == []  # refused before a cluster starts
        led, dsid = Ledger(tmp_path / "l.db"), str(src.resolve())
        assert led.budget_of(dsid, "user_id") is None or \
            led.status(dsid, "user_id").releases == 0

    def test_missing_input_with_the_dask_engine(self, tmp_path, dataset, capsys, no_cluster):
        code, _, err = run(capsys, *self._args(tmp_path / "nothing", tmp_path), "--engine",
                           "dask", "--epsilon", "1", "--budget-epsilon", "2")
        assert code == 1 and "does not exist" in err and no_cluster == []


class TestReleaseOnAnExistingCluster:
    def _args(self, src, tmp_path, out="r.parquet"):
        return ["release", src, "--unit", "user_id", "--group-by", "country", "--keys",
                "DE,FR,IT", "--agg", "count,sum:watch_seconds[0,3600]", "--max-rows", "3",
                "--ledger", tmp_path / "l.db", "--out", tmp_path / out, "--epsilon", "1",
                "--budget-epsilon", "2"]

    def test_scheduler_address_runs_on_that_cluster_and_leaves_it_running(
            self, tmp_path, dataset, capsys, monkeypatch):
        import warnings

        import distributed

        monkeypatch.chdir(tmp_path.parent)  # a relative INFILE is resolved for the workers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = distributed.LocalCluster(n_workers=1, processes=False,
                                               dashboard_address=None)
        try:
            address = cluster.scheduler_address
            code, stdout, err = run(capsys, *self._args(dataset.relative_to(tmp_path.parent),
                                                        tmp_path),
                                    "--engine", "dask", "--scheduler", address, "--json")
            assert code == 0, err
            rel = json.loads(stdout)["release"]
            assert rel["scheduler"] == address and rel["workers"] == 1
            assert rel["query"]["engine"] == "dask"
            assert len(pq.read_table(tmp_path / "r.parquet").to_pandas()) == 3 * 2
            assert cluster.status.name == "running"  # only our client was closed
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cluster.close()

    def test_a_cluster_without_workers_exits_1_instead_of_waiting_forever(
            self, tmp_path, dataset, capsys):
        # the computation used to wait for a worker that never came (the command hung)
        import warnings

        import distributed

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = distributed.LocalCluster(n_workers=0, processes=False,
                                               dashboard_address=None)
        try:
            address = cluster.scheduler_address
            code, _, err = run(capsys, *self._args(dataset, tmp_path), "--engine", "dask",
                               "--scheduler", address, "--connect-timeout", "1")
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cluster.close()
        assert code == 1 and f"no worker joined the Dask cluster at {address}" in err
        assert not (tmp_path / "r.parquet").exists()
        st = Ledger(tmp_path / "l.db").status(str(dataset.resolve()), "user_id")
        assert st.spent.epsilon == 0 and st.releases == 0

    def test_unreachable_scheduler_exits_1_spends_and_writes_nothing(self, tmp_path, dataset,
                                                                      capsys):
        import socket

        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        code, _, err = run(capsys, *self._args(dataset, tmp_path), "--engine", "dask",
                           "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1")
        assert code == 1
        assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 1 s" in err
        assert not (tmp_path / "r.parquet").exists()
        st = Ledger(tmp_path / "l.db").status(str(dataset.resolve()), "user_id")
        assert st.spent.epsilon == 0

    @pytest.mark.parametrize(("extra", "match"), [
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --engine dask"),
        (["--engine", "dask", "--workers", "1", "--scheduler", "tcp://127.0.0.1:1"],
         "--scheduler and --workers exclude each other"),
    ], ids=["pandas-engine", "with-workers"])
    def test_usage_errors_exit_2(self, tmp_path, dataset, capsys, extra, match):
        code, _, err = run(capsys, *self._args(dataset, tmp_path), *extra)
        assert code == 2 and match in err

    def test_the_environment_default_yields_to_the_pandas_engine(self, tmp_path, events,
                                                                 capsys, monkeypatch):
        monkeypatch.setenv("PETS_DASK_SCHEDULER", "tcp://127.0.0.1:1")
        code, stdout, err = run(capsys, *self._args(events, tmp_path), "--json")
        assert code == 0, err
        assert json.loads(stdout)["release"]["engine"] == "pandas"


# -- Parquet modular encryption (pets protect --engine dask --parquet-encrypt) -----------------

PQ_KEK = "local://eu/parquet"


@pytest.fixture(scope="module")
def protected_events(tmp_path_factory):
    """The same events protected twice by ``pets protect --engine dask --workers 1``: plain,
    and with country and watch_seconds (and the footer) under Parquet modular encryption."""
    import secrets
    from importlib.resources import files

    from tests.conftest import require_service
    from tests.engines.conftest import DASK, HAVE_DASK

    require_service(HAVE_DASK, DASK)
    root = tmp_path_factory.mktemp("pme")
    env = {"PETS_MASTER_KEY": secrets.token_bytes(32).hex(), "PETS_KEYRING": str(root / "ring"),
           "PETS_PRINCIPAL": "etl",
           "PETS_JURISDICTION": "EU"}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for k, v in env.items():
            mp.setenv(k, v)
        for var in ("PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS", "PETS_PKCS11_TOKEN",
                    "PETS_PKCS11_LIBRARY",
                    "PETS_KEYRING_PASSPHRASE", "PETS_DASK_SCHEDULER"):
            mp.delenv(var, raising=False)
        assert main(["keys", "init", "--name", "eu"]) == 0
        assert main(["boundary", "init", "--signing-kek", "local://eu/boundary", "--log",
                     str(root / "audit.jsonl")]) == 0
        for k in ("pseudonyms", "parquet"):
            assert main(["keys", "create", f"local://eu/{k}", "--jurisdiction", "EU"]) == 0
        (root / "policy.yaml").write_text(
            (files("pets") / "examples" / "events-policy.yaml").read_text())
        frame = synthetic_events(3000, n_users=400, seed=2)
        (root / "raw").mkdir()
        for i, start in enumerate(range(0, 3000, 1000)):  # 3 parts, users straddle them
            frame.iloc[start:start + 1000].to_parquet(root / "raw" / f"p{i}.parquet",
                                                      index=False)
        common = ["protect", "raw", "--policy", "policy.yaml", "--engine", "dask",
                  "--workers", "1"]
        assert main([*common, "--out", "plain"]) == 0
        assert main([*common, "--out", "enc", "--parquet-encrypt",
                     f"{PQ_KEK}:country,watch_seconds", "--footer-key", PQ_KEK]) == 0
    return {"root": root, "env": env, "plain": root / "plain" / "events",
            "enc": root / "enc" / "events"}


@pytest.fixture
def pme(protected_events, monkeypatch, tmp_path):
    """The driver's environment for the encrypted dataset (workers inherit it), and a
    boundary on its keyring whose pinned ledger is ``tmp_path / "l.db"``."""
    for k, v in protected_events["env"].items():
        monkeypatch.setenv(k, v)
    for var in ("PETS_BOUNDARY_KEYS", "PETS_PKCS11_TOKEN", "PETS_PKCS11_LIBRARY",
                "PETS_KEYRING_PASSPHRASE", "PETS_DASK_SCHEDULER"):
        monkeypatch.delenv(var, raising=False)
    _boundary_at(tmp_path / "pme-boundary", tmp_path / "pme-audit.jsonl", tmp_path / "l.db",
                 monkeypatch)
    return protected_events


PME_AGGS = "count,histogram:watch_seconds[0,60,600,7200],sum:watch_seconds[0,3600]"


class TestReleaseOfAModularEncryptedDataset:
    def _args(self, src, tmp_path, out="r.parquet", *extra):
        return ["release", src, "--unit", "user_id", "--group-by", "country", "--keys",
                "DE,FR,IT", "--agg", PME_AGGS, "--max-rows", "3", "--ledger",
                tmp_path / "l.db", "--out", tmp_path / out, "--engine", "dask", *extra]

    def test_the_dataset_is_encrypted_at_rest(self, pme):
        from pets.boundary._dataset import read_index

        assert read_index(pme["enc"]).encrypted and not read_index(pme["plain"]).encrypted
        part = next(pme["enc"].glob("part.*.parquet"))
        with pytest.raises(OSError):  # footer (schema) and columns: nothing without the keys
            pq.read_table(part)

    def test_release_equals_the_release_of_the_unencrypted_protect(self, tmp_path, pme,
                                                                   capsys, no_cluster):
        code, stdout, err = run(capsys, *self._args(pme["enc"], tmp_path), "--epsilon", "1",
                                "--budget-epsilon", "2", "--json")
        assert code == 0, err
        rel = json.loads(stdout)["release"]
        assert rel["parquet_encryption"] is True and rel["rows"] == 3 * (1 + 3 + 1)
        code, stdout, err = run(capsys, *self._args(pme["plain"], tmp_path, "p.parquet"),
                                "--epsilon", "1", "--budget-epsilon", "2", "--json")
        assert code == 0, err
        assert json.loads(stdout)["release"]["parquet_encryption"] is False
        enc = pq.read_table(tmp_path / "r.parquet").to_pandas()
        plain = pq.read_table(tmp_path / "p.parquet").to_pandas()
        assert enc[SAME].equals(plain[SAME])

    def test_exact_aggregates_equal_those_of_the_unencrypted_protect(self, pme):
        # the bounded sums the noise is added to, with one sampling seed: equal to the unit
        from pets.engines._dp import BoundingSpec, bounded_aggregates
        from pets.engines._parquet import ParquetEncryption, read_dataset
        from pets.jurisdiction import Context
        from pets.keys import KeyConfig

        enc = ParquetEncryption.reader(KeyConfig(keyring=Path(pme["env"]["PETS_KEYRING"]),
                                                 keyring_explicit=True), Context("EU", "etl"))
        spec = BoundingSpec("user_id", ("country",), (("DE",), ("FR",), ("IT",)),
                            (("count",),), 1, 3, seed=11)
        got = bounded_aggregates(read_dataset(pme["enc"], encryption=enc), spec,
                                 progress=False)
        want = bounded_aggregates(read_dataset(pme["plain"]), spec, progress=False)
        assert got.vectors[("count",)].tolist() == want.vectors[("count",)].tolist()
        assert sum(want.vectors[("count",)]) > 0

    def test_on_a_local_cluster_of_worker_processes(self, tmp_path, pme, capsys):
        # the workers open the keyring themselves (PETS_MASTER_KEY in their environment)
        code, stdout, err = run(capsys, *self._args(pme["enc"], tmp_path), "--workers", "1",
                                "--epsilon", "1", "--budget-epsilon", "2", "--json")
        assert code == 0, err
        rel = json.loads(stdout)["release"]
        assert rel["workers"] == 1 and rel["parquet_encryption"] is True
        assert len(pq.read_table(tmp_path / "r.parquet")) == 3 * (1 + 3 + 1)

    def test_another_jurisdiction_exits_4_spends_and_writes_nothing(self, tmp_path, pme,
                                                                     capsys, no_cluster):
        code, _, err = run(capsys, *self._args(pme["enc"], tmp_path), "--epsilon", "1",
                           "--budget-epsilon", "2", "--jurisdiction", "US")
        assert code == 4 and "JurisdictionError" in err and "belongs to EU" in err
        assert no_cluster == [] and not (tmp_path / "r.parquet").exists()
        assert Ledger(tmp_path / "l.db").budget_of(str(pme["enc"].resolve()), "user_id") is None

    def test_a_destroyed_kek_exits_7_spends_and_writes_nothing(self, tmp_path, pme, capsys,
                                                               no_cluster, monkeypatch):
        import shutil

        ring = tmp_path / "ring"  # a copy: the other tests keep their key
        shutil.copytree(pme["env"]["PETS_KEYRING"], ring)
        monkeypatch.setenv("PETS_KEYRING", str(ring))
        # the copy is another keyring: its own boundary (the pinned keyring is the original)
        _boundary_at(tmp_path / "copy-boundary", tmp_path / "copy-audit.jsonl",
                     tmp_path / "l.db", monkeypatch)
        assert main(["keys", "destroy", PQ_KEK, "--yes"]) == 0
        capsys.readouterr()
        code, _, err = run(capsys, *self._args(pme["enc"], tmp_path), "--epsilon", "1",
                           "--budget-epsilon", "2")
        assert code == 7 and "KeyDestroyedError" in err
        assert pme["env"]["PETS_MASTER_KEY"] not in err
        assert no_cluster == [] and not (tmp_path / "r.parquet").exists()
        assert Ledger(tmp_path / "l.db").budget_of(str(pme["enc"].resolve()), "user_id") is None

    def test_the_pandas_engine_names_the_dask_engine(self, tmp_path, pme, capsys):
        part = next(pme["enc"].glob("part.*.parquet"))
        code, _, err = run(capsys, "release", part, "--unit", "user_id", "--agg", "count",
                           "--epsilon", "1", "--budget-epsilon", "2", "--ledger",
                           tmp_path / "l.db", "--out", tmp_path / "r.parquet")
        assert code == 1 and "Parquet modular encryption" in err and "--engine dask" in err
        assert not (tmp_path / "r.parquet").exists()

    def test_the_export_gate_refuses_it(self, tmp_path, pme, capsys):
        code, _, err = run(capsys, "export", pme["enc"], "--to", "US", "--out",
                           tmp_path / "us", "--columns", "allowed")
        assert code == 1 and "Parquet modular encryption" in err
        assert not (tmp_path / "us").exists()

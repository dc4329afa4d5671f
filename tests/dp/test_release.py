"""Release evidence in the ledger, and every parameter refused before anything is spent."""

from __future__ import annotations

import sqlite3
import time

import pandas as pd
import pytest

from pets import InputError, IntegrityError
from pets.cli import main
from pets.dp import Budget, Ledger, Session, release_digest
from pets.dp._ledger import SCHEMA_VERSION


@pytest.fixture
def frame():
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(30)], "g": ["a", "b", "c"] * 10,
                         "x": [float(i % 5) for i in range(30)], "s": ["t"] * 30})


@pytest.fixture
def session(frame, tmp_path):
    return Session(frame, privacy_unit="user_id", budget=Budget.approx(2.0, 1e-5),
                   ledger=Ledger(tmp_path / "l.db"), dataset_id="d")


class TestReleaseRecord:
    def test_the_digest_is_recorded_with_the_spend(self, session):
        r = session.query().count().release(epsilon=0.5)
        rec = session.ledger.release_record(r.release_id)
        assert rec is not None and rec.digest == r.digest() and rec.parent_id is None
        assert (rec.dataset_id, rec.unit, rec.epsilon) == ("d", "user_id", 0.5)
        assert len(r.release_id) == 32 and r.metadata()["release_id"] == r.release_id

    def test_the_digest_survives_a_parquet_round_trip(self, session, tmp_path):
        r = session.query(by="g", keys=["a", "b", "c"]).count().mean(
            "x", bounds=(0, 5)).release(epsilon=0.5)
        r.frame.to_parquet(tmp_path / "r.parquet", index=False)
        back = pd.read_parquet(tmp_path / "r.parquet")
        assert release_digest(back, r.metadata()) == r.digest()

    def test_records_are_append_only(self, session):
        r = session.query().count().release(epsilon=0.5)
        con = sqlite3.connect(session.ledger.path)
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("UPDATE releases SET digest = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM releases")
        assert session.ledger.check_release(r.release_id, r.digest()).digest == r.digest()

    def test_a_mismatch_is_an_integrity_error(self, session):
        r = session.query().count().release(epsilon=0.5)
        with pytest.raises(IntegrityError, match="edited after it was made"):
            session.ledger.check_release(r.release_id, "0" * 64)

    def test_an_old_ledger_gains_the_releases_table_and_keeps_its_spends(self, tmp_path):
        path = tmp_path / "old.db"
        con = sqlite3.connect(path)
        con.executescript("""
            CREATE TABLE budgets (dataset_id TEXT NOT NULL, unit TEXT NOT NULL, kind TEXT NOT
              NULL, epsilon REAL NOT NULL, delta REAL NOT NULL, rho REAL NOT NULL, created_at
              TEXT NOT NULL, PRIMARY KEY (dataset_id, unit));
            CREATE TABLE spends (id INTEGER PRIMARY KEY AUTOINCREMENT, dataset_id TEXT NOT
              NULL, unit TEXT NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL, rho REAL
              NOT NULL, query TEXT NOT NULL, at TEXT NOT NULL);
            INSERT INTO budgets VALUES ('d', 'u', 'pure', 1.0, 0.0, 0.0, 'then');
            INSERT INTO spends (dataset_id, unit, epsilon, delta, rho, query, at)
              VALUES ('d', 'u', 0.25, 0.0, 0.0, 'old', 'then');
        """)
        con.close()
        led = Ledger(path)
        assert led.status("d", "u").spent.epsilon == 0.25
        assert led.releases("d", "u") == []
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    def test_a_newer_ledger_is_refused(self, tmp_path):
        path = tmp_path / "new.db"
        sqlite3.connect(path).execute("PRAGMA user_version = 99")
        with pytest.raises(InputError, match="newer than this pets"):
            Ledger(path)

    def test_a_file_that_is_not_a_ledger_is_an_input_error(self, tmp_path):
        path = tmp_path / "data.parquet"
        path.write_bytes(b"PAR1" + b"\0" * 200)
        with pytest.raises(InputError, match="not a pets ledger"):
            Ledger(path)


class TestNothingSpentOnBadInput:
    """Each bad parameter is refused with an InputError naming it; the ledger is unchanged."""

    @pytest.mark.parametrize(("build", "match"), [
        (lambda s: s.query().count().release(epsilon=1e-30), "too small: the noise would exceed"),
        (lambda s: s.query(max_rows=10**6).sum("x", bounds=(0, 1)).release(epsilon=1e-6),
         "noise scale"),
        (lambda s: s.query(max_rows=2**40).count().release(epsilon=1.0), "max_rows"),
        (lambda s: s.query(max_groups=2**40).count().release(epsilon=1.0), "max_groups"),
        (lambda s: s.query().count().release(epsilon=1.0, level=1.5), "level"),
        (lambda s: s.query().count().release(epsilon=float("nan")), "epsilon"),
        (lambda s: s.query().sum("x", bounds=(5, 1)).release(epsilon=1.0), "reversed"),
        (lambda s: s.query().sum("nope", bounds=(0, 1)).release(epsilon=1.0), "nope"),
        (lambda s: s.query().sum("s", bounds=(0, 1)).release(epsilon=1.0), "not numeric"),
        (lambda s: s.query().quantile("x", 0.5, bounds=(0, 1), candidates=10**9).release(
            epsilon=1.0), "candidates"),
        (lambda s: s.query(by="g", keys="private").count().release(epsilon=1.0, delta=2.0),
         "delta"),
    ])
    def test_session(self, session, build, match):
        before = session.budget.spent
        started = time.perf_counter()
        with pytest.raises(InputError, match=match):
            build(session)
        assert session.budget.spent == before and session.budget.releases == 0
        assert time.perf_counter() - started < 30

    def test_private_candidate_keys_beyond_max_keys(self, frame, tmp_path):
        s = Session(frame.assign(g=[f"k{i}" for i in range(30)]), privacy_unit="user_id",
                    budget=Budget.approx(2.0, 1e-5), max_keys=10)
        with pytest.raises(InputError, match="max_keys=10"):
            s.query(by="g", keys="private").count().release(epsilon=1.0, delta=1e-6)
        assert s.budget.spent.epsilon == 0

    def test_decimals_out_of_range(self, session):
        r = session.query().count().release(epsilon=0.5)
        with pytest.raises(InputError, match="decimals"):
            r.postprocess(decimals=400)


class TestCommandRefusesBeforeSpending:
    @pytest.fixture
    def src(self, frame, tmp_path, monkeypatch):
        from tests.security.test_release_evidence import _cli_boundary

        _cli_boundary(tmp_path, monkeypatch, tmp_path / "l.db")
        p = tmp_path / "e.parquet"
        frame.to_parquet(p, index=False)
        return p

    def _run(self, src, tmp_path, *extra, out=None, ledger=None):
        return main(["release", str(src), "--unit", "user_id", "--agg", "count",
                     "--epsilon", "0.5", "--budget-epsilon", "2",
                     "--ledger", str(ledger or tmp_path / "l.db"),
                     "--out", str(out or tmp_path / "r.parquet"), *extra])

    def _spent(self, tmp_path, src):
        if not (tmp_path / "l.db").exists():
            return 0.0
        b = Ledger(tmp_path / "l.db").budget_of(str(src.resolve()), "user_id")
        return 0.0 if b is None else Ledger(tmp_path / "l.db").status(
            str(src.resolve()), "user_id").spent.epsilon

    def test_out_over_the_input(self, src, tmp_path, capsys):
        data = src.read_bytes()
        assert self._run(src, tmp_path, out=src) == 1
        assert "is the input" in capsys.readouterr().err
        assert src.read_bytes() == data and self._spent(tmp_path, src) == 0

    def test_out_over_the_ledger(self, src, tmp_path, capsys):
        assert self._run(src, tmp_path, out=tmp_path / "l.db") == 1
        assert "is the ledger" in capsys.readouterr().err
        assert self._spent(tmp_path, src) == 0

    def test_ledger_is_the_input(self, src, tmp_path, capsys):
        data = src.read_bytes()
        assert self._run(src, tmp_path, ledger=src) == 2  # only the pinned ledger
        assert "--ledger" in capsys.readouterr().err and src.read_bytes() == data

    def test_decimals_out_of_range_is_a_usage_error(self, src, tmp_path):
        assert self._run(src, tmp_path, "--decimals", "400") == 2
        assert self._spent(tmp_path, src) == 0

    def test_huge_max_rows(self, src, tmp_path, capsys):
        assert self._run(src, tmp_path, "--max-rows", str(2**40)) == 1
        assert "max_rows" in capsys.readouterr().err
        assert self._spent(tmp_path, src) == 0

    def test_the_file_carries_its_release_id(self, src, tmp_path):
        import json

        import pyarrow.parquet as pq

        assert self._run(src, tmp_path, "--nonnegative") == 0
        meta = json.loads(pq.read_schema(tmp_path / "r.parquet").metadata[b"pets.release"])
        rec = Ledger(tmp_path / "l.db").release_record(meta["release_id"])
        assert rec is not None and rec.parent_id is not None  # post-processed: derived
        back = pd.read_parquet(tmp_path / "r.parquet")
        assert release_digest(back, meta) == rec.digest

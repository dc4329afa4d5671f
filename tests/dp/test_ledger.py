import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from pets import BudgetExhausted, InputError
from pets.dp import Budget, Ledger, PrivacyLoss


def _race(path, barrier, results):
    led = Ledger(path)
    barrier.wait()
    try:
        led.spend("ds", "user_id", PrivacyLoss(epsilon=0.25), lambda: os.getpid(), query="race")
        results.put("ok")
    except BudgetExhausted:
        results.put("refused")


class TestLedger:
    def test_spend_records_and_returns_the_result(self, tmp_path):
        led = Ledger(tmp_path / "l.db")
        led.register("ds", "user_id", Budget.pure(1.0))
        assert led.spend("ds", "user_id", PrivacyLoss(0.4), lambda: 42, query="q1") == 42
        st = led.status("ds", "user_id")
        assert (st.spent.epsilon, st.remaining.epsilon, st.releases) == (0.4, 0.6, 1)
        assert [r.query for r in led.history("ds", "user_id")] == ["q1"]

    def test_overspend_is_refused_and_nothing_is_spent(self, tmp_path):
        led = Ledger(tmp_path / "l.db")
        led.register("ds", "user_id", Budget.pure(1.0))
        led.spend("ds", "user_id", PrivacyLoss(0.75), lambda: None)
        ran = []
        with pytest.raises(BudgetExhausted, match="nothing was spent"):
            led.spend("ds", "user_id", PrivacyLoss(0.5), lambda: ran.append(1))
        assert ran == []
        assert led.status("ds", "user_id").spent.epsilon == 0.75

    def test_float_rounding_cannot_overspend(self):
        # ten spends of the float 0.1 add up to 1.0000000000000000555 > 1 (their rounded float
        # sum is exactly 1.0): the tenth must be refused, and the message shows why
        led = Ledger()
        led.register("ds", "u", Budget.pure(1.0))
        for _ in range(9):
            led.spend("ds", "u", PrivacyLoss(0.1), lambda: None)
        with pytest.raises(BudgetExhausted, match=r"only ε=0\.09999999999999998 of"):
            led.spend("ds", "u", PrivacyLoss(0.1), lambda: None)
        led.register("ds2", "u", Budget.pure(1.0))
        for _ in range(8):  # binary fractions add exactly: the whole budget can be used
            led.spend("ds2", "u", PrivacyLoss(0.125), lambda: None)
        assert led.status("ds2", "u").remaining.epsilon == 0

    def test_delta_is_budgeted_separately(self):
        led = Ledger()
        led.register("ds", "u", Budget.approx(10.0, 1e-6))
        led.spend("ds", "u", PrivacyLoss(1.0, 9e-7), lambda: None)
        with pytest.raises(BudgetExhausted, match="δ"):
            led.spend("ds", "u", PrivacyLoss(1.0, 2e-7), lambda: None)

    def test_failed_run_still_records_the_spend(self, tmp_path):
        # run() may fail after drawing noise, and the failure may depend on it: rolling back
        # would let a caller retry for free and learn from the failures (a free side channel)
        led = Ledger(tmp_path / "l.db")
        led.register("ds", "u", Budget.pure(1.0))

        def boom():
            raise RuntimeError("noise failed")

        with pytest.raises(RuntimeError, match="noise failed"):
            led.spend("ds", "u", PrivacyLoss(0.5), boom)
        st = Ledger(tmp_path / "l.db").status("ds", "u")
        assert st.releases == 1 and st.spent.epsilon == 0.5
        with pytest.raises(RuntimeError):
            led.spend("ds", "u", PrivacyLoss(0.5), boom)
        with pytest.raises(BudgetExhausted):  # no free retries
            led.spend("ds", "u", PrivacyLoss(0.5), boom)

    def test_budgets_are_per_dataset_and_unit(self):
        led = Ledger()
        led.register("a", "user_id", Budget.pure(1.0))
        led.register("a", "household", Budget.pure(1.0))
        led.spend("a", "user_id", PrivacyLoss(1.0), lambda: None)
        assert led.status("a", "household").spent.epsilon == 0.0

    def test_a_registered_budget_cannot_be_changed(self, tmp_path):
        led = Ledger(tmp_path / "l.db")
        led.register("ds", "u", Budget.pure(1.0))
        with pytest.raises(InputError, match="cannot change"):
            Ledger(tmp_path / "l.db").register("ds", "u", Budget.pure(100.0))

    @pytest.mark.parametrize("sql", [
        "UPDATE budgets SET epsilon = 100", "DELETE FROM budgets",
        "INSERT OR REPLACE INTO budgets VALUES ('ds', 'u', 'pure', 100, 0, 0, 'now')",
        "UPDATE spends SET epsilon = 0", "DELETE FROM spends"])
    def test_tables_are_append_only_even_through_sql(self, tmp_path, sql):
        led = Ledger(tmp_path / "l.db")
        led.register("ds", "u", Budget.pure(1.0))
        led.spend("ds", "u", PrivacyLoss(0.5), lambda: None)
        con = sqlite3.connect(tmp_path / "l.db")
        with pytest.raises(sqlite3.IntegrityError, match="pets ledger"):
            con.execute(sql)
        con.close()
        st = Ledger(tmp_path / "l.db").status("ds", "u")
        assert (st.budget, st.spent.epsilon, st.releases) == (Budget.pure(1.0), 0.5, 1)

    def test_unregistered_dataset_is_an_input_error(self):
        with pytest.raises(InputError, match="no budget registered"):
            Ledger().spend("x", "u", PrivacyLoss(0.1), lambda: None)

    def test_spends_survive_reopening(self, tmp_path):
        Ledger(tmp_path / "l.db").register("ds", "u", Budget.pure(1.0))
        Ledger(tmp_path / "l.db").spend("ds", "u", PrivacyLoss(0.3), lambda: None)
        assert Ledger(tmp_path / "l.db").status("ds", "u").spent.epsilon == 0.3

    def test_concurrent_processes_cannot_overspend(self, tmp_path):
        path = tmp_path / "l.db"
        Ledger(path).register("ds", "user_id", Budget.pure(1.0))
        ctx = mp.get_context("fork")
        n = 7
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(path, barrier, results)) for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcomes = sorted(results.get(timeout=5) for _ in range(n))
        assert outcomes.count("ok") == 4 and outcomes.count("refused") == 3
        st = Ledger(path).status("ds", "user_id")
        assert st.spent.epsilon == 1.0 and st.releases == 4

    def _child(self, path, kill_inside_run):
        code = textwrap.dedent(f"""
            import os, signal
            from pets.dp import Ledger, PrivacyLoss
            led = Ledger({str(path)!r})
            def run():
                if {kill_inside_run!r}:
                    os.kill(os.getpid(), signal.SIGKILL)
                return 1
            led.spend("ds", "u", PrivacyLoss(0.5), run)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        return subprocess.run([sys.executable, "-c", code], timeout=60).returncode

    def test_crash_after_spend_keeps_the_recorded_spend(self, tmp_path):
        path = tmp_path / "l.db"
        Ledger(path).register("ds", "u", Budget.pure(1.0))
        assert self._child(path, kill_inside_run=False) == -signal.SIGKILL
        assert Ledger(path).status("ds", "u").spent.epsilon == 0.5

    def test_crash_before_commit_spends_nothing_and_released_nothing(self, tmp_path):
        path = tmp_path / "l.db"
        Ledger(path).register("ds", "u", Budget.pure(1.0))
        assert self._child(path, kill_inside_run=True) == -signal.SIGKILL
        assert Ledger(path).status("ds", "u").releases == 0

    def test_directory_path_is_rejected(self, tmp_path):
        with pytest.raises(InputError, match="directory"):
            Ledger(tmp_path)

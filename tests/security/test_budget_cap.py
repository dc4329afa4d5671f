"""Attack class: overspend the DP budget by opening fresh per-dataset budgets.

Budgets are kept per (dataset id, unit), and both are the caller's choice: the review got a
fresh ε for the same 5,000 people from a copy of the file, another ``--dataset-id`` and another
unit column. The boundary's ledger now has a cap over every dataset and unit, set once at
``pets boundary init``; each attempt past it is refused with exit 6 and nothing spent.
"""

from __future__ import annotations

import shutil

import pytest

from pets.cli import main
from pets.dp import Ledger
from tests.security._cli_env import ENV, LEDGER, UNSET


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    for var in UNSET:
        monkeypatch.delenv(var, raising=False)
    assert main(["keys", "init", "--name", "eu"]) == 0
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary", "--ledger",
                 LEDGER, "--max-epsilon", "1.5"]) == 0
    assert main(["datasets", "generate", "--users", "300", "--out", "users.parquet"]) == 0
    capsys.readouterr()
    return tmp_path


def _release(src: str, *extra: str) -> int:
    return main(["release", src, "--unit", "user_id", "--agg", "count", "--epsilon", "1",
                 "--budget-epsilon", "1", "--out", "r.parquet", *extra])


@pytest.mark.parametrize("evade", ["copy", "dataset-id", "unit"])
def test_a_fresh_per_dataset_budget_does_not_pass_the_cap(env, capsys, evade):
    assert _release("users.parquet") == 0
    if evade == "copy":
        shutil.copy(env / "users.parquet", env / "copy.parquet")
        code = _release("copy.parquet")
    elif evade == "dataset-id":
        code = _release("users.parquet", "--dataset-id", "other")
    else:
        code = main(["release", "users.parquet", "--unit", "email", "--agg", "count",
                     "--epsilon", "1", "--budget-epsilon", "1", "--out", "r2.parquet"])
    err = capsys.readouterr().err
    assert code == 6, err
    assert "the ledger's cap over every dataset and unit is ε=1.5" in err
    import sqlite3

    with sqlite3.connect(env / LEDGER) as con:  # every spend, whatever its dataset or unit
        (spent,) = con.execute("SELECT SUM(epsilon) FROM spends").fetchone()
    assert spent == pytest.approx(1.0)


def test_the_cap_cannot_be_changed(env):
    with pytest.raises(Exception, match="cannot be changed"):
        Ledger(env / LEDGER).set_cap(100.0)
    assert Ledger(env / LEDGER).cap().epsilon == 1.5


def test_a_python_session_on_the_boundary_ledger_must_report_to_the_log(env):
    """The review's lower finding: Session(ledger=pinned, audit=None) released unlogged."""
    import pandas as pd

    from pets import InputError
    from pets.dp import Budget, Session

    frame = pd.read_parquet(env / "users.parquet")
    with pytest.raises(InputError, match="belongs to a boundary: pass audit="):
        Session(frame, privacy_unit="user_id", budget=Budget.pure(1.0),
                ledger=Ledger(env / LEDGER), dataset_id="users")
    seen = []
    s = Session(frame, privacy_unit="user_id", budget=Budget.pure(1.0),
                ledger=Ledger(env / LEDGER), dataset_id="users", audit=seen.append)
    s.query().count().release(epsilon=0.1)
    assert [e.kind for e in seen] == ["dp.release"]

"""A durable privacy-budget ledger on SQLite, shared safely by concurrent processes.

One table holds the total :class:`~pets.dp.Budget` of each (dataset id, privacy unit); another
holds one row per release with the ε, δ and ρ it spent; a third (``releases``) holds the
*evidence* of each :class:`~pets.dp.Release`: its id and the digest of its table and metadata,
written in the same transaction as the spend (and, for a post-processed release, the id of the
release it was derived from). The export gate lets a release leave only if its digest,
recomputed from what is being exported, equals the one recorded here
(:meth:`Ledger.check_release`). A ledger made before the ``releases`` table existed gains it,
empty, the first time it is opened (one transaction; nothing else changes). Every spend runs in a ``BEGIN
IMMEDIATE`` transaction (SQLite's write lock, taken *before* reading the total), so two
processes can never both read "enough left" and jointly overspend. The database runs in WAL
mode with ``synchronous=FULL``: a committed spend survives a crash or power loss. Triggers make
the tables append-only (a recorded budget cannot be updated, replaced or deleted, nor a spend
updated or deleted, nor a release record), which stops mistakes through SQL tools — not someone with write access to
the file, who can drop triggers or the file itself: protect the ledger like the data.

:meth:`Ledger.spend` takes the function that draws the noise and runs it *inside* the
transaction, after the spend row is written and before the commit: the result reaches the
caller only once the spend is durable. If ``run`` raises, the spend is *still* committed and
the exception re-raised: noise may already have been drawn, and a failure that depends on it
(or on the data) must not be retried for free. A crash (the process dies) before the commit
leaves nothing spent — and nothing released.

Examples:
    >>> from pets.dp import Budget, Ledger, PrivacyLoss
    >>> led = Ledger()                          # in memory; Ledger("budget.db") persists
    >>> led.register("events", "user_id", Budget.pure(1.0))
    Budget(kind='pure', epsilon=1.0, delta=0.0, rho=0.0)
    >>> led.spend("events", "user_id", PrivacyLoss(epsilon=0.75), lambda: "noisy result",
    ...           query="count by country")
    'noisy result'
    >>> led.status("events", "user_id").remaining.epsilon
    0.25
    >>> led.spend("events", "user_id", PrivacyLoss(epsilon=0.5), lambda: "never run")
    Traceback (most recent call last):
    ...
    pets._errors.BudgetExhausted: release needs ε=0.5 but only ε=0.25 of ε = 1 (pure DP, basic composition) remains for dataset 'events', unit 'user_id'; nothing was spent
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pets._errors import BudgetExhausted, InputError, IntegrityError
from pets.dp._budget import Budget, PrivacyLoss

__all__ = ["BudgetStatus", "Ledger", "ReleaseRecord", "SpendRecord"]

T = TypeVar("T")

#: ``PRAGMA user_version`` of the schema below (0: a ledger from before the releases table).
SCHEMA_VERSION = 3

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS budgets (
    dataset_id TEXT NOT NULL,
    unit TEXT NOT NULL,
    kind TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    rho REAL NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (dataset_id, unit)
);
CREATE TABLE IF NOT EXISTS spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id TEXT NOT NULL,
    unit TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    rho REAL NOT NULL,
    query TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spends_by_key ON spends (dataset_id, unit);
CREATE TRIGGER IF NOT EXISTS budgets_no_update BEFORE UPDATE ON budgets
BEGIN SELECT RAISE(ABORT, 'pets ledger: a recorded budget cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS budgets_no_delete BEFORE DELETE ON budgets
BEGIN SELECT RAISE(ABORT, 'pets ledger: a recorded budget cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS budgets_no_replace BEFORE INSERT ON budgets
WHEN EXISTS (SELECT 1 FROM budgets WHERE dataset_id = NEW.dataset_id AND unit = NEW.unit)
BEGIN SELECT RAISE(ABORT, 'pets ledger: a recorded budget cannot be replaced'); END;
CREATE TRIGGER IF NOT EXISTS spends_no_update BEFORE UPDATE ON spends
BEGIN SELECT RAISE(ABORT, 'pets ledger: spends are append-only'); END;
CREATE TRIGGER IF NOT EXISTS spends_no_delete BEFORE DELETE ON spends
BEGIN SELECT RAISE(ABORT, 'pets ledger: spends are append-only'); END;
CREATE TABLE IF NOT EXISTS releases (
    release_id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    unit TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    rho REAL NOT NULL,
    created TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    spend_id INTEGER REFERENCES spends (id),
    parent_id TEXT REFERENCES releases (release_id)
);
CREATE TRIGGER IF NOT EXISTS releases_no_update BEFORE UPDATE ON releases
BEGIN SELECT RAISE(ABORT, 'pets ledger: release records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS releases_no_delete BEFORE DELETE ON releases
BEGIN SELECT RAISE(ABORT, 'pets ledger: release records are append-only'); END;
CREATE TABLE IF NOT EXISTS caps (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    rho REAL NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS caps_no_update BEFORE UPDATE ON caps
BEGIN SELECT RAISE(ABORT, 'pets ledger: the cap cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS caps_no_delete BEFORE DELETE ON caps
BEGIN SELECT RAISE(ABORT, 'pets ledger: the cap cannot be deleted'); END;
PRAGMA user_version = 3;
COMMIT;
"""

_MISMATCH = "release {rid!r} does not match its ledger record (edited after it was made?)"


@dataclass(frozen=True)
class SpendRecord:
    """One recorded release: what it spent, a description of the query, and when."""

    epsilon: float
    delta: float
    rho: float
    query: str
    at: str


@dataclass(frozen=True)
class ReleaseRecord:
    """The evidence of one release: its id, the digest of its table and metadata
    (:meth:`pets.dp.Release.digest`), what it cost, when it was made, its metadata as JSON, and
    the release it was post-processed from (``None`` for a release that spent budget)."""

    release_id: str
    digest: str
    dataset_id: str
    unit: str
    epsilon: float
    delta: float
    rho: float
    created: str
    metadata_json: str
    parent_id: str | None


@dataclass(frozen=True)
class BudgetStatus:
    """The total budget, what has been spent (basic composition) and what remains."""

    dataset_id: str
    unit: str
    budget: Budget
    spent: PrivacyLoss
    remaining: PrivacyLoss
    releases: int

    def as_dict(self) -> dict[str, object]:
        return {"dataset_id": self.dataset_id, "unit": self.unit, "kind": self.budget.kind,
                "total": self.budget.as_loss().as_dict(), "spent": self.spent.as_dict(),
                "remaining": self.remaining.as_dict(), "releases": self.releases}

    def __str__(self) -> str:
        b = self.budget
        if b.kind == "zcdp":
            parts = [f"ρ spent {self.spent.rho:.6g} of {b.rho:g}, remaining "
                     f"{self.remaining.rho:.6g}"]
        else:
            parts = [f"ε spent {self.spent.epsilon:.6g} of {b.epsilon:g}, remaining "
                     f"{self.remaining.epsilon:.6g}"]
        if b.delta:
            parts.append(f"δ spent {self.spent.delta:.3g} of {b.delta:.3g}")
        return (f"{self.dataset_id} / {self.unit}: " + "; ".join(parts)
                + f" ({self.releases} releases; {b.describe()})")


def _num(v: float) -> str:
    """Short when that is exact, else every digit (``0.09999999999999998``, not ``0.1``)."""
    short = f"{v:.6g}"
    return short if float(short) == v else repr(v)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


class Ledger:
    """A privacy-budget ledger stored in SQLite (``path``) or in memory (``path=None``).

    Safe across threads and processes: every write is a ``BEGIN IMMEDIATE`` transaction, and
    file ledgers open a fresh connection per operation (so a ledger object survives ``fork``).

    Args:
        path: The SQLite file (created if missing), or ``None`` for a private in-memory ledger
            that lives as long as this object.
        timeout: Seconds to wait for another process's write lock before failing.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 60.0):
        self.path = None if path is None else Path(path)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._memory: sqlite3.Connection | None = None
        if self.path is None:
            self._memory = sqlite3.connect(":memory:", isolation_level=None,
                                           check_same_thread=False)
            self._migrate(self._memory)
        else:
            if self.path.exists() and self.path.is_dir():
                raise InputError(f"ledger path {str(self.path)!r} is a directory")
            with self._connect() as con:
                self._migrate(con)

    def _migrate(self, con: sqlite3.Connection) -> None:
        """Create the tables, or add the ones an older ledger lacks, in one transaction."""
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InputError(f"ledger {str(self.path)!r} has schema version {version}, "
                                 f"newer than this pets ({SCHEMA_VERSION}): upgrade pets")
            if version == SCHEMA_VERSION:
                return  # up to date: opening a ledger writes nothing
            con.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise InputError(f"cannot open ledger {str(self.path)!r}: {exc} (not a pets "
                             "ledger?)") from None

    def __repr__(self) -> str:
        return f"Ledger({str(self.path) if self.path else None!r})"

    def __copy__(self) -> Ledger:
        return self  # a handle on one store: a copy would be a second, diverging budget

    def __deepcopy__(self, memo: dict[int, object]) -> Ledger:
        return self

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self._memory is not None:
            with self._lock:
                yield self._memory
            return
        assert self.path is not None
        try:
            con = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(f"cannot open ledger {str(self.path)!r}: {exc}") from exc
        try:
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")
            except sqlite3.DatabaseError as exc:
                raise InputError(f"cannot open ledger {str(self.path)!r}: {exc} (not a pets "
                                 "ledger?)") from None
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @staticmethod
    def _budget(con: sqlite3.Connection, dataset_id: str, unit: str) -> Budget | None:
        row = con.execute("SELECT kind, epsilon, delta, rho FROM budgets "
                          "WHERE dataset_id = ? AND unit = ?", (dataset_id, unit)).fetchone()
        if row is None:
            return None
        return Budget(row[0], epsilon=row[1], delta=row[2], rho=row[3])

    @staticmethod
    def _losses(con: sqlite3.Connection, dataset_id: str, unit: str) -> list[PrivacyLoss]:
        rows = con.execute("SELECT epsilon, delta, rho FROM spends WHERE dataset_id = ? "
                           "AND unit = ?", (dataset_id, unit)).fetchall()
        return [PrivacyLoss(*r) for r in rows]

    @classmethod
    def _spent(cls, con: sqlite3.Connection, dataset_id: str,
               unit: str) -> tuple[PrivacyLoss, int]:
        losses = cls._losses(con, dataset_id, unit)
        return PrivacyLoss.total(losses), len(losses)

    def register(self, dataset_id: str, unit: str, budget: Budget) -> Budget:
        """Record ``budget`` as the total for (dataset, unit), or check it matches the stored one.

        Raises:
            InputError: The ledger already holds a different budget for this dataset and unit
                (a session cannot enlarge or change a recorded budget).
        """
        with self._transaction() as con:
            stored = self._budget(con, dataset_id, unit)
            if stored is None:
                con.execute("INSERT INTO budgets VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (dataset_id, unit, budget.kind, budget.epsilon, budget.delta,
                             budget.rho, _now()))
                return budget
        if stored != budget:
            raise InputError(
                f"ledger {self!r} already holds budget {stored.describe()} for dataset "
                f"{dataset_id!r}, unit {unit!r}; a session cannot change it to "
                f"{budget.describe()}")
        return stored

    def set_cap(self, epsilon: float, delta: float = 0.0, rho: float = 0.0) -> None:
        """Cap what the whole ledger may spend, summed over *every* dataset and unit.

        Per-(dataset, unit) budgets are chosen by whoever releases: a copy of the data under
        another dataset id, or another column of the same people as the unit, would open a
        fresh budget. The cap (set once, by ``pets boundary init``) bounds the sum of every
        spend's ε, δ and ρ (basic composition: a conservative bound for the people in any
        of them). Setting it again to the same values is a no-op.

        Raises:
            InputError: A negative or non-finite value, or a different cap already set.
        """
        import math

        for name, v in (("epsilon", epsilon), ("delta", delta), ("rho", rho)):
            if not (math.isfinite(v) and v >= 0):
                raise InputError(f"ledger cap {name} must be a finite number >= 0, got {v}")
        with self._transaction() as con:
            row = con.execute("SELECT epsilon, delta, rho FROM caps").fetchone()
            if row is None:
                con.execute("INSERT INTO caps VALUES (1, ?, ?, ?, ?)",
                            (epsilon, delta, rho, _now()))
                return
        if tuple(row) != (epsilon, delta, rho):
            raise InputError(f"ledger {self!r} already has the cap ε={_num(row[0])}, "
                             f"δ={_num(row[1])}, ρ={_num(row[2])}; it cannot be changed")

    def cap(self) -> PrivacyLoss | None:
        """The ledger-wide cap (:meth:`set_cap`), or ``None``."""
        with self._connect() as con:
            row = con.execute("SELECT epsilon, delta, rho FROM caps").fetchone()
        return None if row is None else PrivacyLoss(*row)

    def check_cap(self, loss: PrivacyLoss) -> None:
        """Refuse, without writing anything, a loss that the ledger-wide cap no longer admits
        (callers check before registering a new budget; :meth:`spend` checks again).

        Raises:
            BudgetExhausted: The cap does not admit ``loss``.
        """
        with self._connect() as con:
            self._check_cap(con, loss)

    @staticmethod
    def _check_cap(con: sqlite3.Connection, loss: PrivacyLoss) -> None:
        import math

        row = con.execute("SELECT epsilon, delta, rho FROM caps").fetchone()
        if row is None:
            return
        spent = con.execute("SELECT epsilon, delta, rho FROM spends").fetchall()
        for i, (name, sym) in enumerate((("epsilon", "ε"), ("delta", "δ"), ("rho", "ρ"))):
            total = math.fsum([*(r[i] for r in spent), getattr(loss, name)])
            if getattr(loss, name) > 0 and total > row[i]:
                raise BudgetExhausted(
                    f"release needs {sym}={_num(getattr(loss, name))} but the ledger's cap "
                    f"over every dataset and unit is {sym}={_num(row[i])}, of which "
                    f"{_num(math.fsum(r[i] for r in spent))} is spent; nothing was spent")

    def budget_of(self, dataset_id: str, unit: str) -> Budget | None:
        """The registered total budget, or ``None``."""
        with self._connect() as con:
            return self._budget(con, dataset_id, unit)

    def status(self, dataset_id: str, unit: str) -> BudgetStatus:
        """Total, spent and remaining budget of (dataset, unit).

        Raises:
            InputError: No budget is registered for them.
        """
        with self._connect() as con:
            budget = self._budget(con, dataset_id, unit)
            if budget is None:
                raise InputError(f"no budget registered in {self!r} for dataset "
                                 f"{dataset_id!r}, unit {unit!r}")
            spent, n = self._spent(con, dataset_id, unit)
        return BudgetStatus(dataset_id, unit, budget, spent, budget.remaining(spent), n)

    def history(self, dataset_id: str, unit: str) -> list[SpendRecord]:
        """Every recorded spend of (dataset, unit), oldest first."""
        with self._connect() as con:
            rows = con.execute("SELECT epsilon, delta, rho, query, at FROM spends WHERE "
                               "dataset_id = ? AND unit = ? ORDER BY id",
                               (dataset_id, unit)).fetchall()
        return [SpendRecord(*r) for r in rows]

    def spend(self, dataset_id: str, unit: str, loss: PrivacyLoss, run: Callable[[], T], *,
              query: str = "",
              record: Callable[[T], tuple[str, str, str]] | None = None) -> T:
        """Atomically check the budget, record ``loss``, run ``run()`` and commit.

        ``run`` (the noise draw) executes inside the write transaction: its result is returned
        only after the spend is committed durably. If ``run`` raises, the spend is committed
        anyway and the exception re-raised (the noise may have been drawn, and the failure could
        depend on it); do every data-dependent check *before* calling ``spend``.

        ``record``, if given, maps ``run``'s result to ``(release_id, digest, metadata_json)``:
        that release record is written in the same transaction, tied to this spend (a
        failure there is handled as one of ``run``).

        Raises:
            BudgetExhausted: ``loss`` would exceed the remaining budget; nothing is spent and
                ``run`` is not called.
            InputError: No budget is registered for (dataset, unit).
        """
        with self._transaction() as con:
            budget = self._budget(con, dataset_id, unit)
            if budget is None:
                raise InputError(f"no budget registered in {self!r} for dataset "
                                 f"{dataset_id!r}, unit {unit!r}")
            losses = self._losses(con, dataset_id, unit)
            spent = PrivacyLoss.total(losses)
            if not budget.admits([*losses, loss]):  # exact: rounding cannot overspend
                rem = budget.remaining(spent)
                need = ", ".join(f"{k}={_num(v)}" for k, v in
                                 (("ε", loss.epsilon), ("δ", loss.delta), ("ρ", loss.rho)) if v)
                left = ", ".join(f"{k}={_num(v)}" for k, v in
                                 (("ε", rem.epsilon), ("δ", rem.delta), ("ρ", rem.rho))
                                 if getattr(budget, {"ε": "epsilon", "δ": "delta",
                                                     "ρ": "rho"}[k]))
                raise BudgetExhausted(
                    f"release needs {need} but only {left} of {budget.describe()} remains for "
                    f"dataset {dataset_id!r}, unit {unit!r}; nothing was spent")
            self._check_cap(con, loss)
            cur = con.execute(
                "INSERT INTO spends (dataset_id, unit, epsilon, delta, rho, query, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (dataset_id, unit, loss.epsilon, loss.delta, loss.rho, query, _now()))
            spend_id = cur.lastrowid
            try:
                result = run()
                if record is not None:
                    rid, digest, meta = record(result)
                    self._insert_release(con, rid, digest, dataset_id, unit, loss, meta,
                                         spend_id=spend_id, parent_id=None)
            except BaseException as exc:
                # ``run`` may have drawn noise before failing, and whether (or how) it fails
                # could depend on that noise: a rolled-back spend would let a caller retry
                # for free and learn from the failures. Keep the spend (conservative).
                failure: BaseException | None = exc
            else:
                failure = None
        if failure is not None:
            raise failure
        return result

    @staticmethod
    def _insert_release(con: sqlite3.Connection, release_id: str, digest: str, dataset_id: str,
                        unit: str, loss: PrivacyLoss, metadata_json: str, *,
                        spend_id: int | None, parent_id: str | None) -> None:
        if not release_id or not digest:
            raise InputError("a release record needs a release id and a digest")
        con.execute("INSERT INTO releases (release_id, digest, dataset_id, unit, epsilon, "
                    "delta, rho, created, metadata_json, spend_id, parent_id) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (release_id, digest, dataset_id, unit, loss.epsilon, loss.delta, loss.rho,
                     _now(), metadata_json, spend_id, parent_id))

    @staticmethod
    def _release_row(con: sqlite3.Connection, release_id: str) -> ReleaseRecord | None:
        row = con.execute("SELECT release_id, digest, dataset_id, unit, epsilon, delta, rho, "
                          "created, metadata_json, parent_id FROM releases WHERE "
                          "release_id = ?", (release_id,)).fetchone()
        return None if row is None else ReleaseRecord(*row)

    def release_record(self, release_id: str) -> ReleaseRecord | None:
        """The record of release ``release_id``, or ``None``."""
        if not isinstance(release_id, str):
            return None
        with self._connect() as con:
            return self._release_row(con, release_id)

    def releases(self, dataset_id: str, unit: str) -> list[ReleaseRecord]:
        """Every release record of (dataset, unit), oldest first."""
        with self._connect() as con:
            ids = [r[0] for r in con.execute(
                "SELECT release_id FROM releases WHERE dataset_id = ? AND unit = ? "
                "ORDER BY rowid", (dataset_id, unit)).fetchall()]
            out = [self._release_row(con, i) for i in ids]
        return [r for r in out if r is not None]

    def check_release(self, release_id: object, digest: str) -> ReleaseRecord:
        """The record of ``release_id`` if its digest equals ``digest`` (recomputed by the
        caller from the release as it is *now*).

        Raises:
            IntegrityError: No such record, or another digest: the release was edited after
                it was made, or made with another ledger (or not made by pets at all).

        Examples:
            >>> Ledger().check_release("r1", "0" * 64)
            Traceback (most recent call last):
            ...
            pets._errors.IntegrityError: release 'r1' does not match its ledger record (edited after it was made?): Ledger(None) holds no release with this id
        """
        rid = release_id if isinstance(release_id, str) and release_id else None
        rec = None if rid is None else self.release_record(rid)
        if rec is None:
            why = ("it carries no release id" if rid is None
                   else f"{self!r} holds no release with this id")
            raise IntegrityError(_MISMATCH.format(rid=release_id) + f": {why}")
        if rec.digest != digest:
            raise IntegrityError(_MISMATCH.format(rid=rid) + f": its digest {digest[:16]}… "
                                 f"is not the recorded {rec.digest[:16]}…")
        return rec

    def _derive(self, parent_id: str, parent_digest: str, child_id: str, child_digest: str,
                metadata_json: str) -> ReleaseRecord:
        """Record a release post-processed from ``parent_id`` (no spend), in one transaction,
        if the parent as it is now (``parent_digest``) matches its record."""
        with self._transaction() as con:
            parent = self._release_row(con, parent_id)
            if parent is None or parent.digest != parent_digest:
                raise IntegrityError(_MISMATCH.format(rid=parent_id) + ": it cannot be "
                                     "post-processed")
            self._insert_release(con, child_id, child_digest, parent.dataset_id, parent.unit,
                                 PrivacyLoss(parent.epsilon, parent.delta, parent.rho),
                                 metadata_json, spend_id=None, parent_id=parent_id)
            child = self._release_row(con, child_id)
        assert child is not None
        return child

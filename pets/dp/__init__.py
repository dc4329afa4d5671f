"""Differential privacy on OpenDP: sessions, budgets, a durable ledger, releases.

The safe layer a data scientist calls. Noise and privacy maps come from OpenDP only (see
``pets/dp/_opendp.py``); pets bounds each user's contribution, picks the sensitivity, keeps
the budget and reports accuracy. Guide: ``docs/dp.md``.

Examples:
    >>> import pandas as pd
    >>> from pets.dp import Budget, Session
    >>> df = pd.DataFrame({"user_id": ["a", "b", "b"], "spend": [3.0, 5.0, 7.0]})
    >>> s = Session(df, privacy_unit="user_id", budget=Budget.pure(1.0))
    >>> r = s.query(max_rows=2).count().sum("spend", bounds=(0, 10)).release(epsilon=0.5)
    >>> r.to_frame()["statistic"].tolist()
    ['count', 'sum']
    >>> s.budget.spent.epsilon
    0.5
"""

import typing

# Budgets and the ledger need neither pandas nor OpenDP (``pets boundary init`` sets the
# ledger's cap and stays light); sessions and releases load on first use.
from pets.dp._budget import Budget, PrivacyLoss
from pets.dp._ledger import BudgetStatus, Ledger, ReleaseRecord, SpendRecord

if typing.TYPE_CHECKING:
    from pets.dp._release import Release, release_digest
    from pets.dp._session import Query, Session

_LAZY = {
    **dict.fromkeys(["Release", "release_digest"], "pets.dp._release"),
    **dict.fromkeys(["Query", "Session"], "pets.dp._session"),
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pets.dp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "Budget",
    "BudgetStatus",
    "Ledger",
    "PrivacyLoss",
    "Query",
    "Release",
    "ReleaseRecord",
    "Session",
    "SpendRecord",
    "release_digest",
]

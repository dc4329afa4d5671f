"""Peer adapter: Tumult Analytics 0.21 on a local Spark session (its own venv; needs Java).

``Session.from_dataframe`` with ``AddRowsWithID(<privacy_unit>)`` (user-level privacy) and an
unbounded session budget; each release is ``session.evaluate(query, PureDPBudget(ε))``. Every
query enforces ``MaxGroupsPerID(group, 1)`` and ``MaxRowsPerGroupPerID(group, k)`` (the same
bounds as every library) and groups by the public keys (``KeySet.from_dict``). Aggregates:
``count``, ``sum(low, high)``, ``average(low, high)``, ``median(low, high)``. Tumult's noise is
not seedable.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _protocol import Estimates, Intervals, serve

try:  # 0.20+: names at the top level
    from tmlt.analytics import (
        AddRowsWithID,
        KeySet,
        MaxGroupsPerID,
        MaxRowsPerGroupPerID,
        PureDPBudget,
        QueryBuilder,
        Session,
    )
except ImportError:  # older layout
    from tmlt.analytics.constraints import MaxGroupsPerID, MaxRowsPerGroupPerID
    from tmlt.analytics.keyset import KeySet
    from tmlt.analytics.privacy_budget import PureDPBudget
    from tmlt.analytics.protected_change import AddRowsWithID
    from tmlt.analytics.query_builder import QueryBuilder
    from tmlt.analytics.session import Session

_STATE: dict[str, Any] = {}


def _setup(req: dict[str, Any]) -> None:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[2]").appName("pets-bench-tumult")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.driver.memory", "2g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    sdf = spark.read.parquet(req["data"]).select(req["privacy_unit"], req["group_by"],
                                                  req["column"])
    _STATE["session"] = Session.from_dataframe(
        privacy_budget=PureDPBudget(float("inf")), source_id="t", dataframe=sdf,
        protected_change=AddRowsWithID(id_column=req["privacy_unit"]))
    _STATE["keys"] = KeySet.from_dict({req["group_by"]: [str(k) for k in req["keys"]]})


def _run_one(req: dict[str, Any], query: str, eps: float, trial: int) -> tuple[Estimates, Intervals | None]:
    g, col = req["group_by"], req["column"]
    lo, hi = (float(b) for b in req["bounds"])
    qb = (QueryBuilder("t").enforce(MaxGroupsPerID(g, int(req.get("max_groups_per_user", 1))))
          .enforce(MaxRowsPerGroupPerID(g, int(req["max_rows_per_user"])))
          .groupby(_STATE["keys"]))
    if query == "count":
        q = qb.count(name="estimate")
    elif query == "sum":
        q = qb.sum(col, lo, hi, name="estimate")
    elif query == "mean":
        q = qb.average(col, lo, hi, name="estimate")
    elif query == "median":
        q = qb.median(col, lo, hi, name="estimate")
    else:
        raise ValueError(f"unknown query {query!r}")
    pdf = _STATE["session"].evaluate(q, PureDPBudget(eps)).toPandas()
    return {str(k): float(v) for k, v in zip(pdf[g], pdf["estimate"], strict=True)
            if v is not None}, None


if __name__ == "__main__":
    sys.exit(serve("tumult", metadata.version("tmlt.analytics"), _run_one, setup=_setup,
                   notes=["local Spark session (local[2]); noise not seedable"]))

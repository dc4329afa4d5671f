"""Peer adapter: PipelineDP 0.3.1 on its in-process ``LocalBackend`` (its own venv).

``DPEngine.aggregate`` with ``max_partitions_contributed=1`` (each user lies in one group),
``max_contributions_per_partition=max_rows_per_user``, ``min_value``/``max_value`` = the bounds,
Laplace noise, δ = 0, and the keys passed as ``public_partitions`` (no partition selection).
Metrics: ``COUNT``, ``SUM``, ``MEAN``, ``PERCENTILE(50)``. A fresh ``NaiveBudgetAccountant`` with
ε per release. PipelineDP's noise (through PyDP) is not seedable.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
import pipeline_dp
from _protocol import Estimates, Intervals, serve

_STATE: dict[str, Any] = {}


def _setup(req: dict[str, Any]) -> None:
    df = pd.read_parquet(req["data"], columns=[req["privacy_unit"], req["group_by"], req["column"]])
    lo = float(req["bounds"][0])
    _STATE["rows"] = list(zip(df[req["privacy_unit"]].astype(str).tolist(),
                              df[req["group_by"]].astype(str).tolist(),
                              df[req["column"]].astype("float64").fillna(lo).tolist(), strict=True))


def _metric(query: str) -> Any:
    return {"count": pipeline_dp.Metrics.COUNT, "sum": pipeline_dp.Metrics.SUM,
            "mean": pipeline_dp.Metrics.MEAN,
            "median": pipeline_dp.Metrics.PERCENTILE(50)}[query]


def _run_one(req: dict[str, Any], query: str, eps: float, trial: int) -> tuple[Estimates, Intervals | None]:
    metric = _metric(query)
    lo, hi = (float(b) for b in req["bounds"])
    accountant = pipeline_dp.NaiveBudgetAccountant(total_epsilon=eps, total_delta=0)
    engine = pipeline_dp.DPEngine(accountant, pipeline_dp.LocalBackend())
    params = pipeline_dp.AggregateParams(
        noise_kind=pipeline_dp.NoiseKind.LAPLACE, metrics=[metric],
        max_partitions_contributed=int(req.get("max_groups_per_user", 1)),
        max_contributions_per_partition=int(req["max_rows_per_user"]),
        min_value=lo, max_value=hi)
    extractors = pipeline_dp.DataExtractors(privacy_id_extractor=lambda r: r[0],
                                            partition_extractor=lambda r: r[1],
                                            value_extractor=lambda r: r[2])
    out = engine.aggregate(_STATE["rows"], params, extractors,
                           public_partitions=[str(k) for k in req["keys"]])
    accountant.compute_budgets()
    est: Estimates = {}
    for key, metrics in out:
        value = metrics[0] if isinstance(metrics, tuple) else next(iter(metrics._asdict().values()))
        est[str(key)] = float(value)
    return est, None


if __name__ == "__main__":
    sys.exit(serve("pipelinedp", metadata.version("pipeline-dp"), _run_one, setup=_setup,
                   notes=["LocalBackend, Laplace, public partitions; noise not seedable"]))

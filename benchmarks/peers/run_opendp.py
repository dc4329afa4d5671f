"""Peer adapter: OpenDP 0.16 used directly through its Polars Context API.

Runs in pets' own venv (``opendp[polars]`` pins ``polars==1.36.1``; ``pip install 'pets[bench]'``).
Privacy: ``dp.unit_of(contributions=1, identifier=<privacy_unit>)`` with
``truncate_per_group(max_rows_per_user)``; each user lies in one group (the harness guarantees
it), the keys are public (``Margin(invariant="keys")`` + ``with_keys``), pure DP with ε per query.
Counts use OpenDP's integer Laplace, sums its float Laplace on the clipped column, the mean is
OpenDP's ``dp.mean`` (noisy sum / noisy count, ε split evenly), the median OpenDP's
``dp.quantile`` over the request's candidate grid. The CI for count and sum is
``estimate ± summarize(alpha).accuracy``.

Each (query, ε) is resolved to one measurement once (the binary search for the noise scale takes
seconds) and that measurement is invoked once per trial: every trial is one independent ε-DP
release, as if on a fresh copy of the data.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import opendp.prelude as _dp
import polars as pl
from _protocol import Estimates, Intervals, serve

dp: Any = _dp  # the prelude and the polars ``.dp`` plugin namespace are untyped
dp.enable_features("contrib")

_CACHE: dict[tuple[str, float], tuple[Any, dict[str, float] | None]] = {}
_STATE: dict[str, Any] = {}


def _setup(req: dict[str, Any]) -> None:
    lf = pl.scan_parquet(req["data"])
    _STATE["lf"] = lf
    _STATE["n"] = int(lf.select(pl.len()).collect().item())


def _measurement(req: dict[str, Any], query: str, eps: float) -> tuple[Any, dict[str, float] | None]:
    key = (query, eps)
    if key in _CACHE:
        return _CACHE[key]
    g, col = req["group_by"], req["column"]
    lo, hi = (float(b) for b in req["bounds"])
    ctx = dp.Context.compositor(
        data=_STATE["lf"],
        privacy_unit=dp.unit_of(contributions=1, identifier=req["privacy_unit"]),
        privacy_loss=dp.loss_of(epsilon=eps),
        split_evenly_over=1,
        margins=[dp.polars.Margin(by=[g], invariant="keys", max_length=_STATE["n"]),
                 dp.polars.Margin(by=[], max_length=_STATE["n"])],
    )
    value: Any = pl.col(col).fill_null(lo).clip(lo, hi)
    if query == "count":
        agg = dp.len(signed=False)
    elif query == "sum":
        agg = value.dp.sum((lo, hi))
    elif query == "mean":
        agg = value.dp.mean((lo, hi))
    elif query == "median":
        agg = value.dp.quantile(0.5, candidates=[float(c) for c in req["median_candidates"]])
    else:
        raise ValueError(f"unknown query {query!r}")
    keys = pl.LazyFrame({g: req["keys"]})
    q: Any = (ctx.query().truncate_per_group(int(req["max_rows_per_user"])).group_by(g)
         .agg(agg.alias("estimate")).with_keys(keys))
    half: dict[str, float] | None = None
    if query in ("count", "sum"):
        summ = q.summarize(alpha=float(req.get("alpha", 0.05)))
        half = {"width": float(summ["accuracy"][0])}
    meas = q.resolve()
    _CACHE[key] = (meas, half)
    return meas, half


def _run_one(req: dict[str, Any], query: str, eps: float, trial: int) -> tuple[Estimates, Intervals | None]:
    meas, half = _measurement(req, query, eps)
    df = meas(_STATE["lf"]).collect()
    g = req["group_by"]
    est = {str(k): float(v) for k, v in zip(df[g].to_list(), df["estimate"].to_list(), strict=True)
           if v is not None}
    ci = None
    if half is not None:
        w = half["width"]
        ci = {k: [v - w, v + w] for k, v in est.items()}
    return est, ci


if __name__ == "__main__":
    sys.exit(serve("opendp", metadata.version("opendp"), _run_one, setup=_setup,
                   notes=["OpenDP Polars Context API; noise from OpenDP samplers (not seedable)"]))

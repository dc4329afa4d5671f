"""Adapter: pets itself (``pets.dp.Session``), run like every peer in pets' own venv.

``Session(frame, privacy_unit=..., budget=Budget.pure(ε))`` per release, ``query(by=group,
keys=<public keys>, max_groups=1, max_rows=k)`` and one aggregate: ``count()``,
``sum(bounds=)``, ``mean(bounds=)`` or ``median(bounds=, candidates=<len of the request's
grid>)``, released with ``epsilon=ε`` at the request's confidence level. The interval is pets'
own ``ci_low``/``ci_high`` (NaN for the median, which has none). pets' noise comes from
OpenDP's samplers and is not seedable; each trial is a fresh session and a fresh release.
"""

from __future__ import annotations

import math
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
from _protocol import Estimates, Intervals, serve

from pets.dp import Budget, Session

_STATE: dict[str, Any] = {}


def _setup(req: dict[str, Any]) -> None:
    _STATE["frame"] = pd.read_parquet(req["data"], columns=[req["privacy_unit"],
                                                            req["group_by"], req["column"]])


def _run_one(req: dict[str, Any], query: str, eps: float, trial: int) -> tuple[Estimates, Intervals | None]:
    g, col = req["group_by"], req["column"]
    lo, hi = (float(b) for b in req["bounds"])
    session = Session(_STATE["frame"], privacy_unit=req["privacy_unit"], budget=Budget.pure(eps))
    q = session.query(by=g, keys=list(req["keys"]), max_groups=int(req.get("max_groups_per_user", 1)),
                      max_rows=int(req["max_rows_per_user"]))
    if query == "count":
        q = q.count()
    elif query == "sum":
        q = q.sum(col, bounds=(lo, hi))
    elif query == "mean":
        q = q.mean(col, bounds=(lo, hi))
    elif query == "median":
        q = q.median(col, bounds=(lo, hi), candidates=len(req.get("median_candidates", [])) or 101)
    else:
        raise ValueError(f"unknown query {query!r}")
    f = q.release(epsilon=eps, level=1 - float(req.get("alpha", 0.05))).to_frame()
    est: Estimates = {}
    ci: Intervals = {}
    for key, e, a, b in zip(f[g], f["estimate"], f["ci_low"], f["ci_high"], strict=True):
        if e is None or not math.isfinite(float(e)):
            continue
        est[str(key)] = float(e)
        if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b)):
            ci[str(key)] = [float(a), float(b)]
    return est, (ci or None)


if __name__ == "__main__":
    sys.exit(serve("pets", metadata.version("pets"), _run_one, setup=_setup,
                   notes=["pets.dp.Session on OpenDP measurements; noise not seedable"]))

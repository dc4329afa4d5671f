"""Peer adapter: IBM diffprivlib 0.6.6 (its own venv: scikit-learn 1.5.2).

diffprivlib has no group-by and no notion of a privacy unit other than "one record", so this
adapter does what a careful analyst would do with it, and keeps the same contribution bounds as
every other library:

- per group (public keys; each user lies in exactly one group, so groups compose in parallel),
- **count**: the bounded row count plus ``mechanisms.Laplace(ε, sensitivity=k)``
  (``k = max_rows_per_user``: one user adds or removes up to ``k`` rows);
- **sum**: the sum of clipped values plus ``mechanisms.Laplace(ε, sensitivity=k·max|bound|)``;
- **mean**: noisy sum / noisy count, ε/2 each, clipped to the bounds;
- **median**: ``tools.median`` on the clipped rows with ε/k (group privacy: a user is up to ``k``
  rows; the exponential mechanism's utility has sensitivity 1 under add/remove too).

``tools.sum`` / ``tools.count_nonzero`` are *not* used: they treat the number of records as
public (their output is truncated to ``[n·lo, n·hi]``, so an empty group comes back as an exact
0), which is not differential privacy when one user can be added or removed.

Noise is seeded with ``random_state`` (seed + trial), as diffprivlib allows.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
from _protocol import Estimates, Intervals, serve
from diffprivlib import mechanisms, tools

_STATE: dict[str, Any] = {}


def _setup(req: dict[str, Any]) -> None:
    df = pd.read_parquet(req["data"], columns=[req["privacy_unit"], req["group_by"], req["column"]])
    lo, hi = (float(b) for b in req["bounds"])
    g, u = req["group_by"], req["privacy_unit"]
    df["_v"] = df[req["column"]].astype("float64").fillna(lo).clip(lo, hi)
    agg = df.groupby(g, observed=True)["_v"].agg(["size", "sum"])
    _STATE["rows"] = {str(k): part["_v"].to_numpy() for k, part in df.groupby(g, observed=True)}
    _STATE["totals"] = {str(k): (float(r["size"]), float(r["sum"])) for k, r in agg.iterrows()}
    del u


def _run_one(req: dict[str, Any], query: str, eps: float, trial: int) -> tuple[Estimates, Intervals | None]:
    k = int(req["max_rows_per_user"])
    lo, hi = (float(b) for b in req["bounds"])
    rng = np.random.default_rng([int(req.get("seed", 0)), trial])
    sens_sum = k * max(abs(lo), abs(hi))
    est: Estimates = {}
    for key in req["keys"]:
        n, total = _STATE["totals"].get(str(key), (0.0, 0.0))
        seed = int(rng.integers(2**31 - 1))
        if query == "count":
            est[key] = mechanisms.Laplace(epsilon=eps, sensitivity=k, random_state=seed).randomise(n)
        elif query == "sum":
            est[key] = mechanisms.Laplace(epsilon=eps, sensitivity=sens_sum,
                                          random_state=seed).randomise(total)
        elif query == "mean":
            s = mechanisms.Laplace(epsilon=eps / 2, sensitivity=sens_sum,
                                   random_state=seed).randomise(total)
            c = mechanisms.Laplace(epsilon=eps / 2, sensitivity=k,
                                   random_state=seed + 1).randomise(n)
            est[key] = float(np.clip(s / max(c, 1.0), lo, hi))
        elif query == "median":
            rows = _STATE["rows"].get(str(key), np.zeros(0))
            est[key] = tools.median(rows, epsilon=eps / k, bounds=(lo, hi), random_state=seed)
        else:
            raise ValueError(f"unknown query {query!r}")
    return est, None


if __name__ == "__main__":
    sys.exit(serve("diffprivlib", metadata.version("diffprivlib"), _run_one, setup=_setup,
                   notes=["no group-by / privacy unit: Laplace mechanism with user-level "
                          "sensitivity for count/sum/mean, group privacy for the median"]))

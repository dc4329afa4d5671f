"""The JSON protocol between the utility benchmark and one peer adapter (stdlib + pandas only).

Every adapter ``run_<name>.py`` runs in the peer's own interpreter (its venv may pin other
numpy/pandas versions than pets), so this module imports nothing from pets. The benchmark calls::

    <peer python> benchmarks/peers/run_<name>.py REQUEST.json RESPONSE.json

REQUEST (written by ``benchmarks.privacy_utility``)::

    {"data": "/tmp/…/events.parquet",   # Parquet, already contribution-bounded by the harness
     "privacy_unit": "user_id",          # one row per user per group at most max_rows_per_user
     "group_by": "group",                # one string column; the keys below are public
     "keys": ["AT", "BE", …],
     "column": "value", "bounds": [0.0, 3600.0],
     "max_rows_per_user": 10, "max_groups_per_user": 1,
     "queries": ["count", "sum", "mean", "median"],
     "epsilons": [0.05, …, 10.0], "trials": 5, "seed": 0, "alpha": 0.05,
     "median_candidates": [0.0, 36.0, …]}

Each query is answered by one ε-DP release (pure DP, ε per query, user-level), once per trial.

RESPONSE (written atomically by :func:`serve`)::

    {"library": "diffprivlib", "version": "0.6.6", "python": "3.11.7", "setup_seconds": 0.3,
     "results": [{"query": "count", "epsilon": 1.0, "trial": 0, "seconds": 0.01,
                  "estimates": {"AT": 123.4, …},            # missing key = group not released
                  "ci": {"AT": [100.1, 146.7], …}}, …],     # optional: the library's own CI
     "errors": [{"query": "median", "epsilon": 0.05, "error": "ValueError: …"}],
     "notes": ["…"]}

A query that raises is recorded in ``errors`` (with the exception text) and the adapter moves on;
an adapter that cannot even start exits non-zero and the benchmark reports its stderr.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

Estimates = dict[str, float]
Intervals = dict[str, list[float]]
#: run_one(request, query, epsilon, trial) -> (estimates, intervals or None)
RunOne = Callable[[dict[str, Any], str, float, int], tuple[Estimates, Intervals | None]]


def load_request(path: str) -> dict[str, Any]:
    """Read and minimally validate a request file."""
    with open(path, encoding="utf-8") as fh:
        req: dict[str, Any] = json.load(fh)
    for key in ("data", "privacy_unit", "group_by", "keys", "column", "bounds",
                "max_rows_per_user", "queries", "epsilons", "trials"):
        if key not in req:
            raise ValueError(f"request {path} lacks {key!r}")
    return req


def error_text(exc: BaseException) -> str:
    """One line naming the exception, for the ``errors`` list (last line of long messages)."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[-1] if msg else ''}"[:500]


def serve(library: str, version: str, run_one: RunOne, setup: Callable[[dict[str, Any]], None]
          | None = None, notes: list[str] | None = None, argv: list[str] | None = None) -> int:
    """Answer every (query, ε, trial) of the request and write the response atomically."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: run_<peer>.py REQUEST.json RESPONSE.json", file=sys.stderr)
        return 2
    req = load_request(args[0])
    out: dict[str, Any] = {"library": library, "version": version,
                           "python": platform.python_version(), "results": [], "errors": [],
                           "notes": list(notes or [])}
    t0 = time.perf_counter()
    if setup is not None:
        setup(req)
    out["setup_seconds"] = time.perf_counter() - t0
    for query in req["queries"]:
        for eps in req["epsilons"]:
            for trial in range(int(req["trials"])):
                t1 = time.perf_counter()
                try:
                    est, ci = run_one(req, query, float(eps), trial)
                except Exception as exc:
                    out["errors"].append({"query": query, "epsilon": eps, "trial": trial,
                                          "error": error_text(exc)})
                    if os.environ.get("PETS_BENCH_DEBUG"):
                        traceback.print_exc()
                    break  # the other trials of this (query, ε) would fail the same way
                row: dict[str, Any] = {"query": query, "epsilon": eps, "trial": trial,
                                       "seconds": time.perf_counter() - t1,
                                       "estimates": {str(k): float(v) for k, v in est.items()}}
                if ci is not None:
                    row["ci"] = {str(k): [float(a), float(b)] for k, (a, b) in ci.items()}
                out["results"].append(row)
    tmp = args[1] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    os.replace(tmp, args[1])
    return 0

"""Privacy/utility of grouped DP statistics: pets against its peers, in one run, on the same data.

For each dataset, each ε on a log grid and each trial, every library answers four grouped
queries — count, sum, mean and median of one numeric column by a public key column — with
user-level pure ε-DP (ε per query) and the **same contribution bounds** (at most
``max_rows_per_user`` rows per user, every user in one group, values clipped to ``bounds``).

Every library — pets too — runs its adapter ``benchmarks/peers/run_<name>.py`` in a
subprocess: pets and OpenDP in this interpreter, the others in their own venv in a per-user
cache directory (``benchmarks/_peers.py``; built from ``benchmarks/peers/<name>.txt`` only by
``pets bench --build-peers``, because their pins clash with pets') — speaking the JSON protocol of ``benchmarks/peers/_protocol.py``.
A peer that cannot be installed or run is reported with the captured reason, never dropped.

Measured per (dataset, library, query, ε): mean absolute error (``mae``), mean relative error
over groups (``mre``) and relative MAE (``rel_mae`` = Σ|error| / Σ|truth|, the headline: it is
not dominated by the smallest groups) against the statistic on the raw data (what the analyst
wants; includes the bias of bounding), the mean
absolute error against the bounded statistic (the noise alone), the coverage of the library's
own confidence intervals against the bounded statistic (what an interval claims to cover), and
the share of groups released.

Run: ``python -m benchmarks utility [--quick]`` or ``pets bench utility [--quick]``; set
``PETS_BENCH_LIBRARIES=pets,opendp`` to run only some libraries.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks._harness import RESULTS, Result, machine
from benchmarks._peers import BUILD_COMMAND, peer_venvs_dir

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
VENVS_DIR = peer_venvs_dir()
DOCS_IMG = HERE.parent / "docs" / "img"
QUERIES = ("count", "sum", "mean", "median")
#: Libraries in plotting order; each has an adapter ``peers/run_<name>.py``.
LIBRARIES = ("pets", "opendp", "diffprivlib", "pipelinedp", "tumult")
#: Peers that need their own venv (a requirements file ``peers/<name>.txt``).
VENV_PEERS = ("diffprivlib", "pipelinedp", "tumult")
#: Peers that get ``Config.slow_trials`` trials (seconds per release).
SLOW_PEERS = ("tumult",)


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    """One benchmark input: the raw rows, the contribution-bounded rows, and the query spec.

    ``bounded`` has at most ``max_rows_per_user`` rows per user (the first ones in time) and
    columns ``[unit, "group", "value"]``; every library receives exactly these rows.
    """

    name: str
    description: str
    raw: pd.DataFrame
    bounded: pd.DataFrame
    keys: tuple[str, ...]
    bounds: tuple[float, float]
    max_rows_per_user: int
    unit: str = "user_id"


def bound_contributions(frame: pd.DataFrame, unit: str, k: int) -> pd.DataFrame:
    """Keep the first ``k`` rows of each ``unit`` (vectorized; order of ``frame`` preserved).

    >>> df = pd.DataFrame({"u": ["a", "a", "a", "b"], "v": [1, 2, 3, 4]})
    >>> bound_contributions(df, "u", 2)["v"].tolist()
    [1, 2, 4]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return frame[frame.groupby(unit, sort=False).cumcount() < k].reset_index(drop=True)


def events_dataset(n_events: int, n_users: int, *, seed: int = 0, k: int = 20) -> Dataset:
    """Synthetic viewing events: many users with log-normal activity, grouped by country.

    ``watch_seconds`` by ``country`` (the 27 EU codes are the public keys; each user has one
    country), clipped to one hour, at most ``k`` events per user.
    """
    from pets.datasets import COUNTRIES, synthetic_events

    ev = synthetic_events(n_events, n_users=n_users, seed=seed)
    raw = pd.DataFrame({"user_id": ev["user_id"].astype(str), "group": ev["country"].astype(str),
                        "value": ev["watch_seconds"].astype("float64")})
    return Dataset(
        name="events",
        description=(f"pets.datasets.synthetic_events({n_events:,} events, {n_users:,} users): "
                     f"watch_seconds by country, ≤ {k} events per user, clipped to [0, 3600]"),
        raw=raw, bounded=bound_contributions(raw, "user_id", k),
        keys=tuple(sorted(c[0] for c in COUNTRIES)), bounds=(0.0, 3600.0), max_rows_per_user=k)


def census_dataset(n: int, *, seed: int = 0) -> Dataset:
    """A census-like table: one row per person, income by region × age band (60 skewed groups).

    Region sizes follow a Zipf-like law (the smallest groups hold a handful of people); income is
    log-normal (median ≈ 30k) and grows with age; clipped to [0, 150 000].
    """
    rng = np.random.default_rng([seed, 7])
    regions = np.array([f"R{i:02d}" for i in range(1, 13)])
    w = 1.0 / np.arange(1, 13) ** 1.3
    region = regions[rng.choice(12, size=n, p=w / w.sum())]
    bands = np.array(["18-29", "30-44", "45-59", "60-74", "75+"])
    band_idx = rng.choice(5, size=n, p=[0.22, 0.27, 0.26, 0.17, 0.08])
    income = rng.lognormal(mean=10.1 + 0.15 * np.minimum(band_idx, 2), sigma=0.75, size=n)
    income = np.where(band_idx >= 3, income * 0.7, income).round(0)
    group = np.char.add(np.char.add(region, "/"), bands[band_idx])
    raw = pd.DataFrame({"user_id": np.char.add("p", np.arange(n).astype(str)), "group": group,
                        "value": income.astype("float64")})
    keys = tuple(f"{r}/{b}" for r in regions for b in bands)
    return Dataset(
        name="census",
        description=(f"census-like table ({n:,} people, one row each): income by region × age "
                     f"band (60 groups, Zipf-skewed), clipped to [0, 150000]"),
        raw=raw, bounded=raw.copy(), keys=keys, bounds=(0.0, 150_000.0), max_rows_per_user=1)


# --------------------------------------------------------------------------- metrics


def true_statistics(frame: pd.DataFrame, keys: Sequence[str], query: str,
                    clip: tuple[float, float] | None = None) -> dict[str, float]:
    """The exact per-group statistic (``count``/``sum``/``mean``/``median`` of ``value``).

    Groups absent from ``frame`` get 0 for count and sum and NaN for mean and median.

    >>> df = pd.DataFrame({"group": ["a", "a", "b"], "value": [1.0, 5.0, 2.0]})
    >>> true_statistics(df, ["a", "b", "c"], "sum")
    {'a': 6.0, 'b': 2.0, 'c': 0.0}
    >>> true_statistics(df, ["a"], "mean", clip=(0.0, 3.0))
    {'a': 2.0}
    """
    values = frame["value"] if clip is None else frame["value"].clip(*clip)
    grouped = values.groupby(frame["group"], sort=False)
    agg = {"count": grouped.size, "sum": grouped.sum, "mean": grouped.mean,
           "median": grouped.median}[query]().astype("float64")
    fill = 0.0 if query in ("count", "sum") else math.nan
    return {k: float(agg.get(k, fill)) for k in keys}


def absolute_errors(estimates: Mapping[str, float], truth: Mapping[str, float]) -> np.ndarray:
    """``|estimate − truth|`` for each released group with a finite estimate and truth.

    >>> absolute_errors({"a": 12.0, "b": 7.0}, {"a": 10.0, "b": 8.0, "c": 1.0}).tolist()
    [2.0, 1.0]
    """
    pairs = [(estimates[k], truth[k]) for k in truth
             if k in estimates and math.isfinite(estimates[k]) and math.isfinite(truth[k])]
    if not pairs:
        return np.zeros(0)
    est, tru = np.array(pairs, dtype=np.float64).T
    return np.asarray(np.abs(est - tru))


def relative_errors(estimates: Mapping[str, float], truth: Mapping[str, float]) -> np.ndarray:
    """``|estimate − truth| / |truth|`` per released group whose truth is not 0.

    Groups with a true value of 0 (no rows) have no relative error; their absolute error still
    counts in :func:`absolute_errors`.

    >>> relative_errors({"a": 12.0, "b": 0.5}, {"a": 10.0, "b": 0.0}).tolist()
    [0.2]
    """
    keys = [k for k in truth if k in estimates and math.isfinite(estimates[k])
            and math.isfinite(truth[k]) and truth[k] != 0]
    if not keys:
        return np.zeros(0)
    est = np.array([estimates[k] for k in keys])
    tru = np.array([truth[k] for k in keys])
    return np.asarray(np.abs(est - tru) / np.abs(tru))


def relative_mae(estimates: Mapping[str, float], truth: Mapping[str, float]) -> float:
    """``Σ|estimate − truth| / Σ|truth|`` over released groups: the error as a share of the
    typical group's value. Unlike the mean of per-group relative errors it is not dominated by
    the smallest groups (NaN when nothing comparable was released or every truth is 0).

    >>> relative_mae({"a": 12.0, "b": 1.0}, {"a": 10.0, "b": 0.0})
    0.3
    """
    keys = [k for k in truth
            if k in estimates and math.isfinite(estimates[k]) and math.isfinite(truth[k])]
    denom = sum(abs(truth[k]) for k in keys)
    if not keys or denom == 0:
        return math.nan
    return sum(abs(estimates[k] - truth[k]) for k in keys) / denom


def coverage(intervals: Mapping[str, Sequence[float]], target: Mapping[str, float]) -> float:
    """Share of groups whose interval ``[lo, hi]`` contains the target (NaN if none).

    >>> coverage({"a": [0.0, 2.0], "b": [3.0, 4.0]}, {"a": 1.0, "b": 5.0})
    0.5
    >>> math.isnan(coverage({}, {"a": 1.0}))
    True
    """
    hits = [lo <= target[k] <= hi for k, (lo, hi) in intervals.items()
            if k in target and math.isfinite(target[k])]
    return float(np.mean(hits)) if hits else math.nan


def released_share(estimates: Mapping[str, float], keys: Sequence[str]) -> float:
    """Share of ``keys`` with a finite released estimate.

    >>> released_share({"a": 1.0, "b": float("nan")}, ["a", "b", "c", "d"])
    0.25
    """
    if not keys:
        return math.nan
    return sum(1 for k in keys if k in estimates and math.isfinite(estimates[k])) / len(keys)


def _nanmean(values: Iterable[float]) -> float:
    arr = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan


def summarize(ds: Dataset, library: str, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per (query, ε) from a library's per-trial results (protocol format)."""
    rows: list[dict[str, Any]] = []
    by: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for r in results:
        by.setdefault((r["query"], float(r["epsilon"])), []).append(r)
    for (query, eps), trials in sorted(by.items(), key=lambda kv: (QUERIES.index(kv[0][0]),
                                                                    kv[0][1])):
        truth = true_statistics(ds.raw, ds.keys, query)
        target = true_statistics(ds.bounded, ds.keys, query, clip=ds.bounds)
        mae = [float(np.mean(e)) for t in trials if (e := absolute_errors(t["estimates"], truth)).size]
        mre = [float(np.mean(e)) for t in trials
               if (e := relative_errors(t["estimates"], truth)).size]
        rmae = [relative_mae(t["estimates"], truth) for t in trials]
        mab = [float(np.mean(e)) for t in trials
               if (e := absolute_errors(t["estimates"], target)).size]
        cov = [coverage(t["ci"], target) for t in trials if t.get("ci")]
        rows.append({
            "dataset": ds.name, "library": library, "query": query, "epsilon": eps,
            "trials": len(trials), "mae": _nanmean(mae), "mre": _nanmean(mre),
            "rel_mae": _nanmean(rmae),
            "mae_vs_bounded": _nanmean(mab), "ci_coverage": _nanmean(cov),
            "released": _nanmean(released_share(t["estimates"], ds.keys) for t in trials),
            "seconds": float(np.median([t["seconds"] for t in trials])),
        })
    return rows


# --------------------------------------------------------------------------- peers


@dataclass
class PeerOutcome:
    """What one library produced: a status, the reason when it failed, and its raw response."""

    library: str
    status: str  # "ok", "partial" (some queries failed), "failed", "unavailable", "skipped"
    reason: str = ""
    version: str = ""
    install_seconds: float | None = None
    run_seconds: float | None = None
    response: dict[str, Any] = field(default_factory=dict)


def _tail(text: str, lines: int = 6) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip() and "is ignored: it is" not in ln]
    return " | ".join(kept[-lines:])[-800:]


def requirements_digest(req_file: Path) -> str:
    """SHA-256 of a requirements file plus the Python version: a venv built from it is reused."""
    h = hashlib.sha256(req_file.read_bytes())
    h.update(sys.version.split()[0].encode())
    return h.hexdigest()


def ensure_venv(name: str, *, venvs: Path = VENVS_DIR, peers: Path = PEERS_DIR,
                timeout: float = 1800.0, build: bool = True
                ) -> tuple[Path | None, float | None, str]:
    """The peer's Python, creating ``venvs/<name>`` from ``peers/<name>.txt`` if needed.

    With ``build=False`` nothing is created: a missing or outdated venv gives ``python`` None
    and a reason starting with ``"skipped"`` that names the command building it.

    Returns ``(python, install_seconds, reason)``: ``python`` is None when the install failed
    (``reason`` says why); ``install_seconds`` is None when an up-to-date venv was reused.
    """
    req = peers / f"{name}.txt"
    if not req.is_file():
        return None, None, f"no requirements file {req}"
    venv = venvs / name
    python = venv / "bin" / "python"
    stamp = venv / ".pets-requirements-sha256"
    digest = requirements_digest(req)
    if python.exists() and stamp.is_file() and stamp.read_text().split()[:1] == [digest]:
        return python, None, ""
    if not build:
        return None, None, (f"skipped: peer venv not built ({venv}); build it with "
                            f"`{BUILD_COMMAND}`")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        # A venv without its own pip (fast); this interpreter's pip installs into it.
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                       capture_output=True, text=True, timeout=300)
        proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                               "-q", "--disable-pip-version-check", "-r", str(req)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, f"pip install timed out after {timeout:.0f} s"
    except subprocess.CalledProcessError as exc:
        return None, time.perf_counter() - t0, f"venv creation failed: {_tail(exc.stderr)}"
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return None, seconds, f"pip install failed: {_tail(proc.stderr)}"
    stamp.write_text(f"{digest}\n{seconds:.1f}\n")
    return python, seconds, ""


def recorded_install_seconds(name: str, *, venvs: Path = VENVS_DIR) -> float | None:
    """How long the install of a reused peer venv took when it was built (from its stamp)."""
    stamp = venvs / name / ".pets-requirements-sha256"
    try:
        parts = stamp.read_text().split()
        return float(parts[1]) if len(parts) > 1 else None
    except (OSError, ValueError):
        return None


def run_adapter(library: str, python: Path, script: Path, request: Mapping[str, Any],
                workdir: Path, *, timeout: float) -> PeerOutcome:
    """Run one adapter subprocess on ``request``; any failure becomes a reported outcome."""
    req_path = workdir / f"{library}-request.json"
    resp_path = workdir / f"{library}-response.json"
    req_path.write_text(json.dumps(request))
    env = dict(os.environ, PYTHONHASHSEED="0", PYSPARK_PYTHON=str(python))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([str(python), str(script), str(req_path), str(resp_path)],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=str(workdir))
    except subprocess.TimeoutExpired:
        return PeerOutcome(library, "failed", f"timed out after {timeout:.0f} s",
                           run_seconds=time.perf_counter() - t0)
    except OSError as exc:
        return PeerOutcome(library, "failed", f"could not start {python}: {exc}")
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not resp_path.is_file():
        return PeerOutcome(library, "failed",
                           f"exit {proc.returncode}: {_tail(proc.stderr) or _tail(proc.stdout)}",
                           run_seconds=seconds)
    try:
        response = json.loads(resp_path.read_text())
    except json.JSONDecodeError as exc:
        return PeerOutcome(library, "failed", f"unreadable response: {exc}", run_seconds=seconds)
    return _outcome_from_response(library, response, seconds)


def _outcome_from_response(library: str, response: dict[str, Any], seconds: float) -> PeerOutcome:
    errors = response.get("errors", [])
    if errors and not response.get("results"):
        status = "failed"
    elif errors:
        status = "partial"
    else:
        status = "ok"
    reason = "; ".join(sorted({f"{e['query']}: {e['error']}" for e in errors}))[:800]
    return PeerOutcome(library, status, reason, version=str(response.get("version", "")),
                       run_seconds=seconds, response=response)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Config:
    """Sizes of one run."""

    epsilons: tuple[float, ...]
    trials: int
    n_events: int
    n_users: int
    n_census: int
    libraries: tuple[str, ...] = LIBRARIES
    peer_timeout: float = 1800.0
    #: Trials for the slow peers (Tumult: seconds of Spark per release).
    slow_trials: int = 3
    #: Libraries run at once (each in its own process).
    workers: int = 2
    alpha: float = 0.05
    seed: int = 0


FULL = Config(epsilons=(0.05, 0.1, 0.3, 1.0, 3.0, 10.0), trials=5,
              n_events=100_000, n_users=10_000, n_census=20_000, slow_trials=3,
              peer_timeout=3600.0)
QUICK = Config(epsilons=(0.1, 1.0, 10.0), trials=2, n_events=10_000, n_users=1_000,
               n_census=3_000, peer_timeout=900.0, slow_trials=1)


def build_request(ds: Dataset, data_path: Path, cfg: Config) -> dict[str, Any]:
    """The protocol request for one dataset (see ``benchmarks/peers/_protocol.py``)."""
    lo, hi = ds.bounds
    return {"data": str(data_path), "privacy_unit": ds.unit, "group_by": "group",
            "keys": list(ds.keys), "column": "value", "bounds": [lo, hi],
            "max_rows_per_user": ds.max_rows_per_user, "max_groups_per_user": 1,
            "queries": list(QUERIES), "epsilons": list(cfg.epsilons), "trials": cfg.trials,
            "seed": cfg.seed, "alpha": cfg.alpha,
            "median_candidates": [float(x) for x in np.linspace(lo, hi, 101)]}


def run_library(library: str, ds: Dataset, request: Mapping[str, Any], workdir: Path,
                cfg: Config, installs: dict[str, tuple[Path | None, float | None, str]]
                ) -> PeerOutcome:
    """Run one library on one dataset; never raises, failures become outcomes."""
    script = PEERS_DIR / f"run_{library}.py"
    if library in VENV_PEERS:
        if library not in installs:
            installs[library] = ensure_venv(library, timeout=cfg.peer_timeout, build=False)
        python, install_s, reason = installs[library]
        if install_s is None and python is not None:
            install_s = recorded_install_seconds(library)
        if python is None:
            status = "skipped" if reason.startswith("skipped") else "unavailable"
            return PeerOutcome(library, status, reason, install_seconds=install_s)
    else:
        python, install_s = Path(sys.executable), None
    out = run_adapter(library, python, script, request, workdir, timeout=cfg.peer_timeout)
    out.install_seconds = install_s
    return out


class UtilityResult(Result):
    """The utility benchmark's rows plus peer outcomes; writes JSON, CSV, Markdown and PNGs."""

    def __init__(self, rows: list[dict[str, Any]], notes: list[str],
                 outcomes: list[dict[str, Any]], datasets: list[dict[str, Any]],
                 config: dict[str, Any]) -> None:
        # A quick run writes utility-quick.* and never replaces the committed full results.
        super().__init__("utility-quick" if config.get("quick") else "utility", rows, notes)
        self.outcomes = outcomes
        self.datasets = datasets
        self.config = config

    def write(self, directory: Path = RESULTS) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        mach = machine()
        payload = {"name": self.name, "machine": mach, "config": self.config,
                   "datasets": self.datasets, "peers": self.outcomes, "rows": self.rows,
                   "notes": self.notes}
        jpath = directory / f"{self.name}.json"
        jpath.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        with open(directory / f"{self.name}.csv", "w", newline="", encoding="utf-8") as fh:
            cols = list(self.rows[0]) if self.rows else ["dataset"]
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(self.rows)
        pngs = plot_errors(self.rows, directory, [d["name"] for d in self.datasets],
                           prefix=self.name)
        mpath = directory / f"{self.name}.md"
        mpath.write_text(self.markdown(mach, pngs=[p.name for p in pngs]))
        if directory.resolve() == RESULTS.resolve() and self.name == "utility":  # refresh docs
            copy_plots_to_docs(directory)
        return jpath, mpath

    def markdown(self, mach: dict[str, Any], pngs: Sequence[str] = ()) -> str:
        versions = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
        lines = ["# Privacy/utility: pets and its peers", "",
                 f"{mach['when']} · Python {mach['python']} · {mach['cpus']} CPUs · "
                 f"load {mach['load_avg_1m']:.1f} · {versions}", "",
                 f"ε per query (pure DP, user-level) on the grid {list(self.config['epsilons'])}; "
                 f"{self.config['trials']} trials per ε; public group keys; the same "
                 "contribution bounds for every library.", "", "## Libraries", "",
                 "| dataset | library | version | status | venv install s | run s | reason |",
                 "|---|---|---|---|---|---|---|"]
        for o in self.outcomes:
            inst = "" if o["install_seconds"] is None else f"{o['install_seconds']:.0f}"
            run = "" if o["run_seconds"] is None else f"{o['run_seconds']:.0f}"
            reason = str(o["reason"]).replace("|", "/")
            lines.append(f"| {o['dataset']} | {o['library']} | {o['version']} | {o['status']} "
                         f"| {inst} | {run} | {reason} |")
        lines += ["", "## Datasets", ""]
        lines += [f"- **{d['name']}**: {d['description']}" for d in self.datasets]
        for ds in self.datasets:
            lines += ["", f"## {ds['name']}: relative MAE (Σ|error| / Σ|truth|) vs the raw "
                      "statistic", ""]
            lines += _pivot(self.rows, ds["name"], "rel_mae", self.config["epsilons"])
            lines += ["", f"## {ds['name']}: mean absolute error", ""]
            lines += _pivot(self.rows, ds["name"], "mae", self.config["epsilons"])
        lines += ["", "## Confidence-interval coverage (nominal "
                  f"{1 - self.config['alpha']:.0%}, against the bounded statistic)", ""]
        lines += _coverage_table(self.rows)
        lines += ["", "## Share of groups released", ""]
        lines += _released_table(self.rows)
        if pngs:
            lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in pngs]
        if self.notes:
            lines += ["", "## Notes", "", *[f"- {n}" for n in self.notes]]
        lines += ["", "All numbers per (dataset, library, query, ε): "
                  f"`{self.name}.csv` / `{self.name}.json`."]
        return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:.2g}" if abs(v) < 10 else f"{v:,.0f}"


def _pivot(rows: Sequence[Mapping[str, Any]], dataset: str, metric: str,
           epsilons: Sequence[float]) -> list[str]:
    out = ["| query | library | " + " | ".join(f"ε={e:g}" for e in epsilons) + " |",
           "|---|---|" + "---|" * len(epsilons)]
    for q in QUERIES:
        for lib in LIBRARIES:
            sel = {r["epsilon"]: r[metric] for r in rows
                   if r["dataset"] == dataset and r["library"] == lib and r["query"] == q}
            if sel:
                out.append(f"| {q} | {lib} | "
                           + " | ".join(_fmt(sel.get(e, math.nan)) for e in epsilons) + " |")
    return out


def _coverage_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["| dataset | library | query | mean coverage over ε | min | max |", "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        if math.isfinite(r["ci_coverage"]):
            groups.setdefault((r["dataset"], r["library"], r["query"]), []).append(r["ci_coverage"])
    for (d, lib, q), v in groups.items():
        out.append(f"| {d} | {lib} | {q} | {np.mean(v):.3f} | {min(v):.3f} | {max(v):.3f} |")
    if not groups:
        out.append("| – | no library reported intervals | | | | |")
    return out


def _released_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["| dataset | library | min share over queries and ε |", "|---|---|---|"]
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["library"]), []).append(r["released"])
    for (d, lib), v in groups.items():
        out.append(f"| {d} | {lib} | {np.nanmin(v):.2f} |")
    return out


def run(quick: bool = False, *, libraries: Sequence[str] | None = None,
        config: Config | None = None, log: Callable[[str], None] | None = None) -> UtilityResult:
    """Run the benchmark and return its result (``result.write()`` writes the files)."""
    cfg = config or (QUICK if quick else FULL)
    env_libs = [x.strip() for x in os.environ.get("PETS_BENCH_LIBRARIES", "").split(",")
                if x.strip()]
    libs = tuple(libraries or env_libs or cfg.libraries)
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    datasets = [events_dataset(cfg.n_events, cfg.n_users, seed=cfg.seed),
                census_dataset(cfg.n_census, seed=cfg.seed)]
    rows: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    installs = {lib: ensure_venv(lib, timeout=cfg.peer_timeout, build=False)
                for lib in libs if lib in VENV_PEERS}
    for lib, (py, secs, why) in installs.items():
        say(f"utility: {lib} venv " + ("reused" if secs is None and py else
                                        f"installed in {secs or 0:.0f} s" if py else
                                        f"unavailable: {why}"))
    with tempfile.TemporaryDirectory(prefix="pets-bench-utility-") as tmp:
        work = Path(tmp)
        jobs = []
        for ds in datasets:
            data_path = work / f"{ds.name}.parquet"
            ds.bounded.to_parquet(data_path, index=False)
            request = build_request(ds, data_path, cfg)
            (work / ds.name).mkdir()
            for lib in libs:
                req = dict(request)
                if lib in SLOW_PEERS:
                    req["trials"] = min(cfg.trials, cfg.slow_trials)
                jobs.append((ds, lib, req, work / ds.name))
        # Slow peers first; two at a time (a 2-core box).
        jobs.sort(key=lambda j: j[1] not in SLOW_PEERS)

        def one(job: tuple[Dataset, str, dict[str, Any], Path]) -> PeerOutcome:
            ds, lib, req, wd = job
            say(f"utility: {ds.name} · {lib} …")
            out = run_library(lib, ds, req, wd, cfg, installs)
            say(f"utility: {ds.name} · {lib}: {out.status} {out.reason[:200]}")
            return out

        with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
            results = list(pool.map(one, jobs))
    for (ds, lib, _, _), out in sorted(zip(jobs, results, strict=True),
                                       key=lambda p: (datasets.index(p[0][0]),
                                                      LIBRARIES.index(p[0][1]))):
        rows += summarize(ds, lib, out.response.get("results", []))
        outcomes.append({"dataset": ds.name, "library": lib, "status": out.status,
                         "reason": out.reason, "version": out.version,
                         "install_seconds": out.install_seconds,
                         "run_seconds": out.run_seconds,
                         "notes": out.response.get("notes", [])})
    notes = [
        "Errors are against the statistic on the raw rows, so at large ε they level off at the "
        "bias of contribution bounding and clipping, which is the same for every library.",
        "Coverage is measured against the bounded, clipped statistic: that is what a DP interval "
        "can promise. OpenDP's interval is ± `summarize(alpha).accuracy` (count and sum only).",
        "diffprivlib has no group-by or privacy unit: its adapter adds its Laplace mechanism "
        "with the user-level sensitivity (k rows × bound) for count, sum and mean, and uses "
        "group privacy (ε/k) for the median (its `tools.sum` treats the record count as "
        "public, which is not DP under add/remove-one-user).",
        "Every trial is an independent ε-DP release (noise drawn anew); OpenDP, pets, PipelineDP "
        "and Tumult draw noise from a CSPRNG that cannot be seeded, diffprivlib is seeded.",
    ]
    return UtilityResult(rows, notes, outcomes,
                         [{"name": d.name, "description": d.description, "rows": len(d.raw),
                           "bounded_rows": len(d.bounded), "groups": len(d.keys),
                           "bounds": list(d.bounds), "max_rows_per_user": d.max_rows_per_user}
                          for d in datasets],
                         {"epsilons": list(cfg.epsilons), "trials": cfg.trials,
                          "slow_trials": cfg.slow_trials, "peer_timeout_s": cfg.peer_timeout,
                          "alpha": cfg.alpha, "quick": quick, "libraries": list(libs)})


def plot_errors(rows: Sequence[Mapping[str, Any]], directory: Path,
                datasets: Sequence[str], prefix: str = "utility") -> list[Path]:
    """One PNG per dataset, a column per query, log-log against ε: the relative MAE against the
    raw statistic (top: what the analyst gets, bounding bias included) and the MAE against the
    bounded statistic (bottom: the noise alone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("rel_mae", "relative MAE vs raw"), ("mae_vs_bounded", "MAE vs bounded (noise)"))
    paths = []
    for name in datasets:
        fig, grid = plt.subplots(2, len(QUERIES), figsize=(4.2 * len(QUERIES), 6.4),
                                 sharex=True)
        for row_axes, (metric, ylabel) in zip(grid, panels, strict=True):
            for ax, q in zip(row_axes, QUERIES, strict=True):
                for i, lib in enumerate(LIBRARIES):
                    sel = sorted((r["epsilon"], r[metric]) for r in rows
                                 if r["dataset"] == name and r["library"] == lib
                                 and r["query"] == q and math.isfinite(r.get(metric, math.nan))
                                 and r[metric] > 0)
                    if sel:
                        x, y = zip(*sel, strict=True)
                        ax.plot(x, y, marker="o", ms=3, lw=2.4 if lib == "pets" else 1.2,
                                color=f"C{i}", label=lib)
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.grid(True, which="both", alpha=0.3)
            row_axes[0].set_ylabel(ylabel)
        for ax, q in zip(grid[0], QUERIES, strict=True):
            ax.set_title(q)
        for ax in grid[1]:
            ax.set_xlabel("ε per query")
        handles: list[Any] = []
        labels: list[str] = []
        for ax in grid.flat:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False)
        fig.suptitle(f"{name}: error vs ε (user-level, same bounds)", y=0.01, fontsize=9)
        fig.tight_layout(rect=(0, 0.02, 1, 0.95))
        path = directory / f"{prefix}_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def copy_plots_to_docs(directory: Path = RESULTS, docs_img: Path = DOCS_IMG) -> list[Path]:
    """Copy the committed utility PNGs next to the docs page that embeds them."""
    docs_img.mkdir(parents=True, exist_ok=True)
    copied = []
    for png in sorted(directory.glob("utility_*.png")):
        shutil.copy2(png, docs_img / png.name)
        copied.append(docs_img / png.name)
    return copied

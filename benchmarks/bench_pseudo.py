"""Pseudonymization speed: keyed hashing, FF1, anonymity report (``python -m benchmarks pseudo``).

Every figure is a median over repeats, with a ratio against a baseline measured in the same run:

* keyed pseudonyms (``KeyedHash.apply``, hex128) vs the naive per-row loop
  ``[hmac.digest(key, v.encode(), "sha256").hex()[:32] for v in values]`` over a ready-made
  Python list (the loop is not charged for building the list; ``KeyedHash`` is charged for
  everything from the pandas column to the pandas result) — 10M rows with 500k distinct ids,
  and 10M all-distinct ids (quick: 1M rows);
* FF1 on 16-digit numbers: the vectorized column path vs the scalar per-value path;
* ``anonymity_report`` on 1M rows × 4 quasi-identifiers vs a bare pandas
  ``groupby(...).size()`` (which computes only class sizes).
"""

from __future__ import annotations

import gc
import hmac
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from benchmarks._harness import Result
from pets.keys import Secret
from pets.pseudo import FF1, AgeBand, KeyedHash, PostcodePrefix, anonymity_report
from pets.pseudo._base import derive_domain_key


def _measure_pair(fn: Callable[[], object], base: Callable[[], object],
                  repeat: int) -> tuple[float, float, float, float]:
    """Median wall and process-CPU times of ``fn()`` and ``base()``, runs interleaved.

    Interleaving (fn, base, fn, base, …) lets both see the same load on a shared machine, so
    the wall-time ratio is fair. CPU time is what "on one core" means there: it is not inflated
    by waiting for the CPU (wall time is).
    """
    walls: tuple[list[float], list[float]] = ([], [])
    cpus: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for i, f in enumerate((fn, base)):
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            f()
            cpus[i].append(time.process_time() - c0)
            walls[i].append(time.perf_counter() - w0)
    med = statistics.median
    return med(walls[0]), med(cpus[0]), med(walls[1]), med(cpus[1])


def _ids(n: int, distinct: int, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    pool = pa.array([f"user-{i:09d}@example.eu" for i in range(distinct)], pa.large_string())
    if distinct == n:
        idx = rng.permutation(n)
    else:
        idx = rng.integers(0, distinct, n)
    return pd.Series(pd.arrays.ArrowStringArray(pool.take(pa.array(idx))))


def _naive(key: bytes, values: list[str]) -> list[str]:
    digest = hmac.digest
    return [digest(key, v.encode(), "sha256").hex()[:32] for v in values]


def _keyed_case(res: Result, n: int, distinct: int, repeat: int) -> None:
    root = Secret(bytes(range(32)))
    h = KeyedHash(root, domain="bench")
    key = derive_domain_key(root, "keyed-hash", "bench").expose()
    series = _ids(n, distinct)
    values = series.tolist()
    ours = h.apply(series)
    assert ours.iloc[:1000].tolist() == _naive(key, values[:1000])  # same output
    del ours
    t_ours, c_ours, t_naive, c_naive = _measure_pair(
        lambda: h.apply(series), lambda: _naive(key, values), repeat)
    res.add(case=f"keyed-hash {n:,} rows, {distinct:,} distinct", rows=n,
            pets_s=round(t_ours, 3), baseline_s=round(t_naive, 3),
            pets_rows_per_s=round(n / t_ours), baseline_rows_per_s=round(n / t_naive),
            speedup=round(t_naive / t_ours, 2),
            pets_rows_per_cpu_s=round(n / c_ours), baseline_rows_per_cpu_s=round(n / c_naive),
            cpu_speedup=round(c_naive / c_ours, 2), baseline="naive per-row hmac.digest loop")


def _ff1_case(res: Result, n_vec: int, n_scalar: int, repeat: int) -> None:
    f = FF1(bytes(range(32)), "0123456789", tweak=b"bench")
    rng = np.random.default_rng(1)
    digits = (rng.integers(0, 10, (n_vec, 16), dtype=np.uint8) + 48).view("S16").ravel()
    column = pa.array(digits.astype(str), pa.large_string())
    scalar_vals = column.slice(0, n_scalar).to_pylist()
    assert f.crypt_arrow(column.slice(0, 200)).to_pylist() == [
        f.encrypt(v) for v in scalar_vals[:200]]
    t_vec, c_vec, t_sca, c_sca = _measure_pair(
        lambda: f.crypt_arrow(column), lambda: [f.encrypt(v) for v in scalar_vals], repeat)
    vec_rate, sca_rate = n_vec / t_vec, n_scalar / t_sca
    res.add(case=f"FF1 16-digit, vectorized ({n_vec:,} values)", rows=n_vec,
            pets_s=round(t_vec, 3), pets_rows_per_s=round(vec_rate),
            baseline_rows_per_s=round(sca_rate), speedup=round(vec_rate / sca_rate, 1),
            pets_rows_per_cpu_s=round(n_vec / c_vec),
            baseline_rows_per_cpu_s=round(n_scalar / c_sca),
            cpu_speedup=round((n_vec / c_vec) / (n_scalar / c_sca), 1),
            baseline="FF1 scalar path, per value")
    res.add(case=f"FF1 16-digit, scalar ({n_scalar:,} values)", rows=n_scalar,
            pets_s=round(t_sca, 3), pets_rows_per_s=round(sca_rate),
            pets_rows_per_cpu_s=round(n_scalar / c_sca))


def _anonymity_case(res: Result, n: int, repeat: int) -> None:
    from pets.datasets import synthetic_users

    users = synthetic_users(n, seed=2)
    df = pd.DataFrame({
        "age": AgeBand("2026-01-01", width=5).apply(users["birth_date"]),
        "zip": PostcodePrefix(3).apply(users["postcode"]),
        "country": users["country"],
        "signup_year": users["signup_ts"].dt.year,
        "sensitive": pd.Series(np.random.default_rng(0).choice(["a", "b", "c", "d"], n)),
    })
    qis = ["age", "zip", "country", "signup_year"]
    anonymity_report(df, qis, k=5)  # warm-up
    def groupby() -> object:
        return df.groupby(qis, dropna=False, observed=True).size()

    t_rep, c_rep, t_pd, c_pd = _measure_pair(
        lambda: anonymity_report(df, qis, k=5), groupby, repeat)
    t_sens, c_sens, _, _ = _measure_pair(
        lambda: anonymity_report(df, qis, "sensitive", k=5), groupby, repeat)
    rep = anonymity_report(df, qis, k=5)
    res.add(case=f"anonymity_report {n:,} rows x 4 QIs", rows=n, pets_s=round(t_rep, 3),
            baseline_s=round(t_pd, 3), speedup=round(t_pd / t_rep, 2),
            pets_cpu_s=round(c_rep, 3), cpu_speedup=round(c_pd / c_rep, 2),
            baseline="pandas groupby(4 QIs).size() (class sizes only)",
            note=f"k={rep.k}, classes={rep.classes:,}")
    res.add(case=f"anonymity_report {n:,} rows x 4 QIs + sensitive (l, t)", rows=n,
            pets_s=round(t_sens, 3), baseline_s=round(t_pd, 3), speedup=round(t_pd / t_sens, 2),
            pets_cpu_s=round(c_sens, 3), cpu_speedup=round(c_pd / c_sens, 2),
            baseline="pandas groupby(4 QIs).size() (class sizes only)")


def run(quick: bool) -> Result:
    res = Result("pseudo")
    big = 1_000_000 if quick else 10_000_000
    t0 = time.perf_counter()
    _keyed_case(res, big, big // 20, repeat=3)
    _keyed_case(res, big, big, repeat=3)
    _ff1_case(res, 1_000_000 if not quick else 200_000, 20_000 if not quick else 5_000,
              repeat=5)
    _anonymity_case(res, 1_000_000 if not quick else 200_000, repeat=5)
    res.notes += [
        "Targets (issue 4): keyed-hash >= 3x the naive loop and >= 1.5M rows/s with 500k "
        "distinct in 10M; no slower than the naive loop when all distinct; FF1 vectorized "
        ">= 500k values/s, scalar >= 10k/s; anonymity report on 1M x 4 QIs < 1 s.",
        "Medians of 3 (keyed hash) or 5 runs, pets and baseline runs interleaved on the same "
        "data. The machine is shared (see load) so trust ratios more than absolute times; "
        "*_per_cpu_s columns divide by process CPU time (one core, not inflated by waiting for "
        "the CPU).",
        f"quick={quick}; total wall time {time.perf_counter() - t0:.0f} s.",
    ]
    return res

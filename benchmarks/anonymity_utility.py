"""Utility lost to k-anonymity: ``pets.pseudo.enforce_k`` on the synthetic users, k = 2 … 50.

Quasi-identifiers: birth date (→ year → 5-year → 10-year → 20-year bands), postcode (→ 3, 2, 1
leading characters → suppressed) and country (→ suppressed). For each k and each suppression allowance,
``enforce_k`` searches the generalization lattice; we record what it cost:

- ``rows_suppressed`` / ``suppression_rate``: records removed because their class stayed below k;
- ``discernibility``: Σ class size² over kept rows + suppressed × rows (Bayardo & Agrawal 2005),
  and the same divided by the rows² of the input (``disc_norm``: 1/rows = every record unique,
  1 = everybody in one class);
- ``c_avg``: normalised average class size, (rows kept / classes) / k (LeFevre et al. 2006;
  1 is ideal);
- ``levels``: the generalization chosen per quasi-identifier;
- ``seconds``: wall time of the search.

Run: ``python -m benchmarks anonymity [--quick]`` or ``pets bench anonymity [--quick]``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks._harness import PlottedResult

KS = (2, 3, 5, 10, 15, 20, 30, 40, 50)
QUICK_KS = (2, 5, 10, 20, 50)
SUPPRESSION = (0.0, 0.01, 0.05)


def quasi_identifiers(n: int, seed: int = 0) -> pd.DataFrame:
    """The quasi-identifier columns of ``synthetic_users(n)``: birth date, postcode, country."""
    from pets.datasets import synthetic_users

    users = synthetic_users(n, seed=seed)
    return users[["birth_date", "postcode", "country"]].copy()


def hierarchies() -> dict[str, list[Any]]:
    """Generalization hierarchies per quasi-identifier, most specific first."""
    from pets.pseudo import Bucket, PostcodePrefix, Suppress

    def year(s: pd.Series) -> pd.Series:
        return pd.to_datetime(s).dt.year

    def band(width: int) -> Any:
        b = Bucket(width=width)

        def f(s: pd.Series) -> pd.Series:
            return b.apply(pd.to_datetime(s).dt.year.astype("float64"))

        f.__name__ = f"year_band_{width}"
        return f

    return {
        "birth_date": [year, band(5), band(10), band(20)],
        "postcode": [PostcodePrefix(3), PostcodePrefix(2), PostcodePrefix(1), Suppress()],
        "country": [Suppress()],
    }


def measure(frame: pd.DataFrame, k: int, max_suppression: float) -> dict[str, Any]:
    """One ``enforce_k`` run and its utility figures (or the reason it could not meet k)."""
    from pets._errors import PolicyError
    from pets.pseudo import enforce_k

    qis = list(frame.columns)
    rows = len(frame)
    t0 = time.perf_counter()
    try:
        res = enforce_k(frame, qis, k, hierarchies(), max_suppression=max_suppression)
    except PolicyError as exc:
        return {"k": k, "max_suppression": max_suppression, "rows": rows,
                "status": f"infeasible: {exc}", "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    classes = max(res.report.classes, 1)
    kept = rows - res.rows_suppressed
    return {
        "k": k, "max_suppression": max_suppression, "rows": rows, "status": "ok",
        "rows_suppressed": res.rows_suppressed, "suppression_rate": res.suppression_rate,
        "discernibility": int(res.discernibility),
        "disc_norm": res.discernibility / rows**2,
        "c_avg": (kept / classes) / k, "classes": res.report.classes, "k_achieved": res.report.k,
        "levels": " ".join(f"{c}={lv}" for c, lv in res.levels.items()),
        "seconds": seconds,
    }


class AnonymityResult(PlottedResult):
    """Rows plus a plot of suppression and discernibility against k."""

    caption = "suppression and discernibility vs k"
    published = "anonymity"
    plot = staticmethod(lambda rows, path: plot(rows, path))


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Suppression rate and normalised discernibility vs k, one line per allowance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, ms in enumerate(sorted({r["max_suppression"] for r in rows})):
        sel = [r for r in rows if r["max_suppression"] == ms and r["status"] == "ok"]
        ks = [r["k"] for r in sel]
        a1.plot(ks, [100 * r["suppression_rate"] for r in sel], marker="o", color=f"C{i}",
                label=f"≤ {ms:.0%} suppressed")
        a2.plot(ks, [r["disc_norm"] for r in sel], marker="o", color=f"C{i}")
    a1.set_xlabel("k")
    a1.set_ylabel("rows suppressed (%)")
    a2.set_xlabel("k")
    a2.set_ylabel("discernibility / rows²")
    a2.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ks = sorted({r["k"] for r in rows})
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_xticks(ks)
        a.xaxis.set_major_formatter(ScalarFormatter())
        a.xaxis.set_minor_formatter(NullFormatter())
        a.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False) -> AnonymityResult:
    """Run ``enforce_k`` over the k grid and suppression allowances."""
    n = 5_000 if quick else 20_000
    frame = quasi_identifiers(n)
    # A quick run writes anonymity-quick.* and never replaces the committed full results.
    result = AnonymityResult("anonymity-quick" if quick else "anonymity")
    for ms in SUPPRESSION:
        for k in QUICK_KS if quick else KS:
            result.add(**measure(frame, k, ms))
    result.notes += [
        f"synthetic_users({n:,}, seed=0){' (quick run)' if quick else ''}; quasi-identifiers "
        "birth_date, postcode, country.",
        "Hierarchies: birth_date → year → 5/10/20-year bands; postcode → 3/2/1 leading "
        "characters → suppressed; country → suppressed. Levels are applied to the original column.",
        "discernibility (lower is better) counts a suppressed row as indistinguishable from "
        "every row; disc_norm = discernibility / rows²; c_avg = (kept rows / classes) / k.",
    ]
    return result

"""Shared benchmark plumbing: timing with medians, machine facts, JSON + Markdown results.

Each benchmark module ``benchmarks/bench_<name>.py`` defines ``run(quick: bool) -> Result``.
Results land in ``benchmarks/results/<name>.json`` and ``<name>.md``. Every speed figure is a
median over repeats and is quoted with a ratio against a baseline measured in the same run.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs (after ``warmup``)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> dict[str, Any]:
    """Facts that make a result comparable: CPU count, Python, library versions."""
    versions = {}
    for pkg in ("pets", "cryptography", "numpy", "pandas", "pyarrow", "opendp", "polars",
                "dask", "distributed", "python-pkcs11"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "versions": versions,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@dataclass
class Result:
    """Rows of one benchmark: each row a dict with at least ``case`` and measured figures."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def write(self, directory: Path = RESULTS) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        mach = machine()
        payload = {"name": self.name, "machine": mach, "rows": self.rows, "notes": self.notes}
        jpath = directory / f"{self.name}.json"
        jpath.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        mpath = directory / f"{self.name}.md"
        mpath.write_text(self.markdown(mach))
        return jpath, mpath

    def markdown(self, mach: dict[str, Any]) -> str:
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        lines = [f"# {self.name}", "",
                 f"{mach['when']} · Python {mach['python']} · {mach['cpus']} CPUs · "
                 f"load {mach['load_avg_1m']:.1f} · "
                 + ", ".join(f"{k} {v}" for k, v in mach["versions"].items()), ""]
        if self.rows:
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + "---|" * len(cols))
            for r in self.rows:
                lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


DOCS_IMG = RESULTS.parent.parent / "docs" / "img"


class PlottedResult(Result):
    """A result that also draws ``plot(rows, png_path)`` and embeds it under ``caption``.

    The committed full-size run (``directory`` is ``RESULTS`` and the name is ``published``)
    also copies the PNG to ``docs/img/`` for the docs site; quick runs never touch it.
    """

    caption = "plot"
    published = ""

    @staticmethod
    def plot(rows: list[dict[str, Any]], path: Path) -> None:
        raise NotImplementedError

    def write(self, directory: Path = RESULTS) -> tuple[Path, Path]:
        import shutil

        paths = super().write(directory)
        png = f"{self.name}.png"
        self.plot(self.rows, directory / png)
        with open(paths[1], "a", encoding="utf-8") as fh:
            fh.write(f"\n![{self.caption}]({png})\n")
        if directory.resolve() == RESULTS.resolve() and self.name == self.published:
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy2(directory / png, DOCS_IMG / png)
        return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)

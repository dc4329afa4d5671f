"""Run benchmarks: ``python -m benchmarks [NAME ...] [--quick] [--out DIR] [--build-peers]``.

NAME is the part after ``bench_`` in ``benchmarks/bench_<NAME>.py``; with no NAME, all run.
Results go to ``--out DIR`` (default ``benchmarks/results/``, the committed results of the
checkout). ``--build-peers`` first lists and then builds the peer venvs the selected benchmarks
use (``benchmarks/_peers.py``); without it nothing is installed and missing peers are skipped.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Any

from benchmarks import _peers
from benchmarks._harness import RESULTS

HERE = Path(__file__).resolve().parent


def run_benchmark(name: str, quick: bool) -> Any:
    """Import ``benchmarks.bench_<name>`` and return its ``run(quick=...)`` result."""
    return importlib.import_module(f"benchmarks.bench_{name}").run(quick=quick)


def main(argv: list[str] | None = None) -> int:
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)])
                   if m.name.startswith("bench_"))
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("names", nargs="*", help=f"any of: {', '.join(names)}")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--out", type=Path, default=RESULTS,
                   help="directory for the results (default: benchmarks/results/)")
    p.add_argument("--build-peers", action="store_true",
                   help="list, then build the peer venvs in the user cache before running")
    args = p.parse_args(argv)
    unknown = set(args.names) - set(names)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    selected = args.names or names
    if args.build_peers and any(n in _peers.USES_PEERS for n in selected):
        failed = _peers.build(_peers.VENV_PEERS)
        if failed:
            print(f"peer venvs not built: {', '.join(sorted(failed))} (they are skipped)",
                  file=sys.stderr, flush=True)
    out = args.out.resolve()
    for name in selected:
        print(f"== {name}", flush=True)
        result = run_benchmark(name, args.quick)
        if args.quick and not result.name.endswith("-quick"):
            result.name += "-quick"  # never overwrite the committed full-size results
        _jpath, mpath = result.write(out)
        print(mpath.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

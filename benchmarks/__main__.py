"""Run benchmarks: ``python -m benchmarks [NAME ...] [--quick]``.

NAME is the part after ``bench_`` in ``benchmarks/bench_<NAME>.py``; with no NAME, all run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)])
                   if m.name.startswith("bench_"))
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("names", nargs="*", help=f"any of: {', '.join(names)}")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = p.parse_args(argv)
    unknown = set(args.names) - set(names)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    for name in args.names or names:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== {name}", flush=True)
        result = mod.run(quick=args.quick)
        if args.quick and not result.name.endswith("-quick"):
            result.name += "-quick"  # never overwrite the committed full-size results
        _jpath, mpath = result.write()
        print(mpath.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``pets bench``: run the benchmarks of a source checkout (utility, throughput, anonymity, …).

The benchmarks are not part of the installed package: they live in the repository's
``benchmarks/`` folder next to ``pets/``, write their results to ``benchmarks/results/`` and may
create peer venvs under ``benchmarks/.peers/``. From an installed wheel this command says so and
exits 1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

__all__ = ["COMMANDS", "bench", "find_checkout"]


def find_checkout() -> Path | None:
    """The source checkout holding ``benchmarks/`` next to this ``pets`` package, if any."""
    root = Path(__file__).resolve().parents[2]
    if (root / "benchmarks" / "__main__.py").is_file() and (root / "pets").is_dir():
        return root
    return None


def available(root: Path) -> list[str]:
    """Benchmark names of a checkout (``benchmarks/bench_<name>.py``)."""
    return sorted(p.stem[len("bench_"):] for p in (root / "benchmarks").glob("bench_*.py"))


@click.command()
@click.argument("names", nargs=-1, metavar="[utility|throughput|anonymity|…]...")
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run of a few minutes.")
def bench(names: tuple[str, ...], quick: bool) -> None:
    """Run benchmarks (all without NAMES) and write benchmarks/results/.

    --quick writes <name>-quick.* next to the committed results, never over them.

    utility: DP error vs ε against OpenDP, diffprivlib, PipelineDP and Tumult (peer venvs are
    created on first use under benchmarks/.peers/; PETS_BENCH_LIBRARIES=pets,opendp runs only
    some). throughput: rows/s of each component vs the
    bare primitive. anonymity: utility lost by enforce_k for k = 2…50.

    Needs a source checkout of pets (the benchmarks are not in the installed package).
    """
    root = find_checkout()
    if root is None:
        raise click.ClickException(
            "benchmarks are not available: they ship with the source checkout, not the "
            "installed package. Clone the pets repository, `pip install -e '.[dev,bench]'` "
            "and run `pets bench` (or `python -m benchmarks`) from it.")
    known = available(root)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.UsageError(f"unknown benchmark(s) {', '.join(unknown)}; available: "
                               f"{', '.join(known)}")
    cmd = [sys.executable, "-m", "benchmarks", *names, *(["--quick"] if quick else [])]
    code = subprocess.call(cmd, cwd=root)  # noqa: S603  (names checked against the checkout)
    if code:
        raise click.ClickException(f"benchmarks exited with status {code}")


COMMANDS = [bench]

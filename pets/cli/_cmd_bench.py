"""``pets bench``: run the benchmarks of a source checkout (utility, throughput, anonymity, …).

The benchmarks are not part of the installed package: they live in the repository's
``benchmarks/`` folder next to ``pets/``. From an installed wheel this command says so and exits 1.

Where things go: results to ``--out DIR`` (default ``./pets-bench-results`` under the current
directory, so never inside the checkout unless that is where you run it); peer venvs (OpenDP's
peers diffprivlib, PipelineDP, Tumult) to a per-user cache directory (``benchmarks/_peers.py``),
and only with ``--build-peers``, which lists the packages and versions before installing them.
Without it, a peer whose venv is missing is reported as skipped with the command to build it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

__all__ = ["COMMANDS", "DEFAULT_OUT", "bench", "find_checkout"]

#: Results directory, relative to the current directory, when ``--out`` is not given.
DEFAULT_OUT = "pets-bench-results"


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
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_OUT, show_default=True,
              help="Directory for the results (relative to the current directory).")
@click.option("--build-peers", is_flag=True,
              help="List, then pip-install the peer venvs (diffprivlib, PipelineDP, Tumult) "
                   "into the user cache before running. Without it nothing is installed.")
def bench(names: tuple[str, ...], quick: bool, out: Path, build_peers: bool) -> None:
    """Run benchmarks (all without NAMES) and write the results to --out.

    --quick writes <name>-quick.*, never over full-size results.

    utility: DP error vs ε against OpenDP, diffprivlib, PipelineDP and Tumult (the last three
    run in venvs in the user cache, built only with --build-peers, which lists what it installs
    first; missing ones are skipped; PETS_BENCH_LIBRARIES=pets,opendp runs only some).
    throughput: rows/s of each component vs the bare primitive. anonymity: utility lost by
    enforce_k for k = 2…50.

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
    cmd = [sys.executable, "-m", "benchmarks", *names, *(["--quick"] if quick else []),
           "--out", str(out.resolve()), *(["--build-peers"] if build_peers else [])]
    code = subprocess.call(cmd, cwd=root)  # noqa: S603  (names checked against the checkout)
    if code:
        raise click.ClickException(f"benchmarks exited with status {code}")


COMMANDS = [bench]

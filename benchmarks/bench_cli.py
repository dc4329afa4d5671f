"""What the lean CLI commands cost: ``pets --help`` start-up and ``pets encrypt`` memory.

Run: ``.venv/bin/python -m benchmarks cli [--quick]``.

Every command runs in a fresh interpreter on a scratch boundary (``pets keys init --name eu``,
``pets boundary init --signing-kek local://eu/boundary``, ``pets keys create
local://eu/users``; ``PETS_MASTER_KEY`` in the environment), as an operator runs it. Cases:

* **help** — wall time of ``python -m pets.cli --help``, median of 5 after one warm-up, and
  its CPU time (user + sys of the child); baseline: the bare interpreter (``python -c pass``)
  and ``import click``, measured the same way in the same run. Measured twice: with a bytecode
  cache (as an installed package runs; ``PYTHONPYCACHEPREFIX`` points at a scratch directory,
  so the checkout is not touched), and without one (``PYTHONDONTWRITEBYTECODE``, every module
  compiled on each start: the worst case, as in this repository's CI environment).
* **encrypt / decrypt** — ``pets encrypt`` of a 1 GiB file (quick: 64 MiB; sparse, made with
  ``truncate`` in a scratch directory and deleted afterwards) and ``pets decrypt`` of the
  result, run in-process through ``pets.cli.main`` in the child, which reports its own peak
  resident set (``VmHWM`` from ``/proc/self/status``) and which heavy libraries it loaded;
  baseline: the same file through bare ``AESGCM.encrypt_into`` in 1 MiB segments (same read and
  write loop, no pets), and, for reference, ``pets encrypt`` with pandas and pyarrow imported
  first (what the command cost before its imports were made lazy).

Targets (issue #14): ``pets --help`` ≤ 0.3 s, ``pets encrypt`` of 1 GiB ≤ 80 MiB peak RSS,
and no pandas / pyarrow / OpenDP in the key and envelope commands (asserted in
``tests/cli/test_lean.py``; nothing here is asserted: timings depend on the machine's load,
quoted in the result's header).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Result

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "pyarrow", "opendp", "numpy", "polars")
MASTER_HEX = "5a" * 32  # a scratch keyring only
_DROP = ("PETS_KEYRING", "PETS_AUDIT_LOG", "PETS_BOUNDARY", "PETS_BOUNDARY_KEYS",
         "PETS_PKCS11_TOKEN", "PETS_PKCS11_LIBRARY", "PETS_PKCS11_PIN", "PETS_KEYRING_PASSPHRASE",
         "PETS_KEY_SERVERS", "PETS_DASK_SCHEDULER", "PETS_DEBUG", "PYTHONPYCACHEPREFIX",
         "PYTHONDONTWRITEBYTECODE")

# Runs one pets command in-process; reports exit code, peak RSS and the heavy modules loaded.
_RUN = r"""
import json, sys
args, report, preload = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
for name in preload:
    __import__(name)
from pets.cli import main
rc = main(args)
with open("/proc/self/status") as fh:
    hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[4])))
with open(report, "w") as fh:
    json.dump({"rc": rc, "vmhwm_kib": hwm, "heavy": heavy}, fh)
"""

# The baseline: the same read / encrypt / write loop over 1 MiB segments, without pets.
_RAW = r"""
import os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
src, dst, report = sys.argv[1:4]
aes = AESGCM(AESGCM.generate_key(bit_length=256))
size = 1 << 20
buf, ct = bytearray(size), bytearray(size + 16)
mb, mc = memoryview(buf), memoryview(ct)
with open(src, "rb") as f, open(dst, "wb") as g:
    while (n := f.readinto(mb)):
        if n < size:
            g.write(aes.encrypt(os.urandom(12), bytes(mb[:n]), b""))
            break
        aes.encrypt_into(os.urandom(12), mb, b"", mc)
        g.write(mc)
    g.flush()
    os.fsync(g.fileno())
with open("/proc/self/status") as fh:
    hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
with open(report, "w") as fh:
    fh.write(str(hwm))
"""


def _env(cache: Path | None) -> dict[str, str]:
    """The scratch boundary's environment; ``cache``: a bytecode cache directory, or
    ``None`` for no bytecode cache at all."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(PETS_MASTER_KEY=MASTER_HEX, PETS_PRINCIPAL="bench", PETS_JURISDICTION="EU",
               PYTHONPATH=str(ROOT))
    if cache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def _timed(argv: list[str], env: dict[str, str], cwd: Path, repeat: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + sys) of a child, after one warm-up."""
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def _pets(args: list[str], env: dict[str, str], cwd: Path,
          preload: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``pets ARGS`` in a fresh interpreter; its exit code, peak RSS (MiB), heavy modules
    and wall time."""
    report = cwd / "report.json"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN, json.dumps(args), str(report),
                           json.dumps(list(preload)), json.dumps(HEAVY)],
                          env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"pets {' '.join(args)} failed: {proc.stderr.strip()}")
    out = json.loads(report.read_text())
    report.unlink()
    if out["rc"] != 0:
        raise RuntimeError(f"pets {' '.join(args)} exited {out['rc']}: {proc.stderr.strip()}")
    return {"rss_mib": out["vmhwm_kib"] / 1024, "heavy": out["heavy"], "wall_s": wall}


def _setup(root: Path, env: dict[str, str]) -> None:
    for args in (["keys", "init", "--name", "eu"],
                 ["boundary", "init", "--signing-kek", "local://eu/boundary"],
                 ["keys", "create", "local://eu/users"]):
        subprocess.run([sys.executable, "-m", "pets.cli", *args], env=env, cwd=root,
                       check=True, capture_output=True)


def bench_help(result: Result, root: Path, cache: Path) -> None:
    py = sys.executable
    for label, env in (("bytecode cached", _env(cache)), ("no bytecode cache", _env(None))):
        base_wall, base_cpu = _timed([py, "-c", "pass"], env, root, 5)
        click_wall, click_cpu = _timed([py, "-c", "import click"], env, root, 5)
        wall, cpu = _timed([py, "-m", "pets.cli", "--help"], env, root, 5)
        result.add(case=f"pets --help ({label})", median_s=round(wall, 3),
                   cpu_s=round(cpu, 3), target_s="<= 0.3", meets_target=wall <= 0.3,
                   baseline="python -c 'import click'", baseline_s=round(click_wall, 3),
                   baseline_cpu_s=round(click_cpu, 3),
                   over_baseline_s=round(wall - click_wall, 3),
                   interpreter_s=round(base_wall, 3), interpreter_cpu_s=round(base_cpu, 3))


def bench_files(result: Result, root: Path, cache: Path, quick: bool) -> None:
    size_mib = 64 if quick else 1024
    env = _env(cache)
    src = root / "big.bin"
    try:
        with open(src, "wb") as fh:  # sparse: instant, and no disk blocks
            fh.truncate(size_mib * MIB)
        enc = _pets(["encrypt", "big.bin", "big.pets", "--key", "local://eu/users"], env, root)
        dec = _pets(["decrypt", "big.pets", "big.out"], env, root)
        (root / "big.out").unlink()
        pre = _pets(["encrypt", "big.bin", "big.pets", "--key", "local://eu/users",
                     "--overwrite"], env, root, preload=("pandas", "pyarrow"))
        (root / "big.pets").unlink()
        rep = root / "raw.txt"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", _RAW, str(src), str(root / "raw.enc"), str(rep)],
                       env=env, cwd=root, check=True)
        raw_wall = time.perf_counter() - t
        raw_rss = int(rep.read_text()) / 1024
    finally:
        for name in ("big.bin", "big.pets", "big.out", "raw.enc"):
            (root / name).unlink(missing_ok=True)
    mb = size_mib * MIB / 1e6
    baseline = "bare AESGCM encrypt_into, 1 MiB segments, same read/write/fsync"
    for case, r in ((f"pets encrypt {size_mib} MiB", enc), (f"pets decrypt {size_mib} MiB", dec)):
        result.add(case=case, peak_rss_mib=round(r["rss_mib"], 1), rss_target_mib="<= 80",
                   meets_target=r["rss_mib"] <= 80, heavy_modules=",".join(r["heavy"]) or "none",
                   wall_s=round(r["wall_s"], 2), mb_per_s=round(mb / r["wall_s"], 1),
                   baseline=baseline, baseline_rss_mib=round(raw_rss, 1),
                   baseline_wall_s=round(raw_wall, 2),
                   rss_over_baseline_mib=round(r["rss_mib"] - raw_rss, 1))
    result.add(case=f"pets encrypt {size_mib} MiB, pandas+pyarrow preloaded (before)",
               peak_rss_mib=round(pre["rss_mib"], 1), heavy_modules=",".join(pre["heavy"]),
               wall_s=round(pre["wall_s"], 2), mb_per_s=round(mb / pre["wall_s"], 1),
               rss_over_baseline_mib=round(pre["rss_mib"] - raw_rss, 1))


def run(quick: bool = False) -> Result:
    result = Result("cli")
    with tempfile.TemporaryDirectory(prefix="pets-bench-cli-") as tmp:
        root, cache = Path(tmp) / "work", Path(tmp) / "pycache"
        root.mkdir()
        _setup(root, _env(cache))
        bench_help(result, root, cache)
        bench_files(result, root, cache, quick)
    result.notes += [
        "Fresh interpreter per run. `pets --help` times are medians of 5 after a warm-up "
        "(CPU: the child's user + sys); the file cases run once each (their figure of merit "
        "is peak RSS). The machine is shared: the load average is in the header.",
        "Peak RSS is the child's own VmHWM (from /proc/self/status), interpreter included; "
        "the input is a sparse file, read through the page cache (not counted in RSS).",
        "`pets --help` imports no command module (commands load on use, pets/cli/__init__.py "
        "_INDEX); the key and envelope commands import no pandas, pyarrow, OpenDP or numpy "
        "(tests/cli/test_lean.py).",
    ]
    return result

"""The export gate on a protected dataset (``pets protect --engine dask`` output).

Run: ``.venv/bin/python -m benchmarks export [--quick]``.

A protected dataset of 1M rows in 8 parts (quick: 100k rows in 4 parts) is made once with the
Dask engine (synchronous scheduler, in-process keys; not timed). Cases, interleaved in every
round so each sees the same background load, medians over the rounds:

* **gate, dataset** — ``pets.boundary.export(directory, "US", ...)`` of 4 of its 5 columns: every
  signature, the chain, every part's values, then the selected columns written part by part
  with their manifests into a hidden directory renamed into place, and one audit entry;
* **baseline: copy** — the least any export does: read the same columns of each part and write
  them to a new directory with ``pq.write_table`` through the same ``atomic_directory``
  (no check, no manifest, no audit);
* **gate, one file** — the same rows and columns exported from a single protected file (the
  pandas path's output), for the cost of partitioning;
* **receiver check** — ``verify_dataset`` of the exported directory with the public key.

Peak memory: each of the two gates, a plain ``pd.concat`` of every part (what holding the
whole table costs) and the imports alone, run once in a child process; the child's peak RSS comes from
its own ``VmHWM`` (``/proc/self/status``) at its end: ``ru_maxrss`` of a child counts the
parent's resident set at fork time on Linux.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Result

ROOT = Path(__file__).resolve().parents[1]

POLICY = """\
dataset: users
keys: {pseudonyms: "memory://eu/pseudonyms", columns: "memory://eu/columns"}
min_k: 1
destinations: {pseudonymized: [US], kept: [US], encrypted: []}
columns:
  user_id: {role: identifier, treatment: keyed-hash}
  email: {role: identifier, treatment: token}
  phone: {role: identifier, treatment: encrypt}
  country: {role: quasi-identifier, treatment: keep}
  minutes: {role: metric, treatment: keep}
"""
SAFE = ["user_id", "email", "country", "minutes"]

_CHILD = r"""
import json, resource, sys
case, work = sys.argv[1], sys.argv[2]
from pathlib import Path
w = Path(work)
if case == "imports":
    import pandas, pyarrow.parquet
    import pets.boundary
    n = 0
elif case == "concat":
    import pandas as pd, pyarrow.parquet as pq
    frame = pd.concat([pq.read_table(p).to_pandas()
                       for p in sorted((w / "protected" / "users").glob("part.*.parquet"))])
    n = len(frame)
else:
    from pets import Context
    from pets.boundary import AuditLog, Policy, SigningKey, export
    eu = Context("EU", principal="bench")
    policy = Policy.from_yaml((w / "policy.yaml").read_text())
    log = AuditLog(w / f"audit-{case}.jsonl", signer=SigningKey.generate(), actor=eu)
    src = w / "protected" / ("users" if case == "gate-dataset" else "users.parquet")
    r = export(src, "US", w / f"child-{case}", policy=policy,
               public_key=(w / "signing-key.pub.pem").read_bytes(), context=eu, audit=log,
               columns=COLUMNS)
    n = r.rows
# VmHWM: this process's own peak (ru_maxrss would include the parent's RSS at fork time)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")]
peak = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": n, "peak_kib": peak}))
""".replace("COLUMNS", repr(SAFE))


def _make(work: Path, rows: int, parts: int) -> dict[str, Any]:
    """The protected dataset and the same rows as one protected file (not timed)."""
    import dask
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    from pets import Context
    from pets.boundary import BoundaryKeys, Policy, SigningKey
    from pets.engines import InProcessKeys, WorkerKeys
    from pets.engines.dask import protect
    from pets.keys import KeyServices, MemoryKeyring

    ring = MemoryKeyring()
    for name in ("kek", "pseudonyms", "columns"):
        ring.create(f"memory://eu/{name}", jurisdiction="EU")
    keys = BoundaryKeys(KeyServices([ring]), SigningKey.generate())
    eu = Context("EU", principal="bench")
    policy = Policy.from_yaml(POLICY)
    rng = np.random.default_rng(7)
    raw = pd.DataFrame({
        "user_id": pd.array([f"u{i:09d}" for i in range(rows)], dtype="string"),
        "email": pd.array([f"p{i}@mail.eu" for i in range(rows)], dtype="string"),
        "phone": pd.array([f"+4930{i:09d}" for i in range(rows)], dtype="string"),
        "country": pd.array(rng.choice(["DE", "FR", "IT", "ES", "PL"], rows), dtype="string"),
        "minutes": rng.exponential(30.0, rows),
    })
    workers = WorkerKeys(InProcessKeys(keys.services), "memory://eu/kek", eu,
                         services=keys.services)
    with dask.config.set(scheduler="synchronous"):
        lazy = protect(dd.from_pandas(raw, npartitions=parts), policy, keys, eu,
                       workers=workers, progress=False)
        lazy.write(work / "protected" / "users", progress=False)
        lazy.compute(progress=False).write(work / "protected" / "users.parquet")
    (work / "policy.yaml").write_text(POLICY)
    (work / "signing-key.pub.pem").write_bytes(keys.signer.public_pem())
    return {"policy": policy, "keys": keys, "context": eu}


def _child_rss(case: str, work: Path) -> float:
    """Peak RSS (MiB) of a child process that runs ``case`` (it reports its own peak)."""
    done = subprocess.run([sys.executable, "-c", _CHILD, case, str(work)], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{case} failed: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"]) / 1024


def run(quick: bool) -> Result:
    import pyarrow.parquet as pq

    from pets._io import atomic_directory
    from pets.boundary import AuditLog, export
    from pets.boundary._dataset import verify_dataset

    res = Result("export")
    rows, parts, rounds = (100_000, 4, 5) if quick else (1_000_000, 8, 5)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="pets-bench-export-"))
    try:
        env = _make(work, rows, parts)
        policy, keys, eu = env["policy"], env["keys"], env["context"]
        log = AuditLog(work / "audit.jsonl", signer=keys.signer, actor=eu)
        src = work / "protected" / "users"
        pub = keys.signer.public_key

        def gate_dataset() -> None:
            shutil.rmtree(work / "us-ds", ignore_errors=True)
            export(src, "US", work / "us-ds", policy=policy, public_key=pub, context=eu,
                   audit=log, columns=SAFE)

        def gate_file() -> None:
            export(work / "protected" / "users.parquet", "US", work / "us.parquet",
                   policy=policy, public_key=pub, context=eu, audit=log, columns=SAFE)

        def copy() -> None:
            shutil.rmtree(work / "copy", ignore_errors=True)
            with atomic_directory(work / "copy") as tmp:
                for p in sorted(src.glob("part.*.parquet")):
                    pq.write_table(pq.read_table(p, columns=SAFE), tmp / p.name)

        def receiver() -> None:
            verify_dataset(work / "us-ds", pub)

        cases = {"gate, dataset": gate_dataset, "baseline: copy": copy,
                 "gate, one file": gate_file, "receiver check": receiver}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for fn in cases.values():  # warm-up
            fn()
        for _ in range(rounds):
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        mem = {case: _child_rss(case, work)
               for case in ("imports", "gate-dataset", "gate-file", "concat")}
        size = sum(p.stat().st_size for p in src.glob("part.*.parquet")) / (1 << 20)
        base = med["baseline: copy"]
        res.add(case=f"gate, dataset ({parts} parts)", rows=rows, median_s=med["gate, dataset"],
                rows_per_s=rows / med["gate, dataset"], vs_copy=med["gate, dataset"] / base,
                vs_one_file=med["gate, dataset"] / med["gate, one file"],
                peak_rss_mib=mem["gate-dataset"])
        res.add(case="baseline: copy the same columns", rows=rows, median_s=base,
                rows_per_s=rows / base, vs_copy=1.0)
        res.add(case="gate, one file (same rows)", rows=rows, median_s=med["gate, one file"],
                rows_per_s=rows / med["gate, one file"],
                vs_copy=med["gate, one file"] / base, peak_rss_mib=mem["gate-file"])
        res.add(case="receiver check of the export", rows=rows, median_s=med["receiver check"],
                rows_per_s=rows / med["receiver check"],
                vs_copy=med["receiver check"] / base)
        res.add(case="whole table in memory (pd.concat of the parts)", rows=rows,
                peak_rss_mib=mem["concat"])
        res.add(case="interpreter + pandas + pyarrow + pets.boundary, no data", rows=0,
                peak_rss_mib=mem["imports"])
        res.notes += [
            f"{rows:,} rows x 5 columns protected (keyed hash, token, AES-GCM, 2 kept), "
            f"{parts} parts, {size:.1f} MiB on disk; 4 columns exported. Medians of {rounds} "
            "interleaved rounds (each round runs every case once).",
            "vs_copy: time / the baseline copy's time in the same run (read + write the same "
            "columns, no checks). The gate's extra work is the value digests of every column "
            "of every part (all 5, as the single-file gate) and writing each part's manifest.",
            "peak_rss_mib: one child process per case (interpreter and libraries included). "
            "The dataset gate holds one part at a time; the one-file gate and pd.concat hold "
            "the whole table.",
            json.dumps({k: [round(x, 4) for x in v] for k, v in times.items()}),
            f"quick={quick}; total wall time {time.perf_counter() - t0:.0f} s.",
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res

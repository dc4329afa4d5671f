"""The end-to-end demo behind ``make demo`` / ``pets demo``.

It runs the whole mission on embedded defaults only, in a fresh working directory:

1. generate synthetic EU users and viewing events;
2. create EU keys in a local keyring (KEKs for signing, pseudonyms and column encryption) and
   the boundary's Ed25519 signing key, whose public half goes to the auditor;
3. protect the users table with the shipped example policy (``pets/examples/users-policy.yaml``);
4. release DP statistics of the events (user-level privacy, OpenDP noise, a budget ledger);
5. export the pseudonymized table and the DP release to "US" through the gate;
6. show the refusals: the raw table, the table with its EU-encrypted column, a tampered
   manifest, and a US context reading the EU-encrypted column or reversing tokens;
7. on the US side, verify what arrived with the public key alone;
8. verify the audit log with the public key and print the flows and incidents.

Each step prints what it did; the last lines are a one-screen summary. Everything is
written under ``workdir``; the keyring's master key lives only in this process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]

_KEKS = ("boundary", "pseudonyms", "columns")
US_COLUMNS = ["user_id", "email", "birth_date", "country", "signup_ts"]


def _example(directory: Path, name: str) -> Path:
    """A copy of a shipped example policy in ``directory``."""
    copy = directory / name
    copy.write_text((files("pets") / "examples" / name).read_text())
    return copy


def _table(frame: Any, echo: Callable[[str], None], indent: str = "   ") -> None:
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 12,
                           "display.max_colwidth", 48):
        for line in frame.to_string(index=False).splitlines():
            echo(indent + line)


def run_demo(workdir: Path, *, users: int = 5_000, events: int = 50_000, seed: int = 0,
             echo: Callable[[str], None] = print) -> dict[str, object]:
    """Run the demo in ``workdir`` and return its summary as a dict.

    The summary holds counts (users, events, rows exported), the export receipts, every
    refused attempt with the error it raised, the audit verification and the incidents.
    """
    import pyarrow.parquet as pq

    from pets import Context, PetsError
    from pets._events import AuditEvent
    from pets._io import write_parquet
    from pets.boundary import (
        AuditLog,
        BoundaryKeys,
        ProtectedFrame,
        export,
        flows,
        incidents,
        load_policy,
        protect,
        read_protected,
        reidentify,
        verify_log,
    )
    from pets.boundary._manifest import MANIFEST_KEY
    from pets.datasets import synthetic_events, synthetic_users
    from pets.dp import Budget, Ledger, Session
    from pets.keys import KeyServices, LocalKeyring, Secret

    started = time.perf_counter()
    workdir = Path(workdir)
    eu_dir, us_dir, auditor_dir = workdir / "eu", workdir / "us", workdir / "auditor"
    for d in (eu_dir, us_dir, auditor_dir):
        d.mkdir(parents=True, exist_ok=True)
    eu = Context("EU", principal="etl-eu-dc1")
    us = Context("US", principal="analyst-us-east")

    # -- 1. data -------------------------------------------------------------------------------
    echo(f"== 1. Synthetic EU data ({users} users, {events} events, seed {seed})")
    u = synthetic_users(users, seed=seed)
    e = synthetic_events(events, n_users=users, seed=seed)
    write_parquet(u, eu_dir / "users.parquet")
    write_parquet(e, eu_dir / "events.parquet")
    echo(f"   eu/users.parquet   columns: {', '.join(u.columns)}")
    echo(f"   eu/events.parquet  columns: {', '.join(e.columns)}")
    top = u["country"].value_counts().head(5)
    echo("   top countries: " + ", ".join(f"{c} {n}" for c, n in top.items()))
    per_user = e.groupby("user_id").size()
    echo(f"   events per user: median {per_user.median():.0f}, max {per_user.max()}")

    # -- 2. keys -------------------------------------------------------------------------------
    echo("== 2. EU keys (local keyring, KEKs encrypted at rest under a master key)")
    ring_dir = eu_dir / "keyring"
    ring = LocalKeyring.init(ring_dir, name="eu", master_key=Secret.generate())
    held: list[AuditEvent] = []  # events before the log exists, written once it does
    ring.audit = held.append
    services = KeyServices([ring], audit=held.append)
    ring.create("local://eu/boundary", jurisdiction="EU")
    keys = BoundaryKeys.create(ring_dir / "boundary", services, context=eu,
                               signing_kek="local://eu/boundary",
                               audit_log=eu_dir / "audit.jsonl",
                               ledger=eu_dir / "ledger.sqlite", audit=held.append)
    log = AuditLog(eu_dir / "audit.jsonl", signer=keys.signer, actor=eu)
    for event in held:
        log.append(event)
    log.append("boundary.init", home="EU", signing_kek="local://eu/boundary",
               pinned=[keys.signer.key_id], audit_log=str(log.path),
               ledger=str(eu_dir / "ledger.sqlite"))
    ring.audit = log.hook
    keys.audit = log.hook
    keys.services = KeyServices([ring], audit=log.hook)
    for name in _KEKS:
        if name != "boundary":
            ring.create(f"local://eu/{name}", jurisdiction="EU")
    public_pem = auditor_dir / "eu-signing-key.pem"
    public_pem.write_bytes(keys.signer.public_pem())
    echo("   KEKs: " + ", ".join(f"local://eu/{n}" for n in _KEKS) + " (jurisdiction EU)")
    echo(f"   boundary signing key {keys.signer.key_id} (Ed25519, wrapped under "
         "local://eu/boundary)")
    echo(f"   public key for the auditor and receivers: {public_pem.relative_to(workdir)}")

    # -- 3. protect ----------------------------------------------------------------------------
    policy = load_policy(_example(eu_dir, "users-policy.yaml"))
    echo(f"== 3. Protect users with the shipped policy (digest {policy.digest()[:12]}…)")
    pf = protect(u, policy, keys, eu, audit=log)
    protected_path = pf.write(eu_dir / "protected" / "users.parquet")
    for c in pf.manifest.columns:
        how = c.treatment + (f" ({c.mode})" if c.mode else "")
        echo(f"   {c.name:<11} {c.role:<17} {how:<22} -> {c.output:<13} {c.key_uri or ''}")
    dropped = [r.name for r in policy.columns if r.output is None]
    echo(f"   dropped: {', '.join(dropped)}")
    k = pf.manifest.k_anonymity
    echo(f"   k-anonymity over ({', '.join(k['quasi_identifiers'])}): k = {k['k']} "
         f"(min {k['min_k']}); {k['suppressed_rows']} of {len(u)} rows suppressed")
    echo(f"   manifest signed by {pf.manifest.signer}; {protected_path.relative_to(workdir)}")

    # -- 4. DP release -------------------------------------------------------------------------
    echo("== 4. DP release of the events (user-level privacy, budget ε = 1.0)")
    ledger = Ledger(eu_dir / "ledger.sqlite")
    session = Session(e, privacy_unit="user_id", budget=Budget.pure(1.0), ledger=ledger,
                      dataset_id="events", audit=log.hook)
    countries = sorted(e["country"].unique().tolist())
    release = (session.query(by="country", keys=countries, max_groups=1, max_rows=20)
               .count().mean("watch_seconds", bounds=(0.0, 7200.0))
               .release(epsilon=0.5).postprocess(nonnegative=True, decimals=1))
    est = release.estimates().sort_values("count", ascending=False).head(5)
    echo(f"   count and mean watch time by country, ε = {release.loss.epsilon}; "
         f"budget left ε = {session.budget.remaining.epsilon:.2f}; top 5:")
    _table(est, echo, "     ")

    # -- 5. exports ----------------------------------------------------------------------------
    echo("== 5. Export to US through the gate")
    receipts = []
    r1 = export(pf, "US", us_dir / "users.parquet", policy=policy, keys=keys,
                context=eu, audit=log, columns=US_COLUMNS)
    receipts.append(r1)
    echo(f"   table   -> us/users.parquet: {r1.rows} rows, {', '.join(r1.columns)}")
    echo(f"              sha256 {r1.sha256[:16]}…, audit entry {r1.audit_seq}")
    events_policy = load_policy(_example(eu_dir, "events-policy.yaml"))
    r2 = export(release, "US", us_dir / "watch_by_country.parquet", policy=events_policy,
                keys=keys, context=eu, audit=log)
    receipts.append(r2)
    echo(f"   release -> us/watch_by_country.parquet: {r2.rows} rows, ε {release.loss.epsilon}, "
         f"audit entry {r2.audit_seq}")

    # -- 6. refusals ---------------------------------------------------------------------------
    echo("== 6. What the boundary refuses")
    refused: list[dict[str, str]] = []

    def attempt(label: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except PetsError as exc:
            refused.append({"attempt": label, "error": type(exc).__name__, "message": str(exc)})
            echo(f"   REFUSED  {label}")
            echo(f"            {type(exc).__name__}: {_short(str(exc))}")
        else:  # pragma: no cover - the demo's point is that these fail
            raise RuntimeError(f"the boundary let through: {label}")

    attempt("export the raw users table to US", lambda: export(
        u, "US", us_dir / "raw-users.parquet", policy=policy, keys=keys,
        context=eu, audit=log))
    attempt("export the raw users file to US", lambda: export(
        eu_dir / "users.parquet", "US", us_dir / "raw-users.parquet", policy=policy,
        keys=keys, context=eu, audit=log))
    attempt("export the whole protected table (EU-encrypted phone) to US", lambda: export(
        pf, "US", us_dir / "all-columns.parquet", policy=policy, keys=keys,
        context=eu, audit=log))
    tampered = _tampered_copy(protected_path, workdir / "tampered.parquet", pq, MANIFEST_KEY)
    attempt("export a copy whose manifest was edited to let phone out", lambda: export(
        tampered, "US", us_dir / "tampered.parquet", policy=policy, keys=keys,
        context=eu, audit=log))
    leaked = ProtectedFrame.read(protected_path)  # as if the EU file were copied to the US
    attempt("US context reads the EU-encrypted phone column", lambda: reidentify(
        leaked, "phone", leaked.data["phone"].head(3), keys, us, audit=log))
    attempt("US context reverses email tokens", lambda: reidentify(
        leaked, "email", leaked.data["email"].head(3), keys, us, audit=log))
    written = sorted(p.name for p in us_dir.iterdir())
    echo(f"   files in us/: {', '.join(written)} (nothing written by a refused attempt)")

    # -- 7. the US side ------------------------------------------------------------------------
    echo("== 7. In the US: verify what arrived with the public key alone")
    got, record = read_protected(us_dir / "users.parquet", public_pem)
    assert record is not None
    echo(f"   signature OK, data matches manifest; exported by {record['exported_by']} at "
         f"{record['exported_at']}")
    _table(got.data.head(3), echo, "     ")

    # -- 8. audit ------------------------------------------------------------------------------
    echo("== 8. Auditor: verify the log with the public key, then flows and incidents")
    report = verify_log(log.path, public_pem)
    echo("   " + report.summary())
    echo(f"   next audit: pets audit verify eu/audit.jsonl --public-key "
         f"auditor/eu-signing-key.pem --expect-head {report.head_seq}:{report.head_hash[:16]}")
    flow = flows(log.path)
    echo("   flows (what left, where, under which protection, how much budget):")
    _table(flow[["seq", "destination", "output", "name", "rows", "protection", "epsilon"]],
           echo, "     ")
    inc = incidents(log.path)
    echo(f"   incidents ({len(inc)}):")
    _table(inc[["seq", "actor", "kind", "target", "reason"]].assign(
        reason=inc["reason"].map(lambda s: _short(str(s), 70))), echo, "     ")

    elapsed = time.perf_counter() - started
    summary: dict[str, object] = {
        "workdir": str(workdir),
        "users": len(u),
        "events": len(e),
        "protected_rows": pf.manifest.rows,
        "k": int(k["k"]),
        "suppressed_rows": int(k["suppressed_rows"]),
        "exports": [r.to_dict() for r in receipts],
        "refused": refused,
        "audit_entries": report.entries,
        "audit_ok": report.ok,
        "incidents": len(inc),
        "epsilon_spent": session.budget.spent.epsilon,
        "seconds": round(elapsed, 1),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    echo("== Summary")
    echo(f"   data          {len(u)} EU users, {len(e)} events -> workdir {workdir}")
    echo(f"   protected     {pf.manifest.rows} rows, k = {k['k']} (min {k['min_k']}), "
         f"{k['suppressed_rows']} suppressed; manifest signed {pf.manifest.signer}")
    echo(f"   exported      {len(receipts)} to US: users table ({r1.rows} rows, "
         f"{len(r1.columns)} columns) and DP release (ε {release.loss.epsilon} of 1.0)")
    echo(f"   refused       {len(refused)} attempts:")
    for r in refused:
        echo(f"                 - {r['attempt']} ({r['error']})")
    echo(f"   audit log     {'VERIFIED' if report.ok else 'FAILED'}: {report.entries} signed "
         f"entries, {len(flow)} flows, {len(inc)} incidents")
    echo(f"   time          {elapsed:.1f} s")
    return summary


def _short(text: str, width: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _tampered_copy(src: Path, dest: Path, pq: Any, key: bytes) -> Path:
    """Copy ``src`` with its manifest edited to call every column ``kept`` (no re-signing)."""
    table = pq.read_table(src)
    doc = json.loads(table.schema.metadata[key])
    for c in doc["columns"]:
        c["output"] = "kept"
    meta = {**table.schema.metadata, key: json.dumps(doc).encode()}
    pq.write_table(table.replace_schema_metadata(meta), dest)
    return dest

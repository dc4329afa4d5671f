"""``pets migrate plan | run | verify``: move data keys to another key service, data untouched.

The runbook (``docs/migration.md``)::

    pets migrate plan --to vault://eu-ireland/customers --from local://eu/customers \\
        data/ protected/ --out migration.json
    pets migrate run migration.json          # resumable: run it again after a crash
    pets migrate verify migration.json       # exit 5 naming every item that still needs
                                             # the old key
    pets keys destroy local://eu/customers --yes

Every command opens the boundary (``pets boundary init`` first); ``run`` appends one signed
``key.migrate`` entry per item to the boundary's audit log, and keeps a journal
(``<plan>.journal``, JSON lines, fsync'd) beside the plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pets._errors import IntegrityError
from pets.cli._cmd_boundary import _boundary_option, open_boundary
from pets.cli._common import context_options, emit, json_option, make_context
from pets.cli._keyopts import keyring_options

if TYPE_CHECKING:
    from pets.boundary._migrate import MigrationPlan, MigrationReport
    from pets.keys._config import KeyConfig

__all__ = ["COMMANDS"]


@click.group("migrate")
def migrate() -> None:
    """Move everything wrapped under old KEKs to a new KEK (data centre / key service
    migration) without re-encrypting data: plan, run, verify, then destroy the old keys."""


def _plan_text(plan: MigrationPlan, out: Path | None) -> str:
    lines = [f"plan {plan.id}: {len(plan.items)} item(s) from {', '.join(plan.sources)} "
             f"to {plan.target}"]
    for s in plan.sources:
        lines.append(f"  {s} ({plan.jurisdictions.get(s) or 'gone'}) -> {plan.target} "
                     f"({plan.jurisdictions.get(plan.target)})")
    lines += [f"  {i.kind:<12} {i.path}  [{', '.join(i.keys)}]" for i in plan.items]
    lines += [f"  BLOCKED      {p}: {r}" for p, r in plan.blocked]
    if out is not None:
        lines.append(f"written to {out}; next: pets migrate run {out}")
    return "\n".join(lines)


@migrate.command("plan")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "target", required=True, metavar="KEK_URI",
              help="The KEK to move to (it must exist: pets keys create).")
@click.option("--from", "sources", multiple=True, metavar="KEK_URI",
              help="A KEK to move away from (repeatable) [default: every KEK the items and "
                   "the boundary use but --to].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the plan here [default: <boundary>/migrations/plan-<id>.json].")
@click.option("--allow-jurisdiction-change", is_flag=True,
              help="Allow a target KEK of another jurisdiction than a source (moves where the "
                   "data may be decrypted; logged).")
@_boundary_option
@keyring_options
@context_options
@json_option
def plan_cmd(paths: tuple[Path, ...], target: str, sources: tuple[str, ...], out: Path | None,
             allow_jurisdiction_change: bool, boundary_keys: Path | None, jurisdiction: str,
             principal: str | None, as_json: bool, key_config: KeyConfig) -> None:
    """Find every item under PATHS (and the boundary's key files) that needs the old KEKs.

    Items: envelope files (.pets), Parquet files with external key material, protected
    tables whose manifest holds keys under a source KEK, roots.json and signing-key.json.
    Nothing is unwrapped or changed.
    """
    from pets.boundary._migrate import plan_migration

    ctx = make_context(jurisdiction, principal)
    keys, log = open_boundary(key_config, boundary_keys, ctx)
    plan = plan_migration(list(paths), keys, target=target, sources=sources, context=ctx,
                          allow_jurisdiction_change=allow_jurisdiction_change, audit=log.hook)
    assert keys.directory is not None
    dest = out or keys.directory / "migrations" / f"plan-{plan.id}.json"
    plan.write(dest)
    log.append("key.migrate_plan", actor=ctx, plan=plan.id, target=plan.target,
               sources=list(plan.sources), items=len(plan.items), out=str(dest))
    emit({**plan.to_dict(), "out": str(dest)}, as_json, lambda: _plan_text(plan, dest))


def _report_text(verb: str, report: MigrationReport) -> str:
    lines = [f"{verb} plan {report.plan}: {len(report.migrated)} migrated, "
             f"{len(report.recovered)} completed after an interruption, "
             f"{len(report.skipped)} already done ({report.seconds:.2f}s)"]
    lines += [f"  FAILED {i}: {r}" for i, r in report.failed]
    return "\n".join(lines)


@migrate.command("run")
@click.argument("plan_path", metavar="PLAN", type=click.Path(exists=True, dir_okay=False,
                                                             path_type=Path))
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The run's journal [default: PLAN.journal].")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar [default: when stderr is a terminal].")
@_boundary_option
@keyring_options
@context_options
@json_option
def run_cmd(plan_path: Path, journal: Path | None, progress: bool | None,
            boundary_keys: Path | None, jurisdiction: str, principal: str | None,
            as_json: bool, key_config: KeyConfig) -> None:
    """Re-wrap every item of PLAN; data bytes are hashed before and after (identical).

    Resumable: after a crash (even kill -9) run it again; items done are skipped, an item
    caught between its rename and its bookkeeping is completed, nothing is done twice.
    """
    from pets.boundary._migrate import MigrationPlan, run_migration

    ctx = make_context(jurisdiction, principal)
    plan = MigrationPlan.read(plan_path)
    keys, log = open_boundary(key_config, boundary_keys, ctx)
    report = run_migration(plan, keys, log, context=ctx,
                           journal=journal or plan.journal_path(plan_path), progress=progress)
    payload: dict[str, Any] = report.to_dict()
    emit(payload, as_json, lambda: _report_text("ran", report)
         + f"\nnext: pets migrate verify {plan_path}")


@migrate.command("verify")
@click.argument("plan_path", metavar="PLAN", type=click.Path(exists=True, dir_okay=False,
                                                             path_type=Path))
@_boundary_option
@keyring_options
@context_options
@json_option
def verify_cmd(plan_path: Path, boundary_keys: Path | None, jurisdiction: str,
               principal: str | None, as_json: bool, key_config: KeyConfig) -> None:
    """Prove every item of PLAN opens without the source KEKs (exit 5 naming those that do
    not); then the old KEKs may be destroyed (pets keys destroy)."""
    from pets.boundary._migrate import MigrationPlan, verify_migration

    ctx = make_context(jurisdiction, principal)
    plan = MigrationPlan.read(plan_path)
    keys, log = open_boundary(key_config, boundary_keys, ctx)
    report = verify_migration(plan, keys, context=ctx)
    log.append("key.migrate_verify", actor=ctx, plan=plan.id, ok=len(report.migrated),
               failed=[i for i, _ in report.failed])
    if report.failed:
        emit(report.to_dict(), as_json, lambda: _report_text("verified", report))
        names = "; ".join(f"{i} ({r})" for i, r in report.failed)
        raise IntegrityError(f"{len(report.failed)} item(s) of plan {plan.id} still need "
                             f"{', '.join(plan.sources)} or do not open: {names}")
    emit(report.to_dict(), as_json,
         lambda: f"verified plan {plan.id}: all {len(report.migrated)} item(s) open without "
                 f"{', '.join(plan.sources)}; they may now be destroyed "
                 f"(pets keys destroy URI --yes)")


COMMANDS = [migrate]

"""``pets release``: a differentially private grouped release of a Parquet file.

Example (shell)::

    pets release events.parquet --unit user_id --group-by country --keys DE,FR,IT \\
        --agg count,mean:watch_seconds[0,7200] --max-rows 20 --epsilon 1 \\
        --budget-epsilon 10 --ledger budget.db --out release.parquet

``--agg`` takes a comma-separated list of ``count``, ``sum:COL[LO,HI]``, ``mean:COL[LO,HI]``,
``variance:COL[LO,HI]``, ``median:COL[LO,HI]``, ``quantile:COL[LO,HI]@A/B/...`` and
``histogram:COL[E0,E1,...]`` (it may be repeated).

``--engine dask --workers N`` runs the bounding and the exact aggregation on a local Dask
cluster of ``N`` worker processes, over a Parquet file or a directory of part files (e.g. the
``<dataset>/`` directory ``pets protect --engine dask`` writes); noise is added once, here, by
the same step as the pandas engine (:class:`pets.engines.dask.DaskSession`)::

    pets release protected/events/ --engine dask --workers 4 --unit user_id \
        --group-by country --keys DE,FR,IT --agg count,median:watch_seconds[0,7200] \
        --max-rows 20 --epsilon 1 --ledger budget.db --out release.parquet

A dataset written with Parquet modular encryption (``pets protect --engine dask
--parquet-encrypt ...``; ``"encrypted": true`` in its ``_manifest.json``, or part files whose
footer is encrypted) is read through the key services of ``--keyring`` / ``--pkcs11-*``, in the
context of ``--jurisdiction`` / ``--principal``: pyarrow finds each file's footer and column KEK
URIs in the file itself. The driver decrypts the first part (its schema, and every KEK it
uses) before anything is registered, spent or started: a foreign jurisdiction exits 4 and a
destroyed KEK exits 7, with nothing spent and nothing written. The workers unwrap the keys
themselves (``PETS_MASTER_KEY`` … in their own environment).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pets._errors import InputError
from pets.cli._cmd_boundary import _boundary_option, open_boundary
from pets.cli._common import (
    context_options,
    dask_options,
    dask_target,
    emit,
    json_option,
    make_context,
)
from pets.cli._keyopts import keyring_options

if TYPE_CHECKING:
    from pets.keys._config import KeyConfig

_AGG = re.compile(r"^(?P<kind>count|sum|mean|variance|median|quantile|histogram)"
                  r"(?::(?P<col>[^\[\]@]+)\[(?P<nums>[^\]]*)\](?:@(?P<alphas>[0-9eE.+\-/]+))?)?$")


def split_aggs(specs: tuple[str, ...]) -> list[str]:
    """Split ``--agg`` values on commas outside brackets.

    Examples:
        >>> split_aggs(("count,mean:w[0,7200]", "median:w[0,10]"))
        ['count', 'mean:w[0,7200]', 'median:w[0,10]']
    """
    out: list[str] = []
    for spec in specs:
        depth, cur = 0, ""
        for ch in spec:
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            if ch == "," and depth == 0:
                out.append(cur.strip())
                cur = ""
            else:
                cur += ch
        out.append(cur.strip())
    return [s for s in out if s]


def parse_agg(spec: str) -> dict[str, Any]:
    """Parse one aggregate spec.

    Examples:
        >>> parse_agg("quantile:watch_seconds[0,7200]@0.1/0.9")["alphas"]
        [0.1, 0.9]
        >>> parse_agg("mean:x[5,1]")["bounds"]
        [5.0, 1.0]
        >>> parse_agg("avg:x")
        Traceback (most recent call last):
        ...
        pets._errors.InputError: cannot parse --agg 'avg:x': use count, sum:COL[LO,HI], mean:COL[LO,HI], variance:COL[LO,HI], median:COL[LO,HI], quantile:COL[LO,HI]@A/B, histogram:COL[E0,E1,...]
    """
    m = _AGG.match(spec)
    usage = ("use count, sum:COL[LO,HI], mean:COL[LO,HI], variance:COL[LO,HI], "
             "median:COL[LO,HI], quantile:COL[LO,HI]@A/B, histogram:COL[E0,E1,...]")
    if m is None or (m["kind"] == "count") != (m["col"] is None):
        raise InputError(f"cannot parse --agg {spec!r}: {usage}")
    if m["kind"] == "count":
        return {"kind": "count"}
    try:
        nums = [float(x) for x in m["nums"].split(",")]
        alphas = [float(x) for x in m["alphas"].split("/")] if m["alphas"] else []
    except ValueError as exc:
        raise InputError(f"cannot parse numbers in --agg {spec!r}") from exc
    kind = m["kind"]
    if kind == "histogram":
        return {"kind": kind, "column": m["col"], "edges": nums}
    if len(nums) != 2:
        raise InputError(f"--agg {spec!r} needs two bounds [LO,HI]")
    if kind == "quantile" and not alphas:
        raise InputError(f"--agg {spec!r} needs quantile levels: @0.5 or @0.1/0.9")
    if kind != "quantile" and alphas:
        raise InputError(f"--agg {spec!r}: only quantile takes @levels")
    return {"kind": kind, "column": m["col"], "bounds": nums, "alphas": alphas}


def _budget(ledger: Any, dataset_id: str, unit: str, eps: float | None, delta: float | None,
            rho: float | None) -> Any:
    from pets.dp import Budget

    if rho is not None:
        if eps is not None:
            raise InputError("give --budget-epsilon or --budget-rho, not both")
        return Budget.zcdp(rho, delta or 0.0)
    if eps is not None:
        return Budget.approx(eps, delta) if delta is not None else Budget.pure(eps)
    if delta is not None:
        raise InputError("--budget-delta needs --budget-epsilon or --budget-rho")
    stored = ledger.budget_of(dataset_id, unit)
    if stored is None:
        raise InputError(f"no budget is registered for dataset {dataset_id!r}, unit {unit!r} "
                         f"in {str(ledger.path)!r}: pass --budget-epsilon (and --budget-delta) "
                         "or --budget-rho to register one")
    return stored


def missing_options(*, specs: bool, out: bool, spend: bool, by: list[str], keys: bool,
                    budget: bool) -> list[str]:
    """What ``pets release`` still needs, one line per missing option (empty: nothing).

    Public group keys must come from the user: reading them from the data would reveal which
    groups exist (a group held by one user would appear), outside any privacy guarantee.

    Examples:
        >>> for line in missing_options(specs=True, out=True, spend=True, by=["country"],
        ...                             keys=False, budget=True):
        ...     print(line)
        --keys V1,V2,...: the groups of --group-by country, listed by you (public: pets does not read them from the data, which would reveal which groups exist); or --keys-file FILE (CSV/Parquet); or --private-keys --delta D to select them privately (needs a budget with δ)
    """
    need: list[str] = []
    if specs and by and not keys:
        need.append(f"--keys V1,V2,...: the groups of --group-by {','.join(by)}, listed by you "
                    "(public: pets does not read them from the data, which would reveal "
                    "which groups exist); or --keys-file FILE (CSV/Parquet); or "
                    "--private-keys --delta D to select them privately (needs a budget "
                    "with δ)")
    if specs and not spend:
        need.append("--epsilon E: the ε this release spends (--rho R under a zCDP budget)")
    if not budget:
        need.append("--budget-epsilon E: the total ε of this dataset, recorded once in the "
                    "ledger and never raised later (add --budget-delta D for --private-keys; "
                    "or --budget-rho R for zCDP)")
    if specs and not out:
        need.append("--out FILE: where to write the release (Parquet)")
    return need


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot be written *before* the release is drawn and spent
    (its directory is a file, is read-only, ...): the write comes after the spend.

    Creates missing parent directories (as the write would) and a temporary file beside
    ``out``, removed at once.
    """
    import tempfile

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".check", dir=out.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise InputError(f"cannot write --out {str(out)!r}: {exc.strerror or exc}") from None


def _check_paths(infile: Path, out: Path | None, ledger: Path, keys_file: Path | None) -> None:
    """Refuse, before the ledger is opened, an ``--out`` that would replace (or land inside)
    the input, the ledger or the keys file, and a ``--ledger`` that is the input.

    Examples:
        >>> _check_paths(Path("e.parquet"), Path("e.parquet"), Path("b.db"), None)
        Traceback (most recent call last):
        ...
        pets._errors.InputError: --out 'e.parquet' is the input: the release would replace the data it was made from
    """
    src = infile.resolve()
    led = ledger.resolve()
    if led == src or src in led.parents:
        raise InputError(f"--ledger {str(ledger)!r} is the input {str(infile)!r}")
    if out is None:
        return
    dst = out.resolve()
    if dst == src or src in dst.parents:
        raise InputError(f"--out {str(out)!r} is the input: the release would replace the "
                         "data it was made from")
    if dst == led:
        raise InputError(f"--out {str(out)!r} is the ledger {str(ledger)!r}: the release "
                         "would replace the budget record")
    if keys_file is not None and dst == keys_file.resolve():
        raise InputError(f"--out {str(out)!r} is the --keys-file")


def _require(need: list[str], dataset_id: str, unit: str, ledger: Any) -> None:
    if need:
        where = (f" (no budget is registered yet for dataset {dataset_id!r}, unit {unit!r} in "
                 f"{str(ledger.path)!r})" if any(n.startswith("--budget") for n in need) else "")
        raise InputError("pets release needs more options" + where + ":\n  add "
                         + "\n  add ".join(need))


def _check_spend(kind: str, *, epsilon: float | None, rho: float | None, delta: float | None,
                 private: bool) -> None:
    """The CLI's own wording for a spend that does not match the budget (flags, not kwargs).

    Examples:
        >>> _check_spend("zcdp", epsilon=1.0, rho=None, delta=None, private=False)
        Traceback (most recent call last):
        ...
        pets._errors.InputError: this dataset's budget is zCDP (ρ): pass --rho R instead of --epsilon
    """
    if kind == "zcdp" and epsilon is not None:
        raise InputError("this dataset's budget is zCDP (ρ): pass --rho R instead of --epsilon")
    if kind != "zcdp" and rho is not None:
        raise InputError(f"this dataset's budget is {kind} (ε): pass --epsilon E instead of "
                         "--rho")
    if delta is not None and not private:
        raise InputError("--delta is only spent by --private-keys (public keys spend no δ)")
    if private and delta is None:
        raise InputError("--private-keys needs --delta D (the δ this selection may spend)")


def _keys(path: Path, by: list[str], keys: str | None, keys_file: Path | None,
          private: bool, schema: Any = None) -> Any:
    given = (keys is not None) + (keys_file is not None) + bool(private)
    if not by:
        if given:
            raise InputError("--keys, --keys-file and --private-keys need --group-by")
        return None
    if given != 1:
        raise InputError("with --group-by, give exactly one of --keys, --keys-file or "
                         "--private-keys")
    if private:
        return "private"
    import pandas as pd

    if keys_file is not None:
        if not keys_file.is_file():
            raise InputError(f"keys file {str(keys_file)!r} does not exist")
        frame = (pd.read_parquet(keys_file) if keys_file.suffix == ".parquet"
                 else pd.read_csv(keys_file, dtype=str, keep_default_na=False))
    else:
        if len(by) != 1:
            raise InputError("--keys works with one --group-by column; use --keys-file for "
                             "several")
        assert keys is not None
        frame = pd.DataFrame({by[0]: [k.strip() for k in keys.split(",") if k.strip()]})
    schema = schema if schema is not None else _schema(path)
    for c in by:
        if c in frame.columns and c in schema.names:
            try:
                frame[c] = frame[c].astype(schema.field(c).type.to_pandas_dtype())
            except (ValueError, TypeError, NotImplementedError) as exc:
                raise InputError(f"keys for column {c!r} do not match its type") from exc
    return frame


def _schema(path: Path) -> Any:
    """The Arrow schema of a Parquet file, or of a directory of part files."""
    import pyarrow.parquet as pq

    if not path.is_dir():
        try:
            return pq.read_schema(path)
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise InputError(f"cannot read Parquet file {str(path)!r}: {exc}") from None
    import pyarrow.dataset as pds

    try:  # files starting with "." or "_" (temporaries, _manifest.json) are not parts
        return pds.dataset(str(path), format="parquet").schema
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the Parquet dataset {str(path)!r}: {exc}") from exc


_ENCRYPTED_MAGIC = b"PARE"  # a Parquet file with an encrypted footer ends so (not PAR1)


def _part_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*.parquet")
                  if not p.name.startswith((".", "_")) and p.is_file())


def is_encrypted(path: Path) -> bool:
    """Whether ``path`` (a Parquet file or dataset directory) uses Parquet modular encryption.

    A pets dataset says so in its ``_manifest.json`` (``"encrypted": true``); any other file
    says so by its trailing magic (``PARE``: an encrypted footer).

    Examples:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "x.parquet"
        >>> _ = f.write_bytes(b"PAR1...PARE")
        >>> is_encrypted(f), is_encrypted(f.parent)
        (True, True)
    """
    import contextlib

    from pets._errors import PetsError
    from pets.boundary._dataset import is_dataset, read_index

    if path.is_dir() and is_dataset(path):
        with contextlib.suppress(PetsError):  # a malformed index: the files say it instead
            if read_index(path).encrypted:
                return True
    for f in _part_files(path):
        try:
            with f.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() < 8:
                    continue
                fh.seek(-4, os.SEEK_END)
                if fh.read(4) == _ENCRYPTED_MAGIC:
                    return True
        except OSError:
            continue  # the read says what is wrong with it
    return False


def _check_parts(path: Path) -> None:
    """Read the footer of every Parquet file the Dask engine will read (files whose names
    start with ``.`` or ``_`` are not parts), naming the first one that cannot be read — before
    a cluster starts. A part damaged past its footer is still refused later, without its name.
    """
    import pyarrow.parquet as pq

    files = [str(path)]
    if path.is_dir():
        import pyarrow.dataset as pds

        try:
            files = list(pds.dataset(str(path), format="parquet").files)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the Parquet dataset {str(path)!r}: {exc}") from exc
    for f in files:
        try:
            pq.read_metadata(f)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"cannot read the Parquet part {f!r}: {exc}") from None


def _build(q: Any, specs: list[dict[str, Any]]) -> Any:
    """Add the parsed ``--agg`` specs to a query (a pandas or a Dask query: same methods)."""
    for sp in specs:
        k = sp["kind"]
        if k == "count":
            q = q.count()
        elif k == "histogram":
            q = q.histogram(sp["column"], sp["edges"])
        elif k == "median":
            q = q.median(sp["column"], bounds=tuple(sp["bounds"]))
        elif k == "quantile":
            q = q.quantile(sp["column"], sp["alphas"], bounds=tuple(sp["bounds"]))
        else:
            q = getattr(q, k)(sp["column"], bounds=tuple(sp["bounds"]))
    return q


@click.command()
@click.argument("infile", type=click.Path(path_type=Path))
@click.option("--unit", required=True, help="Privacy-unit column (e.g. user_id).")
@click.option("--dataset-id", default=None,
              help="Dataset name in the ledger. [default: the input's absolute path]")
@click.option("--group-by", default=None, help="Comma-separated grouping columns.")
@click.option("--keys", default=None, help="Public keys of the one grouping column, comma-separated.")
@click.option("--keys-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV or Parquet file of public keys (one column per grouping column).")
@click.option("--private-keys", is_flag=True, help="Select keys privately (needs --delta).")
@click.option("--agg", "aggs", multiple=True,
              help="Aggregates, e.g. count,mean:watch_seconds[0,7200] (repeatable).")
@click.option("--max-groups", type=click.IntRange(min=1), default=1, show_default=True,
              help="Most groups one unit contributes to.")
@click.option("--max-rows", type=click.IntRange(min=1), default=1, show_default=True,
              help="Most rows one unit contributes per group.")
@click.option("--epsilon", type=float, default=None, help="ε to spend on this release.")
@click.option("--delta", type=float, default=None, help="δ for private key selection.")
@click.option("--rho", type=float, default=None, help="ρ to spend (zCDP budgets).")
@click.option("--budget-epsilon", type=float, default=None,
              help="Total ε of a new budget (registered on first use).")
@click.option("--budget-delta", type=float, default=None, help="Total δ of a new budget.")
@click.option("--budget-rho", type=float, default=None, help="Total ρ of a new zCDP budget.")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="The budget ledger: only the one pinned by `pets boundary init --ledger` "
                   "(the default); another is refused.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Parquet file for the release (written atomically).")
@click.option("--level", type=float, default=0.95, show_default=True,
              help="Confidence level of the intervals.")
@click.option("--nonnegative", is_flag=True, help="Clamp counts (and non-negative sums) at 0.")
@click.option("--decimals", type=click.IntRange(-15, 15), default=None,
              help="Round estimates and intervals (-15 to 15 decimals).")
@click.option("--status", is_flag=True, help="Show the budget (alone, or after the release).")
@dask_options(
    engine_help="pandas: in memory. dask: bound and aggregate on a local cluster of worker "
                "processes, noise once here; INFILE may be a directory of Parquet part files "
                "(needs pip install 'pets[dask]').",
    scheduler_help="Bound and aggregate on an existing Dask cluster: its scheduler's address, "
                   "e.g. tcp://host:8786. Its workers must be able to read INFILE at the same "
                   "absolute path")
@_boundary_option
@keyring_options
@context_options
@json_option
def release(infile: Path, unit: str, dataset_id: str | None, group_by: str | None,
            keys: str | None, keys_file: Path | None, private_keys: bool, aggs: tuple[str, ...],
            max_groups: int, max_rows: int, epsilon: float | None, delta: float | None,
            rho: float | None, budget_epsilon: float | None, budget_delta: float | None,
            budget_rho: float | None, ledger_path: Path | None, out: Path | None,
            level: float,
            nonnegative: bool, decimals: int | None, status: bool, engine: str,
            workers: int | None, scheduler: str | None, connect_timeout: float,
            boundary_keys: Path | None, jurisdiction: str, principal: str | None,
            as_json: bool, key_config: KeyConfig) -> None:
    """Release DP aggregates of INFILE (Parquet), spending budget from the boundary's ledger.

    The ledger is the one pinned by `pets boundary init`, and each release is recorded there
    (its digest, with the spend) and in the boundary's signed audit log (dp.release): the
    export gate lets a release leave only if it still matches that record.

    With --engine dask, INFILE may also be a directory of Parquet files; the release has the
    pandas engine's measurements, noise scales and spend. A dataset with Parquet modular
    encryption (pets protect --engine dask --parquet-encrypt) is read through the key services
    (--keyring, PETS_MASTER_KEY…) in the --jurisdiction / --principal context.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pets._io import atomic_path
    from pets.dp import Ledger, Session

    scheduler = dask_target(engine, workers, scheduler)
    import math

    for name, value in (("--epsilon", epsilon), ("--delta", delta), ("--rho", rho),
                        ("--budget-epsilon", budget_epsilon), ("--budget-delta", budget_delta),
                        ("--budget-rho", budget_rho), ("--level", level)):
        # before the boundary, the ledger or a cluster is touched
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a finite number > 0, got {value}")
    if not level < 1:
        raise InputError(f"--level must be below 1, got {level}")
    if engine == "dask":
        from pets._errors import require

        require("dask", "dask")
        require("distributed", "dask")
        if not infile.exists():
            raise InputError(f"input {str(infile)!r} does not exist (a Parquet file or a "
                             "directory of them)")
    elif infile.is_dir():
        raise InputError(f"input {str(infile)!r} is a directory: use --engine dask for a "
                         "directory of Parquet files")
    elif not infile.is_file():
        raise InputError(f"input file {str(infile)!r} does not exist")
    specs = [parse_agg(s) for s in split_aggs(aggs)]
    if not specs and not status:
        raise InputError("nothing to do: give --agg (and --out), or --status")
    by = [c.strip() for c in group_by.split(",") if c.strip()] if group_by else []
    ctx = make_context(jurisdiction, principal)
    bkeys, log = open_boundary(key_config, boundary_keys, ctx)
    assert bkeys.anchors is not None
    pinned = bkeys.anchors.ledger
    if ledger_path is not None and ledger_path.resolve() != pinned:
        raise click.UsageError(f"--ledger {ledger_path}: the boundary's ledger is pinned at "
                               f"{pinned} (pets boundary init --ledger); releases spend from "
                               "it alone")
    ledger_path = pinned
    _check_paths(infile, out if specs else None, ledger_path, keys_file)
    if specs and out is not None:
        from pets.cli._common import check_out

        # never over an input or a file of the boundary (keyring, log, ledger); an earlier
        # release file may be replaced, as before
        out = check_out(out, option="--out", inputs=[infile, keys_file],
                        key_config=key_config, boundary_keys=bkeys.directory,
                        audit_log=bkeys.anchors.audit_log, ledger=ledger_path, overwrite=True)
    ledger = Ledger(ledger_path)
    dsid = dataset_id or str(infile.resolve())
    # every missing option at once, before anything is registered in the ledger
    _require(missing_options(
        specs=bool(specs), out=out is not None, spend=epsilon is not None or rho is not None,
        by=by, keys=keys is not None or keys_file is not None or private_keys,
        budget=(budget_epsilon is not None or budget_rho is not None
                or ledger.budget_of(dsid, unit) is not None)), dsid, unit, ledger)
    encrypted = is_encrypted(infile)
    if encrypted and engine != "dask":
        raise InputError(f"input {str(infile)!r} uses Parquet modular encryption: read it "
                         "with --engine dask (and the key services that hold its KEKs)")
    if specs:
        assert out is not None
        _check_out(out)
        if engine == "dask" and not encrypted:
            _check_parts(infile)
    ddf: Any = None
    schema: Any = None
    if encrypted:
        # decrypt on the driver before anything is registered, spent or started: a foreign
        # jurisdiction or a destroyed KEK is refused here, with its own exit code
        ddf, schema = _open_encrypted(infile, key_config, ctx)
    keys_arg = _keys(infile, by, keys, keys_file, private_keys, schema) if specs else None
    if specs:  # every column named exists, before a budget is registered (a write)
        names = ({str(c) for c in ddf.columns} if ddf is not None
                 else set((schema if schema is not None else _schema(infile)).names))
        named = [("--unit", unit), *(("--group-by", c) for c in by),
                 *(("--agg", str(sp["column"])) for sp in specs if sp.get("column"))]
        for option, column in named:
            if column not in names:
                raise InputError(f"{option}: unknown column {column!r} (columns: "
                                 f"{', '.join(sorted(names))})", column=column)
    if specs:  # the boundary-wide cap, before a new budget is registered (a write)
        from pets.dp import PrivacyLoss

        ledger.check_cap(PrivacyLoss(epsilon or 0.0, delta or 0.0, rho or 0.0))
    budget = _budget(ledger, dsid, unit, budget_epsilon, budget_delta, budget_rho)
    if specs:
        _check_spend(budget.kind, epsilon=epsilon, rho=rho, delta=delta, private=private_keys)
    session: Any
    if engine == "dask":
        from pets.engines._dp import DaskSession
        from pets.engines._parquet import read_dataset

        # absolute: the workers of a remote cluster resolve paths in their own directory
        data = ddf if ddf is not None else read_dataset(infile.resolve())
        session = DaskSession(data, privacy_unit=unit, budget=budget, ledger=ledger,
                              dataset_id=dsid, audit=log.hook)
    else:
        session = Session(infile, privacy_unit=unit, budget=budget, ledger=ledger,
                          dataset_id=dsid, audit=log.hook)
    payload: dict[str, Any] = {}
    lines: list[str] = []
    n_workers = 0
    if specs:
        assert out is not None
        q = _build(session.query(by or None, keys=keys_arg, max_groups=max_groups,
                                 max_rows=max_rows), specs)
        if engine == "dask":
            rel, n_workers = _release_dask(q, workers, scheduler, connect_timeout,
                                           epsilon=epsilon, delta=delta, rho=rho, level=level)
            where = f" at {scheduler}" if scheduler else ""
            lines.append(f"bounded and aggregated with dask ({n_workers} worker"
                         f"{'' if n_workers == 1 else 's'}{where}); noise added once, here")
        else:
            rel = q.release(epsilon=epsilon, delta=delta, rho=rho, level=level)
        if nonnegative or decimals is not None:
            rel = rel.postprocess(nonnegative=nonnegative, decimals=decimals)
        table = pa.Table.from_pandas(rel.to_frame(), preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"pets.release"] = json.dumps(rel.metadata(), default=str).encode()
        with atomic_path(out) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        payload["release"] = {**rel.metadata(), "out": str(out), "rows": len(rel.frame),
                              "engine": engine}
        if engine == "dask":
            payload["release"]["workers"] = n_workers
            payload["release"]["scheduler"] = scheduler
            payload["release"]["parquet_encryption"] = encrypted
        lines += [repr(rel), rel.to_frame().to_string(index=False, max_rows=60),
                  f"written to {out}"]
    if status:
        st = session.budget
        payload["status"] = st.as_dict()
        lines.append(str(st))
    emit(payload, as_json, lambda: "\n".join(lines))


def _open_encrypted(infile: Path, key_config: KeyConfig, ctx: Any) -> tuple[Any, Any]:
    """The Dask frame of a modular-encrypted dataset and its Arrow schema, read as ``ctx``.

    The driver decrypts the first part's footer and columns (Dask's meta) through the key
    services: :class:`~pets.JurisdictionError` (exit 4) or :class:`~pets.KeyDestroyedError`
    (exit 7) come from here, before the ledger or a cluster is touched.
    """
    from pets.engines._parquet import ParquetEncryption, read_dataset
    from pets.engines._run import _absolute

    files = _part_files(infile)
    if not files:
        raise InputError(f"no Parquet files under {str(infile)!r}")
    enc = ParquetEncryption.reader(_absolute(key_config), ctx)
    schema = enc.schema(files[0])
    return read_dataset(infile.resolve(), encryption=enc), schema


def _release_dask(q: Any, workers: int | None, scheduler: str | None, connect_timeout: float,
                  *, epsilon: float | None, delta: float | None, rho: float | None,
                  level: float) -> tuple[Any, int]:
    """Check the arguments, then start the local cluster (or connect to ``scheduler``) and
    release (noise on the driver)."""
    from pets.engines import _run

    # every refusal that needs no data happens before a cluster is started or reached
    q.check_release(epsilon=epsilon, delta=delta, rho=rho, level=level)
    cluster = (_run.connect(scheduler, timeout=connect_timeout) if scheduler
               else _run.local_client(workers or os.cpu_count() or 1))
    with cluster as client:
        if client is not None and scheduler:
            try:  # a scheduler without workers would leave the computation waiting forever
                client.wait_for_workers(1, timeout=connect_timeout)
            except (TimeoutError, OSError):
                raise InputError(f"no worker joined the Dask cluster at {scheduler} within "
                                 f"{connect_timeout:g} s (--connect-timeout)") from None
        n_workers = len(client.scheduler_info().get("workers", {})) if client else 0
        rel = q.release(epsilon=epsilon, delta=delta, rho=rho, level=level)
    return rel, n_workers


COMMANDS = [release]

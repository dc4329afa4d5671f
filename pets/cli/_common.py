"""Helpers shared by CLI commands: JSON output, progress bars, context options, output checks."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pets._errors import InputError
from pets.jurisdiction import Context

if TYPE_CHECKING:
    from pets.keys._config import KeyConfig

__all__ = ["DEFAULT_BOUNDARY_DIR", "check_out", "context_options", "dask_options", "dask_target",
           "emit", "json_option", "make_context", "overwrite_option", "parse_pairs", "progress",
           "protected_paths"]

#: pets' own directory (keyring, audit log, boundary keys, ledger by default).
DEFAULT_BOUNDARY_DIR = Path(".pets")
_CONFIG_FILE = "boundary.json"
_CONFIG_MAX = 1 << 20
# keys of boundary.json whose string values are paths pets keeps (keyring, audit_log, ledger…)
_CONFIG_PATH_KEYS = ("keyring", "log", "ledger", "keys", "dir", "directory", "path")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Machine-readable JSON output on stdout; on failure one JSON object on stderr "
         '({"error", "type", "exit_code", ...}) and nothing on stdout.')
overwrite_option = click.option(
    "--overwrite", is_flag=True,
    help="Replace an existing output file (never an input, the keyring, the audit log, the "
         "ledger or anything in the boundary directory).")


def context_options(f: F) -> F:
    """Add ``--jurisdiction`` and ``--principal`` (defaults from PETS_JURISDICTION/PRINCIPAL)."""
    f = click.option("--principal", envvar="PETS_PRINCIPAL", default=None,
                     help="Who acts (recorded in the audit log). [env: PETS_PRINCIPAL]")(f)
    f = click.option("--jurisdiction", envvar="PETS_JURISDICTION", default="EU", show_default=True,
                     help="Where this process runs. [env: PETS_JURISDICTION]")(f)
    return f


def dask_options(*, engine_help: str, scheduler_help: str) -> Callable[[F], F]:
    """Add ``--engine pandas|dask``, ``--workers``, ``--scheduler`` (default
    ``PETS_DASK_SCHEDULER``) and ``--connect-timeout``; check them with :func:`dask_target`."""

    def deco(f: F) -> F:
        f = click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True),
                         default=10.0, show_default=True, metavar="SECONDS",
                         help="How long to wait for the --scheduler before exiting 1.")(f)
        f = click.option("--scheduler", default=None, envvar="PETS_DASK_SCHEDULER",
                         metavar="ADDRESS",
                         help=f"{scheduler_help} (only with --engine dask; not with --workers). "
                              "[env: PETS_DASK_SCHEDULER]")(f)
        f = click.option("--workers", type=click.IntRange(min=1), default=None,
                         help="Worker processes of the local Dask cluster (only with --engine "
                              "dask; default: the CPU count).")(f)
        f = click.option("--engine", type=click.Choice(["pandas", "dask"]), default="pandas",
                         show_default=True, help=engine_help)(f)
        return f

    return deco


def dask_target(engine: str, workers: int | None, scheduler: str | None) -> str | None:
    """Check :func:`dask_options` and return the scheduler address to use (``None``: a local
    cluster, or the pandas engine). ``PETS_DASK_SCHEDULER`` yields to ``--workers`` and to
    the pandas engine; given on the command line, the same combinations are usage errors."""
    if workers is not None and engine != "dask":
        raise click.UsageError("--workers needs --engine dask")
    source = click.get_current_context().get_parameter_source("scheduler")
    if scheduler is not None and source is click.core.ParameterSource.ENVIRONMENT and (
            engine != "dask" or workers):
        return None
    if scheduler is not None and engine != "dask":
        raise click.UsageError("--scheduler needs --engine dask")
    if scheduler is not None and workers is not None:
        raise click.UsageError("--scheduler and --workers exclude each other: the cluster at "
                               "the scheduler has its own workers")
    return scheduler


def make_context(jurisdiction: str, principal: str | None) -> Context:
    return Context(jurisdiction, principal=principal or Context.from_env().principal)


def emit(payload: Any, as_json: bool, text: str | Callable[[], str] | None = None) -> None:
    """Print ``payload`` as JSON, or ``text`` (a string or a function producing one)."""
    if as_json:
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        click.echo(text() if callable(text) else (text if text is not None else str(payload)))


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterator[T]:
    """A tqdm bar on an interactive terminal; silent in pipelines."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, file=sys.stderr)
    else:
        yield from items


def parse_pairs(items: tuple[str, ...], option: str = "--context") -> dict[str, str]:
    """``("k=v", ...)`` from a repeatable option into a dict; malformed or repeated keys refused.

    Examples:
        >>> parse_pairs(("tenant=eu", "purpose=billing"))
        {'tenant': 'eu', 'purpose': 'billing'}
        >>> parse_pairs(("tenant",))
        Traceback (most recent call last):
        ...
        pets._errors.InputError: invalid --context 'tenant': expected KEY=VALUE
    """
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InputError(f"invalid {option} {item!r}: expected KEY=VALUE")
        if k in out:
            raise InputError(f"{option} key {k!r} given twice")
        out[k] = v
    return out


def _configured_paths(directory: Path) -> list[Path]:
    """Paths named in ``<directory>/boundary.json`` (keyring, audit log, ledger…), tolerant of
    a missing or malformed file: each relative value counts both from the file's directory
    and from the working directory (protecting too much is safe, too little is not)."""
    try:
        with open(directory / _CONFIG_FILE, "rb") as fh:
            data = json.loads(fh.read(_CONFIG_MAX))
    except (OSError, ValueError):
        return []
    out: list[Path] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (isinstance(value, str) and value and "://" not in value and "\0" not in value
                        and str(key).lower().endswith(_CONFIG_PATH_KEYS)):
                    p = Path(value)
                    out.extend([p] if p.is_absolute() else [directory / p, p])
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return out


def protected_paths(key_config: KeyConfig | None = None, *, audit_log: Path | None = None,
                    boundary_keys: Path | None = None, ledger: Path | None = None,
                    boundary_dir: Path | None = None,
                    extra: Iterable[Path] = ()) -> list[Path]:
    """Locations no command output may be, be inside, or contain (see :func:`check_out`).

    ``./.pets`` (or ``boundary_dir``), the keyring (``key_config.keyring``), the boundary
    directory (``boundary_keys``, ``PETS_BOUNDARY``/``PETS_BOUNDARY_KEYS``, default
    ``<keyring>/boundary``) and every path its pinned ``boundary.json`` names (the audit log,
    the ledger, the keyring), the ``PETS_KEYRING`` / ``PETS_AUDIT_LOG`` locations, the
    ``audit_log`` and ``ledger`` given, and ``extra``. ``boundary.json`` is read without
    verifying its signature: it can only add locations to refuse, never remove one.

    Examples:
        >>> [str(p) for p in protected_paths(audit_log=Path("logs/audit.jsonl"))][:4]
        ['.pets', '.pets/keyring', '.pets/keyring/boundary', 'logs/audit.jsonl']
    """
    base = boundary_dir or DEFAULT_BOUNDARY_DIR
    env = [Path(v) for var in ("PETS_KEYRING", "PETS_AUDIT_LOG", "PETS_BOUNDARY",
                               "PETS_BOUNDARY_KEYS")
           if (v := os.environ.get(var)) and "\0" not in v]
    rings = [Path(".pets") / "keyring"]  # the default keyring, also for commands without one
    if key_config is not None:
        rings.append(key_config.keyring)
    if v := os.environ.get("PETS_KEYRING"):
        rings.append(Path(v))
    dirs = [base, *(d for ring in rings for d in (ring, ring / "boundary"))]
    if boundary_keys is not None:
        dirs.append(boundary_keys)
    dirs += env
    paths: list[Path] = [*dirs, *(p for p in (audit_log, ledger) if p is not None)]
    for d in dirs:
        paths += _configured_paths(d)
    paths += list(extra)
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def check_out(out: Path, *, option: str = "--out", inputs: Iterable[Path | None] = (),
              key_config: KeyConfig | None = None, audit_log: Path | None = None,
              boundary_keys: Path | None = None, ledger: Path | None = None,
              overwrite: bool = False) -> Path:
    """:func:`pets._io.check_output` with the protected locations of :func:`protected_paths`.

    Returns the resolved output path to write to; raises :class:`~pets.InputError` (exit 1)
    naming ``option`` and the path the output would destroy, with ``path`` set to ``out``.
    """
    from pets._io import check_output

    try:
        return check_output(out, option=option, inputs=[p for p in inputs if p is not None],
                            protected=protected_paths(key_config, audit_log=audit_log,
                                                      boundary_keys=boundary_keys,
                                                      ledger=ledger),
                            overwrite=overwrite)
    except InputError as exc:
        if exc.path is None and "\0" not in str(out):
            exc.path = str(out)  # the output refused: --json reports it as "path"
        raise

"""Helpers shared by CLI commands: JSON output, progress bars, context options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

from pets._errors import InputError
from pets.jurisdiction import Context

__all__ = ["context_options", "dask_options", "dask_target", "emit", "json_option", "make_context",
           "parse_pairs", "progress"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


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

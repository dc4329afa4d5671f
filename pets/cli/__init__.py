"""The ``pets`` command line.

Command modules are ``pets/cli/_cmd_*.py``; each exports ``COMMANDS``, a list of click
commands or groups, and is discovered here, so a new capability adds a file and touches nothing
else. Heavy libraries are imported inside commands, keeping ``pets --help`` fast.

Exit codes (documented in ``docs/cli.md``):

====  =========================================================
0     success
1     bad input or other error (``InputError``, ``PetsError``)
2     usage error (unknown option, missing argument)
3     policy refusal (``PolicyError``)
4     jurisdiction refusal (``JurisdictionError``)
5     integrity failure (``IntegrityError``)
6     privacy budget exhausted (``BudgetExhausted``)
7     key-service failure (``KeyServiceError``)
129   interrupted by SIGHUP (128 + signal number)
130   interrupted by SIGINT (Ctrl-C)
143   interrupted by SIGTERM
====  =========================================================

Every error is one line on stderr, ``error: <Type>: <message>``; an error pets did not expect
(a bug) prints ``error: internal error: <Type>: <message>`` and exits 1 (set ``PETS_DEBUG=1``
for the traceback). SIGTERM, SIGINT and SIGHUP raise :class:`pets._io.Interrupted` in the
command, which unwinds: temporary files and directories (created 0600 / 0700 beside the
output) are removed, so an interrupted run leaves neither partial output nor plaintext.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import click

from pets._errors import PetsError
from pets._io import Interrupted, signals_raise

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pets")
def cli() -> None:
    """pets: protect personal data that must stay in one jurisdiction.

    Set PETS_JURISDICTION (default EU) and PETS_PRINCIPAL to say where and as whom you run.
    """


def _register() -> None:
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_cmd_"):
            module = importlib.import_module(f"{__name__}.{mod.name}")
            for command in module.COMMANDS:
                cli.add_command(command)


_register()


def _one_line(exc: BaseException) -> str:
    """The message on one line; cut only when absurdly long (a message that lists every
    missing option must keep them all)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 4000 else text[:3997] + "..."


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map :class:`PetsError` subclasses and signals to their exit codes."""
    try:
        with signals_raise():
            cli.main(args=argv, prog_name="pets", standalone_mode=False)
    except Interrupted as exc:
        click.echo(f"error: {exc}; nothing partial was left behind", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except PetsError as exc:
        click.echo(f"error: {type(exc).__name__}: {_one_line(exc)}", err=True)
        return exc.exit_code
    except OSError as exc:  # the file system refused (permissions, disk full, a FIFO...)
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        click.echo(f"error: {type(exc).__name__}:{where} {exc.strerror or _one_line(exc)}",
                   err=True)
        return 1
    except Exception as exc:
        if os.environ.get("PETS_DEBUG"):
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {_one_line(exc)} "
                   "(a bug: please report it; PETS_DEBUG=1 shows the traceback)", err=True)
        return 1
    return 0


def _entry() -> None:  # pragma: no cover - console script
    sys.exit(main())



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
====  =========================================================
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from pets._errors import PetsError

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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map :class:`PetsError` subclasses to their exit codes."""
    try:
        cli.main(args=argv, prog_name="pets", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except PetsError as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        return exc.exit_code
    return 0


def _entry() -> None:  # pragma: no cover - console script
    sys.exit(main())



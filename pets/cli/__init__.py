"""The ``pets`` command line.

Command modules are ``pets/cli/_cmd_*.py``; each exports ``COMMANDS``, a list of click
commands or groups, and is discovered here, so a new capability adds a file and touches nothing
else. A command listed in ``_INDEX`` (name, module, first line of its help) is imported only
when it runs or its help is shown: ``pets --help`` imports no command module, ``pets encrypt``
only the envelope commands (``tests/cli/test_lean.py`` checks the index against the modules, and
that the key and envelope commands never load pandas, pyarrow or OpenDP). A module not yet in
the index is imported at start-up. Heavy libraries are imported inside commands.

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
for the traceback). With ``--json`` anywhere before ``--``, a failure (usage errors included)
prints instead exactly one JSON object on one line of stderr, and nothing on stdout::

    {"error": "<message>", "type": "<ExceptionClass>", "exit_code": <n>, ...}

plus ``path``, ``column`` and ``key`` when the error knows the file, column or key at fault,
``param`` for a usage error about one option or argument, ``internal: true`` for a bug and
``signal`` for an interruption. SIGTERM, SIGINT and SIGHUP raise :class:`pets._io.Interrupted`
in the command, which unwinds: temporary files and directories (created 0600 / 0700 beside the
output) are removed, so an interrupted run leaves neither partial output nor plaintext.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from typing import Any

import click

from pets._errors import PetsError
from pets._io import Interrupted, signals_raise

__all__ = ["cli", "main"]

#: name -> (module in pets/cli, first paragraph of its help). Only an optimisation: a wrong or
#: missing entry costs start-up time, never a command (tests/cli/test_lean.py keeps it exact).
_INDEX: dict[str, tuple[str, str]] = {
    "audit": ("_cmd_boundary", "Verify the audit log and report flows and incidents (needs "
              "only the public key)."),
    "bench": ("_cmd_bench", "Run benchmarks (all without NAMES) and write the results to --out."),
    "boundary": ("_cmd_boundary", "Set up the boundary once and inspect its pinned trust "
                 "anchors."),
    "datasets": ("_cmd_datasets", "Synthetic EU user data for demos, tests and benchmarks."),
    "decrypt": ("_cmd_envelope", "Decrypt envelope IN into OUT; OUT appears only once every "
                "segment authenticates."),
    "demo": ("_cmd_demo", "Run the end-to-end demo on synthetic EU users."),
    "encrypt": ("_cmd_envelope", "Encrypt file IN into a pets envelope OUT (streaming, "
                "atomic)."),
    "export": ("_cmd_boundary", "Export a protected table through the gate (verifies "
               "signature, data and policy)."),
    "keys": ("_cmd_keys", "Key-encryption keys: local keyring or PKCS#11 HSM, scoped to one "
             "jurisdiction."),
    "migrate": ("_cmd_migrate", "Move everything wrapped under old KEKs to a new KEK (data "
                "centre / key service migration) without re-encrypting data: plan, run, "
                "verify, then destroy the old keys."),
    "policy": ("_cmd_boundary", "Check boundary policies before a pipeline runs them."),
    "protect": ("_cmd_boundary", "Protect a raw Parquet table under a policy (runs in the "
                "policy's home only)."),
    "pseudonymize": ("_cmd_pseudo", "Pseudonymize columns of SRC (Parquet or CSV) into DEST, "
                     "atomically."),
    "reidentify": ("_cmd_boundary", "Reverse tokens, FF1 or encrypted values of a protected "
                   "table (home jurisdiction only)."),
    "release": ("_cmd_release", "Release DP aggregates of INFILE (Parquet), spending budget "
                "from the boundary's ledger."),
    "rewrap": ("_cmd_envelope", "Re-wrap FILE's data key under --to (rotation, retirement, "
               "migration), atomically."),
}


class _LazyGroup(click.Group):
    """A group whose indexed commands are imported on first use.

    The CLI's own paths (:meth:`get_command`, :meth:`list_commands`, the ``--help`` listing)
    import only the module of the command that runs. Reading :attr:`commands` from outside
    imports every module, so code that inspects ``cli.commands`` sees them all.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._commands: dict[str, click.Command] = {}
        self._loaded: set[str] = set()
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        self.load_all()
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._commands = value

    def load(self, module: str) -> None:
        """Import ``pets.cli.<module>`` and add its ``COMMANDS`` (once)."""
        if module in self._loaded:
            return
        self._loaded.add(module)
        for command in importlib.import_module(f"{__name__}.{module}").COMMANDS:
            self.add_command(command)

    def load_all(self) -> None:
        """Import every indexed module."""
        for module, _help in sorted(set(_INDEX.values())):
            self.load(module)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name is None:
            raise TypeError("Command has no name.")
        self._commands[name] = cmd

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._commands and cmd_name in _INDEX:
            self.load(_INDEX[cmd_name][0])
        return self._commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self._commands) | set(_INDEX))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the indexed help of commands not imported."""
        names = [n for n in self.list_commands(ctx)
                 if n not in self._commands or not self._commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, (self._commands.get(n) or click.Command(n, help=_INDEX[n][1]))
                 .get_short_help_str(limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pets")
def cli() -> None:
    """pets: protect personal data that must stay in one jurisdiction.

    Set PETS_JURISDICTION (default EU) and PETS_PRINCIPAL to say where and as whom you run.
    """


def _register() -> None:
    """Add the commands of ``_cmd_*`` modules missing from the index (imported now)."""
    indexed = {module for module, _help in _INDEX.values()}
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_cmd_") and mod.name not in indexed:
            cli.load(mod.name)


assert isinstance(cli, _LazyGroup)
_register()


def _one_line_text(text: str) -> str:
    """``text`` on one line; cut only when absurdly long (a message that lists every missing
    option must keep them all)."""
    text = " ".join(text.split())
    return text if len(text) <= 4000 else text[:3997] + "..."


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (see :func:`_one_line_text`)."""
    return _one_line_text(str(exc))


def _wants_json(argv: list[str] | None) -> bool:
    """``--json`` among the arguments (before a ``--``): errors are reported as JSON."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "--" in args:
        args = args[:args.index("--")]
    return "--json" in args


def _report(as_json: bool, line: str, exc: BaseException, exit_code: int, message: str,
            **extra: Any) -> int:
    """Print the failure: ``line`` as is, or with ``--json`` one JSON object; return the code."""
    if as_json:
        obj = {"error": message, "type": type(exc).__name__, "exit_code": exit_code,
               **{k: v for k, v in extra.items() if v is not None}}
        click.echo(json.dumps(obj, sort_keys=True, default=str), err=True)
    else:
        click.echo(line, err=True)
    return exit_code


def _usage_details(exc: click.ClickException) -> dict[str, Any]:
    """The option or argument a usage error is about, and the command, when click knows."""
    out: dict[str, Any] = {}
    param = getattr(exc, "param", None)
    if isinstance(param, click.Parameter):
        out["param"] = param.opts[0] if param.opts and isinstance(param, click.Option) \
            else param.human_readable_name
    elif getattr(exc, "option_name", None):
        out["param"] = exc.option_name  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    if isinstance(ctx, click.Context):
        out["command"] = ctx.command_path
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map :class:`PetsError` subclasses and signals to their exit codes.

    With ``--json`` in ``argv``, a failure prints one JSON object on stderr (see the module
    docstring) instead of the one-line message.
    """
    as_json = _wants_json(argv)
    try:
        with signals_raise():
            cli.main(args=argv, prog_name="pets", standalone_mode=False)
    except Interrupted as exc:
        return _report(as_json, f"error: {exc}; nothing partial was left behind", exc,
                       exc.exit_code, f"{exc}; nothing partial was left behind",
                       signal=exc.signo)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        if not as_json:
            exc.show()
            return exc.exit_code
        return _report(True, "", exc, exc.exit_code, _one_line_text(exc.format_message()),
                       **_usage_details(exc))
    except click.exceptions.Abort as exc:
        return _report(as_json, "aborted", exc, 1, "aborted")
    except PetsError as exc:
        return _report(as_json, f"error: {type(exc).__name__}: {_one_line(exc)}", exc,
                       exc.exit_code, _one_line(exc), **exc.details())
    except OSError as exc:  # the file system refused (permissions, disk full, a FIFO...)
        filename = getattr(exc, "filename", None)
        where = f" {filename!r}" if filename else ""
        text = exc.strerror or _one_line(exc)
        return _report(as_json, f"error: {type(exc).__name__}:{where} {text}", exc, 1,
                       f"{filename}: {text}" if filename else text,
                       path=os.fsdecode(filename) if filename else None)
    except Exception as exc:
        if os.environ.get("PETS_DEBUG"):
            raise
        message = (f"{_one_line(exc)} (a bug: please report it; PETS_DEBUG=1 shows the "
                   "traceback)")
        return _report(as_json, f"error: internal error: {type(exc).__name__}: {message}", exc,
                       1, f"internal error: {message}", internal=True)
    return 0


def _entry() -> None:  # pragma: no cover - console script
    sys.exit(main())



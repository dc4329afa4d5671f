"""The key and envelope commands stay lean: no pandas, pyarrow, OpenDP (nor numpy) is imported.

Each command runs for real, in-process through :func:`pets.cli.main`, in a fresh interpreter
(``python -c``) on a scratch boundary, and the child reports which heavy libraries ended up in
``sys.modules``. Timings and peak memory are measured in ``benchmarks/bench_cli.py``, never
here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security._cli_env import child_env

HEAVY = ("pandas", "pyarrow", "opendp", "numpy")

_PROBE = """
import json, sys
from pets.cli import main
rc = main(json.loads(sys.argv[1]))
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
cmds = sorted(m for m in sys.modules if m.startswith("pets.cli._cmd_"))
with open(sys.argv[3], "w") as fh:
    json.dump({"rc": rc, "heavy": heavy, "cmd_modules": cmds}, fh)
"""


def _run(args: list[str], cwd: Path) -> dict:
    """Run ``pets ARGS`` in a fresh interpreter; the exit code and the heavy modules loaded."""
    report = cwd / "probe.json"
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(HEAVY),
                        str(report)], cwd=cwd, env=child_env(), capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0 and report.exists(), r.stderr
    out = json.loads(report.read_text())
    report.unlink()
    out["stdout"], out["stderr"] = r.stdout, r.stderr
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A keyring ``eu``, the boundary (signing KEK local://eu/boundary), local://eu/users, and
    an envelope ``sealed.pets`` of ``plain.txt``; each setup step is itself checked lean."""
    root = tmp_path_factory.mktemp("lean")
    (root / "plain.txt").write_bytes(b"hello\n")
    for args in (["keys", "init", "--name", "eu"],
                 ["boundary", "init", "--signing-kek", "local://eu/boundary"],
                 ["keys", "create", "local://eu/users"],
                 ["encrypt", "plain.txt", "sealed.pets", "--key", "local://eu/users"]):
        res = _run(args, root)
        assert res["rc"] == 0, (args, res["stderr"])
        assert res["heavy"] == [], (args, res["heavy"])
    return root


LEAN = [
    ["--help"],
    ["encrypt", "--help"],
    ["keys", "--help"],
    ["boundary", "show", "--help"],
    ["encrypt", "plain.txt", "again.pets", "--key", "local://eu/users", "--json"],
    ["decrypt", "sealed.pets", "plain.out", "--overwrite"],
    ["rewrap", "sealed.pets", "--to", "local://eu/users", "--out", "rewrapped.pets",
     "--overwrite"],
    ["keys", "list"],
    ["keys", "describe", "local://eu/users", "--json"],
    ["keys", "create", "local://eu/other"],
    ["keys", "rotate", "local://eu/users"],
    ["boundary", "show"],
    ["boundary", "show", "--json"],
]


class TestLeanCommands:
    @pytest.mark.parametrize("args", LEAN, ids=[" ".join(a) for a in LEAN])
    def test_command_runs_without_heavy_libraries(self, scratch, args):
        res = _run(args, scratch)
        assert res["rc"] == 0, res["stderr"]
        assert res["heavy"] == [], f"pets {' '.join(args)} imported {res['heavy']}"

    def test_the_decrypted_file_is_the_plaintext(self, scratch):
        assert _run(["decrypt", "sealed.pets", "check.txt", "--overwrite"], scratch)["rc"] == 0
        assert (scratch / "check.txt").read_bytes() == b"hello\n"

    def test_failing_key_command_is_lean_too(self, scratch):
        res = _run(["decrypt", "plain.txt", "nope.out"], scratch)
        assert res["rc"] == 5 and "EnvelopeFormatError" in res["stderr"]
        assert res["heavy"] == []
        assert not (scratch / "nope.out").exists()

    def test_help_imports_no_command_module(self, scratch):
        assert _run(["--help"], scratch)["cmd_modules"] == []

    def test_a_command_imports_only_its_own_modules(self, scratch):
        mods = _run(["keys", "list"], scratch)["cmd_modules"]
        assert "pets.cli._cmd_keys" in mods
        assert not {"pets.cli._cmd_release", "pets.cli._cmd_pseudo",
                    "pets.cli._cmd_datasets", "pets.cli._cmd_migrate"} & set(mods)

    def test_the_table_commands_still_load_pandas(self, scratch):
        # the probe can see pandas: a lean result above is not a blind spot
        res = _run(["audit", "flows", ".pets/audit.jsonl"], scratch)
        assert res["rc"] == 0, res["stderr"]
        assert "pandas" in res["heavy"]


def test_import_boundary_audit_and_keys_without_pandas():
    code = ("import sys; from pets.boundary import AuditLog, BoundaryKeys, verify_log; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))")
    r = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True,
                       check=True, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert r.stdout.strip() == "[]"


def test_lazy_names_of_pets_boundary_resolve():
    import pets.boundary
    from pets.boundary._manifest import ProtectedFrame
    from pets.boundary._protect import protect

    assert pets.boundary.protect is protect
    assert pets.boundary.ProtectedFrame is ProtectedFrame
    with pytest.raises(AttributeError, match="no_such_name"):
        pets.boundary.no_such_name


class TestCommandIndex:
    """``pets.cli._INDEX`` (what ``pets --help`` shows without importing the commands) is
    exactly what the ``_cmd_*`` modules register: the name, the module and the help's first
    paragraph. A command added, renamed or re-described must be listed there too."""

    def test_index_matches_the_modules(self):
        import importlib
        import pkgutil

        import pets.cli

        real = {}
        for mod in pkgutil.iter_modules(pets.cli.__path__):
            if mod.name.startswith("_cmd_"):
                module = importlib.import_module(f"pets.cli.{mod.name}")
                for cmd in module.COMMANDS:
                    first = (cmd.short_help or cmd.help or "").split("\n\n")[0]
                    real[cmd.name] = (mod.name, " ".join(first.split()))
        assert pets.cli._INDEX == real, (
            "update _INDEX in pets/cli/__init__.py to: "
            + repr({k: v for k, v in real.items() if pets.cli._INDEX.get(k) != v}))

    def test_commands_attribute_lists_every_command(self):
        from pets.cli import _INDEX, cli

        assert set(_INDEX) <= set(cli.commands)
        assert all(hasattr(cli.commands[n], "callback") for n in _INDEX)

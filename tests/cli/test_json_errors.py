"""With ``--json`` a failure is one JSON object on stderr and nothing on stdout.

``{"error": message, "type": ExceptionClass, "exit_code": n}``, plus ``path`` / ``column`` /
``key`` when the error knows the file, column or key at fault, and ``param`` for a usage error.
Without ``--json`` the one-line ``error: Type: message`` stays.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pandas as pd
import pytest

import pets
from pets.cli import main
from tests.security._cli_env import URI, child_env, policy_text, setup_boundary

KEYS = {"error", "type", "exit_code"}


@pytest.fixture
def scratch(tmp_path, monkeypatch, capsys):
    setup_boundary(tmp_path, monkeypatch)
    (tmp_path / "plain.txt").write_bytes(b"hello\n")
    assert main(["encrypt", "plain.txt", "sealed.pets", "--key", URI]) == 0
    capsys.readouterr()
    return tmp_path


def _failure(capsys, args: list[str], code: int) -> dict:
    """Run ``pets ARGS``: it exits ``code``, prints nothing on stdout and exactly one JSON
    object (on one line) on stderr; return that object."""
    assert main(args) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    obj = json.loads(err)
    assert isinstance(obj, dict) and KEYS <= set(obj), obj
    assert obj["exit_code"] == code and obj["error"]
    return obj


class TestJsonErrors:
    def test_bad_input_exits_1_naming_the_path(self, scratch, capsys):
        obj = _failure(capsys, ["encrypt", "plain.txt", "plain.txt", "--key", URI,
                                "--overwrite", "--json"], 1)
        assert obj["type"] == "InputError" and "is the input" in obj["error"]
        assert obj["path"] == "plain.txt"
        assert (scratch / "plain.txt").read_bytes() == b"hello\n"

    def test_malformed_option_value_exits_1(self, scratch, capsys):
        obj = _failure(capsys, ["encrypt", "plain.txt", "x.pets", "--key", URI,
                                "--context", "tenant", "--json"], 1)
        assert obj["type"] == "InputError" and "expected KEY=VALUE" in obj["error"]
        assert not (scratch / "x.pets").exists()

    def test_policy_refusal_exits_3_naming_the_column(self, scratch, capsys):
        (scratch / "policy.yaml").write_text(policy_text())
        assert main(["datasets", "generate", "--users", "200", "--out", "users.parquet"]) == 0
        pd.read_parquet(scratch / "users.parquet").assign(extra=1).to_parquet(
            scratch / "u2.parquet")
        capsys.readouterr()
        obj = _failure(capsys, ["protect", "u2.parquet", "--policy", "policy.yaml",
                                "--out", "prot", "--json"], 3)
        assert obj["type"] == "PolicyError" and obj["column"] == "extra"
        assert "column 'extra'" in obj["error"]
        assert not (scratch / "prot").exists()

    def test_jurisdiction_refusal_exits_4_naming_the_key(self, scratch, capsys, monkeypatch):
        monkeypatch.setenv("PETS_JURISDICTION", "US")
        obj = _failure(capsys, ["decrypt", "sealed.pets", "out.txt", "--json"], 4)
        assert obj["type"] == "JurisdictionError" and "refused" in obj["error"]
        assert obj["key"].startswith("local://eu/")
        assert not (scratch / "out.txt").exists()

    def test_integrity_failure_exits_5(self, scratch, capsys):
        blob = bytearray((scratch / "sealed.pets").read_bytes())
        blob[-3] ^= 1
        (scratch / "tampered.pets").write_bytes(bytes(blob))
        obj = _failure(capsys, ["decrypt", "tampered.pets", "out.txt", "--json"], 5)
        assert obj["type"] == "IntegrityError"
        assert obj["error"] == "envelope failed to authenticate"  # still opaque
        assert not (scratch / "out.txt").exists()

    def test_unknown_key_exits_7_naming_the_key(self, scratch, capsys):
        obj = _failure(capsys, ["encrypt", "plain.txt", "x.pets", "--key", "local://eu/nope",
                                "--json"], 7)
        assert obj["type"] == "KeyNotFoundError" and obj["key"] == "local://eu/nope"

    @pytest.mark.parametrize(("args", "kind", "param"), [
        (["encrypt", "plain.txt", "--key", URI], "MissingParameter", "OUT"),
        (["protect", "users.parquet", "--policy", "policy.yaml"], "MissingParameter", "--out"),
        (["keys", "list", "--nope"], "NoSuchOption", "--nope"),
        (["encrypt", "missing.txt", "x.pets", "--key", URI], "BadParameter", "IN"),
    ], ids=["missing-argument", "missing-out", "bad-option", "missing-file"])
    def test_usage_error_exits_2(self, scratch, capsys, args, kind, param):
        (scratch / "users.parquet").write_bytes(b"")
        (scratch / "policy.yaml").write_text(policy_text())
        obj = _failure(capsys, [*args, "--json"], 2)
        assert obj["type"] == kind and obj["param"] == param
        assert obj["command"].startswith("pets ")

    def test_json_after_double_dash_is_an_argument_not_the_flag(self, scratch, capsys):
        # after --, "--json" is OUT: the extra argument is a plain-text usage error
        assert main(["encrypt", "plain.txt", "--key", URI, "--", "--json", "more"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "Usage:" in err and "unexpected extra argument" in err
        assert not (scratch / "--json").exists()


class TestJsonErrorsOfOtherKinds:
    @pytest.fixture
    def failing(self):
        """A throw-away command ``raise-test`` raising what the test puts in ``box``."""
        from pets.cli import cli

        box: list[BaseException] = []

        @cli.command("raise-test")
        @click.option("--json", "as_json", is_flag=True)
        def raise_test(as_json: bool) -> None:
            raise box[0]

        try:
            yield box
        finally:
            cli.commands.pop("raise-test")

    def test_a_bug_is_reported_as_internal(self, failing, capsys):
        failing.append(RuntimeError("boom\nsecond line"))
        obj = _failure(capsys, ["raise-test", "--json"], 1)
        assert obj["type"] == "RuntimeError" and obj["internal"] is True
        assert obj["error"].startswith("internal error: boom second line")

    def test_a_refused_file_system_call_names_the_path(self, failing, capsys):
        failing.append(PermissionError(13, "Permission denied", "/data/out.csv"))
        obj = _failure(capsys, ["raise-test", "--json"], 1)
        assert obj == {"error": "/data/out.csv: Permission denied", "type": "PermissionError",
                       "exit_code": 1, "path": "/data/out.csv"}

    def test_an_interruption_reports_the_signal(self, failing, capsys):
        import signal

        from pets._io import Interrupted

        failing.append(Interrupted(signal.SIGTERM))
        obj = _failure(capsys, ["raise-test", "--json"], 143)
        assert obj["type"] == "Interrupted" and obj["signal"] == signal.SIGTERM
        assert obj["error"].startswith("interrupted by SIGTERM")

    def test_pets_error_attributes_are_reported(self, failing, capsys):
        failing.append(pets.InputError("users.parquet: no column 'email'",
                                       path="users.parquet", column="email"))
        obj = _failure(capsys, ["raise-test", "--json"], 1)
        assert (obj["path"], obj["column"]) == ("users.parquet", "email") and "key" not in obj


class TestWithoutJson:
    def test_pets_error_stays_one_line(self, scratch, capsys):
        assert main(["encrypt", "plain.txt", "plain.txt", "--key", URI, "--overwrite"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: InputError: OUT 'plain.txt' is the input")
        assert err.count("\n") == 1

    def test_usage_error_keeps_clicks_usage_text(self, scratch, capsys):
        assert main(["keys", "list", "--nope"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "Usage: pets keys list" in err and "No such option" in err


def test_console_script_prints_one_json_object(scratch):
    r = subprocess.run([sys.executable, "-m", "pets.cli", "decrypt", "plain.txt", "o.txt",
                        "--json"], cwd=scratch, env=child_env(), capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 5 and r.stdout == ""
    obj = json.loads(r.stderr)
    assert obj["exit_code"] == 5 and obj["type"] == "EnvelopeFormatError"

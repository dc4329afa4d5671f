import hashlib
import subprocess
import sys

import pandas as pd
import pytest

import pets
from pets.cli import cli, main


def test_help_lists_groups(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "datasets" in out and "demo" in out


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help(name, capsys):
    assert main([name, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    assert main(["datasets", "generate", "--users", "x"]) == 2


def test_pets_error_maps_to_its_exit_code(monkeypatch, capsys):
    import click

    @cli.command("boom-test")
    def boom() -> None:
        raise pets.JurisdictionError("refused for analyst@US")

    try:
        assert main(["boom-test"]) == 4
        assert "JurisdictionError: refused for analyst@US" in capsys.readouterr().err
    finally:
        cli.commands.pop("boom-test")
    assert isinstance(boom, click.Command)


def test_datasets_generate_is_byte_reproducible(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for p in (a, b):
        assert main(["datasets", "generate", "--users", "1000", "--out", str(p), "--seed", "4"]) == 0
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    df = pd.read_parquet(a)
    assert list(df.columns) == ["user_id", "email", "phone", "birth_date", "postcode",
                                "country", "ip", "signup_ts"]
    assert len(df) == 1000


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "pets", "--help"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0 and "datasets" in r.stdout

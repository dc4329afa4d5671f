"""Attack: make a command's output destroy its input or a file pets keeps (issue #12, item 4).

Every command that writes a file is pointed at its own input (directly, through a symlink, a
``..`` path, a hard link) and at the keyring, the audit log and the ledger. Each attempt must be
refused with exit 1 and a message naming the option and both paths, before any key is used,
and leave every file byte-identical and nothing new behind.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from pets.cli import main
from tests.security._cli_env import AUDIT, LEDGER, MASTER_HEX, URI, setup_boundary

KEYFILE = ".pets/keyring/keys/users.json"


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    setup_boundary(tmp_path, monkeypatch)
    pd.DataFrame({"id": ["1", "2"], "email": ["a@x.eu", "b@x.eu"]}).to_csv("in.csv", index=False)
    assert main(["encrypt", "in.csv", "in.pets", "--key", URI]) == 0
    from pets import Context
    from pets.keys import LocalKeyring, Secret

    ring = LocalKeyring(tmp_path / ".pets" / "keyring", master_key=Secret(bytes.fromhex(MASTER_HEX)))
    (tmp_path / "w.json").write_text(ring.wrap(URI, b"k" * 32, context=Context("EU")).to_json())
    assert (tmp_path / AUDIT).stat().st_size > 0
    if not (tmp_path / LEDGER).exists():  # a stand-in: its bytes must survive
        (tmp_path / LEDGER).parent.mkdir(exist_ok=True)
        (tmp_path / LEDGER).write_bytes(b"SQLite format 3\0" + os.urandom(64))
    (tmp_path / "d").mkdir()
    capsys.readouterr()
    return tmp_path


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(root))] = "dir"
    return out


# each command: (argv with {out} for the output, the input file it reads)
COMMANDS = {
    "encrypt": (["encrypt", "in.csv", "{out}", "--key", URI], "in.csv"),
    "decrypt": (["decrypt", "in.pets", "{out}"], "in.pets"),
    "rewrap": (["rewrap", "in.pets", "--to", "local://eu/other", "--out", "{out}"], "in.pets"),
    "pseudonymize": (["pseudonymize", "in.csv", "{out}", "--column", "email=keyed-hash:crm",
                      "--secret-env", "PETS_ROOT_HEX"], "in.csv"),
    "keys migrate": (["keys", "migrate", "w.json", "{out}", "--to", "local://eu/other"],
                     "w.json"),
    "datasets generate": (["datasets", "generate", "--users", "10", "--out", "{out}"], None),
}


def _input_aliases(env: Path, name: str) -> dict[str, str]:
    """Ways to name the input ``name`` again: itself, a symlink, a ``..`` path, a hard link."""
    os.symlink(name, env / "sym")
    os.symlink(env, env / "d" / "up")
    os.link(env / name, env / "hard")
    return {"same": name, "symlink": "sym", "dotdot": f"d/../{name}",
            "symlinked-parent": f"d/up/{name}", "hardlink": "hard"}


PROTECTED = {"keyring-file": KEYFILE, "keyring-new-file": ".pets/keyring/keys/new.json",
             "keyring-dir-dotdot": "d/../.pets/keyring/keyring.json",
             "boundary-json": ".pets/keyring/boundary/boundary.json",
             "audit-log": AUDIT, "audit-log-dotdot": f"d/../{AUDIT}", "ledger": LEDGER}


def _run(capsys, argv: list[str], out: str) -> tuple[int, str]:
    code = main([a.replace("{out}", out) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", [c for c, (_, src) in COMMANDS.items() if src])
@pytest.mark.parametrize("alias", ["same", "symlink", "dotdot", "symlinked-parent", "hardlink"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_the_output_cannot_be_the_input(env, capsys, command, alias, overwrite):
    argv, src = COMMANDS[command]
    out = _input_aliases(env, src)[alias]
    before = _snapshot(env)
    code, err = _run(capsys, argv + (["--overwrite"] if overwrite else []), out)
    assert code == 1, err
    assert "input" in err and out in err and str((env / src).resolve()) in err
    assert "refusing to overwrite it" in err and err.count("\n") == 1
    assert _snapshot(env) == before


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("where", list(PROTECTED))
@pytest.mark.parametrize("overwrite", [False, True])
def test_the_output_cannot_touch_the_keyring_log_or_ledger(env, capsys, command, where,
                                                           overwrite):
    argv, _ = COMMANDS[command]
    before = _snapshot(env)
    code, err = _run(capsys, argv + (["--overwrite"] if overwrite else []), PROTECTED[where])
    assert code == 1, err
    assert "protected location" in err and PROTECTED[where] in err
    assert _snapshot(env) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_symlink_into_the_keyring_is_refused(env, capsys, command):
    os.symlink(env / ".pets" / "keyring" / "keys", env / "innocent")
    argv, _ = COMMANDS[command]
    before = _snapshot(env)
    code, err = _run(capsys, [*argv, "--overwrite"], "innocent/users.json")
    assert code == 1 and "is inside the protected location" in err
    assert _snapshot(env) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_existing_file_needs_overwrite(env, capsys, command):
    argv, _ = COMMANDS[command]
    (env / "old.bin").write_bytes(b"precious")
    code, err = _run(capsys, argv, "old.bin")
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert (env / "old.bin").read_bytes() == b"precious"
    code, err = _run(capsys, [*argv, "--overwrite"], "old.bin")
    assert code == 0, err
    assert (env / "old.bin").read_bytes() != b"precious"


def test_rewrap_in_place_refuses_a_file_in_the_keyring(env, capsys):
    before = _snapshot(env)
    code, err = _run(capsys, ["rewrap", KEYFILE, "--to", "local://eu/other"], "")
    assert code == 1 and "FILE" in err and "protected location" in err
    assert _snapshot(env) == before


def test_pseudonymize_secret_cannot_be_written_into_the_keyring_or_over_dest(env, capsys):
    before = _snapshot(env)
    base = ["pseudonymize", "in.csv", "out.csv", "--column", "email=keyed-hash:crm",
            "--create-secret", URI]
    code, err = _run(capsys, [*base, "--secret", ".pets/keyring/keys/root.json"], "")
    assert code == 1 and "--secret" in err and "protected location" in err
    code, err = _run(capsys, ["pseudonymize", "in.csv", "s.json", "--column",
                              "email=keyed-hash:crm", "--create-secret", URI,
                              "--secret", "s.json"], "")
    assert code == 1 and "s.json" in err
    code, err = _run(capsys, ["pseudonymize", "in.csv", "w.json", "--column",
                              "email=keyed-hash:crm", "--secret", "w.json", "--overwrite"], "")
    assert code == 1 and "is the input" in err
    assert _snapshot(env) == before


def test_datasets_events_output_is_checked_too(env, capsys):
    before = _snapshot(env)
    os.symlink(env / ".pets" / "keyring", env / "ring")
    code, err = _run(capsys, ["datasets", "generate", "--users", "10", "--events", "10",
                              "--out", "{out}", "--overwrite"], "ring/keyring.parquet")
    assert code == 1 and "protected location" in err
    # users.parquet would be fine, but its events file would land on an existing file
    (env / "u-events.parquet").write_bytes(b"precious")
    code, err = _run(capsys, ["datasets", "generate", "--users", "10", "--events", "10",
                              "--out", "{out}"], "u.parquet")
    assert code == 1 and "--out (events)" in err and "already exists" in err
    assert not (env / "u.parquet").exists()
    assert (env / "u-events.parquet").read_bytes() == b"precious"
    assert set(_snapshot(env)) == set(before) | {"ring", "u-events.parquet"}

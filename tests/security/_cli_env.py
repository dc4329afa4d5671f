"""A scratch keyring and boundary for the CLI security tests (as tests/boundary/test_cli.py
sets them up), with the audit log and the ledger pinned outside ``.pets``."""

from __future__ import annotations

import os
from pathlib import Path

from pets.cli import cli, main

MASTER_HEX = "11" * 32
ROOT_HEX = "22" * 32  # a pseudonymize --secret-env root secret
URI = "local://eu/users"
KEKS = (URI, "local://eu/other", "local://eu/pseudonyms", "local://eu/columns")
AUDIT = "logs/audit.jsonl"
LEDGER = "ledgers/budget.sqlite"

ENV = {"PETS_MASTER_KEY": MASTER_HEX, "PETS_PRINCIPAL": "etl", "PETS_JURISDICTION": "EU",
       "PETS_ROOT_HEX": ROOT_HEX}
UNSET = ("PETS_KEYRING", "PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS", "PETS_BOUNDARY",
         "PETS_PKCS11_TOKEN", "PETS_PKCS11_LIBRARY", "PETS_PKCS11_PIN", "PETS_DASK_SCHEDULER",
         "PETS_KEYRING_PASSPHRASE", "PETS_DEBUG")


def child_env() -> dict[str, str]:
    """The environment for a ``python -m pets.cli`` subprocess in the scratch directory."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(ENV)
    return env


def setup_boundary(root: Path, mp) -> None:
    """Init the keyring and the boundary in ``root`` (the working directory from now on)."""
    mp.chdir(root)
    for k, v in ENV.items():
        mp.setenv(k, v)
    for var in UNSET:
        mp.delenv(var, raising=False)
    assert main(["keys", "init", "--name", "eu"]) == 0
    assert "boundary" in cli.commands, "needs `pets boundary init`"
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary",
                 "--log", AUDIT, "--ledger", LEDGER]) == 0
    for uri in KEKS:
        assert main(["keys", "create", uri, "--jurisdiction", "EU"]) == 0


def policy_text() -> str:
    from importlib.resources import files

    return (files("pets") / "examples" / "users-policy.yaml").read_text()


def enter(root: Path, mp) -> None:
    """Work in ``root`` with the scratch boundary's environment (after :func:`setup_boundary`)."""
    mp.chdir(root)
    for k, v in ENV.items():
        mp.setenv(k, v)
    for var in UNSET:
        mp.delenv(var, raising=False)

"""Fixtures for the envelope tests: in-memory keyrings (EU data centres, a US key), local
keyrings, and a real SoftHSM2 token shared with the key-service tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pets import Context
from pets.keys import KeyServices, LocalKeyring, MemoryKeyring, Secret
from tests.conftest import require_service

EU1 = "memory://eu-dc1/kek"
EU2 = "memory://eu-dc2/kek"
US1 = "memory://us-east/kek"


class Events(list):  # type: ignore[type-arg]
    """An audit hook that records events."""

    def __call__(self, event):
        self.append(event)

    def kinds(self):
        return [e.kind for e in self]


@pytest.fixture
def events():
    return Events()


@pytest.fixture
def ring(events):
    r = MemoryKeyring(audit=events)
    r.create(EU1, jurisdiction="EU")
    r.create(EU2, jurisdiction="EU")
    r.create(US1, jurisdiction="US")
    return r


@pytest.fixture
def eu():
    return Context("EU", principal="etl@eu-dc1")


@pytest.fixture
def us():
    return Context("US", principal="analyst@us")


@pytest.fixture
def local_ring(tmp_path):
    r = LocalKeyring.init(tmp_path / "ring", name="eu-local", master_key=Secret(os.urandom(32)))
    r.create("local://eu-local/kek", jurisdiction="EU")
    return r


@pytest.fixture
def services(ring, local_ring):
    return KeyServices([ring, local_ring])


@pytest.fixture(scope="session")
def hsm_eu(tmp_path_factory):
    """The EU token of a real SoftHSM2 (the same token directory as tests/keys when both run
    in one process: SoftHSM reads its configuration once per process)."""
    from tests.keys.conftest import (
        HSM_LIB,
        HSM_PIN,
        HSM_SO_PIN,
        HSM_TOKENS,
        softhsm_available,
    )

    require_service(softhsm_available(),
                    "softhsm2 (apt-get install softhsm2) and python-pkcs11 (pets[hsm])")
    from pets.keys import Pkcs11Keyring
    from pets.keys._pkcs11 import init_softhsm_tokens

    conf = os.environ.get("SOFTHSM2_CONF")
    if not conf or not Path(conf).is_file():
        init_softhsm_tokens(tmp_path_factory.mktemp("softhsm-envelope"), HSM_TOKENS,
                            pin=HSM_PIN, so_pin=HSM_SO_PIN)
    return Pkcs11Keyring(HSM_LIB, "EU", HSM_PIN, jurisdiction="EU")

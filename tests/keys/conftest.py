"""Fixtures for the key-service tests: local keyrings and a real SoftHSM2 token directory.

SoftHSM reads ``SOFTHSM2_CONF`` once, when the library is first loaded, and a process loads
the library once; so the token directory is created once per test session (tokens EU, SG and
PINTEST, the last used only by the wrong-PIN test so that its login really reaches the token).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from pets.keys import LocalKeyring, Secret
from tests.conftest import require_service

HSM_PIN = "4321-user"
HSM_SO_PIN = "8765-so"
HSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
HSM_TOKENS = ("EU", "SG", "PINTEST")


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
def master():
    return Secret(os.urandom(32))


@pytest.fixture
def ring(tmp_path, master, events):
    return LocalKeyring.init(tmp_path / "ring", name="eu", master_key=master, audit=events)


def softhsm_available() -> bool:
    return (bool(shutil.which("softhsm2-util")) and Path(HSM_LIB).exists()
            and importlib.util.find_spec("pkcs11") is not None)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory):
    """The SoftHSM2 configuration for this session (one token per jurisdiction)."""
    require_service(softhsm_available(),
                    "softhsm2 (apt-get install softhsm2) and python-pkcs11 (pets[hsm])")
    from pets.keys._pkcs11 import init_softhsm_tokens

    return init_softhsm_tokens(tmp_path_factory.mktemp("softhsm"), HSM_TOKENS,
                               pin=HSM_PIN, so_pin=HSM_SO_PIN)


@pytest.fixture(scope="session")
def hsm_eu(softhsm):
    from pets.keys import Pkcs11Keyring

    return Pkcs11Keyring(HSM_LIB, "EU", HSM_PIN, jurisdiction="EU")


@pytest.fixture(scope="session")
def hsm_sg(softhsm):
    from pets.keys import Pkcs11Keyring

    return Pkcs11Keyring(HSM_LIB, "SG", HSM_PIN, jurisdiction="SG")

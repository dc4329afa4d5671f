"""Fixtures for pseudonymization tests: a root secret wrapped by an EU KEK in a MemoryKeyring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pets import Context
from pets.keys import KeyServices, MemoryKeyring, Secret

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "pseudo"


def load_vectors(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


@pytest.fixture
def root() -> Secret:
    return Secret(bytes(range(32)))


@pytest.fixture
def events() -> list:
    return []


@pytest.fixture
def keyring(events) -> MemoryKeyring:
    ring = MemoryKeyring(audit=events.append)
    ring.create("memory://eu/pseudo", jurisdiction="EU")
    return ring


@pytest.fixture
def services(keyring) -> KeyServices:
    return KeyServices([keyring])


@pytest.fixture
def wrapped(keyring, root):
    return keyring.wrap("memory://eu/pseudo", root.expose(), context=Context("EU"))

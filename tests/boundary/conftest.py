"""Fixtures for the boundary tests: an EU key service, a signing key, an audit log."""

from __future__ import annotations

import pytest

from pets import Context


@pytest.fixture
def services():
    from pets.keys import KeyServices, MemoryKeyring

    ring = MemoryKeyring()
    for name in ("kek", "pseudonyms", "tokens", "columns"):
        ring.create(f"memory://eu/{name}", jurisdiction="EU")
    return KeyServices([ring])


@pytest.fixture
def signer():
    from pets.boundary import SigningKey

    return SigningKey.generate()


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "audit.jsonl"


@pytest.fixture
def log(log_path, signer):
    from pets.boundary import AuditLog

    return AuditLog(log_path, signer=signer, actor=Context("EU", principal="etl"))

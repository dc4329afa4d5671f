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


@pytest.fixture
def keys(services, signer):
    from pets.boundary import BoundaryKeys

    return BoundaryKeys(services, signer)


POLICY = """\
dataset: users
keys:
  pseudonyms: memory://eu/pseudonyms
  columns: memory://eu/columns
min_k: 1
destinations:
  dp_release: ["*"]
  pseudonymized: [US]
  kept: [US]
  encrypted: []
columns:
  user_id: {role: identifier, treatment: keyed-hash}
  email: {role: identifier, treatment: token}
  phone: {role: identifier, treatment: encrypt}
  country: {role: quasi-identifier, treatment: keep, public_values: [DE, FR, IT]}
  minutes: {role: metric, treatment: keep}
  ip: {role: drop}
"""


@pytest.fixture
def policy():
    from pets.boundary import Policy

    return Policy.from_yaml(POLICY, source="test-policy.yaml")


@pytest.fixture
def raw():
    import pandas as pd

    n = 12
    return pd.DataFrame({
        "user_id": pd.array([f"u{i:03d}" for i in range(n)], dtype="string"),
        "email": pd.array([f"p{i}@mail.eu" for i in range(n)], dtype="string"),
        "phone": pd.array([f"+4930{i:07d}" for i in range(n)], dtype="string"),
        "country": pd.array(["DE", "FR", "IT"] * (n // 3), dtype="string"),
        "minutes": [float(i) for i in range(n)],
        "ip": pd.array([f"10.0.0.{i}" for i in range(n)], dtype="string"),
    })


@pytest.fixture
def eu_ctx():
    return Context("EU", principal="etl")


@pytest.fixture
def us_ctx():
    return Context("US", principal="analyst")

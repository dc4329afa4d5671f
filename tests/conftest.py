"""Shared fixtures and the 'required service' rule.

A test that needs a real service (SoftHSM2, a Dask cluster) calls ``require_service``: outside
CI it skips with what to install; under CI=true a missing service is a failure.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.openbao"]  # real OpenBao servers (fixture `openbao`)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(available: bool, what: str) -> None:
    if available:
        return
    if IN_CI:
        pytest.fail(f"required service missing under CI=true: {what}")
    pytest.skip(f"not available: {what}")


@pytest.fixture
def eu():
    from pets import Context

    return Context("EU", principal="test@eu")


@pytest.fixture
def us():
    from pets import Context

    return Context("US", principal="analyst@us")

"""The boundary: policy, protect, the export gate and the signed, hash-chained audit log."""

from pets.boundary._audit import (
    AuditLog,
    BadEntry,
    TornTail,
    VerifyReport,
    flows,
    incidents,
    read_entries,
    verify_log,
)
from pets.boundary._signing import SigningKey, load_public_key

__all__ = [
    "AuditLog",
    "BadEntry",
    "SigningKey",
    "TornTail",
    "VerifyReport",
    "flows",
    "incidents",
    "load_public_key",
    "read_entries",
    "verify_log",
]

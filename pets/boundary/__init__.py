"""The boundary: policy, protect, the export gate and the signed, hash-chained audit log.

Everything that leaves the home jurisdiction goes through :func:`export`; there is no second
door. See ``docs/boundary.md``, ``docs/policy.md`` and ``docs/audit.md``.
"""

import typing

# The audit log, the boundary keys, signing and the policy loader need neither pandas nor
# pyarrow: ``pets encrypt`` / ``decrypt`` / ``keys`` open the boundary through them and stay
# light. Everything that handles tables loads on first use.
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
from pets.boundary._keys import Anchors, BoundaryKeys
from pets.boundary._policy import TREATMENTS, ColumnRule, Policy, load_policy
from pets.boundary._signing import SigningKey, load_public_key

if typing.TYPE_CHECKING:
    from pets.boundary._dataset import files_digest, read_index, verify_dataset
    from pets.boundary._export import ExportReceipt, export
    from pets.boundary._facade import Boundary
    from pets.boundary._manifest import (
        ColumnManifest,
        Manifest,
        ProtectedFrame,
        read_protected,
    )
    from pets.boundary._protect import protect, reidentify

_LAZY = {
    **dict.fromkeys(["files_digest", "read_index", "verify_dataset"], "pets.boundary._dataset"),
    **dict.fromkeys(["ExportReceipt", "export"], "pets.boundary._export"),
    "Boundary": "pets.boundary._facade",
    **dict.fromkeys(["ColumnManifest", "Manifest", "ProtectedFrame", "read_protected"],
                    "pets.boundary._manifest"),
    **dict.fromkeys(["protect", "reidentify"], "pets.boundary._protect"),
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pets.boundary' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Anchors",
    "AuditLog",
    "BadEntry",
    "Boundary",
    "BoundaryKeys",
    "ColumnManifest",
    "ColumnRule",
    "ExportReceipt",
    "Manifest",
    "Policy",
    "ProtectedFrame",
    "SigningKey",
    "TREATMENTS",
    "TornTail",
    "VerifyReport",
    "export",
    "files_digest",
    "flows",
    "incidents",
    "load_policy",
    "load_public_key",
    "protect",
    "read_entries",
    "read_index",
    "read_protected",
    "reidentify",
    "verify_dataset",
    "verify_log",
]

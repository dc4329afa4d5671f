"""pets — privacy-enhancing technologies for data that must stay in one jurisdiction.

The safe, public API is re-exported here; modules whose names start with ``_`` are private, and
raw primitives (key bytes, nonces, samplers) never surface at this level. Heavy subpackages
(OpenDP, pyarrow, Dask) load on first use, so ``import pets`` stays fast.

================  ==============================================================
``pets.keys``      jurisdiction-scoped key services (local keyring, PKCS#11 HSM)
``pets.envelope``  envelope format, file / column / Parquet encryption
``pets.pseudo``    keyed pseudonyms, tokens, FF1, generalizers, k-anonymity
``pets.dp``        differentially private releases on OpenDP, budget ledger
``pets.boundary``  policy, protect, export gate, signed audit log
``pets.engines``   the same protections on Dask
================  ==============================================================

Examples:
    >>> import pets
    >>> pets.Context("EU").jurisdiction
    'EU'
    >>> pets.Session.__module__
    'pets.dp._session'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pets._errors import (
    AuditHookError,
    BudgetExhausted,
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
    KeyStoreIntegrityError,
    MissingDependencyError,
    PetsError,
    PetsWarning,
    PolicyError,
)
from pets.jurisdiction import Context, Jurisdiction

if TYPE_CHECKING:
    from pets.boundary import (
        AuditLog,
        Boundary,
        Policy,
        ProtectedFrame,
        export,
        load_policy,
        protect,
        reidentify,
        verify_log,
    )
    from pets.dp import Budget, Ledger, Release, Session
    from pets.envelope import (
        decrypt,
        decrypt_columns,
        decrypt_file,
        encrypt,
        encrypt_columns,
        encrypt_file,
        read_encrypted_parquet,
        write_encrypted_parquet,
    )
    from pets.keys import (
        KeyServices,
        LocalKeyring,
        MemoryKeyring,
        Pkcs11Keyring,
        Secret,
        WrappedKey,
    )
    from pets.pseudo import (
        FF1Transform,
        KeyedHash,
        Tokenizer,
        anonymity_report,
        enforce_k,
        pseudonymize,
    )

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ["AuditLog", "Boundary", "Policy", "ProtectedFrame", "export", "load_policy", "protect",
         "reidentify", "verify_log"], "pets.boundary"),
    **dict.fromkeys(["Budget", "Ledger", "Release", "Session"], "pets.dp"),
    **dict.fromkeys(
        ["decrypt", "decrypt_columns", "decrypt_file", "encrypt", "encrypt_columns",
         "encrypt_file", "read_encrypted_parquet", "write_encrypted_parquet"], "pets.envelope"),
    **dict.fromkeys(
        ["KeyServices", "LocalKeyring", "MemoryKeyring", "Pkcs11Keyring", "Secret", "WrappedKey"],
        "pets.keys"),
    **dict.fromkeys(
        ["FF1Transform", "KeyedHash", "Tokenizer", "anonymity_report", "enforce_k",
         "pseudonymize"], "pets.pseudo"),
}

__all__ = [
    "AuditHookError",
    "AuditLog",
    "Boundary",
    "Budget",
    "BudgetExhausted",
    "Context",
    "FF1Transform",
    "InputError",
    "IntegrityError",
    "Jurisdiction",
    "JurisdictionError",
    "KeyDestroyedError",
    "KeyNotFoundError",
    "KeyServiceError",
    "KeyServices",
    "KeyStoreIntegrityError",
    "KeyedHash",
    "Ledger",
    "LocalKeyring",
    "MemoryKeyring",
    "MissingDependencyError",
    "PetsError",
    "PetsWarning",
    "Pkcs11Keyring",
    "Policy",
    "PolicyError",
    "ProtectedFrame",
    "Release",
    "Secret",
    "Session",
    "Tokenizer",
    "WrappedKey",
    "anonymity_report",
    "decrypt",
    "decrypt_columns",
    "decrypt_file",
    "encrypt",
    "encrypt_columns",
    "encrypt_file",
    "enforce_k",
    "export",
    "load_policy",
    "protect",
    "pseudonymize",
    "read_encrypted_parquet",
    "reidentify",
    "verify_log",
    "write_encrypted_parquet",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    subpackages = {n for n, v in globals().items()
                   if getattr(v, "__name__", "").startswith("pets.") and type(v).__name__ == "module"}
    return sorted(set(__all__) | subpackages)

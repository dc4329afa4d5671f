"""The pets exception and warning hierarchy.

Every error pets raises on purpose is a :class:`PetsError`. Each subclass also inherits the
built-in exception a Python user would reach for, so ``except ValueError`` keeps working::

    PetsError (Exception)                        exit code 1
    ├── InputError (ValueError)                  exit code 1   bad file, column, value or argument
    ├── PolicyError (ValueError)                 exit code 3   a policy refuses, or is malformed
    ├── JurisdictionError (PermissionError)      exit code 4   wrong jurisdiction for a key or export
    ├── IntegrityError (ValueError)              exit code 5   authentication / signature / chain failed
    │   └── KeyStoreIntegrityError               a stored key file is corrupt or replaced (not the data)
    ├── KeyServiceError (RuntimeError)           exit code 7   a key service failed or refused
    │   ├── KeyNotFoundError (LookupError)
    │   ├── KeyDestroyedError                    the key version was destroyed or retired
    │   └── AuditHookError                       a key use the audit log could not record
    ├── BudgetExhausted (RuntimeError)           exit code 6   a DP query would overspend the budget
    └── MissingDependencyError (ImportError)     exit code 1   an optional extra is not installed

    PetsWarning (UserWarning)

Messages name the file, column or key at fault and never contain secret material.
:class:`IntegrityError` is deliberately opaque: it never says *which* check failed. Its subclass
:class:`KeyStoreIntegrityError` is the exception: it names the key file at fault, because the
fault is the operator's key store, not the data being decrypted.

Examples:
    >>> from pets import PolicyError, PetsError
    >>> issubclass(PolicyError, ValueError) and issubclass(PolicyError, PetsError)
    True
    >>> PolicyError("column 'email' has no treatment").exit_code
    3
"""

from __future__ import annotations

import os

__all__ = [
    "AuditHookError",
    "BudgetExhausted",
    "InputError",
    "IntegrityError",
    "JurisdictionError",
    "KeyDestroyedError",
    "KeyNotFoundError",
    "KeyServiceError",
    "KeyStoreIntegrityError",
    "MissingDependencyError",
    "PetsError",
    "PetsWarning",
    "PolicyError",
]


class PetsError(Exception):
    """Root of every error pets raises on purpose.

    Besides the message, an error may carry what it is about, when the code raising it knows:
    ``path`` (the file), ``column`` and ``key`` (a key URI). They are ``None`` otherwise. The
    CLI reports them with ``--json`` so a pipeline can tell which input failed without
    parsing the message; they never hold secret material.

    Examples:
        >>> err = InputError("data/users.parquet: no column 'email'", path="data/users.parquet",
        ...                  column="email")
        >>> err.path, err.column, err.key
        ('data/users.parquet', 'email', None)
        >>> err.details()
        {'path': 'data/users.parquet', 'column': 'email'}
        >>> str(err)
        "data/users.parquet: no column 'email'"
    """

    exit_code: int = 1
    #: The file at fault, when known.
    path: str | None = None
    #: The column at fault, when known.
    column: str | None = None
    #: The key (its URI) at fault, when known.
    key: str | None = None

    def __init__(self, *args: object, path: str | os.PathLike[str] | None = None,
                 column: str | None = None, key: str | None = None) -> None:
        super().__init__(*args)
        if path is not None:
            self.path = os.fspath(path)
        if column is not None:
            self.column = str(column)
        if key is not None:
            self.key = str(key)

    def details(self) -> dict[str, str]:
        """``path`` / ``column`` / ``key``, those that are known."""
        return {name: value for name in ("path", "column", "key")
                if (value := getattr(self, name)) is not None}


class InputError(PetsError, ValueError):
    """Bad input: a missing file or column, a malformed value, an invalid argument."""

    exit_code = 1


class PolicyError(PetsError, ValueError):
    """A policy is malformed, or it refuses the requested operation."""

    exit_code = 3


class JurisdictionError(PetsError, PermissionError):
    """The operation is not allowed from (or to) this jurisdiction."""

    exit_code = 4


class IntegrityError(PetsError, ValueError):
    """Authentication, signature or hash-chain verification failed.

    Deliberately opaque: the message never says which check failed, so it cannot be used as an
    oracle.
    """

    exit_code = 5


class KeyStoreIntegrityError(IntegrityError):
    """A key store's own file failed to authenticate: corrupted, truncated, swapped with another
    key's file, replaced by another keyring's, or rolled back.

    The data being decrypted is not at fault, and neither is the master key (a wrong master key
    is a :class:`KeyServiceError` when the key store is opened). Unlike other integrity errors
    the message names the file and the key, so the operator knows what to restore from backup;
    it never contains key material. Exit code 5.

    Examples:
        >>> err = KeyStoreIntegrityError("keyring file /k/keys/x.json for local://eu/x failed "
        ...                              "to authenticate under the master key")
        >>> isinstance(err, IntegrityError), err.exit_code
        (True, 5)
    """


class KeyServiceError(PetsError, RuntimeError):
    """A key service failed, or refused an operation for a reason other than jurisdiction."""

    exit_code = 7


class KeyNotFoundError(KeyServiceError, LookupError):
    """No key (or key version) with that URI exists in the key service."""


class KeyDestroyedError(KeyServiceError):
    """The key version was destroyed (crypto-shredded) or retired below the minimum version."""


class AuditHookError(KeyServiceError):
    """A key use refused because the registry's audit hook could not record it.

    Raised by :class:`pets.keys.KeyServices` when its ``audit`` hook raises (a full disk under the audit
    log, a corrupt chain tail): the unwrapped key is dropped, the wrapped key is not returned,
    and callers trying several wrapped keys stop at once instead of using another key
    un-recorded. The hook's own exception is the ``__cause__``; the message names the event
    and the key, never key material. Exit code 7, like any key-service refusal.

    Examples:
        >>> AuditHookError("key use refused: ...").exit_code
        7
    """


class BudgetExhausted(PetsError, RuntimeError):
    """A differentially private query would exceed the privacy budget. Nothing was spent."""

    exit_code = 6


class MissingDependencyError(PetsError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    exit_code = 1


class PetsWarning(UserWarning):
    """Root of every warning pets emits."""


def require(module: str, extra: str) -> object:
    """Import an optional module or fail with the ``pip install`` line that fixes it.

    Examples:
        >>> require("json", "core") is not None
        True
        >>> require("no_such_module_xyz", "dask")
        Traceback (most recent call last):
        ...
        pets._errors.MissingDependencyError: no_such_module_xyz is needed: pip install 'pets[dask]'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is needed: pip install 'pets[{extra}]'"
        ) from exc

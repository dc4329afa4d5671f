"""``Boundary``: one object holding the policy, keys, audit log and context of a pipeline.

A thin convenience over :func:`~pets.boundary.protect`, :func:`~pets.boundary.export` and
:func:`~pets.boundary.reidentify` for notebooks, so the same four arguments are not repeated
on every call. It adds no behaviour of its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from pets.boundary._audit import AuditLog, VerifyReport, verify_log
from pets.boundary._export import ExportReceipt, export
from pets.boundary._keys import BoundaryKeys
from pets.boundary._manifest import ProtectedFrame
from pets.boundary._policy import Policy
from pets.boundary._protect import protect, reidentify
from pets.jurisdiction import Context

if TYPE_CHECKING:
    from pets.engines import WorkerKeys

__all__ = ["Boundary"]


class Boundary:
    """The boundary of one dataset: ``protect`` it, ``export`` what may leave, ``reidentify``.

    Args:
        policy: The dataset's policy.
        keys: The home jurisdiction's :class:`BoundaryKeys`.
        audit: The audit log every call records to.
        context: Who acts, and where (the policy's home for protect and export).

    Examples:
        >>> import pathlib, tempfile
        >>> import pandas as pd
        >>> from pets import Context
        >>> from pets.keys import KeyServices, MemoryKeyring
        >>> from pets.boundary import AuditLog, BoundaryKeys, Policy, SigningKey
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/p", jurisdiction="EU")
        >>> keys = BoundaryKeys(KeyServices([ring]), SigningKey.generate())
        >>> policy = Policy.from_dict({"dataset": "crm", "keys": {"pseudonyms": "memory://eu/p"},
        ...     "destinations": {"pseudonymized": ["US"]},
        ...     "columns": {"email": {"role": "identifier", "treatment": "keyed-hash"}}})
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> eu = Context("EU", principal="etl")
        >>> b = Boundary(policy, keys, AuditLog(d / "audit.jsonl", signer=keys.signer, actor=eu),
        ...              eu)
        >>> pf = b.protect(pd.DataFrame({"email": ["ann@mail.eu", "bob@mail.eu"]}))
        >>> b.export(pf, "US", d / "crm.parquet").rows
        2
        >>> b.verify().ok
        True
    """

    def __init__(self, policy: Policy, keys: BoundaryKeys, audit: AuditLog,
                 context: Context) -> None:
        self.policy = policy
        self.keys = keys
        self.audit = audit
        self.context = context

    def __repr__(self) -> str:
        return (f"Boundary(dataset={self.policy.dataset!r}, home={self.policy.home!r}, "
                f"context={self.context.access_token!r}, audit={str(self.audit.path)!r})")

    def protect(self, frame: pd.DataFrame, *, workers: WorkerKeys | None = None,
                progress: bool | None = None) -> ProtectedFrame:
        """:func:`~pets.boundary.protect` under this boundary's policy and keys.

        A Dask DataFrame gives the lazy :class:`~pets.engines.dask.DaskProtected`; ``workers``
        (a :class:`~pets.engines.WorkerKeys`) is how keys reach the partitions, required while
        a ``distributed`` client is active.
        """
        out: ProtectedFrame = protect(frame, self.policy, self.keys, self.context,
                                      audit=self.audit, workers=workers, progress=progress)
        return out

    def export(self, obj: Any, to: str, path: str | os.PathLike[str], *,
               columns: Sequence[str] | Literal["allowed"] | None = None) -> ExportReceipt:
        """:func:`~pets.boundary.export` through this boundary's gate."""
        return export(obj, to, path, policy=self.policy, keys=self.keys,
                      context=self.context, audit=self.audit, columns=columns)

    def reidentify(self, protected: ProtectedFrame, column: str,
                   values: pd.Series | Sequence[Any], *, reason: str = "") -> pd.Series:
        """:func:`~pets.boundary.reidentify` with this boundary's keys (home only)."""
        return reidentify(protected, column, values, self.keys, self.context,
                          audit=self.audit, reason=reason)

    def verify(self) -> VerifyReport:
        """:func:`~pets.boundary.verify_log` of this boundary's audit log with its own key."""
        return verify_log(self.audit.path, self.keys.pinned_public_keys)

"""Audit events raised by lower layers and delivered to an injectable hook.

Lower layers (key services, envelopes, pseudonymizers, DP) never import the audit log; they
call an :data:`AuditHook` that the boundary layer wires to it. Events never carry secrets.

Examples:
    >>> seen = []
    >>> emit(seen.append, "key.unwrap_refused", key="local://eu/kek", jurisdiction="US")
    >>> seen[0].kind, seen[0].fields["jurisdiction"]
    ('key.unwrap_refused', 'US')
    >>> emit(None, "ignored")  # no hook: nothing happens
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AuditEvent", "AuditHook", "emit"]


@dataclass(frozen=True)
class AuditEvent:
    """One auditable fact: ``kind`` such as ``"key.rotate"``, and JSON-able ``fields``."""

    kind: str
    fields: Mapping[str, Any]
    at: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")
    )


AuditHook = Callable[[AuditEvent], None]


def emit(hook: AuditHook | None, kind: str, **fields: Any) -> None:
    """Send an event to ``hook`` if one is set."""
    if hook is not None:
        hook(AuditEvent(kind, dict(fields)))

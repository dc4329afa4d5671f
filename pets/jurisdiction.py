"""Jurisdictions and the execution context.

A :class:`Jurisdiction` is data, not code: a short code (``"EU"``, ``"US"``, ``"SG"``) and a
name. The :class:`Context` says where the current process runs and who it runs for; it is
passed explicitly to every operation that unwraps keys, re-identifies or exports. Key services
compare the context's jurisdiction with the key's own and refuse a mismatch themselves.

Examples:
    >>> from pets import Context
    >>> ctx = Context("eu", principal="etl@eu-dc1")
    >>> ctx.jurisdiction
    'EU'
    >>> ctx
    Context(jurisdiction='EU', principal='etl@eu-dc1')
    >>> Context.from_env({"PETS_JURISDICTION": "US", "PETS_PRINCIPAL": "analyst"}).jurisdiction
    'US'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pets._errors import InputError

__all__ = ["KNOWN_JURISDICTIONS", "Context", "Jurisdiction"]

_CODE = re.compile(r"^[A-Z][A-Z0-9-]{1,15}$")


@dataclass(frozen=True)
class Jurisdiction:
    """A legal area that data or keys belong to, named by a short upper-case code."""

    code: str
    name: str = ""

    def __post_init__(self) -> None:
        code = self.code.strip().upper()
        if not _CODE.match(code):
            raise InputError(f"invalid jurisdiction code {self.code!r}: use 2-16 letters/digits")
        object.__setattr__(self, "code", code)

    def __str__(self) -> str:
        return self.code


KNOWN_JURISDICTIONS: Mapping[str, Jurisdiction] = {
    j.code: j
    for j in (
        Jurisdiction("EU", "European Union / EEA"),
        Jurisdiction("US", "United States"),
        Jurisdiction("SG", "Singapore"),
        Jurisdiction("UK", "United Kingdom"),
        Jurisdiction("CH", "Switzerland"),
    )
}


def _code(value: str | Jurisdiction) -> str:
    return value.code if isinstance(value, Jurisdiction) else Jurisdiction(value).code


@dataclass(frozen=True)
class Context:
    """Where the caller runs (``jurisdiction``) and on whose behalf (``principal``).

    Args:
        jurisdiction: A jurisdiction code such as ``"EU"``; normalised to upper case.
        principal: Who acts: a person, service account or job name (recorded in audit logs).
    """

    jurisdiction: str
    principal: str = field(default="anonymous")

    def __post_init__(self) -> None:
        object.__setattr__(self, "jurisdiction", _code(self.jurisdiction))
        if not self.principal or any(c in self.principal for c in "\n\r\x00"):
            raise InputError("principal must be a non-empty single-line string")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Context:
        """The CLI default: ``PETS_JURISDICTION`` (default ``EU``) and ``PETS_PRINCIPAL``."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("PETS_JURISDICTION", "EU"),
            principal=env.get("PETS_PRINCIPAL") or env.get("USER") or "anonymous",
        )

    @property
    def access_token(self) -> str:
        """A stable token naming principal *and* jurisdiction (used to partition key caches)."""
        return f"{self.principal}@{self.jurisdiction}"

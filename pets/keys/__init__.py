"""Jurisdiction-scoped key services: KEKs named by URI, wrapping and unwrapping data keys."""

from pets.keys._memory import MemoryKeyring
from pets.keys._secret import Secret
from pets.keys._service import (
    KeyInfo,
    KeyService,
    KeyServices,
    KeyVersion,
    WrappedKey,
    canonical_context,
    check_unwrap_allowed,
    parse_key_uri,
)

__all__ = [
    "KeyInfo",
    "KeyService",
    "KeyServices",
    "KeyVersion",
    "MemoryKeyring",
    "Secret",
    "WrappedKey",
    "canonical_context",
    "check_unwrap_allowed",
    "parse_key_uri",
]

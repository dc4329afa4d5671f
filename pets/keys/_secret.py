"""A holder for secret bytes that resists leaking."""

from __future__ import annotations

import hmac
import os
from typing import NoReturn

__all__ = ["Secret"]

_HASH_KEY = os.urandom(32)  # per process: hashes of equal secrets agree, and reveal nothing


class Secret:
    """Secret key material: never in ``repr``/``str``, never pickled, exposed only explicitly.

    Examples:
        >>> s = Secret(b"k" * 32)
        >>> s
        Secret(<32 bytes>)
        >>> len(s.expose())
        32
        >>> import pickle
        >>> pickle.dumps(s)
        Traceback (most recent call last):
        ...
        TypeError: Secret cannot be pickled: pass a key reference instead
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError("Secret takes bytes")
        self._value = bytes(value)

    @classmethod
    def generate(cls, size: int = 32) -> Secret:
        """Fresh random secret of ``size`` bytes from the OS CSPRNG."""
        return cls(os.urandom(size))

    def expose(self) -> bytes:
        """Return the raw bytes. Every call site is a place secrets can leak: keep them few."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"Secret(<{len(self._value)} bytes>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        """Consistent with ``==`` (equal secrets hash alike), keyed per process so the hash
        reveals nothing about the bytes."""
        return int.from_bytes(hmac.digest(_HASH_KEY, self._value, "sha256")[:8], "big")

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled: pass a key reference instead")

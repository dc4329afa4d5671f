"""Name -> keyed transform class (used to rebuild transforms from worker references)."""

from __future__ import annotations

from pets._errors import InputError
from pets.pseudo._base import KeyedTransform

__all__ = ["keyed_class"]


def keyed_class(kind: str) -> type[KeyedTransform]:
    """The keyed transform class registered under ``kind`` (its ``name``)."""
    from pets.pseudo._ff1 import FF1Transform, PhoneFF1
    from pets.pseudo._generalize import DateShift
    from pets.pseudo._keyed import KeyedHash
    from pets.pseudo._token import Tokenizer

    classes: dict[str, type[KeyedTransform]] = {
        c.name: c for c in (KeyedHash, Tokenizer, FF1Transform, PhoneFF1, DateShift)
    }
    try:
        return classes[kind]
    except KeyError:
        raise InputError(f"unknown keyed transform {kind!r}; one of {sorted(classes)}") from None

"""Envelope encryption under jurisdiction-scoped keys: bytes, files, DataFrame columns, Parquet.

Every message gets a fresh data key (DEK) that is wrapped by one or more key-encryption keys
(KEKs) held by :mod:`pets.keys` services; a service refuses to unwrap outside its key's
jurisdiction. The byte layout is documented in :class:`EnvelopeHeader` and
``docs/envelope-format.md``.

Examples:
    >>> from pets import Context
    >>> from pets.keys import MemoryKeyring
    >>> from pets.envelope import decrypt, encrypt
    >>> ring = MemoryKeyring()
    >>> _ = ring.create("memory://eu-dc1/kek", jurisdiction="EU")
    >>> _ = ring.create("memory://eu-dc2/kek", jurisdiction="EU")
    >>> eu = Context("EU", principal="etl")
    >>> blob = encrypt(b"rows", keys=ring, key_uris=["memory://eu-dc1/kek", "memory://eu-dc2/kek"],
    ...                context=eu)
    >>> _ = ring.destroy("memory://eu-dc1/kek")  # data centre 1 lost: dc2 still decrypts
    >>> decrypt(blob, keys=ring, context=eu)
    b'rows'
"""

from typing import TYPE_CHECKING, Any

from pets.envelope._envelope import (
    EnvelopeInfo,
    decrypt,
    decrypt_file,
    encrypt,
    encrypt_file,
    read_header,
    rewrap,
    rewrap_file,
)
from pets.envelope._format import (
    DEFAULT_SEGMENT_SIZE,
    EnvelopeFormatError,
    EnvelopeHeader,
)

if TYPE_CHECKING:
    from pets.envelope._columns import (
        ColumnKey,
        ColumnKeys,
        decrypt_columns,
        encrypt_columns,
    )
    from pets.envelope._parquet import (
        ParquetCrypto,
        PetsKmsClient,
        read_encrypted_parquet,
        rotate_parquet_keys,
        write_encrypted_parquet,
    )

# Column and Parquet encryption need pandas / pyarrow: they load on first use, so streaming
# file encryption stays light (a small resident set for multi-GB files).
_LAZY = {
    "ColumnKey": "pets.envelope._columns",
    "ColumnKeys": "pets.envelope._columns",
    "decrypt_columns": "pets.envelope._columns",
    "encrypt_columns": "pets.envelope._columns",
    "ParquetCrypto": "pets.envelope._parquet",
    "PetsKmsClient": "pets.envelope._parquet",
    "read_encrypted_parquet": "pets.envelope._parquet",
    "rotate_parquet_keys": "pets.envelope._parquet",
    "write_encrypted_parquet": "pets.envelope._parquet",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pets.envelope' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ColumnKey",
    "ColumnKeys",
    "DEFAULT_SEGMENT_SIZE",
    "EnvelopeFormatError",
    "EnvelopeHeader",
    "EnvelopeInfo",
    "ParquetCrypto",
    "PetsKmsClient",
    "decrypt",
    "decrypt_columns",
    "decrypt_file",
    "encrypt",
    "encrypt_columns",
    "encrypt_file",
    "read_encrypted_parquet",
    "read_header",
    "rewrap",
    "rewrap_file",
    "rotate_parquet_keys",
    "write_encrypted_parquet",
]

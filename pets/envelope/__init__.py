"""Envelope encryption under jurisdiction-scoped keys: bytes, files, DataFrame columns, Parquet.

Every message gets a fresh data key (DEK) that is wrapped by one or more key-encryption keys
(KEKs) held by :mod:`pets.keys` services; a service refuses to unwrap outside its key's
jurisdiction. The byte layout is documented in :class:`EnvelopeHeader` and
``docs/envelope-format.md``.

Example:
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

from pets.envelope._columns import (
    ColumnKey,
    ColumnKeys,
    decrypt_columns,
    encrypt_columns,
)
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
from pets.envelope._parquet import (
    ParquetCrypto,
    PetsKmsClient,
    read_encrypted_parquet,
    rotate_parquet_keys,
    write_encrypted_parquet,
)

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "ColumnKey",
    "ColumnKeys",
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

"""Parquet modular encryption through pyarrow's ``CryptoFactory`` over pets key services.

Columns are encrypted with per-column data keys and the footer with its own key, all wrapped
by pets KEKs through :class:`PetsKmsClient`, a ``pyarrow.parquet.encryption.KmsClient`` adapter
over :class:`~pets.keys.KeyServices`. Any Parquet reader with a KMS client for the same keys
reads these files.

Master key identifiers are key URIs written with ``/`` instead of ``://``
(``local://eu/customers`` → ``local/eu/customers``), because pyarrow's column-key syntax
reserves ``:``. Wrapped keys are stored as the JSON of a :class:`~pets.keys.WrappedKey` (URI,
version, jurisdiction, blob), so rotation and retirement work per version.

**Key caches.** pyarrow caches KMS clients and unwrapped keys per ``key_access_token``. pets
sets the token to :attr:`pets.Context.access_token` (principal *and* jurisdiction), so a
context never reads through another context's warm cache: the key service is asked again and
refuses a foreign jurisdiction.

A :class:`ParquetCrypto` subscribes to its :class:`~pets.keys.KeyServices`
(:meth:`~pets.keys.KeyServices.subscribe`): when a KEK version is destroyed, retired or rotated
in this process — through those services, another registry holding the same backend, or the
backend object itself (every ``LocalKeyring`` on the same directory, every ``Pkcs11Keyring`` on
the same token) — its whole key cache is dropped before the call returns, so the next read asks
the key service and gets the same refusal as a cold read (:class:`~pets.KeyDestroyedError`),
and the next write wraps under the new primary version instead of a cached key wrapped under
the old one. pyarrow can only drop the cache per access token, not per key, so every cached
key is unwrapped again (one key-service call per master key).

**Limit:** a change made by *another process* (``pets keys destroy`` in a shell while a notebook
holds a warm cache) is not seen: it takes effect here when the cache entry expires,
``cache_lifetime_seconds`` after it was filled (default
:data:`DEFAULT_CACHE_LIFETIME_SECONDS`, 60 s: lowered from 600 s, because it bounds that window
and costs only one key-service call per master key per minute). Revoking a *principal* is not a
key change either. In both cases call :meth:`ParquetCrypto.forget` in the processes that matter,
or use the one-shot :func:`read_encrypted_parquet` (a fresh cache per call).
"""

from __future__ import annotations

import datetime
import functools
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from pets._errors import InputError, IntegrityError, JurisdictionError, PetsError
from pets._events import AuditHook, emit
from pets._io import atomic_path
from pets.envelope._envelope import Keys, as_services
from pets.jurisdiction import Context
from pets.keys import AuditHookError, KeyServices, WrappedKey, parse_key_uri

__all__ = [
    "DEFAULT_CACHE_LIFETIME_SECONDS",
    "PARQUET_ENC_CONTEXT",
    "PARQUET_PURPOSE",
    "ParquetCrypto",
    "PetsKmsClient",
    "key_material_path",
    "master_key_id",
    "read_encrypted_parquet",
    "rotate_parquet_keys",
    "uri_from_master_key_id",
    "write_encrypted_parquet",
]

PARQUET_ENC_CONTEXT: Mapping[str, str] = {"pets.format": "parquet-modular-encryption"}
#: ``purpose`` of the ``key.wrap`` / ``key.unwrap`` events of pyarrow's KMS calls.
PARQUET_PURPOSE = "parquet"
#: Default lifetime of pyarrow's key cache: how long a key destroyed by *another process* can
#: still be served from a warm cache (changes made in this process drop the cache at once).
DEFAULT_CACHE_LIFETIME_SECONDS = 60.0
_KMS_INSTANCE = "pets"
_CONF_JUR = "pets.jurisdiction"
_CONF_PRINCIPAL = "pets.principal"

PathLike = str | os.PathLike[str]


def master_key_id(uri: str) -> str:
    """The pyarrow master key identifier for a key URI.

    Examples:
        >>> master_key_id("local://eu/customers")
        'local/eu/customers'
        >>> uri_from_master_key_id("local/eu/customers")
        'local://eu/customers'
    """
    scheme, authority, name = parse_key_uri(uri)
    return f"{scheme}/{authority}/{name}"


def uri_from_master_key_id(key_id: str) -> str:
    """Inverse of :func:`master_key_id`."""
    scheme, sep, rest = key_id.partition("/")
    uri = f"{scheme}://{rest}"
    if not sep:
        raise InputError(f"invalid master key identifier {key_id!r}")
    parse_key_uri(uri)
    return uri


def key_material_path(path: PathLike) -> Path:
    """Where pyarrow keeps a file's external key material (``internal_key_material=False``)."""
    p = Path(path)
    return p.with_name(f"_KEY_MATERIAL_FOR_{p.name}.json")


class PetsKmsClient(pe.KmsClient):  # type: ignore[misc]
    """A pyarrow ``KmsClient`` that wraps and unwraps through pets key services for one context.

    ``unwrap_key`` is refused by the key service (``JurisdictionError``) for a context outside
    the key's jurisdiction; the exception reaches the pyarrow reader with its type intact.
    """

    def __init__(self, keys: KeyServices, context: Context, *,
                 audit: AuditHook | None = None) -> None:
        super().__init__()
        self._keys = keys
        self._context = context
        self._audit = audit

    def __repr__(self) -> str:
        return f"PetsKmsClient(context={self._context!r})"

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        uri = uri_from_master_key_id(master_key_identifier)
        wrapped = self._keys.wrap(uri, bytes(key_bytes), context=self._context,
                                  enc_context=PARQUET_ENC_CONTEXT, purpose=PARQUET_PURPOSE)
        return wrapped.to_json()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        uri = uri_from_master_key_id(master_key_identifier)
        wrapped = WrappedKey.from_json(wrapped_key)
        if wrapped.key_uri != uri:
            raise IntegrityError("Parquet key material failed to authenticate")
        key = self._keys.unwrap(wrapped, context=self._context, enc_context=PARQUET_ENC_CONTEXT,
                                purpose=PARQUET_PURPOSE)
        try:
            emit(self._audit, "parquet.unwrap", key=uri, version=wrapped.version,
                 principal=self._context.principal, jurisdiction=self._context.jurisdiction)
        except Exception as exc:  # fail closed, and say so (pyarrow would report an OSError
            # with an errno as the Parquet file's own read error)
            del key  # not kept in this frame's locals, which the traceback carries
            raise AuditHookError(f"key use refused: the audit hook could not record "
                                 f"parquet.unwrap of {uri} v{wrapped.version} "
                                 f"({type(exc).__name__})") from exc
        return key


def _client_for(keys: KeyServices, audit: AuditHook | None,
                config: pe.KmsConnectionConfig) -> PetsKmsClient:
    """pyarrow's KMS client factory: a :class:`PetsKmsClient` for the config's pets context."""
    conf = dict(config.custom_kms_conf or {})
    try:
        context = Context(conf[_CONF_JUR], principal=conf[_CONF_PRINCIPAL])
    except KeyError:
        raise InputError("KMS connection config lacks the pets context") from None
    if config.key_access_token != context.access_token:
        raise InputError("KMS access token does not match the pets context")
    return PetsKmsClient(keys, context, audit=audit)


class ParquetCrypto:
    """Encrypted Parquet I/O with one pyarrow ``CryptoFactory`` over ``keys``.

    Keep one instance per process to benefit from pyarrow's key cache; the cache is
    partitioned by :attr:`pets.Context.access_token`, so it never serves one context's keys to
    another, and dropped whenever a key held by ``keys`` is destroyed, retired or rotated in
    this process (see the module docstring for changes made by other processes).

    Args:
        keys: The key services (or one service) holding the footer and column KEKs.
        audit: Hook receiving ``parquet.write`` / ``parquet.unwrap`` / ``parquet.rotate`` /
            ``parquet.migrate``. ``key.wrap`` / ``key.unwrap`` events come from the
            :class:`~pets.keys.KeyServices` audit hook, once per KMS call (with double
            wrapping, once per master key per cache lifetime; never per row or page). A
            hook that cannot record ``parquet.unwrap`` fails the read with
            :class:`~pets.keys.AuditHookError`.
        cache_lifetime_seconds: Lifetime of pyarrow's cached keys.

    Examples:
        >>> import pandas as pd, tempfile, pathlib
        >>> from pets import Context
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring()
        >>> for k in ("memory://eu/footer", "memory://eu/pii"):
        ...     _ = ring.create(k, jurisdiction="EU")
        >>> pc = ParquetCrypto(ring)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "users.parquet"
        >>> df = pd.DataFrame({"user_id": [1, 2], "email": ["a@x.eu", "b@x.eu"]})
        >>> _ = pc.write(df, path, context=Context("EU"), footer_key="memory://eu/footer",
        ...              column_keys={"memory://eu/pii": ["email"]})
        >>> pc.read(path, context=Context("EU"))["email"].tolist()
        ['a@x.eu', 'b@x.eu']
        >>> pc.read(path, context=Context("US"))
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: key memory://eu/footer belongs to EU; unwrap refused for anonymous@US
    """

    def __init__(self, keys: Keys, *, audit: AuditHook | None = None,
                 cache_lifetime_seconds: float = DEFAULT_CACHE_LIFETIME_SECONDS) -> None:
        self._keys = as_services(keys)
        self._audit = audit
        self._lifetime = float(cache_lifetime_seconds)
        if not self._lifetime > 0:
            raise InputError(f"cache_lifetime_seconds must be positive, not {self._lifetime}")
        # The factory (C++) holds its callback where Python's collector cannot see: a bound
        # method of self would make an uncollectable cycle, so it gets a partial without self.
        self._factory = pe.CryptoFactory(functools.partial(_client_for, self._keys, self._audit))
        # held weakly by the services: this object may be dropped while they live on
        self._keys.subscribe(self._on_key_change)

    def _on_key_change(self, uri: str, version: int, what: str) -> None:
        """A key held by our services changed in this process: drop every cached key.

        pyarrow's cache cannot drop one master key's entries, so all go; a destroyed or retired
        version is then refused on the next read, and a rotation is used on the next write.
        """
        self._factory.remove_cache_entries_for_all_tokens()

    def __repr__(self) -> str:
        return f"ParquetCrypto({self._keys!r})"

    @staticmethod
    def kms_config(context: Context) -> pe.KmsConnectionConfig:
        """The connection config for ``context``: its access token names principal + place."""
        return pe.KmsConnectionConfig(
            kms_instance_id=_KMS_INSTANCE, key_access_token=context.access_token,
            custom_kms_conf={_CONF_JUR: context.jurisdiction, _CONF_PRINCIPAL: context.principal})

    def forget(self, context: Context | None = None) -> None:
        """Drop cached keys for ``context`` (or for every context).

        Destroying, retiring or rotating a key in this process does this by itself. Call it
        after revoking a principal, or after another process changed a key: the cache would
        otherwise keep serving keys it already holds for up to the cache lifetime.
        """
        if context is None:
            self._factory.remove_cache_entries_for_all_tokens()
        else:
            self._factory.remove_cache_entries_for_token(context.access_token)

    def write(self, data: pd.DataFrame | pa.Table, path: PathLike, *, context: Context,
              footer_key: str, column_keys: Mapping[str, Sequence[str]],
              plaintext_footer: bool = False, double_wrapping: bool = True,
              internal_key_material: bool = True, **write_options: Any) -> Path:
        """Write ``data`` to ``path`` encrypted (atomically: temp file, then rename).

        Args:
            data: A DataFrame (written without its index) or an Arrow table.
            path: Destination file.
            context: Who writes, and where.
            footer_key: KEK URI for the footer (file metadata, schema, statistics).
            column_keys: ``{kek_uri: [column, ...]}``; each listed column gets its own data
                key wrapped under that KEK. Unlisted columns are stored in clear.
            plaintext_footer: Keep the footer readable (legacy readers see the schema).
            double_wrapping: Wrap data keys with local KEKs that the KMS wraps (fewer KMS
                calls); pyarrow's default.
            internal_key_material: Store wrapped keys in the file (True) or in a side file
                ``_KEY_MATERIAL_FOR_<name>.json`` (False), which allows
                :meth:`rotate` without rewriting the data.
            **write_options: Passed to ``pyarrow.parquet.write_table``.
        """
        table = (pa.Table.from_pandas(data, preserve_index=False)
                 if isinstance(data, pd.DataFrame) else data)
        names = set(table.column_names)
        listed = [c for cols in column_keys.values() for c in cols]
        if not listed:  # pyarrow needs at least one encrypted column (or uniform encryption)
            raise InputError("column_keys names no column to encrypt: give at least one "
                             "{kek_uri: [column, ...]} entry")
        missing = sorted(set(listed) - names)
        if missing:
            raise InputError(f"column_keys name columns that are not in the data: {missing}")
        if len(listed) != len(set(listed)):
            raise InputError("a column is listed under two keys")
        # pyarrow joins column_keys into "key:col,col;key:col" and re-parses it (trimming
        # spaces): a column named "a,b" would be stored in clear while "a" and "b" got encrypted
        odd = sorted(c for c in listed if any(ch in c for ch in ",;:") or c != c.strip())
        if odd:
            raise InputError(f"cannot encrypt columns {odd}: pyarrow's column-key syntax "
                             "reserves ',', ';', ':' and surrounding spaces; rename them")
        config = pe.EncryptionConfiguration(
            footer_key=master_key_id(footer_key),
            column_keys={master_key_id(u): list(cols) for u, cols in column_keys.items()},
            plaintext_footer=plaintext_footer, double_wrapping=double_wrapping,
            internal_key_material=internal_key_material, cache_lifetime=datetime.timedelta(seconds=self._lifetime),
            data_key_length_bits=256)
        dest = Path(path)
        kms = self.kms_config(context)
        if internal_key_material:
            with atomic_path(dest) as tmp:
                props = self._factory.file_encryption_properties(kms, config)
                pq.write_table(table, tmp, encryption_properties=props, **write_options)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            try:
                tmp = staging / dest.name
                props = self._factory.file_encryption_properties(kms, config,
                                                                 parquet_file_path=str(tmp))
                pq.write_table(table, tmp, encryption_properties=props, **write_options)
                os.replace(key_material_path(tmp), key_material_path(dest))
                os.replace(tmp, dest)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        emit(self._audit, "parquet.write", file=str(dest), footer_key=footer_key,
             column_keys={u: list(c) for u, c in column_keys.items()},
             principal=context.principal, jurisdiction=context.jurisdiction)
        return dest

    def read_table(self, path: PathLike, *, context: Context,
                   columns: Sequence[str] | None = None) -> pa.Table:
        """Read an encrypted Parquet file as an Arrow table.

        Raises:
            JurisdictionError: a needed key belongs to another jurisdiction.
            KeyDestroyedError: a needed KEK version was destroyed or retired.
            IntegrityError: key material or data failed to authenticate.
            InputError: the file does not exist.
        """
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        props = self._factory.file_decryption_properties(
            self.kms_config(context), pe.DecryptionConfiguration(
                cache_lifetime=datetime.timedelta(seconds=self._lifetime)),
            parquet_file_path=str(p))
        try:
            return pq.read_table(p, columns=list(columns) if columns is not None else None,
                                 decryption_properties=props)
        except PetsError:
            raise  # from the KMS client (JurisdictionError is also an OSError)
        except OSError as exc:
            if exc.errno is not None:  # the operating system's error, not pyarrow's
                raise InputError(f"{p}: cannot read ({exc.strerror})") from None
            # pyarrow reports a failed GCM tag or corrupt metadata as an OSError; a pets
            # error from the KMS client arrives as itself and is not caught here.
            raise IntegrityError(f"{p}: Parquet data failed to authenticate") from None

    def read(self, path: PathLike, *, context: Context,
             columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Read an encrypted Parquet file as a DataFrame (see :meth:`read_table`)."""
        frame: pd.DataFrame = self.read_table(path, context=context, columns=columns).to_pandas()
        return frame

    def rotate(self, path: PathLike, *, context: Context, double_wrapping: bool = True) -> Path:
        """Re-wrap a file's key material under each KEK's primary version; data unchanged.

        Needs external key material (written with ``internal_key_material=False``). Only the
        side file changes; the Parquet file's bytes stay the same.
        """
        p = Path(path)
        if not key_material_path(p).is_file():
            raise InputError(f"{p}: no external key material; write it with "
                             "internal_key_material=False to rotate without rewriting")
        self._factory.rotate_master_keys(self.kms_config(context), str(p),
                                         double_wrapping=double_wrapping,
                                         cache_lifetime_seconds=self._lifetime)
        self.forget()
        emit(self._audit, "parquet.rotate", file=str(p), principal=context.principal,
             jurisdiction=context.jurisdiction)
        return p

    def migrate(self, path: PathLike, *, context: Context, to: Mapping[str, str],
                allow_jurisdiction_change: bool = False) -> Path:
        """Move a file's keys to other KEKs (``{old_uri: new_uri}``), e.g. local keyring → HSM.

        Needs external key material. Each key wrapped under an ``old_uri`` KEK is unwrapped
        through the caller's services and wrapped under ``new_uri``'s primary version; only the
        key-material side file changes (atomically), the Parquet file's bytes stay the same.

        Raises:
            JurisdictionError: ``context`` may not unwrap, or a target KEK belongs to another
                jurisdiction and ``allow_jurisdiction_change`` is False.
            InputError: no external key material, or ``to`` names a key the file does not use.
        """
        import json

        p = Path(path)
        km_path = key_material_path(p)
        if not km_path.is_file():
            raise InputError(f"{p}: no external key material; write it with "
                             "internal_key_material=False to migrate without rewriting")
        try:
            doc = json.loads(km_path.read_text())
            entries = {k: json.loads(v) for k, v in doc.items()}
            if not all(isinstance(e, dict) and isinstance(e.get("masterKeyID", ""), str)
                       for e in entries.values()):
                raise ValueError
            used = {uri_from_master_key_id(e["masterKeyID"]) for e in entries.values()
                    if "masterKeyID" in e}
        except (OSError, ValueError, TypeError, AttributeError):
            raise IntegrityError(f"{km_path}: key material failed to authenticate") from None
        unknown = sorted(set(to) - used)
        if unknown:
            raise InputError(f"{p} uses no key {unknown}; it uses {sorted(used)}")
        for old, new in to.items():
            old_j = self._keys.for_uri(old).describe(old).jurisdiction
            new_j = self._keys.for_uri(new).describe(new).jurisdiction
            if old_j != new_j and not allow_jurisdiction_change:
                raise JurisdictionError(
                    f"migrating {old} ({old_j}) to {new} ({new_j}) would move where {p} can be "
                    "read; pass allow_jurisdiction_change=True to do it")
        client = PetsKmsClient(self._keys, context, audit=self._audit)
        moved = []
        for name, entry in entries.items():
            if "masterKeyID" not in entry:
                continue
            old = uri_from_master_key_id(entry["masterKeyID"])
            if old not in to:
                continue
            field = "wrappedKEK" if entry.get("doubleWrapping") else "wrappedDEK"
            key = client.unwrap_key(entry[field], entry["masterKeyID"])
            new_id = master_key_id(to[old])
            entry[field] = client.wrap_key(key, new_id)
            entry["masterKeyID"] = new_id
            del key
            doc[name] = json.dumps(entry, separators=(",", ":"))
            moved.append(name)
        with atomic_path(km_path, mode=km_path.stat().st_mode & 0o777) as tmp:
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
        self.forget()
        emit(self._audit, "parquet.migrate", file=str(p), keys=dict(to), entries=moved,
             principal=context.principal, jurisdiction=context.jurisdiction)
        return p


def write_encrypted_parquet(data: pd.DataFrame | pa.Table, path: PathLike, *, keys: Keys,
                            context: Context, footer_key: str,
                            column_keys: Mapping[str, Sequence[str]],
                            **options: Any) -> Path:
    """One-shot :meth:`ParquetCrypto.write` (a fresh factory, no shared cache)."""
    return ParquetCrypto(keys).write(data, path, context=context, footer_key=footer_key,
                                     column_keys=column_keys, **options)


def read_encrypted_parquet(path: PathLike, *, keys: Keys, context: Context,
                           columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One-shot :meth:`ParquetCrypto.read` (a fresh factory, no shared cache)."""
    return ParquetCrypto(keys).read(path, context=context, columns=columns)


def rotate_parquet_keys(path: PathLike, *, keys: Keys, context: Context) -> Path:
    """One-shot :meth:`ParquetCrypto.rotate`."""
    return ParquetCrypto(keys).rotate(path, context=context)

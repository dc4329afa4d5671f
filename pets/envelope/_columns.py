"""Column encryption of a pandas DataFrame: randomized (AES-256-GCM) or deterministic (AES-SIV).

Each encrypted column gets its own data key (DEK), wrapped under one or more KEKs and carried
in a small JSON-able :class:`ColumnKeys` header that the boundary layer stores in its manifest
(it is also put in ``DataFrame.attrs["pets.column_keys"]``).

Modes:

``randomized``
    AES-256-GCM per cell, a fresh 96-bit nonce per cell (all nonces of a column drawn with
    one ``os.urandom`` call); cell = nonce ‖ ciphertext ‖ tag. Equal plaintexts give unrelated
    ciphertexts. The associated data binds the column name, mode, value codec, original dtype
    and the encryption context, so a cell cannot be moved to another column or context and
    the header cannot be edited to reinterpret cells; it does *not* bind the row, so cells
    can be swapped between rows of the same column undetected. Random 96-bit nonces allow at
    most 2^32 cells per data key (NIST SP 800-38D): one call refuses more
    (``MAX_RANDOMIZED_CELLS``), and later calls reusing the :class:`ColumnKeys` count too.

``deterministic``
    AES-SIV (RFC 5297, 512-bit key = AES-256-SIV) with the same associated data (domain tag,
    mode, codec, dtype, column name, encryption context). **Warning: deterministic encryption is not semantically
    secure.** Equal plaintexts in the same column and context give equal ciphertexts, so the
    ciphertext *links* every row holding the same value (within a table, and across every
    table encrypted with the same :class:`ColumnKeys`), reveals value frequencies, and allows
    equality joins — that is its purpose. Different columns or contexts give unrelated
    ciphertexts (domain separation).

Nulls stay null in both modes, so which cells are null stays visible; so does each value's
length (ciphertext = plaintext + 28 bytes randomized, + 16 deterministic).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

from pets._errors import InputError, IntegrityError
from pets._events import AuditHook, emit
from pets.envelope._envelope import Keys, _unwrap_any, as_services
from pets.envelope._format import MAX_WRAPPED_KEYS
from pets.jurisdiction import Context
from pets.keys import KeyServices, WrappedKey, canonical_context

if TYPE_CHECKING:
    from pets.engines import WorkerKeys


def _is_dask(frame: object) -> bool:
    """A ``dask.dataframe`` frame, which goes to the Dask engine (no import before dask's)."""
    if "dask.dataframe" not in sys.modules:
        return False
    from pets.engines._dask import is_dask

    return is_dask(frame)

__all__ = [
    "ATTRS_KEY",
    "ColumnKey",
    "ColumnKeys",
    "MAX_RANDOMIZED_CELLS",
    "Mode",
    "decrypt_columns",
    "encrypt_columns",
    "siv_decrypt",
    "siv_encrypt",
]

Mode = Literal["randomized", "deterministic"]
Encoding = Literal["bytes", "base64"]
ATTRS_KEY = "pets.column_keys"
_FORMAT = 1
_NONCE = 12
_TAG = 16
_DEK_SIZE: dict[str, int] = {"randomized": 32, "deterministic": 64}
_DOMAIN = b"pets-column\x00v1\x00"
_RESERVED = ("pets.column", "pets.column_mode")
#: Random 96-bit nonces: NIST SP 800-38D §8.3 allows at most 2^32 encryptions per key.
MAX_RANDOMIZED_CELLS = 1 << 32


def siv_encrypt(key: bytes, plaintexts: Sequence[bytes],
                associated_data: Sequence[bytes] | None = None) -> list[bytes]:
    """AES-SIV (RFC 5297) of each plaintext: the deterministic column path's primitive.

    Output per value is the 16-byte synthetic IV followed by the ciphertext. ``key`` is 32,
    48 or 64 bytes (AES-128/192/256-SIV); ``associated_data`` is the S2V vector of header
    components, the same for every value.

    **Linkable:** equal plaintexts under the same key and associated data give equal outputs.

    Examples:
        >>> out = siv_encrypt(bytes(64), [b"alice", b"bob", b"alice"], [b"users.email"])
        >>> out[0] == out[2], out[0] == out[1]
        (True, False)
        >>> siv_decrypt(bytes(64), out, [b"users.email"])
        [b'alice', b'bob', b'alice']
    """
    enc = AESSIV(key).encrypt
    ad = list(associated_data) if associated_data else None
    return [enc(p, ad) for p in plaintexts]


def siv_decrypt(key: bytes, ciphertexts: Sequence[bytes],
                associated_data: Sequence[bytes] | None = None) -> list[bytes]:
    """Inverse of :func:`siv_encrypt`; raises :class:`~pets.IntegrityError` on any failure."""
    dec = AESSIV(key).decrypt
    ad = list(associated_data) if associated_data else None
    try:
        return [dec(c, ad) for c in ciphertexts]
    except (InvalidTag, ValueError):
        raise IntegrityError("a value failed to authenticate") from None


@dataclass(frozen=True)
class ColumnKey:
    """How one column was encrypted: mode, value codec, original dtype, wrapped DEK(s)."""

    column: str
    mode: Mode
    codec: str
    dtype: str
    encoding: Encoding
    wrapped_keys: tuple[WrappedKey, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "mode": self.mode, "codec": self.codec,
                "dtype": self.dtype, "encoding": self.encoding,
                "wrapped_keys": [w.to_dict() for w in self.wrapped_keys]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnKey:
        try:
            mode, codec, enc = d["mode"], d["codec"], d["encoding"]
            if mode not in _DEK_SIZE or codec not in _CODECS or enc not in ("bytes", "base64"):
                raise ValueError
            listed = d["wrapped_keys"]
            if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_WRAPPED_KEYS:
                # a hostile header must not make decryption ask the key services (and flood
                # the audit log with refusals) thousands of times: the envelope's limit
                raise ValueError
            wrapped = tuple(WrappedKey.from_dict(w) for w in listed)
            return cls(str(d["column"]), mode, codec, str(d["dtype"]), enc, wrapped)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"malformed column key for {d.get('column')!r}") from None


@dataclass(frozen=True)
class ColumnKeys:
    """The column-key header: JSON-able, safe to store (it holds only wrapped keys).

    Pass it back to :func:`encrypt_columns` (``column_keys=``) to encrypt more data under the
    same keys — needed for deterministic joins across tables or appended batches.
    """

    enc_context: Mapping[str, str]
    columns: Mapping[str, ColumnKey] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "enc_context": dict(self.enc_context),
                "columns": [self.columns[c].to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnKeys:
        if not isinstance(d, Mapping) or d.get("format") != _FORMAT:
            raise InputError("not a pets column-key header (format 1)")
        try:
            ctx = {str(k): str(v) for k, v in dict(d["enc_context"]).items()}
            cols = [ColumnKey.from_dict(c) for c in d["columns"]]
        except InputError:
            raise  # names the column at fault
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError("malformed pets column-key header") from None
        return cls(ctx, {c.column: c for c in cols})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ColumnKeys:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError:
            raise InputError("pets column-key header is not JSON") from None


# --- value codecs: pandas values <-> bytes --------------------------------------------------

def _codec_for(series: pd.Series, name: str) -> str:
    dt = series.dtype
    if pd.api.types.is_bool_dtype(dt):
        return "bool"
    if pd.api.types.is_integer_dtype(dt):
        if pd.api.types.is_unsigned_integer_dtype(dt) and series.notna().any() and int(
                series.max()) > np.iinfo(np.int64).max:
            # the int64 codec would wrap them negative and decryption could not restore them
            raise InputError(f"column {name!r}: unsigned values above 2^63-1 cannot be "
                             "encrypted as integers; convert the column to str first")
        return "int64"
    if pd.api.types.is_float_dtype(dt):
        return "float64"
    if isinstance(dt, pd.StringDtype):
        return "str"
    if pd.api.types.is_string_dtype(dt) or pd.api.types.is_object_dtype(dt):
        kinds = {type(v) for v in series.dropna().to_numpy()}
        if kinds <= {str}:
            return "str"
        if kinds == {bytes}:
            return "bytes"
        raise InputError(f"column {name!r}: mixed or unsupported value types; "
                         "encrypt str, bytes, int, float or bool columns")
    raise InputError(f"column {name!r}: dtype {dt} is not supported by column encryption")


def _values(series: pd.Series, codec: str) -> np.ndarray[Any, Any]:
    """All values as a NumPy array of the codec's type (nulls filled, masked by the caller)."""
    if codec == "int64":
        return series.to_numpy(dtype=np.int64, na_value=0)
    if codec == "float64":
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if codec == "bool":
        return series.to_numpy(dtype=bool, na_value=False)
    return series.to_numpy(dtype=object)


def _encode(values: np.ndarray[Any, Any], codec: str) -> list[bytes]:
    if codec == "str":
        return [v.encode("utf-8") for v in values]
    if codec == "bytes":
        return list(values)
    if codec == "bool":
        raw = np.asarray(values, dtype=np.uint8).tobytes()
        return [raw[i:i + 1] for i in range(len(raw))]
    dtype = ">i8" if codec == "int64" else ">f8"
    raw = np.asarray(values, dtype=dtype).tobytes()
    return [raw[i:i + 8] for i in range(0, len(raw), 8)]


def _decode(blobs: list[bytes], codec: str, name: str) -> Any:
    if codec == "str":
        try:
            return [b.decode("utf-8") for b in blobs]
        except UnicodeDecodeError:  # pragma: no cover - authenticated bytes
            raise IntegrityError(f"column {name!r} failed to authenticate") from None
    if codec == "bytes":
        return blobs
    size = 1 if codec == "bool" else 8
    joined = b"".join(blobs)
    if len(joined) != size * len(blobs):  # pragma: no cover - authenticated bytes
        raise IntegrityError(f"column {name!r} failed to authenticate")
    if codec == "bool":
        return np.frombuffer(joined, dtype=np.uint8).astype(bool)
    return np.frombuffer(joined, dtype=">i8" if codec == "int64" else ">f8").astype(
        np.int64 if codec == "int64" else np.float64)


_CODECS = ("str", "bytes", "bool", "int64", "float64")


def _worth_factorizing(values: np.ndarray[Any, Any]) -> bool:
    """Encrypt each distinct value once, unless a sample says nearly all values are distinct.

    Either way the output is the same (deterministic encryption); this only picks the faster
    path: factorizing costs more than it saves when few values repeat.
    """
    n = len(values)
    if n < 2048:
        return n > 0
    sample = values[:: max(1, n // 4096)]
    return len(pd.unique(sample)) < 0.8 * len(sample)


def _aad(column: str, mode: str, codec: str, dtype: str, ctx: bytes) -> bytes:
    """Associated data of every cell of a column (unambiguous: fixed vocabularies end in a
    NUL, free text is length-prefixed, the canonical context comes last).

    It binds everything :func:`decrypt_columns` takes from the (unauthenticated) column-key
    header to interpret a cell: column name, mode, value codec and original dtype, and the
    encryption context. A header edited to read ``int64`` cells as ``float64`` fails.
    """
    col, dt = column.encode("utf-8"), dtype.encode("utf-8")
    return (_DOMAIN + mode.encode() + b"\x00" + codec.encode() + b"\x00"
            + len(dt).to_bytes(4, "big") + dt + len(col).to_bytes(4, "big") + col + ctx)


def _wrap_context(enc_context: Mapping[str, str], column: str, mode: str) -> dict[str, str]:
    return {**enc_context, "pets.column": column, "pets.column_mode": mode}


def _unwrap_dek(ck: ColumnKey, keys: KeyServices, context: Context,
                enc_context: Mapping[str, str]) -> bytes:
    dek = _unwrap_any(ck.wrapped_keys, keys, context,
                      _wrap_context(enc_context, ck.column, ck.mode), what=f"column {ck.column!r}",
                      purpose=f"column:{ck.column}")
    if len(dek) != _DEK_SIZE[ck.mode]:
        raise IntegrityError(f"column {ck.column!r} failed to authenticate")
    return dek


def _encrypt_cells(plain: list[bytes], dek: bytes, mode: str, aad: bytes) -> list[bytes]:
    if mode == "randomized":
        n = len(plain)
        pool = os.urandom(_NONCE * n)
        nonces = [pool[i:i + _NONCE] for i in range(0, _NONCE * n, _NONCE)]
        enc = AESGCM(dek).encrypt
        return [nn + enc(nn, p, aad) for nn, p in zip(nonces, plain, strict=True)]
    return siv_encrypt(dek, plain, [aad])


def _decrypt_cells(cells: list[bytes], dek: bytes, mode: str, aad: bytes) -> list[bytes]:
    if mode == "randomized":
        dec = AESGCM(dek).decrypt
        return [dec(c[:_NONCE], c[_NONCE:], aad) for c in cells]
    return siv_decrypt(dek, cells, [aad])


def encrypt_columns(
    frame: pd.DataFrame,
    columns: Mapping[str, Mode] | Sequence[str],
    *,
    keys: Keys,
    key_uris: str | Sequence[str],
    context: Context,
    enc_context: Mapping[str, str] | None = None,
    column_keys: ColumnKeys | None = None,
    mode: Mode = "randomized",
    encoding: Encoding = "bytes",
    audit: AuditHook | None = None,
    workers: WorkerKeys | None = None,
) -> tuple[pd.DataFrame, ColumnKeys]:
    """Encrypt ``columns`` of ``frame``; return the new frame and its :class:`ColumnKeys`.

    Accepts a Dask DataFrame: returns ``(lazy Dask frame, column_keys)`` from
    :func:`pets.engines.dask.encrypt_columns` (DEKs made and wrapped once, here; partitions
    unwrap them through ``workers``, by default ``keys`` in this process — required while a
    ``distributed`` client is active).

    Args:
        frame: The data; it is not modified.
        columns: Column names (all in ``mode``) or a mapping ``{column: mode}``.
        keys: Key services holding ``key_uris``.
        key_uris: KEK(s) wrapping each column's fresh DEK (any one decrypts).
        context: Who encrypts, and where.
        enc_context: Non-secret key/values bound to every cell (associated data).
        column_keys: Reuse the DEKs of an earlier call for the columns it names (its
            ``enc_context`` must match; the mode must match). Needed for deterministic joins.
        mode: Default mode when ``columns`` is a list.
        encoding: ``"bytes"`` cells, or ``"base64"`` text cells.
        audit: Optional audit hook (receives ``envelope.encrypt_columns``; for a Dask frame
            once, when the lazy frame is built, with ``lazy=True``).
        workers: Dask frames only: how partitions reach the column keys
            (a :class:`~pets.engines.WorkerKeys`).

    Returns:
        ``(encrypted_frame, column_keys)``; ``encrypted_frame.attrs["pets.column_keys"]``
        holds ``column_keys.to_dict()``.

    Examples:
        >>> import pandas as pd
        >>> from pets import Context
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/kek", jurisdiction="EU")
        >>> eu = Context("EU")
        >>> df = pd.DataFrame({"email": ["a@x.eu", None, "a@x.eu"], "age": [31, 40, 31]})
        >>> enc, ck = encrypt_columns(df, {"email": "deterministic", "age": "randomized"},
        ...                           keys=ring, key_uris="memory://eu/kek", context=eu)
        >>> enc["email"][0] == enc["email"][2], enc["email"][1] is None
        (True, True)
        >>> enc["age"][0] == enc["age"][2]
        False
        >>> decrypt_columns(enc, ck, keys=ring, context=eu).equals(df)
        True
    """
    if _is_dask(frame):
        from pets.engines._dispatch import encrypt_columns as on_dask

        lazy: tuple[pd.DataFrame, ColumnKeys] = on_dask(
            frame, columns, keys=keys, key_uris=key_uris, context=context,
            enc_context=enc_context, column_keys=column_keys, mode=mode, encoding=encoding,
            audit=audit, workers=workers)
        return lazy
    services = as_services(keys)
    if encoding not in ("bytes", "base64"):
        raise InputError(f"encoding must be 'bytes' or 'base64', not {encoding!r}")
    wanted: dict[str, str] = (dict(columns) if isinstance(columns, Mapping)
                              else dict.fromkeys(columns, mode))
    ctx = dict(enc_context or {})
    if any(k in ctx for k in _RESERVED):
        raise InputError(f"encryption context keys {_RESERVED} are reserved")
    ctx_bytes = canonical_context(ctx)
    if column_keys is not None and canonical_context(column_keys.enc_context) != ctx_bytes:
        raise InputError("column_keys were made for another encryption context")
    uris = [key_uris] if isinstance(key_uris, str) else list(key_uris)
    if not 1 <= len(uris) <= MAX_WRAPPED_KEYS:
        raise InputError(f"{len(uris)} key URIs (allowed 1 .. {MAX_WRAPPED_KEYS})")
    out = frame.copy()
    result: dict[str, ColumnKey] = dict(column_keys.columns) if column_keys else {}
    for name, m in wanted.items():
        if m not in _DEK_SIZE:
            raise InputError(f"column {name!r}: mode must be 'randomized' or 'deterministic'")
        if name not in frame.columns:
            raise InputError(f"no column {name!r} in the frame")
        series = frame[name]
        prior = result.get(name)
        # an all-null batch (e.g. one partition) keeps the codec the keys were made with
        codec = prior.codec if prior is not None and not series.notna().any() else _codec_for(
            series, name)
        if prior is not None:
            if prior.mode != m or prior.codec != codec:
                raise InputError(f"column {name!r}: column_keys say {prior.mode}/{prior.codec}, "
                                 f"not {m}/{codec}")
            dek = _unwrap_dek(prior, services, context, ctx)
            ck = replace(prior, encoding=encoding)
        else:
            dek = os.urandom(_DEK_SIZE[m])
            wctx = _wrap_context(ctx, name, m)
            wrapped = tuple(services.wrap(u, dek, context=context, enc_context=wctx,
                                          purpose=f"column:{name}") for u in uris)
            ck = ColumnKey(name, m, codec, str(series.dtype), encoding, wrapped)  # type: ignore[arg-type]
        result[name] = ck
        mask = series.notna().to_numpy()
        values = _values(series, codec)[mask]
        if m == "randomized" and len(values) > MAX_RANDOMIZED_CELLS:
            raise InputError(
                f"column {name!r}: {len(values)} cells exceed the {MAX_RANDOMIZED_CELLS} that "
                "one randomized data key may encrypt with random nonces; split the data and "
                "encrypt each part with fresh column keys")
        aad = _aad(name, m, ck.codec, ck.dtype, ctx_bytes)
        if m == "deterministic" and _worth_factorizing(values):
            # floats are factorized by bit pattern: factorize treats -0.0 == 0.0, which lost
            # the sign and made a value's ciphertext depend on which came first in the batch
            floats = codec == "float64"
            codes, uniques = pd.factorize(values.view(np.int64) if floats else values)
            uniq = np.asarray(uniques).view(np.float64) if floats else np.asarray(uniques)
            enc_u = np.empty(len(uniq), dtype=object)
            enc_u[:] = _encrypt_cells(_encode(uniq, codec), dek, m, aad)
            cells_arr = enc_u[codes]
        else:
            cells_arr = np.empty(len(values), dtype=object)
            cells_arr[:] = _encrypt_cells(_encode(values, codec), dek, m, aad)
        del dek
        if encoding == "base64":
            enc_cells = np.empty(len(cells_arr), dtype=object)
            enc_cells[:] = [base64.b64encode(c).decode("ascii") for c in cells_arr]
            cells_arr = enc_cells
        full = np.full(len(series), None, dtype=object)
        full[mask] = cells_arr
        out[name] = pd.Series(full, index=frame.index, dtype=object)
    keys_out = ColumnKeys(ctx, result)
    out.attrs[ATTRS_KEY] = keys_out.to_dict()
    emit(audit, "envelope.encrypt_columns", columns=sorted(wanted),
         keys=uris, principal=context.principal, jurisdiction=context.jurisdiction)
    return out, keys_out


def decrypt_columns(
    frame: pd.DataFrame,
    column_keys: ColumnKeys | Mapping[str, Any] | None = None,
    *,
    keys: Keys,
    context: Context,
    columns: Sequence[str] | None = None,
    audit: AuditHook | None = None,
    workers: WorkerKeys | None = None,
) -> pd.DataFrame:
    """Decrypt columns encrypted by :func:`encrypt_columns`, restoring values and dtypes.

    Accepts a Dask DataFrame (``column_keys`` required): returns a lazy Dask frame from
    :func:`pets.engines.dask.decrypt_columns`; partitions unwrap through ``workers`` (default
    ``keys`` in this process, as ``context``; required while a ``distributed`` client is
    active). Each DEK is unwrapped once as ``context`` first, so a refused unwrap fails at
    call time, as on pandas; a tampered cell surfaces when the frame is computed. The audit
    event is emitted when the lazy frame is built, with ``lazy=True``.

    Args:
        frame: The encrypted frame.
        column_keys: The header from :func:`encrypt_columns` (or its dict); default
            ``frame.attrs["pets.column_keys"]``.
        keys: The caller's key services.
        context: Who decrypts, and where (checked by each key service).
        columns: Decrypt only these (default: every column the header names that is present).
        audit: Optional audit hook.
        workers: Dask frames only: how partitions reach the column keys.

    Raises:
        IntegrityError: a cell, the header or a wrapped key does not authenticate (the
            message names the column only).
        JurisdictionError: every KEK of a column refused ``context``.
        KeyDestroyedError: the KEK version was destroyed or retired.
    """
    if _is_dask(frame):
        from pets.engines._dispatch import decrypt_columns as on_dask

        out: pd.DataFrame = on_dask(frame, column_keys, keys=keys, context=context,
                                    columns=columns, audit=audit, workers=workers)
        return out
    services = as_services(keys)
    if column_keys is None:
        if ATTRS_KEY not in frame.attrs:
            raise InputError(f"no column_keys given and no {ATTRS_KEY!r} in frame.attrs")
        column_keys = frame.attrs[ATTRS_KEY]
    if not isinstance(column_keys, ColumnKeys):
        column_keys = ColumnKeys.from_dict(column_keys)
    names = list(columns) if columns is not None else [
        c for c in column_keys.columns if c in frame.columns]
    ctx_bytes = canonical_context(column_keys.enc_context)
    out = frame.copy()
    for name in names:
        if name not in column_keys.columns:
            raise InputError(f"column {name!r} is not in the column-key header")
        if name not in frame.columns:
            raise InputError(f"no column {name!r} in the frame")
        ck = column_keys.columns[name]
        dek = _unwrap_dek(ck, services, context, column_keys.enc_context)
        series = frame[name]
        mask = series.notna().to_numpy()
        cells = series.to_numpy()[mask]
        aad = _aad(name, ck.mode, ck.codec, ck.dtype, ctx_bytes)
        try:
            if ck.encoding == "base64":
                cells = np.asarray([base64.b64decode(c, validate=True) for c in cells],
                                   dtype=object)
            if ck.mode == "deterministic" and len(cells):
                codes, uniques = pd.factorize(cells)
                plain_u = _decrypt_cells(list(uniques), dek, ck.mode, aad)
                dec_u = np.empty(len(plain_u), dtype=object)
                dec_u[:] = _decode(plain_u, ck.codec, name)
                values: Any = dec_u[codes]
            else:
                values = _decode(_decrypt_cells(list(cells), dek, ck.mode, aad), ck.codec, name)
        except (InvalidTag, IntegrityError, ValueError, TypeError):
            raise IntegrityError(f"column {name!r} failed to authenticate") from None
        finally:
            del dek
        full = np.full(len(series), None, dtype=object)
        full[mask] = values
        try:
            restored = pd.Series(full, index=frame.index, dtype=object)
            out[name] = restored if ck.dtype == "object" else restored.astype(ck.dtype)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            out[name] = pd.Series(full, index=frame.index, dtype=object)
    out.attrs.pop(ATTRS_KEY, None)
    emit(audit, "envelope.decrypt_columns", columns=names, principal=context.principal,
         jurisdiction=context.jurisdiction)
    return out

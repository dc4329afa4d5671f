"""Manifests: a signed statement of how each column of a protected table was treated.

A :class:`Manifest` records, per column, the role and treatment, the parameters, the key URI and
version used (never key bytes; for encrypted columns the JSON column-key header, which holds only
*wrapped* keys), the linkage domain and a digest of the column's values; for the table, the
policy digest, the row count, the data digest and the k-anonymity outcome. It is signed with
Ed25519 by a signing key of the home jurisdiction and travels inside the Parquet file's schema
metadata under ``pets.manifest``.

Digests are over a canonical encoding of the *values* (not the file bytes), so they survive a
Parquet round trip: strings and binaries as length-prefixed bytes, integers as int64/uint64,
floats as float64, decimals exactly as their text at the column's scale (the scale in the type
tag), timestamps as int64 nanoseconds (with their time zone in the type tag), dates as int32
days, booleans as bytes, plus the null bitmap. The data digest chains the row
count and every column's name and digest in order.

Examples:
    >>> import pandas as pd
    >>> from pets.boundary import SigningKey
    >>> df = pd.DataFrame({"age": ["20-29", "30-39"], "n": [1, 2]})
    >>> m = Manifest.build(df, dataset="t", policy_digest="0" * 64, home="EU",
    ...                    created_by="etl@EU", columns=[
    ...     {"name": "age", "role": "quasi-identifier", "treatment": "bucket",
    ...      "output": "generalized"},
    ...     {"name": "n", "role": "metric", "treatment": "keep", "output": "kept"}])
    >>> key = SigningKey.generate()
    >>> signed = m.sign(key)
    >>> signed.verify(key.public_key).verify_data(df).rows
    2
    >>> signed.verify_data(df.assign(n=[1, 3]))
    Traceback (most recent call last):
    ...
    pets._errors.IntegrityError: data does not match its manifest
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pets._digest import column_digest, data_digest
from pets._errors import InputError, IntegrityError
from pets._io import atomic_path
from pets.boundary._signing import (
    PublicKeyLike,
    SigningKey,
    key_id_of,
    load_public_key,
    verify_signature,
)

__all__ = [
    "MANIFEST_KEY",
    "ColumnManifest",
    "Manifest",
    "ProtectedFrame",
    "column_digest",
    "data_digest",
    "read_protected",
]

MANIFEST_KEY = b"pets.manifest"
EXPORT_KEY = b"pets.export"
_FORMAT = "pets.manifest/1"
_SIG_DOMAIN = b"pets.manifest/1\x00"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=str).encode()


@dataclass(frozen=True)
class ColumnManifest:
    """One column of a manifest (public facts only).

    ``output`` is the kind of output (``pseudonymized``, ``generalized``, ``encrypted``,
    ``kept``) the export gate checks against the policy's destinations.
    """

    name: str
    role: str
    treatment: str
    output: str
    digest: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    domain: str | None = None
    key_uri: str | None = None
    key_version: int | None = None
    key_jurisdiction: str | None = None
    mode: str | None = None
    links: str = ""
    reversible: bool = False
    header: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "treatment": self.treatment,
                "output": self.output, "digest": self.digest, "params": dict(self.params),
                "domain": self.domain, "key_uri": self.key_uri, "key_version": self.key_version,
                "key_jurisdiction": self.key_jurisdiction, "mode": self.mode,
                "links": self.links, "reversible": self.reversible,
                "header": None if self.header is None else dict(self.header)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnManifest:
        known = set(cls.__dataclass_fields__)
        if not isinstance(d, Mapping) or set(d) - known or "name" not in d:
            raise IntegrityError("malformed manifest")
        return cls(**dict(d))


@dataclass(frozen=True)
class Manifest:
    """How a protected table was made; see the module docstring. Build with :meth:`build`."""

    dataset: str
    policy_digest: str
    home: str
    created_at: str
    created_by: str
    rows: int
    data_digest: str
    columns: tuple[ColumnManifest, ...]
    k_anonymity: Mapping[str, Any] = field(default_factory=dict)
    signer: str | None = None
    signature: str | None = None

    @classmethod
    def build(cls, frame: pd.DataFrame, *, dataset: str, policy_digest: str, home: str,
              created_by: str, columns: Sequence[ColumnManifest | Mapping[str, Any]],
              k_anonymity: Mapping[str, Any] | None = None,
              created_at: str | None = None) -> Manifest:
        """Describe ``frame`` (computing its digests); ``columns`` in the frame's order."""
        cols = [c if isinstance(c, ColumnManifest) else ColumnManifest(**dict(c))
                for c in columns]
        if [c.name for c in cols] != [str(c) for c in frame.columns]:
            raise InputError("manifest columns must match the frame's columns, in order")
        cols = [replace(c, digest=column_digest(c.name, frame[c.name])) for c in cols]
        return cls(
            dataset=dataset, policy_digest=policy_digest, home=home,
            created_at=created_at or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            created_by=created_by, rows=len(frame),
            data_digest=data_digest(len(frame), [(c.name, c.digest) for c in cols]),
            columns=tuple(cols), k_anonymity=dict(k_anonymity or {}),
        )

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "dataset": self.dataset, "policy_digest": self.policy_digest,
                "home": self.home, "created_at": self.created_at, "created_by": self.created_by,
                "rows": self.rows, "data_digest": self.data_digest,
                "columns": [c.to_dict() for c in self.columns],
                "k_anonymity": dict(self.k_anonymity), "signer": self.signer,
                "signature": self.signature}

    def to_json(self) -> str:
        return _canonical(self.to_dict()).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse a manifest (signature not checked: call :meth:`verify`).

        Raises:
            IntegrityError: Not a well-formed manifest.
        """
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or d.pop("format", None) != _FORMAT:
                raise ValueError
            d["columns"] = tuple(ColumnManifest.from_dict(c) for c in d["columns"])
            manifest = cls(**d)
            manifest.payload()  # hostile shapes (a list where a mapping belongs) fail here
            if not isinstance(manifest.rows, int) or not all(
                    isinstance(c.name, str) for c in manifest.columns):
                raise ValueError
            return manifest
        except (ValueError, TypeError, KeyError, AttributeError):
            raise IntegrityError("malformed manifest") from None

    def payload(self) -> bytes:
        """What the signature covers: canonical JSON of everything but ``signature``."""
        d = self.to_dict()
        d.pop("signature")
        return _SIG_DOMAIN + _canonical(d)

    # -- signing and checking ----------------------------------------------------------------

    def sign(self, key: SigningKey) -> Manifest:
        """A copy signed by ``key`` (its key id recorded as ``signer``)."""
        unsigned = replace(self, signer=key.key_id, signature=None)
        sig = key.sign(unsigned.payload())
        return replace(unsigned, signature=base64.b64encode(sig).decode())

    def verify(self, public_key: PublicKeyLike | Sequence[PublicKeyLike]) -> Manifest:
        """Check the signature; returns ``self`` so calls chain.

        Args:
            public_key: The home's Ed25519 public key, or a list of them (after a rotation of
                the signing key: the manifest names its signer's key id).

        Raises:
            IntegrityError: Unsigned, signed by another key, or altered after signing.
        """
        many: list[Any] = (list(public_key) if isinstance(public_key, list | tuple)
                           else [public_key])
        keys = {key_id_of(k): k for k in (load_public_key(x) for x in many)}
        pub = keys.get(self.signer) if self.signer is not None else None
        if self.signature is None or pub is None:
            raise IntegrityError("manifest signature is not valid")
        try:
            sig = base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError):
            raise IntegrityError("manifest signature is not valid") from None
        if base64.b64encode(sig).decode() != self.signature:  # one encoding per signature
            raise IntegrityError("manifest signature is not valid")
        if not verify_signature(pub, self.payload(), sig):
            raise IntegrityError("manifest signature is not valid")
        return self

    def verify_data(self, frame: pd.DataFrame, *, subset: bool = False) -> Manifest:
        """Check that ``frame`` holds exactly the described values.

        Args:
            frame: The data.
            subset: Accept a frame with only some of the manifest's columns (an export of
                selected columns); each present column must still match its digest.

        Raises:
            IntegrityError: Columns, row count or any value differ.
        """
        by_name = {c.name: c for c in self.columns}
        names = [str(c) for c in frame.columns]
        expected = [c.name for c in self.columns]
        if len(frame) != self.rows or len(set(names)) != len(names):
            raise IntegrityError("data does not match its manifest")
        if subset:
            if any(n not in by_name for n in names) or names != [e for e in expected
                                                                 if e in names]:
                raise IntegrityError("data does not match its manifest")
        elif names != expected:
            raise IntegrityError("data does not match its manifest")
        digests = [(n, column_digest(n, frame[n])) for n in names]
        if any(by_name[n].digest != d for n, d in digests):
            raise IntegrityError("data does not match its manifest")
        if not subset and data_digest(len(frame), digests) != self.data_digest:
            raise IntegrityError("data does not match its manifest")
        return self

    def column(self, name: str) -> ColumnManifest:
        for c in self.columns:
            if c.name == name:
                return c
        raise InputError(f"manifest of {self.dataset!r} has no column {name!r}")

    def treatments(self) -> dict[str, str]:
        """Column name to treatment (``encrypt:randomized`` for encrypted columns)."""
        return {c.name: c.treatment + (f":{c.mode}" if c.mode else "") for c in self.columns}


@dataclass(frozen=True, repr=False)
class ProtectedFrame:
    """Protected data plus the signed :class:`Manifest` that says how it was protected.

    ``data`` is a pandas DataFrame; do not modify it in place (the manifest's digests would no
    longer match and the export gate would refuse it). In a notebook it shows the manifest
    (column, role, treatment, output, key) above the first rows.

    Examples:
        >>> import pathlib, tempfile
        >>> import pandas as pd
        >>> from pets.boundary import SigningKey
        >>> df = pd.DataFrame({"n": [1, 2]})
        >>> key = SigningKey.generate()
        >>> m = Manifest.build(df, dataset="t", policy_digest="0" * 64, home="EU",
        ...                    created_by="etl@EU", columns=[{"name": "n", "role": "metric",
        ...                    "treatment": "keep", "output": "kept"}]).sign(key)
        >>> path = ProtectedFrame(df, m).write(pathlib.Path(tempfile.mkdtemp()) / "t.parquet")
        >>> pf, export_record = read_protected(path, key.public_key)
        >>> pf.data["n"].tolist(), export_record
        ([1, 2], None)
        >>> read_protected(path, SigningKey.generate().public_key)
        Traceback (most recent call last):
        ...
        pets._errors.IntegrityError: manifest signature is not valid
    """

    data: pd.DataFrame
    manifest: Manifest

    def __len__(self) -> int:
        return len(self.data)

    def write(self, path: str | os.PathLike[str], *,
              extra_metadata: Mapping[bytes, bytes] | None = None) -> Path:
        """Write Parquet with the manifest in the schema metadata (atomically)."""
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self.data, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[MANIFEST_KEY] = self.manifest.to_json().encode()
        meta.update(extra_metadata or {})
        table = table.replace_schema_metadata(meta)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ProtectedFrame:
        """Read a file written by :meth:`write` (call ``manifest.verify`` before trusting it).

        Raises:
            InputError: The file cannot be read as Parquet.
            IntegrityError: It has no pets manifest, or a malformed one.
        """
        frame, meta = _read_parquet(path)
        raw = meta.get(MANIFEST_KEY)
        if raw is None:
            raise IntegrityError(f"{path}: no pets manifest (not produced by protect)")
        return cls(frame, Manifest.from_json(raw))

    def _summary_rows(self) -> list[tuple[str, str, str, str, str]]:
        return [(c.name, c.role, c.treatment + (f" ({c.mode})" if c.mode else ""), c.output,
                 c.key_uri or "") for c in self.manifest.columns]

    def __repr__(self) -> str:
        m = self.manifest
        lines = [f"ProtectedFrame(dataset={m.dataset!r}, rows={m.rows}, home={m.home!r}, "
                 f"signer={m.signer!r})"]
        for name, role, treat, out, key in self._summary_rows():
            lines.append(f"  {name:<16} {role:<17} {treat:<26} {out:<13} {key}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        m = self.manifest
        esc = html.escape
        head = (f"<p><b>ProtectedFrame</b> {esc(m.dataset)} · {m.rows} rows · home "
                f"{esc(m.home)} · signed by <code>{esc(str(m.signer))}</code> · policy "
                f"<code>{esc(m.policy_digest[:12])}</code>"
                + (f" · k = {esc(str(m.k_anonymity.get('k')))}" if m.k_anonymity else "")
                + "</p>")
        rows = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>"
                       for r in self._summary_rows())
        table = ("<table><tr><th>column</th><th>role</th><th>treatment</th><th>output</th>"
                 f"<th>key</th></tr>{rows}</table>")
        preview = str(self.data.head(5).to_html(max_cols=20))
        return head + table + preview


def _read_parquet(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[bytes, bytes]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read Parquet ({type(exc).__name__})") from None
    meta = dict(table.schema.metadata or {})
    try:
        frame = table.to_pandas()
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, pa.ArrowException):
        # a readable file whose pandas metadata was altered: not what was signed
        raise IntegrityError("data does not match its manifest") from None
    if [str(c) for c in frame.columns] != table.column_names:
        # a column the pandas metadata turned into the index is in no digest
        raise IntegrityError("data does not match its manifest")
    return frame, meta


def read_protected(path: str | os.PathLike[str],
                   public_key: PublicKeyLike | Sequence[PublicKeyLike]
                   ) -> tuple[ProtectedFrame, dict[str, Any] | None]:
    """Read and fully check a protected or exported file: signature, then data.

    Returns:
        The frame and, for a file the export gate wrote, its export record (destination,
        columns, time).

    Raises:
        IntegrityError: No manifest, a bad signature, or data that does not match.
    """
    frame, meta = _read_parquet(path)
    raw = meta.get(MANIFEST_KEY)
    if raw is None:
        raise IntegrityError(f"{path}: no pets manifest")
    manifest = Manifest.from_json(raw).verify(public_key)
    export = None
    if EXPORT_KEY in meta:
        try:
            export = json.loads(meta[EXPORT_KEY])
        except json.JSONDecodeError:
            raise IntegrityError("malformed export record") from None
        verify_export_record(export, public_key, manifest, list(frame.columns))
    manifest.verify_data(frame, subset=export is not None)
    return ProtectedFrame(frame, manifest), export


def sign_export_record(record: Mapping[str, Any], signer: SigningKey, manifest: Manifest, *,
                       dataset: bool = False) -> dict[str, Any]:
    """The gate's export record (destination, columns, who, when), bound to the manifest it
    exports (a dataset's: its dataset manifest, shared by every part) and signed: a receiver
    can tell a real export from a record pasted into a file that never left
    (:func:`verify_export_record`)."""
    binding = "dataset_manifest" if dataset else "manifest"
    body = {**record, binding: manifest.signature, "signer": signer.key_id}
    body.pop("signature", None)
    body["signature"] = base64.b64encode(signer.sign(_record_payload(body))).decode()
    return body


def _record_payload(record: Mapping[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in record.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, default=str).encode()


def verify_export_record(record: Any, public_key: PublicKeyLike | Sequence[PublicKeyLike],
                         manifest: Manifest, columns: Sequence[str], *,
                         dataset: bool = False) -> None:
    """Check an export record's signature, its manifest binding and its columns.

    ``manifest`` is the file's own manifest, or with ``dataset`` the dataset manifest of an
    exported dataset (a part read alone checks the signature and columns: its record is bound
    to the dataset manifest, checked by :func:`pets.boundary.verify_dataset`).

    Raises:
        IntegrityError: Unsigned, signed by a key not given, bound to another manifest, or
            listing other columns than the data holds.
    """
    if not isinstance(record, dict) or not isinstance(record.get("signature"), str):
        raise IntegrityError("export record is not signed")
    many: list[Any] = (list(public_key) if isinstance(public_key, list | tuple)
                       else [public_key])
    keys = {key_id_of(k): k for k in (load_public_key(x) for x in many)}
    pub = keys.get(str(record.get("signer")))
    try:
        sig = base64.b64decode(record["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError("export record signature is not valid") from None
    if pub is None or not verify_signature(pub, _record_payload(record), sig):
        raise IntegrityError("export record signature is not valid")
    bound = record.get("manifest", record.get("dataset_manifest"))
    if ("manifest" in record or dataset) and bound != manifest.signature:
        raise IntegrityError("export record belongs to another manifest")
    if [str(c) for c in record.get("columns") or []] != [str(c) for c in columns]:
        raise IntegrityError("export record lists other columns than the data holds")

"""The audit log: append-only JSON lines, hash-chained and signed with Ed25519.

Each line is one entry, written as canonical JSON (sorted keys, compact, UTF-8)::

    {"actor": "etl@EU", "at": "2026-11-29T18:00:00.000000+00:00", "fields": {...},
     "hash": "<64 hex>", "kind": "boundary.export", "prev_hash": "<64 hex>", "seq": 7,
     "sig": "<base64 Ed25519>", "signer": "<key id>"}

* ``hash`` is SHA-256 over the canonical JSON of the entry *without* ``hash`` and ``sig``;
* ``prev_hash`` is the previous entry's ``hash`` (64 zeros for ``seq`` 0), so entries chain;
* ``sig`` is the Ed25519 signature of ``b"pets.audit/1\\0" + bytes.fromhex(hash)`` by the home
  jurisdiction's signing key (``signer`` is its key id).

:func:`verify_log` needs only the public key. It names the first entry (line and ``seq``) that
was edited, dropped, reordered or inserted. What it cannot see is a clean cut of the *newest*
entries: compare the reported head (``seq`` and ``head_hash``) with one you noted earlier.

**Writers.** :meth:`AuditLog.append` takes an exclusive lock, reads the last entry under the
lock, appends one line with a single ``write`` and ``fsync``\\ s before unlocking, so several
processes can append to one log. The lock is a separate file beside the log, ``.<log
name>.lock`` (0600, :func:`pets._lock.exclusive`, portable to macOS and Windows), not a lock on
the log's own descriptor: every appender takes it before opening the log, so it excludes other
appenders exactly as a ``flock`` on the log did, and on Windows, where locks are mandatory
byte-range locks, readers of the log are not blocked. Only pets' appenders honour it (the lock
is advisory, as ``flock`` was); appending needs write access to the log's directory, where the
lock file lives. A crash mid-append leaves a *torn tail* (a last line without its newline): the
log still verifies up to the last whole entry and :func:`verify_log` reports the tail
separately. The next append cuts the torn bytes off and
records that repair (``audit.repaired``, with the digest of what was cut) before its own entry.

Lower layers report events through :attr:`AuditLog.hook` (an :data:`~pets._events.AuditHook`).

Examples:
    >>> import tempfile, pathlib
    >>> from pets.boundary import AuditLog, SigningKey, verify_log
    >>> key = SigningKey.generate()
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl"
    >>> log = AuditLog(path, signer=key, actor="etl@EU")
    >>> log.append("boundary.protect", dataset="users", rows=10)["seq"]
    0
    >>> from pets._events import emit
    >>> emit(log.hook, "key.create", key="local://eu/kek", jurisdiction="EU")
    >>> report = verify_log(path, key.public_key)
    >>> report.ok, report.entries
    (True, 2)
    >>> lines = path.read_text().splitlines()
    >>> _ = path.write_text(lines[1] + "\\n")          # drop the first entry
    >>> verify_log(path, key.public_key).first_bad
    BadEntry(line=1, seq=1, reason='expected seq 0')
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pets._errors import InputError, IntegrityError
from pets._events import AuditEvent, AuditHook
from pets._lock import exclusive
from pets.boundary._signing import (
    PublicKeyLike,
    SigningKey,
    key_id_of,
    load_public_key,
    verify_signature,
)
from pets.jurisdiction import Context

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "GENESIS_HASH",
    "AuditLog",
    "BadEntry",
    "TornTail",
    "VerifyReport",
    "canonical_json",
    "flows",
    "incidents",
    "read_entries",
    "verify_log",
]

GENESIS_HASH = "0" * 64
_SIG_DOMAIN = b"pets.audit/1\x00"
_REQUIRED = ("seq", "prev_hash", "at", "kind", "actor", "fields", "signer", "hash", "sig")
_READ_CHUNK = 1 << 16


def _default(obj: Any) -> Any:
    """JSON encoding for the scalar types lower layers put in events (numpy, dates, paths)."""
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):  # other array-library scalars
        return obj.item()
    if isinstance(obj, _dt.datetime | _dt.date):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset | tuple):
        return sorted(obj, key=str) if isinstance(obj, set | frozenset) else list(obj)
    if isinstance(obj, bytes):
        raise InputError("audit fields may not hold raw bytes")
    raise InputError(f"audit field of type {type(obj).__name__} is not JSON-able")


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, UTF-8, no NaN/Infinity.

    Examples:
        >>> canonical_json({"b": 1, "a": [1.5, "é"]})
        b'{"a":[1.5,"\\xc3\\xa9"],"b":1}'
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_default).encode()
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError("audit fields may not hold NaN or infinity") from None


def _normalise(fields: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in fields.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"audit field {k!r} is not finite")
    out = json.loads(canonical_json(dict(fields)))
    assert isinstance(out, dict)
    return out


def _entry_hash(entry: Mapping[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _actor_of(value: Context | str | None) -> str:
    if value is None:
        return Context.from_env().access_token
    if isinstance(value, Context):
        return value.access_token
    if not value or "\n" in value:
        raise InputError("actor must be a non-empty single-line string")
    return value


class AuditLog:
    """An append-only, hash-chained, signed JSON-lines audit log.

    Args:
        path: The log file (created on first append, mode 0600).
        signer: The home jurisdiction's signing key (:class:`SigningKey` or a raw
            ``Ed25519PrivateKey``). ``None`` writes unsigned entries, which
            :func:`verify_log` with a public key rejects: use only in tests.
        actor: Who acts by default (``principal@jurisdiction``, or a :class:`~pets.Context`);
            defaults to :meth:`Context.from_env`.
        clock: Returns the entry time (ISO 8601); injectable for deterministic tests.
    """

    def __init__(self, path: str | os.PathLike[str],
                 signer: SigningKey | Ed25519PrivateKey | None = None, *,
                 actor: Context | str | None = None,
                 clock: Callable[[], str] | None = None) -> None:
        self.path = Path(path)
        if isinstance(signer, Ed25519PrivateKey):
            signer = SigningKey(signer)
        self._signer = signer
        self.actor = _actor_of(actor)
        self._clock = clock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        signer = self._signer.key_id if self._signer else None
        return f"AuditLog({str(self.path)!r}, signer={signer!r}, actor={self.actor!r})"

    @property
    def hook(self) -> AuditHook:
        """An :data:`~pets._events.AuditHook` for lower layers: each event becomes an entry.

        The actor is ``principal@jurisdiction`` from the event's fields when it names both (a
        refused caller), else this log's actor.
        """
        return self._on_event

    def _on_event(self, event: AuditEvent) -> None:
        self.append(event)

    def append(self, event: AuditEvent | str, /, *, actor: Context | str | None = None,
               **fields: Any) -> dict[str, Any]:
        """Append one entry and return it (as written).

        Args:
            event: An :class:`~pets._events.AuditEvent`, or an event kind such as
                ``"boundary.export"`` with its ``fields`` as keyword arguments.
            actor: Overrides the actor for this entry.

        Raises:
            InputError: A field is not JSON-able (bytes, NaN, objects).
            IntegrityError: The last whole entry of the log is corrupt (nothing is appended).
        """
        if isinstance(event, AuditEvent):
            if fields:
                raise InputError("pass fields inside the AuditEvent, not as keywords")
            kind, data, at = event.kind, dict(event.fields), event.at
        else:
            kind, data, at = event, fields, ""
        if not kind or not isinstance(kind, str) or "\n" in kind:
            raise InputError("event kind must be a non-empty single-line string")
        if actor is None and isinstance(data.get("principal"), str) and isinstance(
                data.get("jurisdiction"), str):
            actor = f"{data['principal']}@{data['jurisdiction']}"
        who = _actor_of(actor) if actor is not None else self.actor
        norm = _normalise(data)
        if self._clock is not None:
            at = self._clock()
        elif not at:
            at = _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")
        with self._lock:
            return self._append_locked(kind, norm, at, who)

    def _append_locked(self, kind: str, fields: dict[str, Any], at: str,
                       actor: str) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self._lock_path):
            return self._append_exclusive(kind, fields, at, actor)

    @property
    def _lock_path(self) -> Path:
        """The lock file every appender holds (``.<log name>.lock`` beside the log)."""
        return self.path.with_name(f".{self.path.name}.lock")

    def _append_exclusive(self, kind: str, fields: dict[str, Any], at: str,
                          actor: str) -> dict[str, Any]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            last, complete_end = _read_tail(fd, size)
            out: list[dict[str, Any]] = []
            if last is None:
                seq, prev = 0, GENESIS_HASH
            else:
                try:
                    tail = json.loads(last)
                    if not isinstance(tail, dict) or _entry_hash(tail) != tail.get("hash"):
                        raise ValueError
                    seq, prev = int(tail["seq"]) + 1, str(tail["hash"])
                except (ValueError, KeyError, TypeError):
                    raise IntegrityError(
                        f"{self.path}: the last entry is corrupt; run `pets audit verify`"
                    ) from None
            if complete_end < size:  # torn tail from a crashed writer: cut it, record it
                torn = os.pread(fd, size - complete_end, complete_end)
                os.ftruncate(fd, complete_end)
                out.append(self._entry(seq, prev, at, "audit.repaired", self.actor, {
                    "torn_bytes": len(torn), "torn_sha256": hashlib.sha256(torn).hexdigest(),
                }))
                seq, prev = seq + 1, out[-1]["hash"]
            out.append(self._entry(seq, prev, at, kind, actor, fields))
            data = b"".join(canonical_json(e) + b"\n" for e in out)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            if size == 0:
                _fsync_dir(self.path.parent)
        finally:
            os.close(fd)
        return out[-1]

    def _entry(self, seq: int, prev: str, at: str, kind: str, actor: str,
               fields: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": seq, "prev_hash": prev, "at": at, "kind": kind, "actor": actor,
            "fields": fields, "signer": self._signer.key_id if self._signer else None,
        }
        digest = _entry_hash(entry)
        entry["hash"] = digest
        entry["sig"] = (base64.b64encode(self._signer.sign(_SIG_DOMAIN + bytes.fromhex(digest)))
                        .decode() if self._signer else None)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every whole entry, parsed (not verified: use :func:`verify_log` for that); none
        before the first append."""
        if not self.path.exists():
            return []
        return read_entries(self.path)

    def flows(self) -> pd.DataFrame:
        """:func:`flows` of this log."""
        return flows(self.entries())

    def incidents(self) -> pd.DataFrame:
        """:func:`incidents` of this log."""
        return incidents(self.entries())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_tail(fd: int, size: int) -> tuple[bytes | None, int]:
    """The last newline-terminated line (without ``\\n``) and the offset just after it."""
    buf = b""
    pos = size
    end: int | None = None  # index in buf of the last newline
    while pos > 0:
        step = min(_READ_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        if end is None:
            idx = buf.rfind(b"\n")
            if idx < 0:
                continue
            end = idx
        else:
            end += step
        start = buf.rfind(b"\n", 0, end)
        if start >= 0 or pos == 0:
            return buf[start + 1:end], pos + end + 1
    if end is None:
        return None, 0
    return buf[:end], end + 1


@dataclass(frozen=True)
class BadEntry:
    """The first entry that failed verification: its 1-based ``line``, its ``seq`` as written
    (``None`` if unreadable) and why."""

    line: int
    seq: int | None
    reason: str


@dataclass(frozen=True)
class TornTail:
    """An incomplete last line (a writer crashed mid-append): its line number and size."""

    line: int
    bytes: int


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_log` found.

    ``ok`` is true when every whole entry verifies; a torn tail alone does not make it false
    (it is a crashed write, reported in ``torn_tail``). ``entries`` counts the entries that
    verified before the first bad one; ``head_seq``/``head_hash`` name the last of them.
    """

    path: str
    ok: bool
    entries: int
    head_seq: int | None
    head_hash: str
    signatures_checked: bool
    first_bad: BadEntry | None = None
    torn_tail: TornTail | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "ok": self.ok, "entries": self.entries,
            "head_seq": self.head_seq, "head_hash": self.head_hash,
            "signatures_checked": self.signatures_checked,
            "first_bad": None if self.first_bad is None else self.first_bad.__dict__,
            "torn_tail": None if self.torn_tail is None else self.torn_tail.__dict__,
        }

    def summary(self) -> str:
        """One or two human-readable lines."""
        if self.first_bad is not None:
            b = self.first_bad
            text = (f"FAILED: {self.path}: line {b.line} (seq {b.seq}): {b.reason}; "
                    f"{self.entries} entries before it verify")
        else:
            how = "hash chain and signatures" if self.signatures_checked else "hash chain only"
            text = f"OK: {self.path}: {self.entries} entries verify ({how}), head seq " \
                   f"{self.head_seq} hash {self.head_hash[:16]}…"
        if self.torn_tail is not None:
            text += (f"\nWARNING: torn tail at line {self.torn_tail.line} "
                     f"({self.torn_tail.bytes} bytes of an interrupted write)")
        return text

    def raise_for_status(self) -> None:
        """Raise :class:`~pets.IntegrityError` naming the first bad entry, if any."""
        if self.first_bad is not None:
            b = self.first_bad
            raise IntegrityError(f"audit log {self.path}: entry at line {b.line} "
                                 f"(seq {b.seq}) fails verification: {b.reason}")


class _Lines:
    """Stream the newline-terminated lines of a log (constant memory); a last line without
    its newline is not yielded but kept in ``torn``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.torn: TornTail | None = None

    def __iter__(self) -> Iterator[bytes]:
        from pets._io import require_regular_file

        require_regular_file(self.path, "audit log")
        try:
            fh = open(self.path, "rb")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read audit log ({exc.strerror})") from None
        with fh:
            lineno = 0
            for raw in fh:
                lineno += 1
                if not raw.endswith(b"\n"):
                    self.torn = TornTail(lineno, len(raw))
                    return
                yield raw[:-1]


def verify_log(path: str | os.PathLike[str],
               public_key: PublicKeyLike | Sequence[PublicKeyLike] | None, *,
               expect_head: tuple[int, str] | None = None) -> VerifyReport:
    """Check a log's sequence numbers, hash chain and (with ``public_key``) every signature.

    Args:
        path: The JSON-lines log.
        public_key: The signer's Ed25519 public key (object, PEM, or PEM file), or a list of
            them when the signing key was rotated (each entry names its signer's key id).
            ``None`` checks the chain only — anyone can forge a consistent chain, so auditors
            pass the key.
        expect_head: ``(seq, hash)`` of a head noted at an earlier audit (``hash`` may be a
            prefix of at least 16 hex digits). The log must still hold that entry: this is what
            catches a clean cut of the newest entries, which a chain alone cannot.

    Returns:
        A :class:`VerifyReport`; the log is not modified. Call ``raise_for_status()`` to turn a
        failure into :class:`~pets.IntegrityError`.
    """
    p = Path(path)
    if public_key is None:
        keyring: dict[str, Any] | None = None
    else:
        many: list[Any] = (list(public_key) if isinstance(public_key, list | tuple)
                           else [public_key])
        if not many:
            raise InputError("give at least one public key")
        keyring = {key_id_of(k): k for k in (load_public_key(x) for x in many)}
    if expect_head is not None:
        head_seq, head_hash = int(expect_head[0]), str(expect_head[1]).lower()
        if head_seq < 0 or len(head_hash) < 16 or len(head_hash) > 64 or any(
                c not in "0123456789abcdef" for c in head_hash):
            raise InputError("expected head must be SEQ and at least 16 hex digits of its hash")
    lines = _Lines(p)
    it = iter(lines)
    prev, seq = GENESIS_HASH, 0
    lineno = 0
    for lineno, raw in enumerate(it, start=1):
        bad = _check_entry(raw, seq, prev, keyring)
        if bad is None:
            digest = str(json.loads(raw)["hash"])
            if expect_head is not None and seq == head_seq and not digest.startswith(head_hash):
                bad = (seq, "differs from the head noted earlier (the log was rewritten)")
        if bad is not None:
            written_seq, reason = bad
            for _ in it:  # read on, only to learn whether the tail is torn
                pass
            return VerifyReport(str(p), False, seq, seq - 1 if seq else None, prev,
                                keyring is not None, BadEntry(lineno, written_seq, reason),
                                lines.torn)
        prev = digest
        seq += 1
    if expect_head is not None and seq <= head_seq:
        cut = BadEntry(lineno + 1, None, f"the log ends before the noted head seq {head_seq} "
                                         "(entries were cut)")
        return VerifyReport(str(p), False, seq, seq - 1 if seq else None, prev,
                            keyring is not None, cut, lines.torn)
    return VerifyReport(str(p), True, seq, seq - 1 if seq else None, prev, keyring is not None,
                        None, lines.torn)


def _check_entry(raw: bytes, seq: int, prev: str,
                 keyring: Mapping[str, Any] | None) -> tuple[int | None, str] | None:
    try:
        entry = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, "not a JSON entry"
    if not isinstance(entry, dict) or any(k not in entry for k in _REQUIRED):
        return None, "not an audit entry (missing fields)"
    written = entry["seq"] if isinstance(entry["seq"], int) else None
    if set(entry) - set(_REQUIRED):
        return written, "unexpected fields"
    if entry["seq"] != seq:
        return written, f"expected seq {seq}"
    if entry["prev_hash"] != prev:
        return written, "prev_hash does not chain to the previous entry"
    try:
        canonical = canonical_json(entry) == raw
    except InputError:
        canonical = False
    if not canonical:
        return written, "not in canonical form (edited)"
    if _entry_hash(entry) != entry["hash"]:
        return written, "hash does not match the entry's content (edited)"
    if keyring is not None:
        pub = keyring.get(entry["signer"]) if isinstance(entry["signer"], str) else None
        if pub is None or not isinstance(entry["sig"], str):
            return written, "not signed by this key"
        try:
            sig = base64.b64decode(entry["sig"], validate=True)
        except (binascii.Error, ValueError):
            return written, "malformed signature"
        if base64.b64encode(sig).decode() != entry["sig"]:  # non-zero padding bits
            return written, "malformed signature"
        if not verify_signature(pub, _SIG_DOMAIN + bytes.fromhex(entry["hash"]), sig):
            return written, "bad signature"
    return None


def read_entries(source: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse the whole entries of a log (the torn tail, if any, is skipped).

    Raises:
        InputError: A whole line is not JSON (run :func:`verify_log` to find out more).
    """
    p = Path(source)
    lines = _Lines(p)
    out = []
    for i, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{p}: line {i} is not JSON; run `pets audit verify`") from None
        if not isinstance(entry, dict):
            raise InputError(f"{p}: line {i} is not an audit entry")
        out.append(entry)
    return out


def _entries(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]
             ) -> Iterator[Mapping[str, Any]]:
    if isinstance(source, str | os.PathLike):
        yield from read_entries(source)
    else:
        yield from source


FLOW_COLUMNS = ["seq", "at", "actor", "destination", "output", "name", "columns",
                "protection", "rows", "digest", "epsilon", "delta", "rho", "path"]
INCIDENT_COLUMNS = ["seq", "at", "actor", "kind", "target", "destination", "reason"]


def flows(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """What left the jurisdiction: one row per ``boundary.export`` entry.

    Columns: ``seq``, ``at``, ``actor``, ``destination``, ``output`` (``table`` or
    ``dp_release``), ``name`` (dataset or release), ``columns``, ``protection`` (column:
    treatment, …), ``rows``, ``digest`` (SHA-256 of what left), the privacy budget a DP release
    spent (``epsilon``, ``delta``, ``rho``) and ``path``.

    Examples:
        >>> table = flows([{"seq": 4, "kind": "boundary.export", "fields": {
        ...     "destination": "US", "output": "table", "name": "users", "rows": 10,
        ...     "columns": ["user_id"], "treatments": {"user_id": "keyed-hash"}}}])
        >>> table[["destination", "output", "rows", "protection"]].to_dict("records")
        [{'destination': 'US', 'output': 'table', 'rows': 10, 'protection': 'user_id:keyed-hash'}]
    """
    import pandas as pd

    rows = []
    for e in _entries(source):
        if e.get("kind") != "boundary.export":
            continue
        f = e.get("fields", {})
        treatments = f.get("treatments") or {}
        budget = f.get("budget") or {}
        rows.append({
            "seq": e.get("seq"), "at": e.get("at"), "actor": e.get("actor"),
            "destination": f.get("destination"), "output": f.get("output"),
            "name": f.get("name"), "columns": ", ".join(f.get("columns") or []),
            "protection": ", ".join(f"{c}:{treatments[c]}" for c in (f.get("columns") or [])
                                    if c in treatments),
            "rows": f.get("rows"), "digest": f.get("digest"),
            "epsilon": budget.get("epsilon"), "delta": budget.get("delta"),
            "rho": budget.get("rho"), "path": f.get("path"),
        })
    return pd.DataFrame(rows, columns=FLOW_COLUMNS)


def is_incident(kind: str) -> bool:
    """Refusals and failures: kinds ending in ``.refused``, ``.denied`` or ``.failed`` (or
    ``_refused``, as ``key.rewrap_refused``), or starting with ``incident``; plus
    ``audit.repaired`` (a crashed writer).

    Examples:
        >>> [is_incident(k) for k in ("boundary.refused", "key.rewrap_refused", "key.unwrap")]
        [True, True, False]
    """
    return kind.endswith((".refused", "_refused", ".denied", ".failed")) or kind.startswith(
        "incident") or kind == "audit.repaired"


def incidents(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Refusals and other incidents: one row per entry for which :func:`is_incident` holds.

    Columns: ``seq``, ``at``, ``actor``, ``kind``, ``target`` (dataset, key or path),
    ``destination`` and ``reason``.

    Examples:
        >>> table = incidents([
        ...     {"seq": 0, "kind": "boundary.protect", "fields": {}},
        ...     {"seq": 1, "kind": "key.refused", "actor": "bob@US",
        ...      "fields": {"key": "local://eu/kek", "jurisdiction": "US", "operation": "unwrap"}}])
        >>> table[["seq", "actor", "kind", "target"]].to_dict("records")
        [{'seq': 1, 'actor': 'bob@US', 'kind': 'key.refused', 'target': 'local://eu/kek'}]
    """
    import pandas as pd

    rows = []
    for e in _entries(source):
        kind = str(e.get("kind", ""))
        if not is_incident(kind):
            continue
        f = e.get("fields", {})
        target = f.get("target") or f.get("key") or f.get("dataset") or f.get("name") or ""
        reason = f.get("reason") or f.get("operation") or ""
        if kind == "audit.repaired":
            reason = f"cut {f.get('torn_bytes')} torn bytes of an interrupted write"
        rows.append({
            "seq": e.get("seq"), "at": e.get("at"), "actor": e.get("actor"), "kind": kind,
            "target": target, "destination": f.get("destination") or f.get("jurisdiction") or "",
            "reason": reason,
        })
    return pd.DataFrame(rows, columns=INCIDENT_COLUMNS)

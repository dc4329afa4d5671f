"""The key-level half of a migration between key services: target checks, a journal, a view.

Moving every item that depends on some KEKs (the *sources*) to another KEK (the *target*) —
local keyring → OpenBao, one data centre's OpenBao → another's — is planned and run by
:mod:`pets.boundary._migrate`, which knows envelopes, Parquet files and the boundary's own key
files. What it needs from the keys layer lives here, and needs nothing above it:

* :func:`check_migration_target`: the target must exist, and a target of *another
  jurisdiction* than a source is refused (:class:`~pets.JurisdictionError`) unless the caller
  allows it on purpose — it changes where the data may be decrypted;
* :class:`MigrationJournal`: an append-only JSON-lines file, each line ``fsync``'d before the
  step it records is taken, so a run killed at any instant (``kill -9``) can be resumed with
  nothing done twice and nothing lost;
* :func:`without_keys`: a registry that refuses the source KEKs, to prove that every migrated
  item opens without them (before they are crypto-shredded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pets._errors import InputError, IntegrityError, JurisdictionError, KeyNotFoundError
from pets._events import AuditHook, emit
from pets.jurisdiction import Context
from pets.keys._service import KeyInfo, KeyService, KeyServices, WrappedKey, parse_key_uri

__all__ = ["MigrationJournal", "check_migration_target", "without_keys"]


def check_migration_target(services: KeyServices, sources: Sequence[str], target: str, *,
                           allow_jurisdiction_change: bool = False,
                           context: Context | None = None,
                           audit: AuditHook | None = None) -> dict[str, str]:
    """Check that ``target`` may receive what is wrapped under ``sources``.

    Returns:
        ``{uri: jurisdiction}`` of every source and of the target (from the key services:
        authenticated metadata, not a file's claim).

    Raises:
        InputError: ``target`` is also a source, or no source is given.
        KeyNotFoundError: No service holds ``target`` (create it first).
        JurisdictionError: ``target`` belongs to another jurisdiction than a source and
            ``allow_jurisdiction_change`` is False (reported as ``key.migrate_refused``).

    Examples:
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring()
        >>> for uri, jur in (("memory://eu/a", "EU"), ("memory://eu/b", "EU"),
        ...                  ("memory://us/c", "US")):
        ...     _ = ring.create(uri, jurisdiction=jur)
        >>> check_migration_target(KeyServices([ring]), ["memory://eu/a"], "memory://eu/b")
        {'memory://eu/a': 'EU', 'memory://eu/b': 'EU'}
        >>> check_migration_target(KeyServices([ring]), ["memory://eu/a"], "memory://us/c")
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: migrating memory://eu/a (EU) to memory://us/c (US) moves the data to another jurisdiction; refused (--allow-jurisdiction-change does it on purpose, and is logged)
    """
    if not sources:
        raise InputError("a migration needs at least one source KEK (--from)")
    parse_key_uri(target)
    if target in sources:
        raise InputError(f"{target} is both a source and the target of the migration")
    out: dict[str, str] = {}
    for uri in sources:
        parse_key_uri(uri)
        try:
            out[uri] = services.for_uri(uri).describe(uri).jurisdiction
        except KeyNotFoundError:
            out[uri] = ""  # destroyed already, or its service is gone: verify will say
    try:
        target_info: KeyInfo = services.for_uri(target).describe(target)
    except KeyNotFoundError:
        raise KeyNotFoundError(f"migration target {target} does not exist: create it first "
                               f"(pets keys create {target} --jurisdiction <CODE>)") from None
    out[target] = target_info.jurisdiction
    for uri in sources:
        if out[uri] and out[uri] != target_info.jurisdiction and not allow_jurisdiction_change:
            emit(audit, "key.migrate_refused", key=uri, target=target,
                 key_jurisdiction=out[uri], target_jurisdiction=target_info.jurisdiction,
                 principal=context.principal if context else None,
                 jurisdiction=context.jurisdiction if context else None)
            raise JurisdictionError(
                f"migrating {uri} ({out[uri]}) to {target} ({target_info.jurisdiction}) moves "
                "the data to another jurisdiction; refused (--allow-jurisdiction-change does "
                "it on purpose, and is logged)")
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MigrationJournal:
    """An append-only, ``fsync``'d JSON-lines journal of one migration run.

    Each :meth:`record` writes one line ``{"item": ..., "step": ..., ...}`` and ``fsync``s the
    file (and, when the file is new, its directory) before returning: once ``record`` returns,
    a crash cannot lose the line. A torn last line (the process killed mid-write) is ignored on
    reading; every earlier line must parse, or the journal is refused
    (:class:`~pets.IntegrityError`).

    Examples:
        >>> import tempfile, pathlib
        >>> j = MigrationJournal(pathlib.Path(tempfile.mkdtemp()) / "run.journal")
        >>> j.record("a.pets", "begin", before="00")
        >>> j.record("a.pets", "done", after="00")
        >>> j.steps()["a.pets"]
        ['begin', 'done']
        >>> j.last("a.pets")["after"]
        '00'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # (item, step) -> last entry, read once and kept up to date by record(): last() was
        # a re-read of the whole journal, twice per item (quadratic in the plan's size)
        self._index: dict[tuple[str, str | None], dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"MigrationJournal({str(self.path)!r})"

    def _indexed(self) -> dict[tuple[str, str | None], dict[str, Any]]:
        if self._index is None:
            index: dict[tuple[str, str | None], dict[str, Any]] = {}
            for e in self.entries():
                index[(str(e["item"]), str(e["step"]))] = e
                index[(str(e["item"]), None)] = e
            self._index = index
        return self._index

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every complete entry, in order."""
        if not self.path.exists():
            return
        lines = self.path.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or "item" not in entry or "step" not in entry:
                    raise ValueError
            except ValueError:
                if i == len(lines) - 1:
                    return  # a torn last line: the process died while writing it
                raise IntegrityError(f"migration journal {self.path}: line {i + 1} is "
                                     "corrupted") from None
            yield entry

    def steps(self) -> dict[str, list[str]]:
        """``{item: [step, ...]}`` in journal order."""
        out: dict[str, list[str]] = {}
        for e in self.entries():
            out.setdefault(str(e["item"]), []).append(str(e["step"]))
        return out

    def last(self, item: str, step: str | None = None) -> dict[str, Any] | None:
        """The last entry of ``item`` (of ``step`` when given)."""
        return self._indexed().get((item, step))

    def record(self, item: str, step: str, **fields: Any) -> None:
        """Append one entry and make it durable before returning."""
        new = not self.path.exists()
        line = json.dumps({"item": item, "step": step, **fields}, sort_keys=True,
                          separators=(",", ":")) + "\n"
        if not new and self.path.stat().st_size:
            with open(self.path, "rb") as fh:  # after a torn line, start on a fresh one
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _fsync_dir(self.path.parent)
        if self._index is not None:
            entry = {"item": item, "step": step, **fields}
            self._index[(item, step)] = entry
            self._index[(item, None)] = entry


class _Without:
    """A key service that does not serve some URIs (they look absent)."""

    def __init__(self, service: KeyService, excluded: frozenset[str]) -> None:
        self._svc = service
        self._excluded = excluded
        self.audit = getattr(service, "audit", None)

    def __repr__(self) -> str:
        return f"without({self._svc!r}, {sorted(self._excluded)})"

    def supports(self, uri: str) -> bool:
        return uri not in self._excluded and self._svc.supports(uri)

    def _check(self, uri: str) -> None:
        if uri in self._excluded:
            raise KeyNotFoundError(f"{uri} is excluded (a migration source)")

    def create(self, uri: str, *, jurisdiction: str) -> KeyInfo:
        self._check(uri)
        return self._svc.create(uri, jurisdiction=jurisdiction)

    def wrap(self, uri: str, dek: bytes, *, context: Context,
             enc_context: Mapping[str, str] | None = None) -> WrappedKey:
        self._check(uri)
        return self._svc.wrap(uri, dek, context=context, enc_context=enc_context)

    def unwrap(self, wrapped: WrappedKey, *, context: Context,
               enc_context: Mapping[str, str] | None = None) -> bytes:
        self._check(wrapped.key_uri)
        return self._svc.unwrap(wrapped, context=context, enc_context=enc_context)

    def rotate(self, uri: str) -> KeyInfo:
        self._check(uri)
        return self._svc.rotate(uri)

    def retire(self, uri: str, min_decryption_version: int) -> KeyInfo:
        self._check(uri)
        return self._svc.retire(uri, min_decryption_version)

    def destroy(self, uri: str, version: int | None = None) -> KeyInfo:
        self._check(uri)
        return self._svc.destroy(uri, version)

    def describe(self, uri: str) -> KeyInfo:
        self._check(uri)
        return self._svc.describe(uri)

    def list(self) -> list[KeyInfo]:
        return [i for i in self._svc.list() if i.uri not in self._excluded]


def without_keys(services: KeyServices, uris: Iterable[str]) -> KeyServices:
    """A registry over the same backends that acts as if the KEKs ``uris`` did not exist.

    Used to prove that migrated items no longer need their old KEKs: whatever opens through
    it would still open after those KEKs are destroyed.

    Examples:
        >>> from pets import Context
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/old", jurisdiction="EU")
        >>> w = ring.wrap("memory://eu/old", b"k" * 32, context=Context("EU"))
        >>> without_keys(KeyServices([ring]), ["memory://eu/old"]).unwrap(
        ...     w, context=Context("EU"))
        Traceback (most recent call last):
        ...
        pets._errors.KeyNotFoundError: no key service supports memory://eu/old
    """
    excluded = frozenset(uris)
    return KeyServices([_Without(s, excluded) for s in services], audit=services.audit)

"""The small interface every pseudonymizer and generalizer shares, and keyed-key plumbing.

Every transform is a small object with

* ``name`` — a short kebab-case name such as ``"keyed-hash"``;
* ``reversible`` — whether a holder of the key can undo it (``reverse``);
* ``links`` — what equal outputs reveal (deterministic transforms link equal inputs);
* ``apply(series) -> series`` — the transform itself, vectorized;
* ``describe() -> dict`` — JSON-able parameters for a manifest, never secrets.

Keyed transforms derive a *domain key* from a 32-byte root secret with HKDF-SHA256, with the
transform's purpose and the domain in HKDF's ``info``; the same identifier in two domains (or
under two transforms) gives unlinkable outputs. A keyed transform holds its domain key only, in a
:class:`~pets.keys.Secret`: it cannot be pickled and its ``repr`` shows no key material.

Examples:
    >>> from pets.keys import Secret
    >>> root = Secret(bytes(32))
    >>> k1 = derive_domain_key(root, "keyed-hash", "crm")
    >>> k2 = derive_domain_key(root, "keyed-hash", "billing")
    >>> len(k1), k1 == k2
    (32, False)
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, TypeVar

import pandas as pd
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pets._errors import InputError, JurisdictionError
from pets._events import AuditHook, emit
from pets.jurisdiction import Context
from pets.keys import KeyServices, Secret, WrappedKey

__all__ = [
    "KeyOrigin",
    "KeyedTransform",
    "Transform",
    "WorkerKeyRef",
    "derive_domain_key",
]

ROOT_SECRET_BYTES = 32
MAX_DOMAIN_BYTES = 256
_HKDF_SALT = b"pets/pseudo/v1"

K = TypeVar("K", bound="KeyedTransform")


def _check_domain(domain: str) -> bytes:
    if not isinstance(domain, str) or not domain:
        raise InputError("domain must be a non-empty string")
    raw = domain.encode("utf-8")
    if len(raw) > MAX_DOMAIN_BYTES or "\x00" in domain:
        raise InputError(f"domain must be at most {MAX_DOMAIN_BYTES} UTF-8 bytes without NUL")
    return raw


def derive_domain_key(root: Secret, purpose: str, domain: str, *, length: int = 32) -> Secret:
    """Derive the key of one (purpose, domain) pair from a root secret with HKDF-SHA256.

    ``info`` is ``b"pets/pseudo/v1/" + purpose + b"\\x00" + domain`` (UTF-8). NUL is refused
    in both, so distinct (purpose, domain) pairs give distinct ``info`` and independent keys.
    The length is not part of ``info`` (HKDF outputs of one ``info`` are prefixes of each
    other), so each purpose is used with one length only (its transform's ``key_length``).

    Args:
        root: The 32-byte root secret (a DEK unwrapped from an EU key service).
        purpose: The transform name, e.g. ``"keyed-hash"``, ``"token"``, ``"ff1"``.
        domain: The linkage domain, e.g. ``"crm.users"``.
        length: Output length in bytes.

    Raises:
        InputError: The root secret is not 32 bytes, the purpose is not 1..64 ASCII
            characters without NUL, or the domain is empty, too long or contains NUL.
    """
    if not isinstance(root, Secret) or len(root) != ROOT_SECRET_BYTES:
        raise InputError(f"root secret must be a pets.keys.Secret of {ROOT_SECRET_BYTES} bytes")
    if (not isinstance(purpose, str) or not purpose or not purpose.isascii()
            or "\x00" in purpose or len(purpose) > 64):
        raise InputError("purpose must be 1..64 ASCII characters without NUL")
    # Neither part may contain NUL, so info splits back into (purpose, domain) one way only.
    info = b"pets/pseudo/v1/" + purpose.encode("ascii") + b"\x00" + _check_domain(domain)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT, info=info)
    return Secret(hkdf.derive(root.expose()))


def is_dask_object(obj: object) -> bool:
    """True for a ``dask.dataframe`` object; imports nothing until dask itself is loaded.

    Examples:
        >>> is_dask_object(pd.Series([1]))
        False
    """
    if "dask.dataframe" not in sys.modules:  # no Dask object can exist yet
        return False
    from pets.engines._dask import is_dask

    return is_dask(obj)


def _dask_aware(apply: Callable[..., pd.Series]) -> Callable[..., pd.Series]:
    """Wrap a subclass's ``apply`` so that a Dask Series goes to the Dask engine, lazily.

    The pandas path is untouched: the check costs one ``sys.modules`` lookup until
    ``dask.dataframe`` has been imported (no Dask object can exist before that).
    """

    @functools.wraps(apply)
    def apply_any(self: Transform, series: Any, *args: Any, **kwargs: Any) -> pd.Series:
        if is_dask_object(series):
            from pets.engines._dispatch import apply_series

            out: pd.Series = apply_series(self, series, *args, **kwargs)
            return out
        return apply(self, series, *args, **kwargs)

    apply_any._pets_dask_aware = True  # type: ignore[attr-defined]
    return apply_any


def _pandas_only(reverse: Callable[..., pd.Series]) -> Callable[..., pd.Series]:
    """Wrap ``reverse`` so that a Dask Series is refused clearly (not computed to count rows)."""

    @functools.wraps(reverse)
    def reverse_pandas(self: KeyedTransform, series: Any, *args: Any, **kwargs: Any
                       ) -> pd.Series:
        if is_dask_object(series):
            raise InputError(f"{self.name}: re-identification takes a pandas Series (each call "
                             "is audited with its row count); compute the rows to re-identify "
                             "first, in the key's jurisdiction")
        return reverse(self, series, *args, **kwargs)

    reverse_pandas._pets_dask_aware = True  # type: ignore[attr-defined]
    return reverse_pandas


class Transform:
    """Base of every transform: ``apply(series) -> series`` plus a self-description.

    Subclasses set the class attributes ``name``, ``reversible`` and ``links`` and implement
    :meth:`apply` and :meth:`params`.

    Accepts a Dask Series: every subclass's ``apply`` given a ``dask.dataframe`` Series
    returns a Dask Series, lazily (``map_partitions`` with an explicit ``meta``), identical to
    pandas on the same rows. Keyed transforms reach the partitions through an in-process key
    reference (refused while a ``distributed`` client is active: use
    :func:`~pets.pseudo.pseudonymize` with ``keys=``); see :mod:`pets.engines._dispatch`.
    ``reverse`` (re-identification, audited per call) takes pandas only.
    """

    name: ClassVar[str] = "transform"
    reversible: ClassVar[bool] = False
    links: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("apply")
        if callable(own) and not getattr(own, "_pets_dask_aware", False):
            cls.apply = _dask_aware(own)  # type: ignore[method-assign]
        rev = cls.__dict__.get("reverse")
        if callable(rev) and not getattr(rev, "_pets_dask_aware", False):
            cls.reverse = _pandas_only(rev)  # type: ignore[attr-defined]

    def apply(self, series: pd.Series) -> pd.Series:  # pragma: no cover - abstract
        """Transform a column; the index and name are kept."""
        raise NotImplementedError

    def __call__(self, series: pd.Series) -> pd.Series:
        return self.apply(series)

    def params(self) -> dict[str, Any]:
        """JSON-able parameters (never secrets)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What a manifest records about this transform: JSON-able, never secrets."""
        return {"name": self.name, "reversible": self.reversible, "links": self.links,
                **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True)
class KeyOrigin:
    """Where a keyed transform's root secret came from (public facts only)."""

    key_uri: str | None = None
    key_version: int | None = None
    jurisdiction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key_uri": self.key_uri, "key_version": self.key_version,
                "jurisdiction": self.jurisdiction}


@dataclass(frozen=True, repr=False)
class WorkerKeyRef:
    """What a (Dask) worker needs to rebuild one keyed transform: the *domain* key only.

    The root secret never travels: a worker holding this reference can pseudonymize (and, for
    reversible transforms, reverse) within this one domain and nothing else. It *is* picklable
    — that is its purpose — so ship it only to workers inside the key's jurisdiction; its
    ``repr`` hides the key. Rebuild with :meth:`build`.

    Examples:
        >>> import pickle, pandas as pd
        >>> from pets.pseudo import KeyedHash
        >>> h = KeyedHash(Secret(bytes(32)), domain="crm")
        >>> ref = pickle.loads(pickle.dumps(h.worker_ref()))   # what a task graph carries
        >>> ref
        WorkerKeyRef(kind='keyed-hash', domain='crm', domain_key=<32 bytes>)
        >>> s = pd.Series(["ann"])
        >>> ref.build().apply(s).equals(h.apply(s))
        True
    """

    kind: str
    domain: str
    domain_key: bytes = field(repr=False)
    params: Mapping[str, Any] = field(default_factory=dict)
    origin: KeyOrigin = field(default_factory=KeyOrigin)

    def __repr__(self) -> str:
        return (f"WorkerKeyRef(kind={self.kind!r}, domain={self.domain!r}, "
                f"domain_key=<{len(self.domain_key)} bytes>)")

    def build(self, *, audit: AuditHook | None = None) -> KeyedTransform:
        """Rebuild the transform on the worker (``audit`` receives its re-identification events)."""
        from pets.pseudo._registry import keyed_class

        cls = keyed_class(self.kind)
        return cls._from_domain_key(Secret(self.domain_key), domain=self.domain,
                                    origin=self.origin, audit=audit, **dict(self.params))


class KeyedTransform(Transform):
    """A transform keyed by a domain key derived from a root secret.

    Subclasses set ``purpose`` (the HKDF purpose label) and ``key_length`` and implement
    :meth:`_configure` (non-key parameters), :meth:`params` and :meth:`apply`. Build them with
    the constructor (raw root secret), :meth:`from_key` (unwrap through a key service),
    :meth:`from_root` or :meth:`from_domain_key`.
    """

    purpose: ClassVar[str] = "keyed"
    key_length: ClassVar[int] = 32

    _key: Secret
    domain: str
    origin: KeyOrigin
    audit: AuditHook | None

    def __init__(self, secret: Secret, *, domain: str, jurisdiction: str | None = None,
                 audit: AuditHook | None = None) -> None:
        key = derive_domain_key(secret, self.purpose, domain, length=self.key_length)
        self._init_key(key, domain, KeyOrigin(jurisdiction=_jur(jurisdiction)), audit)

    def _init_key(self, key: Secret, domain: str, origin: KeyOrigin,
                  audit: AuditHook | None) -> None:
        _check_domain(domain)
        if len(key) != self.key_length:
            raise InputError(f"{self.name}: domain key must be {self.key_length} bytes")
        self._key = key
        self.domain = domain
        self.origin = origin
        self.audit = audit

    @classmethod
    def _from_domain_key(cls: type[K], key: Secret, *, domain: str,
                         origin: KeyOrigin | None = None, audit: AuditHook | None = None,
                         **kw: Any) -> K:
        obj = cls.__new__(cls)
        obj._configure(**kw)
        obj._init_key(key, domain, origin or KeyOrigin(), audit)
        return obj

    def _configure(self, **kw: Any) -> None:
        """Set non-key parameters (subclasses override; called before the key is set)."""
        if kw:
            raise InputError(f"{self.name}: unknown parameters {sorted(kw)}")

    @classmethod
    def from_key(cls: type[K], services: KeyServices, wrapped: WrappedKey, *, context: Context,
                 domain: str, audit: AuditHook | None = None, **kw: Any) -> K:
        """Unwrap the root secret through the key service and build the transform.

        The key service refuses (JurisdictionError) outside the key's jurisdiction. The key's
        URI, version and jurisdiction are recorded (see :meth:`describe`) and bound to
        ``reverse``.
        """
        root = Secret(services.unwrap(wrapped, context=context))
        origin = KeyOrigin(wrapped.key_uri, wrapped.version, wrapped.jurisdiction)
        return cls.from_root(root, domain=domain, origin=origin, audit=audit, **kw)

    @classmethod
    def from_root(cls: type[K], root: Secret, *, domain: str, origin: KeyOrigin,
                  audit: AuditHook | None = None, **kw: Any) -> K:
        """Build from an already unwrapped root secret whose origin is known (one unwrap,
        many columns)."""
        key = derive_domain_key(root, cls.purpose, domain, length=cls.key_length)
        return cls._from_domain_key(key, domain=domain, origin=origin, audit=audit, **kw)

    @classmethod
    def from_domain_key(cls: type[K], key: Secret, *, domain: str,
                        jurisdiction: str | None = None, audit: AuditHook | None = None,
                        **kw: Any) -> K:
        """Build from an already-derived domain key (e.g. on a worker)."""
        return cls._from_domain_key(key, domain=domain,
                                    origin=KeyOrigin(jurisdiction=_jur(jurisdiction)),
                                    audit=audit, **kw)

    def worker_ref(self) -> WorkerKeyRef:
        """A picklable reference holding only this domain's key (see :class:`WorkerKeyRef`)."""
        return WorkerKeyRef(self.name, self.domain, self._key.expose(), self.config(),
                            self.origin)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (besides keys) that rebuild this transform."""
        return self.params()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "domain": self.domain, **self.origin.to_dict()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        sep = ", " if args else ""
        return f"{type(self).__name__}(domain={self.domain!r}{sep}{args}, key=<hidden>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds a key and cannot be pickled: "
                        "send worker_ref() to EU workers instead")

    # -- re-identification guard shared by reversible transforms ---------------------------

    def _check_reverse(self, context: Context, rows: int) -> None:
        where = self.origin.jurisdiction
        if where is None or context.jurisdiction != where:
            emit(self.audit, "pseudo.reidentify", transform=self.name, domain=self.domain,
                 key=self.origin.key_uri, key_jurisdiction=where,
                 jurisdiction=context.jurisdiction, principal=context.principal, rows=rows,
                 outcome="refused")
            reason = ("the key has no recorded jurisdiction (build it with from_key or "
                      "jurisdiction=...)" if where is None else f"the key belongs to {where}")
            raise JurisdictionError(
                f"{self.name} re-identification refused for {context.access_token}: {reason}")

    def _report_reverse(self, context: Context, rows: int, nulls: int, outcome: str) -> None:
        emit(self.audit, "pseudo.reidentify", transform=self.name, domain=self.domain,
             key=self.origin.key_uri, key_jurisdiction=self.origin.jurisdiction,
             jurisdiction=context.jurisdiction, principal=context.principal, rows=rows,
             nulls=nulls, outcome=outcome)


def _jur(code: str | None) -> str | None:
    return None if code is None else Context(code).jurisdiction

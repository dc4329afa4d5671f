"""Whole-frame pseudonymization and the text form of a transform (``"keyed-hash:crm"``).

Spec grammar, used by the CLI and by policies::

    NAME[:DOMAIN-OR-ARGUMENT][:OPTION=VALUE ...][:FLAG ...]

========================  ===================================================================
``keyed-hash:DOMAIN``     :class:`KeyedHash`; options ``encoding=hex128|hex256|base32|base64url``,
                          flags ``casefold``, ``strip``
``token:DOMAIN``          :class:`Tokenizer`; flags ``casefold``, ``strip``
``ff1:DOMAIN``            :class:`FF1Transform`; option ``alphabet=...`` (default digits)
``ff1-phone:DOMAIN``      :class:`PhoneFF1` (E.164)
``date-shift:DOMAIN``     :class:`DateShift`; options ``by=COLUMN`` (required), ``max_days=N``
``bucket``                :class:`Bucket`; ``width=N`` | ``edges=A/B/C`` | ``quantiles=N``
``top-bottom-code``       :class:`TopBottomCode`; ``lower=N``, ``upper=N``
``truncate-date:UNIT``    :class:`TruncateDate`; year | month | week | day | hour
``age-band:REFERENCE``    :class:`AgeBand`; ``width=N``, ``top=N``
``postcode-prefix:N``     :class:`PostcodePrefix`; ``fill=C``
``ip-prefix``             :class:`IPPrefix`; ``v4=N``, ``v6=N``
``mask:N``                :class:`Mask` keeping the last N characters; ``char=C``
``suppress``              :class:`Suppress`
========================  ===================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast, overload

import pandas as pd

from pets._errors import InputError
from pets._events import AuditHook
from pets.keys import Secret
from pets.pseudo._base import KeyedTransform, KeyOrigin, Transform, is_dask_object
from pets.pseudo._ff1 import FF1Transform, PhoneFF1
from pets.pseudo._generalize import (
    AgeBand,
    Bucket,
    DateShift,
    IPPrefix,
    Mask,
    PostcodePrefix,
    Suppress,
    TopBottomCode,
    TruncateDate,
)
from pets.pseudo._keyed import KeyedHash
from pets.pseudo._token import Tokenizer

if TYPE_CHECKING:
    import dask.dataframe as dd

    from pets.engines import WorkerKeys

__all__ = ["parse_spec", "pseudonymize", "transform_from_spec"]

_KEYED: dict[str, type[KeyedTransform]] = {
    c.name: c for c in (KeyedHash, Tokenizer, FF1Transform, PhoneFF1, DateShift)
}
_FLAGS = {"casefold", "strip"}


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str | bool]]:
    """Split ``"name:arg:opt=v:flag"`` into ``(name, arg, options)``.

    Examples:
        >>> parse_spec("keyed-hash:crm:encoding=base32:casefold")
        ('keyed-hash', 'crm', {'encoding': 'base32', 'casefold': True})
        >>> parse_spec("bucket:width=10")
        ('bucket', None, {'width': '10'})
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("empty transform spec")
    name, *parts = spec.strip().split(":")
    arg: str | None = None
    opts: dict[str, str | bool] = {}
    for i, part in enumerate(parts):
        if "=" in part:
            k, _, v = part.partition("=")
            opts[k.strip().replace("-", "_")] = v.strip()
        elif part in _FLAGS:
            opts[part] = True
        elif i == 0:
            arg = part
        else:
            raise InputError(f"transform spec {spec!r}: unexpected part {part!r}")
    return name.strip(), arg, opts


def _int(opts: dict[str, Any], key: str, spec: str) -> None:
    if key in opts:
        try:
            opts[key] = int(opts[key])
        except ValueError:
            raise InputError(f"transform spec {spec!r}: {key} must be an integer") from None


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _flags(opts: dict[str, Any], spec: str) -> None:
    """``casefold`` / ``strip`` given as ``casefold=false`` must not turn them *on*."""
    for key in _FLAGS & set(opts):
        value = opts[key]
        if isinstance(value, str):
            if value.lower() not in _TRUE | _FALSE:
                raise InputError(f"transform spec {spec!r}: {key} must be true or false")
            opts[key] = value.lower() in _TRUE


def _float(opts: dict[str, Any], key: str, spec: str) -> None:
    if key in opts:
        try:
            opts[key] = float(opts[key])
        except ValueError:
            raise InputError(f"transform spec {spec!r}: {key} must be a number") from None


def transform_from_spec(spec: str, *, root: Secret | None = None,
                        origin: KeyOrigin | None = None,
                        audit: AuditHook | None = None) -> Transform:
    """Build a transform from its text form (see the module docstring for the grammar).

    Args:
        spec: e.g. ``"keyed-hash:crm:casefold"`` or ``"mask:4"``.
        root: The unwrapped 32-byte root secret (needed by keyed transforms).
        origin: Where ``root`` came from (key URI, version, jurisdiction), recorded in
            ``describe()`` and bound to ``reverse``.
        audit: Audit hook for re-identification events.

    Examples:
        >>> transform_from_spec("mask:4")
        Mask(keep_last=4, char='*')
        >>> transform_from_spec("keyed-hash:crm", root=Secret(bytes(32)))
        KeyedHash(domain='crm', encoding='hex128', casefold=False, strip=False, key=<hidden>)
    """
    name, arg, opts = parse_spec(spec)
    kw: dict[str, Any] = dict(opts)
    try:
        if name in _KEYED:
            if root is None:
                raise InputError(f"transform {name!r} needs a root secret (--secret)")
            if not arg:
                raise InputError(f"transform spec {spec!r}: give a domain, e.g. {name}:crm")
            _flags(kw, spec)
            if name == "date-shift":
                _int(kw, "max_days", spec)
            if name == "ff1":
                _int(kw, "max_len", spec)
            return _KEYED[name].from_root(root, domain=arg, origin=origin or KeyOrigin(),
                                          audit=audit, **kw)
        if name == "bucket":
            if "edges" in kw:
                kw["edges"] = [float(x) for x in str(kw["edges"]).split("/")]
            _float(kw, "width", spec)
            _float(kw, "origin", spec)
            _int(kw, "quantiles", spec)
            return Bucket(**kw)
        if name == "top-bottom-code":
            _float(kw, "lower", spec)
            _float(kw, "upper", spec)
            return TopBottomCode(**kw)
        if name == "truncate-date":
            return TruncateDate(arg or kw.pop("unit", "month"))  # type: ignore[arg-type]
        if name == "age-band":
            _int(kw, "width", spec)
            _int(kw, "top", spec)
            return AgeBand(arg or kw.pop("reference"), **kw)
        if name == "postcode-prefix":
            return PostcodePrefix(int(arg or kw.pop("keep", 2)), **kw)
        if name == "ip-prefix":
            _int(kw, "v4", spec)
            _int(kw, "v6", spec)
            return IPPrefix(**kw)
        if name == "mask":
            return Mask(int(arg or kw.pop("keep_last", 4)), **kw)
        if name == "suppress":
            return Suppress(arg)
    except TypeError as exc:
        raise InputError(f"transform spec {spec!r}: {exc}") from None
    except (KeyError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"transform spec {spec!r}: missing or bad argument") from None
    known = sorted([*_KEYED, "bucket", "top-bottom-code", "truncate-date", "age-band",
                    "postcode-prefix", "ip-prefix", "mask", "suppress"])
    raise InputError(f"unknown transform {name!r}; one of {known}")


@overload
def pseudonymize(df: pd.DataFrame, transforms: Mapping[str, Transform], *,
                 keys: WorkerKeys | None = None) -> pd.DataFrame: ...


@overload
def pseudonymize(df: dd.DataFrame, transforms: Mapping[str, Transform], *,
                 keys: WorkerKeys | None = None) -> dd.DataFrame: ...


def pseudonymize(df: pd.DataFrame | dd.DataFrame, transforms: Mapping[str, Transform], *,
                 keys: WorkerKeys | None = None) -> pd.DataFrame | dd.DataFrame:
    """Apply one transform per column and return a new frame (other columns untouched).

    :class:`DateShift` transforms read their user column (``by``) from the *input* frame, so
    the user id may itself be pseudonymized in the same call.

    Accepts a Dask DataFrame: the result is a Dask DataFrame, lazily, identical to pandas on
    the same rows (the Dask engine, :func:`pets.engines.dask.pseudonymize`). Keyed transforms
    reach the partitions through ``keys`` (a :class:`~pets.engines.WorkerKeys`); without it,
    through an ephemeral in-process key reference, which is refused while a ``distributed``
    client is active. ``keys`` is ignored for pandas frames.

    Args:
        df: The frame (pandas or Dask).
        transforms: Column name -> transform.
        keys: How keyed transforms' keys reach Dask workers (Dask frames only).

    Raises:
        InputError: A named column is missing; (Dask) a keyed transform has no key reference
            usable by the active scheduler.

    Examples:
        >>> import pandas as pd
        >>> from pets.pseudo import KeyedHash, Mask
        >>> df = pd.DataFrame({"email": ["a@x.eu", "b@x.eu"], "card": ["4111", "5500"]})
        >>> out = pseudonymize(df, {"email": KeyedHash(Secret(bytes(32)), domain="crm"),
        ...                         "card": Mask(keep_last=2)})
        >>> out["card"].tolist(), out["email"].str.len().tolist()
        (['**11', '**00'], [32, 32])
    """
    if is_dask_object(df):
        from pets.engines._dispatch import pseudonymize as dask_pseudonymize

        lazy: dd.DataFrame = dask_pseudonymize(df, transforms, keys=keys)
        return lazy
    return _pseudonymize_pandas(cast(pd.DataFrame, df), transforms)


def _pseudonymize_pandas(df: pd.DataFrame, transforms: Mapping[str, Transform]) -> pd.DataFrame:
    missing = [c for c in transforms if c not in df.columns]
    if missing:
        raise InputError(f"unknown column(s) {missing}; the frame has {list(df.columns)}")
    out = df.copy()
    for col, t in transforms.items():
        if isinstance(t, DateShift):
            if t.by is None or t.by not in df.columns:
                raise InputError(f"column {col!r}: date-shift needs by=<user id column> naming "
                                 "a column of the frame")
            out[col] = t.apply(df[col], by=df[t.by])
        else:
            out[col] = t.apply(df[col])
    return out

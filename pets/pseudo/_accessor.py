"""The ``.pets`` pandas accessor: every transform from a Series or DataFrame.

Registered when :mod:`pets.pseudo` is imported.

Examples:
    >>> import pandas as pd
    >>> import pets.pseudo
    >>> from pets.keys import Secret
    >>> s = pd.Series(["ann@x.eu", "Ann@X.eu "], name="email")
    >>> h = s.pets.keyed_hash(Secret(bytes(32)), domain="crm", casefold=True, strip=True)
    >>> h[0] == h[1]
    True
    >>> pd.Series(["4111111111111111"]).pets.mask(keep_last=4)[0]
    '************1111'
    >>> df = pd.DataFrame({"zip": ["750", "750", "131"]})
    >>> df.pets.anonymity_report(["zip"], k=2).uniques
    1
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pets.jurisdiction import Context
from pets.keys import Secret
from pets.pseudo._anonymity import AnonymityReport, Enforcement, Level, anonymity_report, enforce_k
from pets.pseudo._base import Transform
from pets.pseudo._ff1 import FF1Transform, PhoneFF1
from pets.pseudo._frame import pseudonymize
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

__all__ = ["PetsFrameAccessor", "PetsSeriesAccessor"]


@pd.api.extensions.register_series_accessor("pets")
class PetsSeriesAccessor:
    """``series.pets.<transform>(...)``: build the transform and apply it to this column."""

    def __init__(self, series: pd.Series) -> None:
        self._s = series

    def apply(self, transform: Transform) -> pd.Series:
        """Apply any transform."""
        return transform.apply(self._s)

    def reidentify(self, transform: Tokenizer | FF1Transform, *, context: Context) -> pd.Series:
        """Reverse tokens / FF1 ciphertext (key's jurisdiction only; audited)."""
        return transform.reverse(self._s, context=context)

    def keyed_hash(self, secret: Secret, *, domain: str, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.KeyedHash` (deterministic: links equal values in the domain)."""
        return KeyedHash(secret, domain=domain, **kw).apply(self._s)

    def tokenize(self, secret: Secret, *, domain: str, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.Tokenizer` (deterministic, reversible in the EU)."""
        return Tokenizer(secret, domain=domain, **kw).apply(self._s)

    def ff1(self, secret: Secret, *, domain: str, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.FF1Transform` (format-preserving, deterministic)."""
        return FF1Transform(secret, domain=domain, **kw).apply(self._s)

    def phone_ff1(self, secret: Secret, *, domain: str, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.PhoneFF1` (E.164, keeps country code and length)."""
        return PhoneFF1(secret, domain=domain, **kw).apply(self._s)

    def date_shift(self, secret: Secret, *, domain: str, by: pd.Series, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.DateShift` with the user ids in ``by``."""
        return DateShift(secret, domain=domain, **kw).apply(self._s, by=by)

    def bucket(self, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.Bucket`."""
        return Bucket(**kw).apply(self._s)

    def top_bottom_code(self, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.TopBottomCode`."""
        return TopBottomCode(**kw).apply(self._s)

    def truncate_date(self, unit: Any = "month") -> pd.Series:
        """:class:`~pets.pseudo.TruncateDate`."""
        return TruncateDate(unit).apply(self._s)

    def age_band(self, reference: _dt.date | str, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.AgeBand`."""
        return AgeBand(reference, **kw).apply(self._s)

    def postcode_prefix(self, keep: int = 2, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.PostcodePrefix`."""
        return PostcodePrefix(keep, **kw).apply(self._s)

    def ip_prefix(self, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.IPPrefix`."""
        return IPPrefix(**kw).apply(self._s)

    def mask(self, keep_last: int = 4, **kw: Any) -> pd.Series:
        """:class:`~pets.pseudo.Mask`."""
        return Mask(keep_last, **kw).apply(self._s)

    def suppress(self, value: str | None = None) -> pd.Series:
        """:class:`~pets.pseudo.Suppress`."""
        return Suppress(value).apply(self._s)


@pd.api.extensions.register_dataframe_accessor("pets")
class PetsFrameAccessor:
    """``df.pets.pseudonymize(...)``, ``df.pets.anonymity_report(...)``, ``df.pets.enforce_k(...)``."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._df = frame

    def pseudonymize(self, transforms: Mapping[str, Transform]) -> pd.DataFrame:
        """See :func:`~pets.pseudo.pseudonymize`."""
        return pseudonymize(self._df, transforms)

    def anonymity_report(self, quasi_identifiers: Sequence[str], sensitive: str | None = None,
                         *, k: int = 5) -> AnonymityReport:
        """See :func:`~pets.pseudo.anonymity_report`."""
        return anonymity_report(self._df, quasi_identifiers, sensitive, k=k)

    def enforce_k(self, quasi_identifiers: Sequence[str], k: int,
                  hierarchies: Mapping[str, Sequence[Level]], **kw: Any) -> Enforcement:
        """See :func:`~pets.pseudo.enforce_k`."""
        return enforce_k(self._df, quasi_identifiers, k, hierarchies, **kw)

"""The result of a differentially private query: the one pets object that may leave the EU.

A :class:`Release` holds a long-format pandas DataFrame — one row per (group, statistic) —
with the estimate, a confidence interval at the chosen level, the mechanism, its noise scale
and the privacy it used, plus metadata (query, privacy unit, dataset id, total loss) for the
boundary layer to export and audit. It holds no row of the input data.

Columns of :meth:`Release.to_frame`:

``<group columns>``, ``statistic`` (count, sum, mean, variance, quantile, histogram),
``column`` (measured column, empty for count), ``param`` (quantile level or histogram bin),
``estimate``, ``ci_low``, ``ci_high`` (NaN when no sound interval is available: quantiles),
``mechanism``, ``scale`` (noise scale in the statistic's units; for means and variances the
scale of the numerator), ``epsilon``, ``delta``, ``rho`` (the loss of the measurements this
statistic used — shared measurements such as the count behind a mean appear on both rows, so
these columns do not add up; :attr:`Release.loss` is the total).

The intervals cover the statistic of the *bounded* data (after contribution bounding and
clipping), not of the raw data: bias from clipping is not included.

**Releases are evidence, not objects.** Each release made by a :class:`~pets.dp.Session` has a
random :attr:`Release.release_id`, and its :meth:`Release.digest` (SHA-256 over the table's
values, columns sorted by name, and the canonical JSON of :meth:`Release.metadata`; see
:func:`release_digest`) is recorded in the session's :class:`~pets.dp.Ledger` in the same
transaction as the spend. The export gate recomputes the digest of what it is about to write and
lets the release go only if the ledger it is given holds that id with that digest: a frame
swapped for raw rows, an estimate overwritten, metadata edited on a copy, a ``Release`` built by
hand or made with another ledger are refused. :meth:`Release.postprocess` records its result
as a release derived from a verified parent (no spend); any other change makes a release that
cannot leave.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pets._errors import InputError, IntegrityError
from pets._events import AuditHook, emit
from pets.dp._budget import PrivacyLoss

if TYPE_CHECKING:
    from pets.dp._ledger import Ledger

__all__ = ["Release", "release_digest"]

#: Largest ``|decimals|`` of :meth:`Release.postprocess` (``10.0**decimals`` stays finite and
#: rounding a float64 beyond 15 decimals changes nothing).
MAX_DECIMALS = 15


def new_release_id() -> str:
    """A fresh random release id (128 bits from ``secrets``)."""
    return secrets.token_hex(16)


def _canonical_metadata(metadata: Mapping[str, Any]) -> str:
    """Canonical JSON of release metadata, identical before and after a JSON round trip (the
    Parquet file keeps the metadata as JSON)."""
    plain = json.loads(json.dumps(dict(metadata), default=str))
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def release_digest(frame: pd.DataFrame, metadata: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a release table and its metadata, independent of the file format.

    The table is digested by value (:func:`pets._digest.column_digest`, the boundary's
    manifest digest), its columns sorted by name, with the row count
    (:func:`pets._digest.data_digest`); the metadata as canonical JSON (sorted keys). The same
    release read back from its Parquet file (the ``pets.release`` metadata key) has the same
    digest; any changed value, row, column or metadata field changes it.

    Raises:
        IntegrityError: The table has duplicate column names (no release has).

    Examples:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"estimate": [3.0], "statistic": ["count"]})
        >>> d = release_digest(f, {"release_id": "r1", "loss": {"epsilon": 0.5}})
        >>> d == release_digest(f[["statistic", "estimate"]], {"loss": {"epsilon": 0.5},
        ...                                                     "release_id": "r1"})
        True
        >>> d == release_digest(f.assign(estimate=[4.0]), {"release_id": "r1",
        ...                                                "loss": {"epsilon": 0.5}})
        False
    """
    from pets._digest import column_digest, data_digest

    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise IntegrityError("the release table has duplicate column names")
    order = sorted(range(len(names)), key=lambda i: names[i])
    digests = [(names[i], column_digest(names[i], frame.iloc[:, i])) for i in order]
    h = hashlib.sha256(b"pets.release/1\x00")
    h.update(_canonical_metadata(metadata).encode())
    h.update(b"\x00" + data_digest(len(frame), digests).encode())
    return h.hexdigest()


class _Origin:
    """Where a release was made: its session's ledger and audit hook (for post-processing).

    Shared, never copied: a deep copy of a release keeps the same origin (and ledger).
    """

    __slots__ = ("audit", "ledger")

    def __init__(self, ledger: Ledger, audit: AuditHook | None) -> None:
        self.ledger = ledger
        self.audit = audit

    def __copy__(self) -> _Origin:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _Origin:
        return self

    def derive(self, parent: Release, child: Release) -> None:
        """Record ``child`` (post-processed from ``parent``) if ``parent`` is as recorded."""
        digest = child.digest()
        rec = self.ledger._derive(parent.release_id, parent.digest(), child.release_id,
                                  digest, _canonical_metadata(child.metadata()))
        emit(self.audit, "dp.release", release_id=child.release_id, digest=digest,
             derived_from=parent.release_id, postprocessing=list(child.postprocessing),
             dataset_id=child.dataset_id, privacy_unit=child.privacy_unit,
             epsilon=rec.epsilon, delta=rec.delta, rho=rec.rho,
             columns=[str(c) for c in child.frame.columns], rows=len(child.frame))


@dataclass(frozen=True, eq=False)
class Release:
    """Noisy estimates with intervals and the privacy they cost. Immutable; see module doc.

    Examples:
        >>> import pandas as pd
        >>> from pets.dp import Budget, Session
        >>> df = pd.DataFrame({"user_id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
        >>> r = Session(df, privacy_unit="user_id", budget=Budget.pure(1.0)).query().count(
        ...     ).release(epsilon=0.5)
        >>> list(r.to_frame().columns)[:4]
        ['statistic', 'column', 'param', 'estimate']
        >>> r.loss.epsilon
        0.5
        >>> r.to_dict()["privacy_unit"]
        'user_id'
    """

    frame: pd.DataFrame
    by: tuple[str, ...]
    loss: PrivacyLoss
    dataset_id: str | None
    privacy_unit: str
    level: float
    query: dict[str, Any]
    budget_kind: str
    created_at: str
    postprocessing: tuple[str, ...] = field(default=())
    #: Random id of this release, recorded with its digest in the ledger ("" if not made by
    #: a session: such a release cannot be exported).
    release_id: str = ""
    #: The release this one was post-processed from.
    derived_from: str | None = None
    _origin: _Origin | None = field(default=None, repr=False, compare=False)

    def digest(self) -> str:
        """SHA-256 of the table and metadata as they are *now* (:func:`release_digest`).

        Equal to the digest recorded in the ledger when the release was made unless something
        was changed since.
        """
        return release_digest(self.frame, self.metadata())

    def to_frame(self) -> pd.DataFrame:
        """A copy of the release table."""
        return self.frame.copy()

    def estimates(self) -> pd.DataFrame:
        """The estimates in wide form: one row per group, one column per statistic.

        Examples:
            >>> import pandas as pd
            >>> from pets.dp import Budget, Session
            >>> df = pd.DataFrame({"user_id": list("abcd"), "g": list("xxyy"), "v": [1., 2, 3, 4]})
            >>> s = Session(df, privacy_unit="user_id", budget=Budget.pure(1.0))
            >>> r = s.query(by="g", keys=["x", "y"]).count().mean("v", bounds=(0, 5)).release(
            ...     epsilon=1.0)
            >>> list(r.estimates().columns)
            ['g', 'count', 'mean(v)']
        """
        f = self.frame
        label = f["statistic"] + np.where(f["column"] != "", "(" + f["column"] + ")", "")
        label = label + np.where(f["param"] != "", "[" + f["param"] + "]", "")
        # the same statistic of a column twice (other bounds): "sum(x)", "sum(x)#2", … in query
        # order, never silently one of them
        occ = pd.Series(label, index=f.index).groupby(
            [f[c] for c in self.by] + [pd.Series(label, index=f.index)],
            sort=False, dropna=False).cumcount()
        label = label + np.where(occ > 0, "#" + (occ + 1).astype(str), "")
        wide = f.assign(_label=label)
        if not self.by:
            return wide.set_index("_label")["estimate"].to_frame().T.reset_index(drop=True)
        out = wide.pivot_table(index=list(self.by), columns="_label", values="estimate",
                               sort=False, dropna=False, aggfunc="first")
        order = list(dict.fromkeys(label))
        out = out[order].reset_index()
        out.columns.name = None
        return out

    def metadata(self) -> dict[str, Any]:
        """Everything but the table: what was asked, of which dataset, at what privacy cost."""
        return {"release_id": self.release_id, "derived_from": self.derived_from,
                "dataset_id": self.dataset_id, "privacy_unit": self.privacy_unit,
                "budget_kind": self.budget_kind, "loss": self.loss.as_dict(),
                "level": self.level, "query": self.query, "created_at": self.created_at,
                "postprocessing": list(self.postprocessing)}

    def to_dict(self) -> dict[str, Any]:
        """Metadata plus the table as JSON-able records (NaN → None)."""
        recs = self.frame.astype(object).where(self.frame.notna(), None).to_dict("records")
        return {**self.metadata(), "rows": recs}

    def postprocess(self, *, nonnegative: bool = False, decimals: int | None = None) -> Release:
        """A new release with post-processing applied; privacy is unaffected.

        The new release gets its own id and is recorded in the ledger of the session that made
        this one, as derived from it (no budget is spent) — only if this release still matches
        its own record. A release without a session (built by hand) gives an unrecorded result,
        which the export gate refuses.

        Args:
            nonnegative: Clamp estimates and interval ends of counts and histogram cells (and of
                sums whose lower bound is ≥ 0) at 0. The true value is ≥ 0, so the
                intervals stay valid.
            decimals: Round estimates and interval ends to this many decimals (intervals are
                rounded outwards, so they only widen); an integer in ``[-15, 15]``.

        Raises:
            InputError: ``decimals`` is not an integer in ``[-15, 15]``.
            IntegrityError: This release no longer matches its ledger record.

        Examples:
            >>> import pandas as pd
            >>> from pets.dp import Budget, Session
            >>> df = pd.DataFrame({"user_id": ["a"], "x": [1.0]})
            >>> r = Session(df, privacy_unit="user_id", budget=Budget.pure(1.0)).query(
            ...     ).count().release(epsilon=0.1).postprocess(nonnegative=True)
            >>> bool((r.to_frame()["ci_low"] >= 0).all()), r.postprocessing
            (True, ('nonnegative',))
        """
        if decimals is not None and (isinstance(decimals, bool) or not isinstance(
                decimals, int | np.integer) or abs(int(decimals)) > MAX_DECIMALS):
            raise InputError(f"decimals must be an integer in [-{MAX_DECIMALS}, "
                             f"{MAX_DECIMALS}], got {decimals!r}")
        f = self.frame.copy()
        steps = list(self.postprocessing)
        if nonnegative:
            kinds = f["statistic"]
            mask = kinds.isin(["count", "histogram"])
            sums = kinds.eq("sum")
            if sums.any():
                # a column's sums are clamped only if *every* sum of it has a lower bound
                # >= 0 (the rows do not say which bounds they used)
                sum_aggs = [a for a in self.query.get("aggregates", []) if a["kind"] == "sum"]
                negative = {a["column"] for a in sum_aggs
                            if not (a.get("bounds") and a["bounds"][0] >= 0)}
                cols_ok = {a["column"] for a in sum_aggs} - negative
                mask |= sums & f["column"].isin(cols_ok)
            for c in ("estimate", "ci_low", "ci_high"):
                f.loc[mask, c] = f.loc[mask, c].clip(lower=0)
            steps.append("nonnegative")
        if decimals is not None:
            decimals = int(decimals)
            scale = 10.0**decimals
            f["estimate"] = f["estimate"].round(decimals)
            f["ci_low"] = np.floor(f["ci_low"] * scale) / scale
            f["ci_high"] = np.ceil(f["ci_high"] * scale) / scale
            steps.append(f"round({decimals})")
        child = dataclasses.replace(self, frame=f, postprocessing=tuple(steps),
                                    release_id=new_release_id(),
                                    derived_from=self.release_id or None)
        if self._origin is not None:
            self._origin.derive(self, child)
        return child

    def _summary(self) -> str:
        parts = []
        if self.loss.epsilon:
            parts.append(f"ε={self.loss.epsilon:.4g}")
        if self.loss.delta:
            parts.append(f"δ={self.loss.delta:.3g}")
        if self.loss.rho:
            parts.append(f"ρ={self.loss.rho:.4g}")
        return (f"DP release of {self.dataset_id or '(unnamed dataset)'} per "
                f"{self.privacy_unit!r}: {len(self.frame)} rows, {', '.join(parts)} "
                f"({self.budget_kind}), {self.level:.0%} intervals")

    def __repr__(self) -> str:
        return f"<Release {self._summary()}>"

    def _repr_html_(self) -> str:
        f = self.frame
        shown = f.head(50)
        tbl = shown.to_html(index=False, float_format=lambda v: f"{v:,.4g}", na_rep="n/a",
                            escape=True)
        more = f"<p>… {len(f) - 50} more rows</p>" if len(f) > 50 else ""
        q = self.query
        aggs = ", ".join(html.escape(a["label"]) for a in q.get("aggregates", []))
        notes = (f"<p><b>{html.escape(self._summary())}</b></p>"
                 f"<p>by {html.escape(', '.join(self.by) or '(all rows)')}; keys "
                 f"{html.escape(str(q.get('keys')))}; at most {q.get('max_groups')} group(s) and "
                 f"{q.get('max_rows')} row(s) per group per unit; {aggs}</p>")
        if self.postprocessing:
            notes += f"<p>post-processing: {html.escape(', '.join(self.postprocessing))}</p>"
        return f"<div class='pets-release'>{notes}{tbl}{more}</div>"

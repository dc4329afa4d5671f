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
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pets.dp._budget import PrivacyLoss

__all__ = ["Release"]


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
        return {"dataset_id": self.dataset_id, "privacy_unit": self.privacy_unit,
                "budget_kind": self.budget_kind, "loss": self.loss.as_dict(),
                "level": self.level, "query": self.query, "created_at": self.created_at,
                "postprocessing": list(self.postprocessing)}

    def to_dict(self) -> dict[str, Any]:
        """Metadata plus the table as JSON-able records (NaN → None)."""
        recs = self.frame.astype(object).where(self.frame.notna(), None).to_dict("records")
        return {**self.metadata(), "rows": recs}

    def postprocess(self, *, nonnegative: bool = False, decimals: int | None = None) -> Release:
        """A new release with post-processing applied; privacy is unaffected.

        Args:
            nonnegative: Clamp estimates and interval ends of counts and histogram cells (and of
                sums whose lower bound is ≥ 0) at 0. The true value is ≥ 0, so the
                intervals stay valid.
            decimals: Round estimates and interval ends to this many decimals (intervals are
                rounded outwards, so they only widen).

        Examples:
            >>> import pandas as pd
            >>> from pets.dp import Budget, Session
            >>> df = pd.DataFrame({"user_id": ["a"], "x": [1.0]})
            >>> r = Session(df, privacy_unit="user_id", budget=Budget.pure(1.0)).query(
            ...     ).count().release(epsilon=0.1).postprocess(nonnegative=True)
            >>> bool((r.to_frame()["ci_low"] >= 0).all()), r.postprocessing
            (True, ('nonnegative',))
        """
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
            scale = 10.0**decimals
            f["estimate"] = f["estimate"].round(decimals)
            f["ci_low"] = np.floor(f["ci_low"] * scale) / scale
            f["ci_high"] = np.ceil(f["ci_high"] * scale) / scale
            steps.append(f"round({decimals})")
        return dataclasses.replace(self, frame=f, postprocessing=tuple(steps))

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

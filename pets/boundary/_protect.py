"""``protect``: apply a policy to a raw frame in its home jurisdiction; ``reidentify`` back.

``protect`` runs only where the policy's home is (the raw data and the keys live there). For
each column it applies the policy's treatment through :mod:`pets.pseudo` (keyed pseudonyms,
tokens, FF1, generalizers) or :mod:`pets.envelope` (column encryption), drops ``drop``
columns, checks that the quasi-identifiers reach the policy's ``min_k`` (suppressing rows with
:func:`pets.pseudo.enforce_k` when the policy says ``enforce_k``, refusing otherwise), then
builds and signs the :class:`~pets.boundary.Manifest`. Every run and every refusal is recorded
in the audit log.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast, overload

import pandas as pd

from pets._errors import (
    InputError,
    JurisdictionError,
    KeyNotFoundError,
    PetsError,
    PolicyError,
)
from pets._events import AuditHook
from pets.boundary._audit import AuditLog
from pets.boundary._keys import BoundaryKeys
from pets.boundary._manifest import ColumnManifest, Manifest, ProtectedFrame
from pets.boundary._policy import ColumnRule, Policy
from pets.jurisdiction import Context

if TYPE_CHECKING:
    import dask.dataframe as dd

    from pets.engines import WorkerKeys
    from pets.engines.dask import DaskProtected
    from pets.pseudo._base import Transform

__all__ = ["protect", "reidentify"]


def _hook(audit: AuditLog | AuditHook | None) -> AuditHook | None:
    return audit.hook if isinstance(audit, AuditLog) else audit


def _record(audit: AuditLog | AuditHook | None, kind: str, context: Context,
            **fields: Any) -> None:
    if isinstance(audit, AuditLog):
        audit.append(kind, actor=context, **fields)
    elif audit is not None:
        from pets._events import emit

        emit(audit, kind, principal=context.principal, jurisdiction=context.jurisdiction,
             **fields)


def _where(policy: Policy, rule: ColumnRule) -> str:
    return (f"{policy.source}" + (f" line {rule.line}" if rule.line else "")
            + f", column {rule.name!r}")


def _keyed_transform(rule: ColumnRule, policy: Policy, keys: BoundaryKeys, context: Context,
                     hook: AuditHook | None) -> Transform:
    from pets.pseudo._registry import keyed_class

    assert rule.key is not None and rule.domain is not None
    root = keys.root_for(policy.keys[rule.key], context=context)
    cls = keyed_class(rule.treatment)
    return cls.from_key(keys.services, root, context=context, domain=rule.domain, audit=hook,
                        **dict(rule.params))


def check_key_jurisdictions(policy: Policy, keys: BoundaryKeys) -> None:
    """Refuse a policy naming a KEK of another jurisdiction than its home (before any work).

    A KEK wraps anywhere but unwraps only in its own jurisdiction: EU pseudonym roots, column
    keys or the signing key wrapped by a US KEK would be readable in the US. Every URI of the
    policy's ``keys`` is described by its key service; a key the service does not know is left
    to fail where it is used, unless a column uses it (then the key service's error stands).

    Raises:
        JurisdictionError: Names the key, its URI and jurisdiction, and the columns it keys.
        KeyServiceError: A key a column uses cannot be described.
    """
    for name, uri in policy.keys.items():
        users = [r.name for r in policy.columns if r.key == name]
        try:
            where = keys.services.for_uri(uri).describe(uri).jurisdiction
        except KeyNotFoundError:
            if users:
                raise
            continue
        if where != policy.home:
            line = policy.lines.get(f"keys.{name}")
            what = (f"columns {', '.join(map(repr, users))} would be keyed there" if users
                    else "what it wraps would be readable there")
            raise JurisdictionError(
                f"{policy.source}" + (f" line {line}" if line else "") + f": key {name!r} "
                f"({uri}) belongs to {where}, not to the policy's home {policy.home}: {what}; "
                "protect refuses")


def _build(rule: ColumnRule, policy: Policy, keys: BoundaryKeys, context: Context,
           hook: AuditHook | None) -> Transform:
    try:
        if rule.spec.keyed:
            return _keyed_transform(rule, policy, keys, context, hook)
        return policy.generalizer(rule)
    except (PolicyError, JurisdictionError):
        raise
    except (InputError, TypeError, ValueError) as exc:
        if isinstance(exc, PetsError) and not isinstance(exc, InputError):
            raise
        raise PolicyError(f"{_where(policy, rule)}: treatment {rule.treatment!r} with params "
                          f"{dict(rule.params)}: {exc}") from None


def _check_k(frame: pd.DataFrame, policy: Policy) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Measure k over the treated quasi-identifiers; suppress (enforce_k) or refuse."""
    from pets.pseudo import anonymity_report, enforce_k

    qis = policy.quasi_identifiers
    info: dict[str, Any] = {"quasi_identifiers": qis, "min_k": policy.min_k,
                            "k": len(frame), "suppressed_rows": 0}
    if not qis or frame.empty:
        return frame, info
    report = anonymity_report(frame, qis, k=policy.min_k)
    info.update(k=int(report.k), classes=int(report.classes),
                risk_max=float(report.risk_max))
    if report.k >= policy.min_k:
        return frame, info
    if not policy.enforce_k:
        raise PolicyError(
            f"{policy.source}: k-anonymity of ({', '.join(qis)}) is {report.k} < min_k "
            f"{policy.min_k}; generalize the quasi-identifiers more, or set enforce_k: true")
    done = enforce_k(frame, qis, policy.min_k, {}, max_suppression=policy.max_suppression)
    out = done.frame.reset_index(drop=True)
    info.update(k=int(done.report.k), classes=int(done.report.classes),
                risk_max=float(done.report.risk_max), suppressed_rows=int(done.rows_suppressed),
                method="suppress")
    return out, info


@overload
def protect(frame: pd.DataFrame, policy: Policy, keys: BoundaryKeys, context: Context, *,
            audit: AuditLog | AuditHook | None = None, workers: WorkerKeys | None = None,
            progress: bool | None = None) -> ProtectedFrame: ...


@overload
def protect(frame: dd.DataFrame, policy: Policy, keys: BoundaryKeys, context: Context, *,
            audit: AuditLog | AuditHook | None = None, workers: WorkerKeys | None = None,
            progress: bool | None = None) -> DaskProtected: ...


def protect(frame: pd.DataFrame | dd.DataFrame, policy: Policy, keys: BoundaryKeys,
            context: Context, *, audit: AuditLog | AuditHook | None = None,
            workers: WorkerKeys | None = None,
            progress: bool | None = None) -> ProtectedFrame | DaskProtected:
    """Apply ``policy`` to ``frame`` and return the signed :class:`ProtectedFrame`.

    Accepts a Dask DataFrame: returns the lazy :class:`~pets.engines.dask.DaskProtected` of
    :func:`pets.engines.dask.protect` (k-anonymity checked over the whole dataset now; data
    computed by its ``compute()`` or ``write()``). Keyed transforms and column keys reach the
    partitions through ``workers``, by default ``keys`` in this process — required while a
    ``distributed`` client is active.

    Args:
        frame: The raw data (pandas); not modified.
        policy: The dataset's policy; it must cover exactly ``frame``'s columns.
        keys: The home jurisdiction's :class:`BoundaryKeys` (services, signing key, roots).
        context: Who protects, and where: must be the policy's home jurisdiction.
        audit: The audit log (or a hook) receiving ``boundary.protect`` or
            ``boundary.refused``, and the lower layers' events.
        workers: Dask frames only: how keys reach the workers (a
            :class:`~pets.engines.WorkerKeys`).
        progress: Dask frames only: show progress of the k-anonymity pass.

    Raises:
        JurisdictionError: ``context`` is outside the policy's home, or the policy names a
            KEK of another jurisdiction (:func:`check_key_jurisdictions`).
        PolicyError: The policy does not fit the frame (names line and column), a treatment's
            parameters are wrong, a generalizer leaves every value of its column unchanged
            (:meth:`Policy.check_unchanged`), or k-anonymity is not reached and ``enforce_k``
            is off.

    Examples:
        >>> import pandas as pd
        >>> from pets import Context
        >>> from pets.keys import KeyServices, MemoryKeyring
        >>> from pets.boundary import BoundaryKeys, Policy, SigningKey
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/p", jurisdiction="EU")
        >>> keys = BoundaryKeys(KeyServices([ring]), SigningKey.generate())
        >>> policy = Policy.from_yaml('''
        ... dataset: users
        ... keys: {pseudonyms: "memory://eu/p"}
        ... columns:
        ...   user_id: {role: identifier, treatment: keyed-hash}
        ...   minutes: {role: metric, treatment: keep}
        ... ''')
        >>> df = pd.DataFrame({"user_id": ["u1", "u2"], "minutes": [3.0, 4.5]})
        >>> pf = protect(df, policy, keys, Context("EU"))
        >>> pf.manifest.treatments()
        {'user_id': 'keyed-hash', 'minutes': 'keep'}
        >>> bool(pf.data["user_id"].str.len().eq(32).all())
        True
        >>> protect(df, policy, keys, Context("US", principal="bob"))
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: protect runs in the policy's home EU, not for bob@US
    """
    audit = keys.pinned_audit(audit, context)
    if "dask.dataframe" in sys.modules:
        from pets.engines._dask import is_dask

        if is_dask(frame):
            from pets.engines._dispatch import protect as on_dask

            lazy: DaskProtected = on_dask(frame, policy, keys, context, audit=audit,
                                          workers=workers, progress=progress)
            return lazy
    try:
        return _protect(cast(pd.DataFrame, frame), policy, keys, context, audit)
    except PetsError as exc:
        _record(audit, "boundary.refused", context, operation="protect",
                target=policy.dataset, reason=f"{type(exc).__name__}: {exc}")
        raise


def _protect(frame: pd.DataFrame, policy: Policy, keys: BoundaryKeys, context: Context,
             audit: AuditLog | AuditHook | None, *, check_values: bool = True) -> ProtectedFrame:
    """The pandas path. ``check_values=False`` skips the identity check of generalizers (the
    Dask engine describes its columns on a few sample rows and checks the whole column)."""
    if context.jurisdiction != policy.home:
        raise JurisdictionError(f"protect runs in the policy's home {policy.home}, not for "
                                f"{context.access_token}")
    check_key_jurisdictions(policy, keys)
    if not isinstance(frame, pd.DataFrame):
        raise InputError("protect takes a pandas DataFrame")
    policy.check_frame(frame, values=False)
    hook = _hook(audit)
    out: dict[str, pd.Series] = {}
    cols: dict[str, dict[str, Any]] = {}
    encrypt: list[ColumnRule] = []
    for rule in policy.columns:
        if rule.output is None:
            continue
        entry: dict[str, Any] = {"name": rule.name, "role": rule.role,
                                 "treatment": rule.treatment, "output": rule.output,
                                 "params": dict(rule.params), "domain": rule.domain,
                                 "mode": rule.mode}
        series = frame[rule.name]
        if rule.treatment == "keep":
            out[rule.name] = series.reset_index(drop=True)
            entry["links"] = "everything: the original values are kept"
        elif rule.treatment == "encrypt":
            out[rule.name] = series.reset_index(drop=True)
            encrypt.append(rule)
            entry["links"] = (
                "equal values in this column give equal ciphertexts (linkable); value lengths "
                "and nulls show" if rule.mode == "deterministic"
                else "no equalities; only value lengths and nulls show")
            entry["reversible"] = True
        else:
            transform = _build(rule, policy, keys, context, hook)
            try:
                by = getattr(transform, "by", None) if rule.treatment == "date-shift" else None
                if rule.treatment == "date-shift":
                    if not isinstance(by, str) or by not in frame.columns:
                        raise PolicyError(f"{_where(policy, rule)}: date-shift needs params.by "
                                          "naming the user id column")
                    result = transform.apply(series, by=frame[by])  # type: ignore[call-arg]
                else:
                    result = transform.apply(series)
            except (InputError, TypeError, ValueError) as exc:
                if isinstance(exc, PetsError) and not isinstance(exc, InputError):
                    raise
                raise PolicyError(f"{_where(policy, rule)}: {rule.treatment} failed: "
                                  f"{exc}") from None
            if check_values and rule.output == "generalized":
                policy.check_unchanged(rule, series, result)
            out[rule.name] = pd.Series(result, name=rule.name).reset_index(drop=True)
            desc = transform.describe()
            entry.update(links=str(desc.get("links", "")),
                         reversible=bool(desc.get("reversible", False)),
                         key_uri=desc.get("key_uri"), key_version=desc.get("key_version"),
                         key_jurisdiction=desc.get("jurisdiction"))
            entry["params"] = {k: v for k, v in desc.items() if k not in (
                "name", "links", "reversible", "key_uri", "key_version", "jurisdiction",
                "domain")}
        cols[rule.name] = entry
    data = pd.DataFrame(out)
    data, k_info = _check_k(data, policy)
    for rule in encrypt:
        data, header = _encrypt(data, rule, policy, keys, context, hook)
        first = header["columns"][0]["wrapped_keys"][0]
        cols[rule.name].update(header=header, key_uri=first["key_uri"],
                               key_version=first["version"],
                               key_jurisdiction=first["jurisdiction"])
    manifest = Manifest.build(
        data, dataset=policy.dataset, policy_digest=policy.digest(), home=policy.home,
        created_by=context.access_token, columns=[ColumnManifest(**cols[str(c)]) for c in data],
        k_anonymity=k_info,
    ).sign(keys.signer)
    _record(audit, "boundary.protect", context, dataset=policy.dataset, rows_in=len(frame),
            rows=manifest.rows, columns=[c.name for c in manifest.columns],
            treatments=manifest.treatments(),
            dropped=[r.name for r in policy.columns if r.output is None],
            k=k_info["k"], min_k=policy.min_k, suppressed_rows=k_info["suppressed_rows"],
            policy_digest=manifest.policy_digest, data_digest=manifest.data_digest,
            signer=manifest.signer)
    return ProtectedFrame(data, manifest)


def _encrypt(data: pd.DataFrame, rule: ColumnRule, policy: Policy, keys: BoundaryKeys,
             context: Context, hook: AuditHook | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    from pets.envelope import encrypt_columns

    assert rule.key is not None
    mode = rule.mode or "randomized"
    enc, header = encrypt_columns(
        data, {rule.name: mode}, keys=keys.services, key_uris=policy.keys[rule.key],
        context=context, enc_context={"dataset": policy.dataset}, audit=hook)
    enc.attrs.clear()
    return enc, header.to_dict()


def reidentify(protected: ProtectedFrame, column: str, values: pd.Series | Sequence[Any],
               keys: BoundaryKeys, context: Context, *,
               audit: AuditLog | AuditHook | None = None, reason: str = "") -> pd.Series:
    """Reverse a reversible column (``token``, ``ff1``, ``ff1-phone``, ``encrypt``).

    Runs only in the column key's jurisdiction: the key service refuses elsewhere, and the
    refusal is an incident in the audit log. Every call is recorded (``boundary.reidentify``:
    column, rows, reason — never the values).

    Args:
        protected: The protected frame whose manifest says how ``column`` was treated.
        column: The column to reverse.
        values: Protected values of that column (e.g. the pseudonyms an analyst flagged).
        keys: The home jurisdiction's keys.
        context: Who asks, and where.
        audit: The audit log.
        reason: Why (recorded; e.g. a ticket number).

    Raises:
        PolicyError: The column's treatment does not reverse (keyed hashes, generalizers).
        JurisdictionError: ``context`` is outside the key's jurisdiction.

    Examples:
        >>> import pandas as pd
        >>> from pets import Context
        >>> from pets.keys import KeyServices, MemoryKeyring
        >>> from pets.boundary import BoundaryKeys, Policy, SigningKey, protect
        >>> ring = MemoryKeyring(); _ = ring.create("memory://eu/p", jurisdiction="EU")
        >>> keys = BoundaryKeys(KeyServices([ring]), SigningKey.generate())
        >>> policy = Policy.from_dict({"dataset": "crm", "keys": {"pseudonyms": "memory://eu/p"},
        ...     "columns": {"email": {"role": "identifier", "treatment": "token"}}})
        >>> pf = protect(pd.DataFrame({"email": ["ann@mail.eu"]}), policy, keys, Context("EU"))
        >>> reidentify(pf, "email", pf.data["email"], keys, Context("EU")).tolist()
        ['ann@mail.eu']
        >>> reidentify(pf, "email", pf.data["email"], keys, Context("US", principal="bob"))
        Traceback (most recent call last):
        ...
        pets._errors.JurisdictionError: key memory://eu/p belongs to EU; unwrap refused for bob@US
    """
    audit = keys.pinned_audit(audit, context)
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values,
                       name=column)
    try:
        col = protected.manifest.column(column)
        result = _reverse(col, series, protected.manifest, keys, context, _hook(audit))
    except PetsError as exc:
        _record(audit, "boundary.refused", context, operation="reidentify",
                target=f"{protected.manifest.dataset}.{column}", reason=f"{type(exc).__name__}: "
                f"{exc}")
        raise
    _record(audit, "boundary.reidentify", context, dataset=protected.manifest.dataset,
            column=column, treatment=col.treatment, rows=len(series), reason=reason)
    return result


def _reverse(col: ColumnManifest, series: pd.Series, manifest: Manifest, keys: BoundaryKeys,
             context: Context, hook: AuditHook | None) -> pd.Series:
    if col.treatment == "encrypt":
        from pets.envelope import decrypt_columns

        frame = decrypt_columns(pd.DataFrame({col.name: series}), col.header,
                                keys=keys.services, context=context, audit=hook)
        return frame[col.name]
    if not col.reversible or col.key_uri is None or col.domain is None:
        raise PolicyError(f"column {col.name!r} ({col.treatment}) cannot be re-identified")
    from pets.keys import WrappedKey
    from pets.pseudo._registry import keyed_class

    root = keys.root_for(col.key_uri, context=context, create=False)
    if not isinstance(root, WrappedKey) or root.version != col.key_version:
        raise PolicyError(f"column {col.name!r}: the root secret it was made with "
                          f"({col.key_uri} v{col.key_version}) is not available")
    cls = keyed_class(col.treatment)
    sig = inspect.signature(cls._configure)
    params = {k: v for k, v in col.params.items() if k in sig.parameters}
    transform = cls.from_key(keys.services, root, context=context, domain=col.domain,
                             audit=hook, **params)
    reverse = getattr(transform, "reverse", None)
    if reverse is None:
        raise PolicyError(f"column {col.name!r} ({col.treatment}) cannot be re-identified")
    out: pd.Series = reverse(series, context=context)
    return out

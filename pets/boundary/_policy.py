"""Policies: what each column of a dataset is, what happens to it, and where outputs may go.

A policy is written in YAML (for pipelines) or built from the same frozen dataclasses in Python
(for notebooks); both give the same :class:`Policy` and the same :meth:`Policy.digest`. Every
column of the dataset has a **role** and a **treatment**:

=====================  ==============================================================
role                   treatments it may get
=====================  ==============================================================
``identifier``         ``keyed-hash``, ``token``, ``ff1``, ``ff1-phone``, ``mask``,
                       ``encrypt``, ``drop``
``quasi-identifier``   a generalizer, ``keyed-hash``, ``date-shift``, ``encrypt``,
                       ``drop``, ``keep`` (the k-anonymity check covers kept QIs)
``sensitive``          a generalizer, ``keyed-hash``, ``token``, ``encrypt``, ``drop``
``metric``             ``keep``, a numeric generalizer, ``encrypt``, ``drop``
``drop``               ``drop``
=====================  ==============================================================

Each treatment produces one **kind of output** — ``pseudonymized`` (keyed-hash, token, FF1,
date-shift), ``generalized``, ``encrypted``, ``kept`` — and ``destinations`` says where each
kind may go (``"*"`` for anywhere, ``[]`` for nowhere: it stays home); DP releases are the
kind ``dp_release``. A kind a policy does not list goes nowhere.

A malformed policy — unknown keys, unknown roles or treatments, a treatment that does not fit
the role or (with :meth:`Policy.check_frame`) the column's dtype, a column the policy does not
know or a column it forgets — raises :class:`~pets.PolicyError` naming the YAML line and the
column.

Examples:
    >>> policy = Policy.from_yaml('''
    ... dataset: users
    ... keys: {pseudonyms: "memory://eu/pseudonyms"}
    ... min_k: 2
    ... destinations: {pseudonymized: [US], generalized: [US], dp_release: ["*"]}
    ... columns:
    ...   user_id: {role: identifier, treatment: keyed-hash}
    ...   age:     {role: quasi-identifier, treatment: bucket, params: {width: 10}}
    ...   note:    {role: drop}
    ... ''')
    >>> policy.column("user_id").domain, policy.column("user_id").output
    ('users.user_id', 'pseudonymized')
    >>> policy.allows("generalized", "US"), policy.allows("generalized", "SG")
    (True, False)
    >>> len(policy.digest())
    64
    >>> Policy.from_yaml("dataset: x\\ncolumns:\\n  a: {role: identifier, treatment: keep}\\n")
    Traceback (most recent call last):
    ...
    pets._errors.PolicyError: <policy> line 3, column 'a': treatment 'keep' is not allowed for role 'identifier' (allowed: drop, encrypt, ff1, ff1-phone, keyed-hash, mask, token)
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml

from pets._errors import InputError, PolicyError
from pets.jurisdiction import Jurisdiction

if TYPE_CHECKING:
    import pandas as pd

    from pets.pseudo._base import Transform

__all__ = [
    "OUTPUT_KINDS",
    "ROLES",
    "TREATMENTS",
    "ColumnRule",
    "Policy",
    "TreatmentSpec",
    "dtype_kind",
    "load_policy",
]

Role = Literal["identifier", "quasi-identifier", "sensitive", "metric", "drop"]
Output = Literal["pseudonymized", "generalized", "encrypted", "kept", "dp_release"]
ROLES: tuple[str, ...] = get_args(Role)
OUTPUT_KINDS: tuple[str, ...] = get_args(Output)
_FORMAT_VERSION = 1

_ANY = frozenset({"string", "integer", "float", "datetime", "date", "bool", "other"})
_NUM = frozenset({"integer", "float"})
_STR = frozenset({"string"})
_TIME = frozenset({"datetime", "date"})
_ID, _QI, _SE, _ME = "identifier", "quasi-identifier", "sensitive", "metric"


@dataclass(frozen=True)
class TreatmentSpec:
    """What a treatment is: its output kind, the roles and dtypes it fits, whether it is keyed.

    ``kinds`` are dtype kinds from :func:`dtype_kind`. ``keyed`` treatments use a root secret
    (``keys.pseudonyms`` unless the column names another key) and a domain.
    """

    name: str
    output: Output | None
    roles: frozenset[str]
    kinds: frozenset[str]
    keyed: bool = False


def _spec(name: str, output: Output | None, roles: Sequence[str], kinds: frozenset[str],
          keyed: bool = False) -> tuple[str, TreatmentSpec]:
    return name, TreatmentSpec(name, output, frozenset(roles), kinds, keyed)


TREATMENTS: Mapping[str, TreatmentSpec] = dict([
    _spec("keyed-hash", "pseudonymized", [_ID, _QI, _SE], _STR | {"integer"}, keyed=True),
    _spec("token", "pseudonymized", [_ID, _SE], _STR, keyed=True),
    _spec("ff1", "pseudonymized", [_ID], _STR | {"integer"}, keyed=True),
    _spec("ff1-phone", "pseudonymized", [_ID], _STR, keyed=True),
    _spec("date-shift", "pseudonymized", [_QI, _SE], _TIME, keyed=True),
    _spec("age-band", "generalized", [_QI, _SE], _TIME),
    _spec("truncate-date", "generalized", [_QI, _SE, _ME], _TIME),
    _spec("postcode-prefix", "generalized", [_QI, _SE], _STR),
    _spec("ip-prefix", "generalized", [_QI, _SE], _STR),
    _spec("bucket", "generalized", [_QI, _SE, _ME], _NUM),
    _spec("top-bottom-code", "generalized", [_QI, _SE, _ME], _NUM),
    _spec("mask", "generalized", [_ID, _QI, _SE], _STR),
    _spec("suppress", "generalized", [_QI, _SE], _ANY),
    _spec("encrypt", "encrypted", [_ID, _QI, _SE, _ME], _ANY),
    _spec("keep", "kept", [_QI, _ME], _ANY),
    _spec("drop", None, [_ID, _QI, _SE, _ME, "drop"], _ANY),
])

_DEFAULT_KEY = {"encrypt": "columns"}
_TOP_KEYS = {"version", "dataset", "home", "keys", "min_k", "enforce_k", "max_suppression",
             "destinations", "columns", "description"}
_COLUMN_KEYS = {"role", "treatment", "params", "domain", "key", "mode", "description",
                "public_values"}
_MODES = ("randomized", "deterministic")
MAX_POLICY_CHARS = 1 << 20


def dtype_kind(dtype: Any, values: pd.Series | None = None) -> str:
    """Classify a pandas dtype: ``string``, ``integer``, ``float``, ``datetime``, ``date``,
    ``bool`` or ``other`` (object columns are inferred from ``values``).

    Examples:
        >>> import pandas as pd
        >>> [dtype_kind(pd.Series(v).dtype) for v in ([1], [1.5], ["a"], [True])]
        ['integer', 'float', 'string', 'bool']
    """
    import pandas as pd
    from pandas.api import types as t

    if isinstance(dtype, pd.CategoricalDtype):
        return dtype_kind(dtype.categories.dtype)
    if t.is_bool_dtype(dtype):
        return "bool"
    if t.is_integer_dtype(dtype):
        return "integer"
    if t.is_float_dtype(dtype):
        return "float"
    if t.is_datetime64_any_dtype(dtype):
        return "datetime"
    if t.is_string_dtype(dtype) and not t.is_object_dtype(dtype):
        return "string"
    if t.is_object_dtype(dtype) and values is not None:
        inferred = t.infer_dtype(values, skipna=True)
        return {"string": "string", "empty": "string", "integer": "integer",
                "floating": "float", "mixed-integer-float": "float", "boolean": "bool",
                "date": "date", "datetime": "datetime", "datetime64": "datetime"
                }.get(inferred, "other")
    return "other"


@dataclass(frozen=True)
class ColumnRule:
    """One column's role and treatment.

    Args:
        name: The column.
        role: ``identifier``, ``quasi-identifier``, ``sensitive``, ``metric`` or ``drop``.
        treatment: A name from :data:`TREATMENTS`; ``drop`` when the role is ``drop``.
        params: The treatment's parameters (e.g. ``{"width": 10}`` for ``bucket``).
        domain: Linkage domain of keyed treatments (default ``<dataset>.<column>``): equal
            values give equal outputs within a domain and unlinkable ones across domains.
        key: Which entry of the policy's ``keys`` keys this column (default ``pseudonyms``
            for keyed treatments, ``columns`` for ``encrypt``).
        mode: ``randomized`` (default) or ``deterministic`` for ``encrypt``.
        public_values: The values of this column that are public (e.g. the country codes):
            a DP release grouped by this column with keys given by its caller (``--keys``)
            leaves through the gate only if every group key is one of these. Not allowed on
            an identifier.
        line: The YAML line (for messages; not part of equality or the digest).
    """

    name: str
    role: Role
    treatment: str = "drop"
    params: Mapping[str, Any] = field(default_factory=dict)
    domain: str | None = None
    key: str | None = None
    mode: Literal["randomized", "deterministic"] | None = None
    public_values: tuple[str, ...] | None = None
    line: int | None = field(default=None, compare=False)

    @property
    def spec(self) -> TreatmentSpec:
        return TREATMENTS[self.treatment]

    @property
    def output(self) -> Output | None:
        """The kind of output this column becomes (``None`` when dropped)."""
        return self.spec.output

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "treatment": self.treatment,
               "params": dict(self.params), "domain": self.domain, "key": self.key,
               "mode": self.mode}
        if self.public_values is not None:  # absent: digests of earlier policies unchanged
            out["public_values"] = list(self.public_values)
        return out


_NEVER_IDENTITY = frozenset({"suppress", "age-band"})


def _treatment_text(rule: ColumnRule, transform: Transform | None = None) -> str:
    """``ip-prefix (v4=32, v6=48)``: the treatment and its parameters, for messages."""
    given = transform.params() if transform is not None else rule.params
    params = ", ".join(f"{k}={v}" for k, v in given.items() if v is not None)
    return f"{rule.treatment} ({params})" if params else rule.treatment


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name (``None`` when it is)."""
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "holds a control or format character"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if name in (".", ".."):
        return "is a directory name"
    if ".." in name:
        return "holds '..'"
    if name.startswith("."):
        return "starts with a dot (hidden file)"
    if name.startswith("~") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute or home-relative path"
    if len(name) > 200:
        return "is longer than 200 characters"
    return None


def _where(source: str, line: int | None, column: str | None = None) -> str:
    text = source + (f" line {line}" if line is not None else "")
    return text + (f", column {column!r}" if column is not None else "")


@dataclass(frozen=True)
class Policy:
    """A dataset's protection policy (see the module docstring for the rules).

    Args:
        dataset: The dataset's name (default domains are ``<dataset>.<column>``).
        columns: One :class:`ColumnRule` per column, in order.
        home: The jurisdiction the raw data and keys belong to; ``protect`` runs only there.
        keys: Key names to KEK URIs: ``pseudonyms`` (root secret of keyed treatments),
            ``columns`` (column encryption), or any name a column's ``key`` uses.
        destinations: Output kind to the jurisdictions it may go to (``"*"``: anywhere).
        min_k: The k that the quasi-identifiers must reach after treatment.
        enforce_k: When k is not met, suppress the rows of classes smaller than ``min_k``
            (:func:`pets.pseudo.enforce_k`) instead of refusing.
        max_suppression: With ``enforce_k``, the largest share of rows (0..1) that may be
            suppressed; beyond it ``protect`` refuses.
        source: Where the policy came from (for messages).
    """

    dataset: str
    columns: tuple[ColumnRule, ...]
    home: str = "EU"
    keys: Mapping[str, str] = field(default_factory=dict)
    destinations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    min_k: int = 1
    enforce_k: bool = False
    max_suppression: float = 0.05
    source: str = field(default="<policy>", compare=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        self._validate()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<policy>") -> Policy:
        """Parse YAML text (see :func:`load_policy` for files)."""
        if len(text) > MAX_POLICY_CHARS:
            raise PolicyError(f"{source}: policy is larger than {MAX_POLICY_CHARS} characters")
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise PolicyError(f"{_where(source, line)}: not valid YAML") from None
        if root is None:
            raise PolicyError(f"{source}: the policy is empty")
        return cls._from_node(root, source)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str = "<policy>") -> Policy:
        """Build from a plain mapping shaped like the YAML (no line numbers)."""
        try:
            text = json.dumps(doc, default=str)
        except (TypeError, ValueError):
            raise PolicyError(f"{source}: the policy must be plain data") from None
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            raise PolicyError(f"{source}: the policy is empty")
        return cls._from_node(node, source, keep_lines=False)

    @classmethod
    def _from_node(cls, root: yaml.Node, source: str, *, keep_lines: bool = True) -> Policy:
        doc, lines = _to_python(root, source)
        if not keep_lines:
            lines = {}
        if not isinstance(doc, dict):
            raise PolicyError(f"{_where(source, lines.get(''))}: a policy is a mapping")
        for key in doc:
            if key not in _TOP_KEYS:
                raise PolicyError(f"{_where(source, lines.get(key))}: unknown key {key!r} "
                                  f"(known: {', '.join(sorted(_TOP_KEYS))})")
        if doc.get("version", _FORMAT_VERSION) != _FORMAT_VERSION:
            raise PolicyError(f"{_where(source, lines.get('version'))}: unsupported policy "
                              f"version {doc.get('version')!r} (this pets reads {_FORMAT_VERSION})")
        for required in ("dataset", "columns"):
            if required not in doc:
                raise PolicyError(f"{source}: missing required key {required!r}")
        cols = doc["columns"]
        if not isinstance(cols, dict) or not cols:
            raise PolicyError(f"{_where(source, lines.get('columns'))}: 'columns' must be a "
                              "non-empty mapping of column name to rule")
        rules = []
        for name, body in cols.items():
            line = lines.get(f"columns.{name}")
            if not isinstance(body, dict):
                raise PolicyError(f"{_where(source, line, name)}: a column rule is a mapping "
                                  "with 'role' and 'treatment'")
            for key in body:
                if key not in _COLUMN_KEYS:
                    raise PolicyError(
                        f"{_where(source, lines.get(f'columns.{name}.{key}', line), name)}: "
                        f"unknown key {key!r} (known: {', '.join(sorted(_COLUMN_KEYS))})")
            role = body.get("role")
            if role is None:
                raise PolicyError(f"{_where(source, line, name)}: missing 'role' (one of "
                                  f"{', '.join(ROLES)})")
            if role not in ROLES:
                raise PolicyError(f"{_where(source, lines.get(f'columns.{name}.role', line), name)}"
                                  f": unknown role {role!r} (known: {', '.join(ROLES)})")
            treatment = body.get("treatment", "drop" if role == "drop" else None)
            if treatment is None:
                raise PolicyError(f"{_where(source, line, name)}: missing 'treatment'")
            params = body.get("params", {})
            if not isinstance(params, dict):
                raise PolicyError(f"{_where(source, line, name)}: 'params' must be a mapping")
            public: Any = body.get("public_values")
            if public is not None:
                at = _where(source, lines.get(f"columns.{name}.public_values", line), name)
                if role == "identifier":
                    raise PolicyError(f"{at}: an identifier has no public values")
                if not isinstance(public, list) or not public or not all(
                        isinstance(v, str | int) and not isinstance(v, bool) for v in public):
                    raise PolicyError(f"{at}: 'public_values' must be a non-empty list of "
                                      "strings or integers")
                public = tuple(str(v) for v in public)
            rules.append(ColumnRule(
                name=str(name), role=role, treatment=treatment, params=params,
                domain=body.get("domain"), key=body.get("key"), mode=body.get("mode"),
                public_values=public, line=line,
            ))
        destinations = doc.get("destinations", {})
        if not isinstance(destinations, dict):
            raise PolicyError(f"{_where(source, lines.get('destinations'))}: 'destinations' "
                              "must map an output kind to a list of jurisdictions")
        keys = doc.get("keys", {})
        if not isinstance(keys, dict):
            raise PolicyError(f"{_where(source, lines.get('keys'))}: 'keys' must map a key "
                              "name to a key URI")
        dests = {}
        for kind, where in destinations.items():
            if isinstance(where, str):
                where = [where]
            if not isinstance(where, list):
                raise PolicyError(f"{_where(source, lines.get(f'destinations.{kind}'))}: "
                                  f"destinations of {kind!r} must be a list")
            dests[kind] = tuple(str(w) for w in where)
        return cls(dataset=doc["dataset"], columns=tuple(rules), home=doc.get("home", "EU"),
                   keys=keys, destinations=dests, min_k=doc.get("min_k", 1),
                   enforce_k=doc.get("enforce_k", False),
                   max_suppression=doc.get("max_suppression", 0.05), source=source, lines=lines)

    # -- validation --------------------------------------------------------------------------

    def _fail(self, what: str, line: int | None = None, column: str | None = None) -> PolicyError:
        return PolicyError(f"{_where(self.source, line, column)}: {what}", column=column)

    def _validate(self) -> None:
        lines = self.lines
        if not isinstance(self.dataset, str) or not self.dataset:
            raise self._fail("'dataset' must be a non-empty string", lines.get("dataset"))
        problem = _name_problem(self.dataset)
        if problem is not None:
            raise self._fail(f"'dataset' {self.dataset!r} {problem}: it names output files "
                             "and directories, so it must be a plain name such as 'users'",
                             lines.get("dataset"))
        try:
            object.__setattr__(self, "home", Jurisdiction(str(self.home)).code)
        except InputError:
            raise self._fail(f"invalid home jurisdiction {self.home!r}",
                             lines.get("home")) from None
        if isinstance(self.min_k, bool) or not isinstance(self.min_k, int) or self.min_k < 1:
            raise self._fail("'min_k' must be an integer >= 1", lines.get("min_k"))
        if not isinstance(self.enforce_k, bool):
            raise self._fail("'enforce_k' must be true or false", lines.get("enforce_k"))
        ms = self.max_suppression
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= 1:
            raise self._fail("'max_suppression' must be a number in 0..1",
                             lines.get("max_suppression"))
        object.__setattr__(self, "max_suppression", float(ms))
        for name, uri in self.keys.items():
            if not isinstance(uri, str) or "://" not in uri:
                raise self._fail(f"key {name!r} must be a key URI such as "
                                 f"'local://eu/{name}'", lines.get(f"keys.{name}"))
        dests: dict[str, tuple[str, ...]] = {}
        for kind, where in self.destinations.items():
            line = lines.get(f"destinations.{kind}")
            if kind not in OUTPUT_KINDS:
                raise self._fail(f"unknown output kind {kind!r} in destinations (known: "
                                 f"{', '.join(OUTPUT_KINDS)})", line)
            codes = []
            for w in where:
                if w == "*":
                    codes.append("*")
                    continue
                try:
                    codes.append(Jurisdiction(w).code)
                except InputError:
                    raise self._fail(f"invalid jurisdiction {w!r} for {kind}", line) from None
            dests[kind] = tuple(sorted(set(codes)))
        object.__setattr__(self, "destinations", dests)
        seen: set[str] = set()
        rules = []
        for rule in self.columns:
            rules.append(self._check_rule(rule, seen))
        object.__setattr__(self, "columns", tuple(rules))

    def _check_rule(self, rule: ColumnRule, seen: set[str]) -> ColumnRule:
        name, line = rule.name, rule.line
        if name in seen:
            raise self._fail("column listed twice", line, name)
        seen.add(name)
        if rule.role not in ROLES:
            raise self._fail(f"unknown role {rule.role!r} (known: {', '.join(ROLES)})",
                             line, name)
        if rule.treatment not in TREATMENTS:
            raise self._fail(f"unknown treatment {rule.treatment!r} (known: "
                             f"{', '.join(sorted(TREATMENTS))})", line, name)
        spec = TREATMENTS[rule.treatment]
        if rule.role not in spec.roles:
            allowed = sorted(t for t, s in TREATMENTS.items() if rule.role in s.roles)
            raise self._fail(f"treatment {rule.treatment!r} is not allowed for role "
                             f"{rule.role!r} (allowed: {', '.join(allowed)})", line, name)
        if rule.treatment == "encrypt":
            mode = rule.mode or "randomized"
            if mode not in _MODES:
                raise self._fail(f"mode must be one of {', '.join(_MODES)}", line, name)
        elif rule.mode is not None:
            raise self._fail("'mode' applies only to treatment 'encrypt'", line, name)
        else:
            mode = None
        keyed = spec.keyed or rule.treatment == "encrypt"
        domain, key = rule.domain, rule.key
        if keyed:
            domain = domain or f"{self.dataset}.{name}"
            if not isinstance(domain, str):
                raise self._fail("'domain' must be a string", line, name)
            key = key or _DEFAULT_KEY.get(rule.treatment, "pseudonyms")
            if key not in self.keys:
                raise self._fail(f"treatment {rule.treatment!r} needs key {key!r}, which the "
                                 "policy's 'keys' does not name", line, name)
        elif rule.domain is not None or rule.key is not None:
            raise self._fail(f"'domain' and 'key' apply only to keyed treatments, not "
                             f"{rule.treatment!r}", line, name)
        if rule.treatment in ("keep", "drop", "encrypt") and rule.params:
            raise self._fail(f"treatment {rule.treatment!r} takes no params", line, name)
        checked = ColumnRule(name, rule.role, rule.treatment, dict(rule.params), domain, key,
                             mode, rule.public_values, line)
        if spec.output == "generalized":
            from pets.pseudo._generalize import identity_reason

            transform = self.generalizer(checked)
            reason = identity_reason(transform)
            if reason is not None:
                raise self._fail(f"{_treatment_text(checked, transform)} leaves values unchanged "
                                 f"({reason}): that is no protection", line, name)
        return checked

    def generalizer(self, rule: ColumnRule) -> Transform:
        """The :mod:`pets.pseudo` generalizer of ``rule`` (a ``generalized`` treatment).

        Raises:
            PolicyError: Parameters the treatment does not take or refuses (names line and
                column).
        """
        from pets.pseudo._generalize import generalizer

        try:
            return generalizer(rule.treatment, dict(rule.params))
        except (InputError, TypeError, ValueError) as exc:
            raise self._fail(f"treatment {rule.treatment!r} with params {dict(rule.params)}: "
                             f"{exc}", rule.line, rule.name) from None

    def check_frame(self, frame: pd.DataFrame, *, values: bool = True) -> None:
        """Check that the policy covers exactly ``frame``'s columns with fitting treatments.

        With ``values`` (the default), also apply each generalizer to its column and refuse
        one that leaves every value unchanged (:meth:`check_unchanged`); ``protect`` checks
        the values it computes itself.

        Raises:
            PolicyError: A column the policy does not know, a policy column missing from the
                frame, a treatment that does not fit a column's dtype, or a generalizer that
                is the identity on the column's values (names line and column).

        Examples:
            >>> import pandas as pd
            >>> p = Policy.from_yaml("dataset: d\\ncolumns:\\n"
            ...                      "  ip: {role: quasi-identifier, treatment: ip-prefix}\\n")
            >>> p.check_frame(pd.DataFrame({"ip": ["10.1.2.0", "10.7.8.0"]}))
            Traceback (most recent call last):
            ...
            pets._errors.PolicyError: <policy> line 3, column 'ip': ip-prefix (v4=24, v6=48) leaves every value unchanged (2 non-null values, 2 distinct, shown as they were): that is no protection; choose a coarser parameter, or say 'treatment: keep' if the column may leave as it is (kept columns go where 'kept' may go)
        """
        by_name = {r.name: r for r in self.columns}
        for col in frame.columns:
            if col not in by_name:
                raise self._fail("the policy has no rule for this column (every column needs "
                                 "a role; use 'role: drop' to drop it)",
                                 self.lines.get("columns"), str(col))
        for rule in self.columns:
            if rule.name not in frame.columns:
                raise self._fail("no such column in the data (columns: "
                                 f"{', '.join(map(str, frame.columns))})", rule.line, rule.name)
            kind = dtype_kind(frame[rule.name].dtype, frame[rule.name])
            if kind not in rule.spec.kinds:
                raise self._fail(f"treatment {rule.treatment!r} does not fit a {kind} column "
                                 f"(dtype {frame[rule.name].dtype}; it takes "
                                 f"{', '.join(sorted(rule.spec.kinds))})", rule.line, rule.name)
        if not values:
            return
        for rule in self.columns:
            if rule.output != "generalized" or rule.treatment in _NEVER_IDENTITY:
                continue
            before = frame[rule.name]
            try:
                after = self.generalizer(rule).apply(before)
            except (InputError, TypeError, ValueError) as exc:
                if isinstance(exc, PolicyError):
                    raise
                raise self._fail(f"{rule.treatment} failed: {exc}", rule.line,
                                 rule.name) from None
            self.check_unchanged(rule, before, after)

    def check_unchanged(self, rule: ColumnRule, before: pd.Series, after: pd.Series) -> None:
        """Refuse a generalizer that left every non-null value of its column unchanged.

        ``after`` is ``rule``'s treatment applied to ``before``. The rule: when every non-null
        value is shown exactly as it was (:func:`pets.pseudo._generalize.left_unchanged`: equal
        output, an IP network whose address is the input, a bucket whose lower bound is it),
        the treatment is the identity on this data and its ``generalized`` label is a lie. A
        treatment that changes at least one value is not refused here, even when it stays
        injective (a prefix shorter than values that are all distinct still links rows; the
        k-anonymity check covers quasi-identifiers). An all-null column shows nothing.

        Raises:
            PolicyError: Names the file, line, column, treatment and parameters.
        """
        from pets.pseudo._generalize import left_unchanged

        same = left_unchanged(rule.treatment, before, after)
        present = int(before.notna().sum())
        distinct = int(before[same].nunique()) if same.any() else 0
        self.refuse_unchanged(rule, present, int(same.sum()), distinct)
        if rule.role in ("identifier", "sensitive") and present:
            # no k-anonymity check covers these: a generalizer must hide, not relabel
            text = _treatment_text(rule, self.generalizer(rule))
            if same.any():
                raise self._fail(f"{text} leaves {int(same.sum())} of {present} values of this "
                                 f"{rule.role} unchanged: a generalized {rule.role} must "
                                 "change every value (choose a coarser parameter or a keyed "
                                 "treatment)", rule.line, rule.name)
            n_in, n_out = int(before.nunique()), int(after.nunique())
            if n_in > 1 and n_out >= n_in:
                raise self._fail(f"{text} keeps this {rule.role} one-to-one ({n_in} distinct "
                                 f"values in, {n_out} out): it still identifies; choose a "
                                 "coarser parameter or a keyed treatment", rule.line, rule.name)

    def refuse_unchanged(self, rule: ColumnRule, present: int, unchanged: int,
                         distinct: int | None = None) -> None:
        """Raise when ``unchanged`` (rows shown as they were) covers all ``present`` (non-null)
        rows of ``rule``'s column (see :meth:`check_unchanged`); engines that count the rows
        themselves call this."""
        if present == 0 or unchanged < present:
            return
        hint = ("choose a coarser parameter, or say 'treatment: keep' if the column may leave "
                "as it is (kept columns go where 'kept' may go)"
                if rule.role in TREATMENTS["keep"].roles
                else "choose a coarser parameter or a keyed treatment")
        many = f", {distinct} distinct" if distinct is not None else ""
        transform = self.generalizer(rule) if rule.output == "generalized" else None
        raise self._fail(f"{_treatment_text(rule, transform)} leaves every value unchanged ({present} "
                         f"non-null values{many}, shown as they were): that is no "
                         f"protection; {hint}", rule.line, rule.name)

    # -- queries -----------------------------------------------------------------------------

    def column(self, name: str) -> ColumnRule:
        """The rule for ``name``."""
        for rule in self.columns:
            if rule.name == name:
                return rule
        raise PolicyError(f"{self.source}: no rule for column {name!r}")

    @property
    def quasi_identifiers(self) -> list[str]:
        """Quasi-identifier columns that stay in the output (not dropped or encrypted)."""
        return [r.name for r in self.columns if r.role == "quasi-identifier"
                and r.output in ("generalized", "kept", "pseudonymized")]

    def allows(self, output: str, destination: str) -> bool:
        """Whether outputs of kind ``output`` may go to ``destination``."""
        code = Jurisdiction(destination).code
        if code == self.home:
            return True
        where = self.destinations.get(output, ())
        return "*" in where or code in where

    def line_of(self, column: str) -> int | None:
        """The YAML line of a column's rule (``None`` for policies built in Python)."""
        return next((r.line for r in self.columns if r.name == column), None)

    def to_dict(self) -> dict[str, Any]:
        """Canonical content (what :meth:`digest` hashes)."""
        return {
            "version": _FORMAT_VERSION, "dataset": self.dataset, "home": self.home,
            "keys": dict(sorted(self.keys.items())),
            "destinations": {k: sorted(v) for k, v in sorted(self.destinations.items())},
            "min_k": self.min_k, "enforce_k": self.enforce_k,
            "max_suppression": self.max_suppression,
            "columns": [r.to_dict() for r in self.columns],
        }

    def to_yaml(self) -> str:
        """The policy as YAML that :meth:`from_yaml` reads back to an equal policy.

        Examples:
            >>> p = Policy("d", (ColumnRule("x", "metric", "keep"),))
            >>> Policy.from_yaml(p.to_yaml()) == p
            True
        """
        columns: dict[str, dict[str, Any]] = {}
        for r in self.columns:
            body: dict[str, Any] = {"role": r.role, "treatment": r.treatment}
            if r.params:
                body["params"] = dict(r.params)
            if r.domain is not None:
                body["domain"] = r.domain
            if r.key is not None:
                body["key"] = r.key
            if r.mode is not None:
                body["mode"] = r.mode
            if r.public_values is not None:
                body["public_values"] = list(r.public_values)
            columns[r.name] = body
        doc = {"version": _FORMAT_VERSION, "dataset": self.dataset, "home": self.home,
               "keys": dict(self.keys), "min_k": self.min_k, "enforce_k": self.enforce_k,
               "max_suppression": self.max_suppression,
               "destinations": {k: list(v) for k, v in self.destinations.items()},
               "columns": columns}
        return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict`."""
        data = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, default=str).encode()
        return hashlib.sha256(data).hexdigest()


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a policy YAML file.

    Raises:
        InputError: The file cannot be read.
        PolicyError: The policy is malformed (names the file, line and column).
    """
    from pets._io import require_regular_file

    p = require_regular_file(path, "policy")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{p}: cannot read policy ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: policy is not UTF-8 text") from None
    return Policy.from_yaml(text, source=str(p))


def _to_python(node: yaml.Node, source: str, path: str = "",
               lines: dict[str, int] | None = None,
               seen: set[int] | None = None) -> tuple[Any, dict[str, int]]:
    """Construct plain Python from a composed node, recording the line of each mapping key
    under its dotted path; duplicate keys are refused (plain ``yaml.safe_load`` keeps the last),
    and so are aliases (a policy needs none, and nested aliases expand exponentially).
    """
    lines = {} if lines is None else lines
    seen = set() if seen is None else seen
    if id(node) in seen:
        raise PolicyError(f"{_where(source, node.start_mark.line + 1)}: YAML aliases are not "
                          "supported in policies")
    seen.add(id(node))
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise PolicyError(f"{_where(source, key_node.start_mark.line + 1)}: "
                                  "keys must be plain names")
            key = key_node.value
            sub = f"{path}.{key}" if path else str(key)
            if key in out:
                raise PolicyError(f"{_where(source, key_node.start_mark.line + 1)}: duplicate "
                                  f"key {key!r}")
            lines[sub] = key_node.start_mark.line + 1
            out[key], _ = _to_python(value_node, source, sub, lines, seen)
        return out, lines
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, source, path, lines, seen)[0] for v in node.value], lines
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True), lines
    except yaml.YAMLError:
        raise PolicyError(f"{_where(source, node.start_mark.line + 1)}: invalid value") from None
    finally:
        loader.dispose()

"""Pseudonymization and generalization: keyed pseudonyms, tokens, FF1, k-anonymity.

Every transform is a small object with ``apply(series) -> series``, a ``name``, ``reversible``
and ``links`` (what equal outputs reveal), and ``describe()`` for manifests. Keyed transforms
derive a per-domain key (HKDF-SHA256) from a 32-byte root secret unwrapped from an EU key
service (``from_key``); reversible ones re-identify only in that key's jurisdiction, reporting
each call to the audit hook.

Every transform's ``apply`` and :func:`pseudonymize` also accept Dask objects and return them
lazily, identical to pandas on the same rows (see ``docs/scale-out.md``, "The same API on Dask").

Importing this package registers the ``.pets`` pandas accessor.

Examples:
    >>> import pandas as pd
    >>> from pets.keys import Secret
    >>> from pets.pseudo import KeyedHash, anonymity_report
    >>> h = KeyedHash(Secret(bytes(32)), domain="crm")
    >>> h.apply(pd.Series(["ann", "ann"])).nunique()
    1
    >>> h.describe()["links"]
    'equal normalised inputs within one domain (deterministic; frequencies preserved); unlinkable across domains'
"""

from pets.pseudo import _accessor  # noqa: F401  (registers the .pets accessor)
from pets.pseudo._anonymity import AnonymityReport, Enforcement, anonymity_report, enforce_k
from pets.pseudo._base import (
    KeyedTransform,
    KeyOrigin,
    Transform,
    WorkerKeyRef,
    derive_domain_key,
)
from pets.pseudo._ff1 import FF1, FF1Transform, PhoneFF1, ff1_min_length
from pets.pseudo._frame import parse_spec, pseudonymize, transform_from_spec
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
from pets.pseudo._keyed import ENCODINGS, KeyedHash
from pets.pseudo._token import Tokenizer

__all__ = [
    "AgeBand",
    "AnonymityReport",
    "Bucket",
    "DateShift",
    "ENCODINGS",
    "Enforcement",
    "FF1",
    "FF1Transform",
    "IPPrefix",
    "KeyOrigin",
    "KeyedHash",
    "KeyedTransform",
    "Mask",
    "PhoneFF1",
    "PostcodePrefix",
    "Suppress",
    "Tokenizer",
    "TopBottomCode",
    "Transform",
    "TruncateDate",
    "WorkerKeyRef",
    "anonymity_report",
    "derive_domain_key",
    "enforce_k",
    "ff1_min_length",
    "parse_spec",
    "pseudonymize",
    "transform_from_spec",
]

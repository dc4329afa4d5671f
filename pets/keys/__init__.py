"""Jurisdiction-scoped key services: KEKs named by URI, wrapping and unwrapping data keys.

Backends: :class:`LocalKeyring` (``local://``, the embedded default), :class:`Pkcs11Keyring`
(``pkcs11://``, a real HSM through ``python-pkcs11``; ``pip install 'pets[hsm]'``),
:class:`TransitKeyService` (``vault://``, an OpenBao / Vault transit key server that decides
access from the identity it authenticated; ``pip install 'pets[vault]'``) and
:class:`MemoryKeyring` (``memory://``, the test double). :func:`key_services` builds the
registry from settings or the environment; :func:`rewrap` moves a wrapped data key to another
key (rotation, migration) without the caller seeing the data key.

:class:`KeyServices` also tells subscribers (:meth:`KeyServices.subscribe`, weakly held) when a
key is rotated, retired or destroyed in this process, so caches of unwrapped keys drop them at
once, and, given ``audit=``, reports every wrap and unwrap made through it (``key.wrap`` /
``key.unwrap`` / ``key.failed``; never key bytes), refusing with :class:`AuditHookError` a use
the hook cannot record.
"""

from pets.keys._config import KeyConfig, Pkcs11TokenConfig, key_services
from pets.keys._local import LocalKeyring
from pets.keys._memory import MemoryKeyring, wrapping_aad
from pets.keys._pkcs11 import Pkcs11Keyring
from pets.keys._rewrap import rewrap
from pets.keys._secret import Secret
from pets.keys._service import (
    AuditHookError,
    KeyChange,
    KeyChanges,
    KeyInfo,
    KeyService,
    KeyServices,
    KeyVersion,
    WrappedKey,
    canonical_context,
    check_dek,
    check_unwrap_allowed,
    check_wrapped_matches,
    parse_key_uri,
)
from pets.keys._transit import (
    TransitAuth,
    TransitIdentity,
    TransitKeyService,
    TransitServer,
    transit_servers_from_dict,
)

__all__ = [
    "AuditHookError",
    "KeyChange",
    "KeyChanges",
    "KeyConfig",
    "KeyInfo",
    "KeyService",
    "KeyServices",
    "KeyVersion",
    "LocalKeyring",
    "MemoryKeyring",
    "Pkcs11Keyring",
    "Pkcs11TokenConfig",
    "Secret",
    "TransitAuth",
    "TransitIdentity",
    "TransitKeyService",
    "TransitServer",
    "WrappedKey",
    "canonical_context",
    "check_dek",
    "check_unwrap_allowed",
    "check_wrapped_matches",
    "key_services",
    "parse_key_uri",
    "rewrap",
    "transit_servers_from_dict",
    "wrapping_aad",
]

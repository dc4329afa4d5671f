"""Re-wrap a data key under another KEK (version) without handing the caller the data key.

Rotation (same KEK, newer primary version), migration between backends (local keyring → HSM)
and between data centres (EU DC A → EU DC B) are all the same operation: unwrap with the source
service, wrap with the target service, return the new :class:`WrappedKey`. The ciphertext the
data key protects is never touched. The data key exists only inside this function.
"""

from __future__ import annotations

from collections.abc import Mapping

from pets._errors import InputError, JurisdictionError, KeyNotFoundError
from pets._events import AuditHook, emit
from pets.jurisdiction import Context
from pets.keys._service import KeyService, KeyServices, WrappedKey

__all__ = ["rewrap"]


def _service(where: KeyService | KeyServices, uri: str) -> KeyService:
    if isinstance(where, KeyServices):
        return where.for_uri(uri)
    if not where.supports(uri):
        raise KeyNotFoundError(f"{type(where).__name__} does not serve {uri}")
    return where


def rewrap(
    wrapped: WrappedKey,
    *,
    source: KeyService | KeyServices,
    target_uri: str | None = None,
    target: KeyService | KeyServices | None = None,
    context: Context,
    enc_context: Mapping[str, str] | None = None,
    target_enc_context: Mapping[str, str] | None = None,
    allow_jurisdiction_change: bool = False,
    audit: AuditHook | None = None,
) -> WrappedKey:
    """Wrap the data key inside ``wrapped`` under ``target_uri``'s primary version.

    Args:
        wrapped: The wrapped data key to move.
        source: The service (or registry) that can unwrap ``wrapped``.
        target_uri: The KEK to wrap under; default ``wrapped.key_uri`` (rotation: the new
            primary version of the same key).
        target: The service (or registry) that holds ``target_uri``; default ``source``.
        context: Who asks, and where; the source service checks its jurisdiction.
        enc_context: The encryption context the data key was wrapped with.
        target_enc_context: The context to bind to the new wrapping; default ``enc_context``.
        allow_jurisdiction_change: Moving a data key to a KEK of *another* jurisdiction changes
            where the data may be decrypted, so it is refused unless this is True.
        audit: Hook receiving ``key.rewrap`` (URIs, versions, both keys' jurisdictions, who)
            or ``key.rewrap_refused``; never key bytes. When ``source`` / ``target`` are
            :class:`~pets.keys.KeyServices` registries, the unwrap and the wrap go through them,
            so their own audit hooks also see ``key.unwrap`` / ``key.wrap`` (purpose
            ``"rewrap"``).

    Returns:
        The new wrapped key. The caller never sees the data key; no event, exception or return
        value carries it.

    Raises:
        InputError: ``context`` is not a :class:`~pets.Context` (checked before anything else).
        JurisdictionError: ``context`` may not unwrap the source, or the target key belongs to
            another jurisdiction and ``allow_jurisdiction_change`` is False.
        KeyDestroyedError: The source version is destroyed or retired.
        IntegrityError: ``wrapped`` or ``enc_context`` does not authenticate.

    Examples:
        >>> from pets import Context
        >>> from pets.keys import MemoryKeyring
        >>> ring = MemoryKeyring()
        >>> _ = ring.create("memory://eu/kek", jurisdiction="EU")
        >>> old = ring.wrap("memory://eu/kek", b"d" * 32, context=Context("EU"))
        >>> _ = ring.rotate("memory://eu/kek")
        >>> new = rewrap(old, source=ring, context=Context("EU"))
        >>> (old.version, new.version)
        (1, 2)
        >>> ring.unwrap(new, context=Context("EU")) == b"d" * 32
        True
    """
    if not isinstance(context, Context):
        raise InputError("context must be a pets.Context")
    if not isinstance(wrapped, WrappedKey):
        raise InputError("wrapped must be a pets.keys.WrappedKey")
    target_uri = target_uri or wrapped.key_uri
    src = _service(source, wrapped.key_uri)
    dst = _service(target if target is not None else source, target_uri)
    new_ctx = enc_context if target_enc_context is None else target_enc_context
    src_info = src.describe(wrapped.key_uri)
    dst_info = dst.describe(target_uri)
    if dst_info.jurisdiction != src_info.jurisdiction and not allow_jurisdiction_change:
        emit(audit, "key.rewrap_refused", key=wrapped.key_uri, target=target_uri,
             key_jurisdiction=src_info.jurisdiction, target_jurisdiction=dst_info.jurisdiction,
             principal=context.principal, jurisdiction=context.jurisdiction)
        raise JurisdictionError(
            f"re-wrapping from {wrapped.key_uri} ({src_info.jurisdiction}) to {target_uri} "
            f"({dst_info.jurisdiction}) moves the data to another jurisdiction; refused "
            f"(allow_jurisdiction_change=True, or --allow-jurisdiction-change, does it on purpose)"
        )
    # through the registries when given, so their audit hooks see key.unwrap / key.wrap
    if isinstance(source, KeyServices):
        dek = source.unwrap(wrapped, context=context, enc_context=enc_context, purpose="rewrap")
    else:
        dek = src.unwrap(wrapped, context=context, enc_context=enc_context)
    registry = target if target is not None else source
    try:
        if isinstance(registry, KeyServices):
            out = registry.wrap(target_uri, dek, context=context, enc_context=new_ctx,
                                purpose="rewrap")
        else:
            out = dst.wrap(target_uri, dek, context=context, enc_context=new_ctx)
    finally:
        del dek
    emit(audit, "key.rewrap", key=wrapped.key_uri, version=wrapped.version, target=out.key_uri,
         target_version=out.version, key_jurisdiction=src_info.jurisdiction,
         target_jurisdiction=dst_info.jurisdiction, principal=context.principal,
         jurisdiction=context.jurisdiction)
    return out

"""Turning pets transforms into shippable forms that carry key references, not keys.

A keyed pseudonymizer (:class:`pets.pseudo.KeyedTransform`) holds its *domain key*. Its own
``worker_ref()`` is a picklable rebuild recipe, but it carries the domain key's bytes: placed
in a task graph they would be copied into every task message and every spilled graph. Here
the domain key is wrapped under the job's KEK instead (:class:`~pets.engines.WorkerKeys`) and
the worker rebuilds the transform from the unwrapped key once per process (:class:`Rebuild`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pets.engines._keyref import WorkerKeys
from pets.engines._plan import Rebuild, Transform
from pets.keys import Secret

__all__ = ["keyed_shipper", "rebuild_keyed"]


def rebuild_keyed(secret: Secret, *, kind: str, domain: str, params: tuple[tuple[str, Any], ...],
                  origin: Any) -> Transform:
    """Worker side: rebuild a :mod:`pets.pseudo` keyed transform from its domain key."""
    from pets.pseudo import WorkerKeyRef

    ref = WorkerKeyRef(kind, domain, secret.expose(), dict(params), origin)
    built: Transform = ref.build()
    return built


def keyed_shipper(keys: WorkerKeys | None) -> Callable[[Any], Rebuild | None]:
    """A shipper for :func:`~pets.engines.ship` handling transforms with ``worker_ref()``."""

    def shipper(transform: Any) -> Rebuild | None:
        worker_ref = getattr(transform, "worker_ref", None)
        if not callable(worker_ref):
            return None
        if keys is None:
            from pets._errors import InputError

            raise InputError(
                f"transform {transform.name!r} is keyed: pass keys=WorkerKeys(...) so its key "
                "reaches the workers as a key reference")
        wref = worker_ref()
        ref = keys.ref(Secret(wref.domain_key))
        return Rebuild.of(rebuild_keyed, ref, name=wref.kind, kind=wref.kind,
                          domain=wref.domain, params=tuple(sorted(dict(wref.params).items())),
                          origin=wref.origin)

    return shipper

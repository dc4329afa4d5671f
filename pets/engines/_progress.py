"""Compute Dask collections with a progress display when a person is watching.

In Jupyter with a ``distributed`` client the progress is ``distributed.progress`` (a widget);
in a terminal it is ``dask.diagnostics.ProgressBar`` (local schedulers) or the text bar of
``distributed.progress``; in pipelines (no TTY, no notebook) nothing is printed.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

__all__ = ["compute", "interactive"]


def interactive() -> bool:
    """True in a Jupyter kernel or when stderr is a terminal.

    Examples:
        >>> isinstance(interactive(), bool)
        True
    """
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _current_client() -> Any:
    try:
        import distributed
    except ImportError:
        return None
    mod: Any = distributed
    try:  # the client made current by ``client.as_current()``, else the global default
        return mod.Client.current(allow_global=True)
    except ValueError:
        return None


def compute(*collections: Any, progress: bool | None = None, client: Any = None) -> tuple[Any, ...]:
    """``dask.compute(*collections)`` with progress when :func:`interactive` (or ``progress``).

    Args:
        collections: Dask collections (or delayed objects) to compute together.
        progress: Force the display on or off; ``None`` decides from :func:`interactive`.
        client: A ``distributed.Client``; default: the current one, if any.

    Returns:
        The computed results, in order.

    Examples:
        >>> import dask
        >>> compute(dask.delayed(sum)([1, 2, 3]), progress=False)
        (6,)
    """
    import importlib

    dask: Any = importlib.import_module("dask")
    show = interactive() if progress is None else progress
    client = client if client is not None else _current_client()
    if client is not None:
        futures = client.compute(list(collections))
        if show:
            dist: Any = importlib.import_module("distributed")
            try:
                dist.progress(futures, notebook="ipykernel" in sys.modules)
            except ImportError:  # a notebook without ipywidgets: the text bar
                dist.progress(futures, notebook=False)
        return tuple(client.gather(futures))
    ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if show:
        diag: Any = importlib.import_module("dask.diagnostics")
        ctx = diag.ProgressBar(out=sys.stderr)
    with ctx:
        return tuple(dask.compute(*collections))

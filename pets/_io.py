"""Atomic file output: write to a temporary file beside the target, then rename.

A failed run leaves no partial output: on any exception the temporary file is removed and the
destination is untouched.

Examples:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "out.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "out.txt").read_text()
    'hello'
    >>> try:
    ...     with atomic_path(d / "bad.txt") as tmp:
    ...         _ = tmp.write_text("partial")
    ...         raise RuntimeError("boom")
    ... except RuntimeError:
    ...     pass
    >>> sorted(p.name for p in d.iterdir())
    ['out.txt']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["atomic_path", "write_parquet"]


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path in ``dest``'s directory; rename it onto ``dest`` on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, mode)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_parquet(frame: pd.DataFrame, dest: str | os.PathLike[str], **kwargs: object) -> Path:
    """Write ``frame`` to Parquet atomically (no index)."""
    with atomic_path(dest) as tmp:
        frame.to_parquet(tmp, index=False, **kwargs)  # type: ignore[call-overload]
    return Path(dest)

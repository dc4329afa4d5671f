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
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["atomic_directory", "atomic_path", "write_parquet"]


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


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike[str], *, overwrite: bool = False,
                     suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a hidden directory beside ``dest``; swap it onto ``dest`` when the block succeeds.

    An existing ``dest`` is replaced only if ``overwrite`` and only once the new directory is
    complete; on any exception the new directory is removed and ``dest`` is untouched.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "dataset"
        >>> with atomic_directory(d) as tmp:
        ...     _ = (tmp / "part.0").write_text("rows")
        >>> sorted(p.name for p in d.iterdir())
        ['part.0']
        >>> with atomic_directory(d):  # doctest: +ELLIPSIS
        ...     pass
        Traceback (most recent call last):
        ...
        pets._errors.InputError: output ... already exists (pass overwrite=True to replace it)
    """
    from pets._errors import InputError

    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise InputError(f"output {dest} already exists (pass overwrite=True to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # noqa: S103 - a dataset directory, like mkdir's default
        if dest.exists():
            trash = dest.with_name(f".{dest.name}.old-{os.urandom(4).hex()}")
            os.replace(dest, trash)
            os.replace(tmp, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise


def write_parquet(frame: pd.DataFrame, dest: str | os.PathLike[str], **kwargs: object) -> Path:
    """Write ``frame`` to Parquet atomically (no index)."""
    with atomic_path(dest) as tmp:
        frame.to_parquet(tmp, index=False, **kwargs)  # type: ignore[call-overload]
    return Path(dest)

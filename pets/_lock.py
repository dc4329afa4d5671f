"""Exclusive inter-process file locks that work on Linux, macOS and Windows.

Every writer in pets that must exclude other *processes* (the boundary's key directory, the
local keyring, the audit log) takes :func:`exclusive` on a dedicated lock file. It is a thin
wrapper over the maintained `filelock <https://py-filelock.readthedocs.io>`_ library, which uses
``fcntl.flock`` on POSIX and ``msvcrt.locking`` on Windows, so a data scientist on macOS or
Windows runs the same code as the Linux server.

Semantics (the same as the ``fcntl.flock(fd, LOCK_EX)`` calls it replaced):

* **exclusive and blocking**: a second holder — another process, or another thread of this
  process — waits until the first releases; the lock is released when the ``with`` block ends
  (and by the operating system if the holder dies, so a crash leaves no stale lock);
* **advisory**: it excludes only code that takes the same lock file;
* **not re-entrant**: taking the same lock file again inside the block waits forever, as a second
  ``flock`` on a new descriptor did;
* the lock file is created with mode 0600 and holds no data. Depending on the filelock version
  it is removed on release or left behind; both are safe.

Examples:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with exclusive(d / ".lock"):
    ...     (d / "data.txt").write_text("written under the lock")
    22
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from filelock import FileLock

__all__ = ["exclusive"]

LOCK_FILE_MODE = 0o600


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive, blocking inter-process lock on ``lock_file`` for the ``with`` block.

    Args:
        lock_file: The lock file (created 0600 if missing; its directory must exist).

    Raises:
        OSError: The lock file cannot be created or opened (callers turn it into the
            :class:`~pets.PetsError` that names what they were locking).
    """
    lock = FileLock(os.fspath(lock_file), timeout=-1, mode=LOCK_FILE_MODE)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()

"""Safe file output: atomic writes, output-path checks, and signals that unwind.

* :func:`atomic_path` / :func:`atomic_directory` write to a temporary file (mode 0600) or
  directory (0700) beside the target and rename it on success: a failed or interrupted run
  leaves no partial output, and the destination is untouched.
* :func:`check_output` refuses an output path that would destroy what a command reads or what
  pets keeps (an input, the keyring, the audit log, the ledger), or an existing file.
* :func:`signals_raise` turns SIGTERM, SIGINT and SIGHUP into :class:`Interrupted`, which
  unwinds the stack so every ``finally`` (and the two context managers above) cleans up.

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
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Interrupted", "atomic_directory", "atomic_path", "check_output", "require_regular_file",
           "signals_raise", "staged_files",
           "write_parquet"]

#: The signals :func:`signals_raise` turns into :class:`Interrupted` by default.
TERMINATING_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# -- signals ------------------------------------------------------------------------------------


class Interrupted(BaseException):
    """A terminating signal, raised in the main thread so the stack unwinds and cleans up.

    A :class:`BaseException` (like :class:`KeyboardInterrupt`): ``except Exception`` does not
    swallow it. The CLI exits with :attr:`exit_code` = 128 + the signal number (143 for
    SIGTERM, 130 for SIGINT, 129 for SIGHUP), as a shell reports a process killed by it.

    Examples:
        >>> import signal
        >>> exc = Interrupted(signal.SIGTERM)
        >>> exc.exit_code, str(exc)
        (143, 'interrupted by SIGTERM')
    """

    def __init__(self, signo: int) -> None:
        self.signo = int(signo)
        try:
            name = signal.Signals(self.signo).name
        except ValueError:
            name = f"signal {self.signo}"
        super().__init__(f"interrupted by {name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number."""
        return 128 + self.signo


class _SignalState(threading.local):
    """Signal bookkeeping; a critical section defers an arriving signal to its end."""

    def __init__(self) -> None:
        self.installed = 0   # nesting of signals_raise()
        self.raised = False  # an Interrupted is already unwinding: ignore further signals
        self.depth = 0       # nesting of _deferred()
        self.pending: int | None = None


_SIG = _SignalState()


def _handler(signo: int, frame: FrameType | None) -> None:
    if _SIG.raised:
        return  # already unwinding: let the cleanup finish
    if _SIG.depth:
        _SIG.pending = signo  # raised at the end of the critical section
        return
    _SIG.raised = True
    raise Interrupted(signo)


@contextlib.contextmanager
def _deferred() -> Iterator[None]:
    """A critical section: a signal arriving inside is raised when it ends (creating a temp
    file and registering it for cleanup, renaming it, removing it)."""
    _SIG.depth += 1
    try:
        yield
    finally:
        _SIG.depth -= 1
        if not _SIG.depth and _SIG.pending is not None and not _SIG.raised:
            signo, _SIG.pending = _SIG.pending, None
            _SIG.raised = True
            raise Interrupted(signo)


@contextlib.contextmanager
def signals_raise(signals: Iterable[int] = TERMINATING_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Interrupted` in the main thread.

    The previous handlers come back when the block ends; a signal that was ignored (``nohup``
    ignores SIGHUP) stays ignored. A second signal while the first one unwinds is ignored, so the cleanup in ``finally`` blocks runs to its end. Off the main
    thread (where Python cannot install handlers) this does nothing.

    Examples:
        >>> import os, signal
        >>> try:
        ...     with signals_raise():
        ...         os.kill(os.getpid(), signal.SIGHUP)
        ... except Interrupted as exc:
        ...     print(exc.exit_code)
        129
        >>> signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
        True
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a signal the parent set to be ignored stays ignored (``nohup`` ignores SIGHUP)
    previous = {s: h for s in signals if (h := signal.getsignal(s)) is not signal.SIG_IGN}
    if not _SIG.installed:
        _SIG.raised, _SIG.pending = False, None
    _SIG.installed += 1
    try:
        for s in previous:
            signal.signal(s, _handler)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _SIG.installed -= 1
        if not _SIG.installed:
            _SIG.raised, _SIG.pending = False, None


# -- atomic output ------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path in ``dest``'s directory; rename it onto ``dest`` on success.

    The temporary file is created with mode 0600 (plaintext is never readable by others while
    it is written) and gets ``mode`` only just before the rename. On any exception, including
    :class:`Interrupted` and :class:`KeyboardInterrupt`, it is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with _deferred():
            fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            tmp = Path(name)
            os.close(fd)
        yield tmp
        if tmp.exists():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
        with _deferred():
            os.replace(tmp, dest)
            tmp = None
    except BaseException:
        with _deferred():
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike[str], *, overwrite: bool = False,
                     suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a hidden directory beside ``dest``; swap it onto ``dest`` when the block succeeds.

    An existing ``dest`` is replaced only if ``overwrite`` and only once the new directory is
    complete; on any exception (a signal too, see :func:`signals_raise`) the new directory
    (mode 0700 until the swap) is removed and ``dest`` is untouched.

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
    tmp: Path | None = None
    try:
        with _deferred():
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent))
        yield tmp
        os.chmod(tmp, 0o755)  # noqa: S103 - a dataset directory, like mkdir's default
        with _deferred():
            if dest.exists():
                trash = dest.with_name(f".{dest.name}.old-{os.urandom(4).hex()}")
                os.replace(dest, trash)
                os.replace(tmp, dest)
                tmp = None
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, dest)
                tmp = None
    except BaseException:
        with _deferred():
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        raise


def require_regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """Refuse a FIFO, socket, device or directory before it is opened for reading (reading a
    FIFO blocks for ever). A missing file is left to the reader, which names it.

    Examples:
        >>> import os, tempfile, pathlib
        >>> fifo = pathlib.Path(tempfile.mkdtemp()) / "fifo"
        >>> os.mkfifo(fifo)
        >>> require_regular_file(fifo, "policy")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pets._errors.InputError: .../fifo: cannot read policy (not a regular file)
    """
    import stat

    from pets._errors import InputError

    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        return p
    if not stat.S_ISREG(mode):
        raise InputError(f"{p}: cannot read {what} (not a regular file)")
    return p


@contextlib.contextmanager
def staged_files(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden staging directory; on success move everything in it into ``out_dir``.

    All of a command's outputs land together or not at all: a new ``out_dir`` is renamed into
    place whole (:func:`atomic_directory`); in an existing one the staged entries are renamed
    in with signals deferred, an existing entry of the same name replaced (callers check
    beforehand which names may be replaced). On any exception, a signal included, the staging
    directory is removed and ``out_dir`` is untouched.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with staged_files(d / "out") as tmp:
        ...     _ = (tmp / "a.txt").write_text("a")
        >>> with staged_files(d / "out") as tmp:
        ...     _ = (tmp / "b.txt").write_text("b")
        >>> sorted(p.name for p in (d / "out").iterdir())
        ['a.txt', 'b.txt']
    """
    dest = Path(out_dir)
    if not dest.exists():
        with atomic_directory(dest) as whole:
            yield whole
        return
    tmp: Path | None = None
    try:
        with _deferred():
            tmp = Path(tempfile.mkdtemp(prefix=".pets-staging.", dir=dest))
        yield tmp
        with _deferred():
            for entry in sorted(tmp.iterdir()):
                target = dest / entry.name
                if entry.is_dir() and target.is_dir():
                    trash = dest / f".{entry.name}.old-{os.urandom(4).hex()}"
                    os.replace(target, trash)
                    os.replace(entry, target)
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    os.replace(entry, target)
            tmp.rmdir()
            tmp = None
    except BaseException:
        with _deferred():
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(frame: pd.DataFrame, dest: str | os.PathLike[str], **kwargs: object) -> Path:
    """Write ``frame`` to Parquet atomically (no index)."""
    with atomic_path(dest) as tmp:
        frame.to_parquet(tmp, index=False, **kwargs)  # type: ignore[call-overload]
    return Path(dest)


# -- output-path checks -------------------------------------------------------------------------

_MAX_PROTECTED_FILES = 10_000  # inodes collected under a protected directory (hard links)


def _real(path: str | os.PathLike[str], option: str) -> Path:
    from pets._errors import InputError

    text = os.fspath(path)
    if not text or "\0" in text:
        raise InputError(f"{option} {text!r}: not a usable path")
    try:
        return Path(os.path.realpath(text))
    except (OSError, ValueError) as exc:
        raise InputError(f"{option} {text!r}: cannot resolve ({type(exc).__name__})") from None


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _inodes(path: Path) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of ``path`` and, for a directory, of the files under it (bounded)."""
    out: set[tuple[int, int]] = set()
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return out
    if not stat.S_ISDIR(st.st_mode):
        return {(st.st_dev, st.st_ino)}
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                fst = os.stat(os.path.join(root, name))
                out.add((fst.st_dev, fst.st_ino))
            if len(out) >= _MAX_PROTECTED_FILES:
                return out
    return out


def check_output(out: str | os.PathLike[str], *, option: str = "--out",
                 inputs: Iterable[str | os.PathLike[str]] = (),
                 protected: Iterable[str | os.PathLike[str]] = (),
                 overwrite: bool = False) -> Path:
    """Refuse an output path that would destroy an input, pets' own files, or an existing file.

    ``out`` and every path given are resolved first (symlinks and ``..``, in the path and in
    each parent: :func:`os.path.realpath`). ``out`` is refused when it

    * is, is inside, or contains one of ``inputs`` (the files the command reads), or is a hard
      link to one of them (same ``st_dev`` and ``st_ino``);
    * is, is inside, or contains one of ``protected`` (the keyring directory, the boundary
      directory, the audit log, the ledger: whether they exist yet or not), or is a hard link
      to a file under them — even with ``overwrite``;
    * already exists (as a file, a directory, a FIFO or a symlink, dangling or not), unless
      ``overwrite`` (the command's ``--overwrite`` flag).

    Call it before any work is done or budget spent, and write to the returned path.

    Args:
        out: The output path as the user gave it.
        option: How the user named it (``--out``, ``OUT``, ``DEST``), for the message.
        inputs: Every file or directory the command reads.
        protected: Locations pets must never write over (see
            :func:`pets.cli._common.protected_paths`).
        overwrite: Allow replacing an existing output that is none of the above.

    Returns:
        The resolved output path.

    Raises:
        InputError: Exit code 1; the message names ``option``, ``out`` and the path it would
            destroy.

    Examples:
        >>> import os, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); src = d / "in.csv"
        >>> _ = src.write_text("id\\n1\\n"); (d / "keyring").mkdir()
        >>> check_output(d / "out.csv", inputs=[src], protected=[d / "keyring"]) == d.resolve() / "out.csv"
        True
        >>> check_output(d / "x" / ".." / "in.csv", option="OUT", inputs=[src])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pets._errors.InputError: OUT '...in.csv' is the input '...in.csv': refusing to overwrite it
        >>> os.link(src, d / "hard.csv")
        >>> check_output(d / "hard.csv", inputs=[src], overwrite=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pets._errors.InputError: --out '...hard.csv' is a hard link to the input '...in.csv': refusing to overwrite it
        >>> check_output(d / "keyring" / "k.json", protected=[d / "keyring"], overwrite=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pets._errors.InputError: --out '...k.json' is inside the protected location '...keyring' (keyring, audit log, ledger or boundary directory): refusing to write there
        >>> check_output(src)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pets._errors.InputError: --out '...in.csv' already exists: refusing to overwrite it (pass --overwrite to replace it)
    """
    from pets._errors import InputError

    real = _real(out, option)
    shown = os.fspath(out)
    try:
        out_st: os.stat_result | None = os.stat(real)
    except (OSError, ValueError):
        out_st = None
    out_inode = (out_st.st_dev, out_st.st_ino) if out_st is not None else None

    def refuse(what: str, other: Path, kind: str, tail: str) -> InputError:
        return InputError(f"{option} {shown!r} {what} the {kind} {str(other)!r}{tail}")

    def check(other: Path, kind: str, tail: str, link: str) -> None:
        if real == other:
            raise refuse("is", other, kind, tail)
        if _within(real, other):
            raise refuse("is inside", other, kind, tail)
        if _within(other, real):
            raise refuse("contains", other, kind, tail)
        if out_inode is not None and out_inode in _inodes(other):
            raise refuse(link, other, kind, tail)

    for item in inputs:
        check(_real(item, "input"), "input", ": refusing to overwrite it", "is a hard link to")
    for item in protected:
        check(_real(item, "protected path"), "protected location",
              " (keyring, audit log, ledger or boundary directory): refusing to write there",
              "is a hard link to a file under")
    if not overwrite and os.path.lexists(out):
        raise InputError(f"{option} {shown!r} already exists: refusing to overwrite it "
                         "(pass --overwrite to replace it)")
    return real

"""pets._lock and the writers that use it: a held lock keeps a second *process* out."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from pets._lock import exclusive
from pets.boundary import AuditLog
from pets.boundary._keys import _locked as boundary_locked
from pets.keys._local import _locked as keyring_locked

# The child says "ready", runs the locked step, then says "done". Argv: kind, path.
_CHILD = """
import sys
from pathlib import Path
kind, path = sys.argv[1], Path(sys.argv[2])
print("ready", flush=True)
if kind == "exclusive":
    from pets._lock import exclusive
    with exclusive(path):
        pass
elif kind == "boundary":
    from pets.boundary._keys import _locked
    with _locked(path):
        pass
elif kind == "keyring":
    from pets.keys._local import _locked
    with _locked(path):
        pass
elif kind == "audit":
    from pets.boundary import AuditLog
    AuditLog(path, actor="child@EU").append("test.child")
print("done", flush=True)
"""

HOLD_SECONDS = 1.5


def _held_excludes_child(hold: Callable[[], AbstractContextManager[object]], kind: str,
                         path: Path) -> Iterator[str]:
    """Hold the lock, start a child that takes it; yield at the points the test checks."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with hold():
        child = subprocess.Popen([sys.executable, "-c", _CHILD, kind, str(path)],
                                 stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(HOLD_SECONDS)  # the child would be done long before this without the lock
        assert child.poll() is None, "the child finished while the lock was held"
        yield "held"
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert out.strip() == "done"
    yield "released"


class TestExclusive:
    def test_a_second_process_waits_for_the_holder(self, tmp_path):
        lock = tmp_path / ".lock"
        for _ in _held_excludes_child(lambda: exclusive(lock), "exclusive", lock):
            pass

    @pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
    def test_lock_file_is_0600_whatever_the_umask(self, tmp_path):
        old = os.umask(0)
        try:
            with exclusive(tmp_path / ".lock"):
                assert stat.S_IMODE(os.stat(tmp_path / ".lock").st_mode) == 0o600
        finally:
            os.umask(old)

    def test_released_on_exception(self, tmp_path):
        with pytest.raises(RuntimeError, match="boom"), exclusive(tmp_path / ".lock"):
            raise RuntimeError("boom")
        with exclusive(tmp_path / ".lock"):  # would wait forever if still held
            pass


class TestWritersTakeTheLock:
    def test_boundary_key_directory(self, tmp_path):
        d = tmp_path / "boundary"
        for _ in _held_excludes_child(lambda: boundary_locked(d), "boundary", d):
            pass

    def test_local_keyring(self, tmp_path):
        d = tmp_path / "ring"
        for _ in _held_excludes_child(lambda: keyring_locked(d), "keyring", d):
            pass

    def test_audit_log_append_waits_for_the_lock_file(self, tmp_path):
        log_path = tmp_path / "audit.jsonl"
        log = AuditLog(log_path, actor="parent@EU")
        log.append("test.parent")
        lock = log._lock_path
        assert lock == tmp_path / ".audit.jsonl.lock"
        for point in _held_excludes_child(lambda: exclusive(lock), "audit", log_path):
            entries = log.entries()
            if point == "held":
                assert [e["kind"] for e in entries] == ["test.parent"]
            else:
                assert [e["kind"] for e in entries] == ["test.parent", "test.child"]

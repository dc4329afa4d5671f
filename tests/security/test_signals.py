"""Attack: kill a command mid-write and look for plaintext or partial files (issue #12, item 2).

``pets decrypt`` (and the boundary commands ``protect``, ``export``, ``release``) run as real
``python -m pets.cli`` processes on inputs big enough to be caught mid-write. As soon as the
temporary output file appears, the process gets SIGTERM, SIGINT or SIGHUP. It must exit with
128 + the signal number and leave nothing in the output directory: no temporary file, no
partial output, no plaintext.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pets.cli import main
from tests.security._cli_env import URI, child_env, enter, policy_text, setup_boundary

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

BIG = 160 << 20  # plaintext bytes: ~0.3 s of decryption, long enough to be caught mid-write
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    with pytest.MonkeyPatch.context() as mp:
        setup_boundary(root, mp)
        with open(root / "big.bin", "wb") as fh:  # sparse: instant to make
            fh.truncate(BIG)
        assert main(["encrypt", "big.bin", "big.pets", "--key", URI,
                     "--segment-size", str(4 << 20)]) == 0
        (root / "big.bin").unlink()
    return root


def _default_signals() -> None:  # the child must not inherit an ignored SIGINT/SIGHUP
    for s in SIGNALS:
        signal.signal(s, signal.SIG_DFL)


def _temp_files(out_dir: Path) -> list[str]:
    if not out_dir.exists():
        return []
    return sorted(p.name for p in out_dir.iterdir()
                  if p.name.startswith(".") and (".tmp" in p.name or ".stage" in p.name
                                                  or ".check" in p.name))


def interrupt(root: Path, argv: list[str], out_dir: Path, signo: int,
              timeout: float = 20.0) -> tuple[int, str, list[str]]:
    """Run ``pets argv`` in ``root``; signal it once a temporary file shows up in ``out_dir``.

    Returns the exit code, stderr and the temp files seen (to prove the signal landed
    mid-write).
    """
    proc = subprocess.Popen([sys.executable, "-m", "pets.cli", *argv], cwd=root,
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_signals)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _temp_files(out_dir)
            if seen:
                proc.send_signal(signo)
                break
            time.sleep(0.002)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen, f"no temporary file appeared in {out_dir} (the run was too fast?): {err!r}"
    return proc.returncode, err.decode(errors="replace"), seen


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_decrypt_interrupted_leaves_no_plaintext(scratch, signo):
    out_dir = scratch / f"plain-{int(signo)}"
    out_dir.mkdir()
    code, err, seen = interrupt(scratch, ["decrypt", "big.pets", f"{out_dir.name}/big.bin"],
                                out_dir, signo)
    assert code == 128 + signo, err
    assert f"interrupted by {signal.Signals(signo).name}" in err and "Traceback" not in err
    assert seen and all(name.startswith(".big.bin.") for name in seen)
    assert list(out_dir.iterdir()) == []


def test_decrypt_temp_file_is_private_while_written(scratch):
    out_dir = scratch / "mode"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pets.cli", "decrypt", "big.pets",
                             "mode/big.bin"], cwd=scratch, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    modes = set()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            for name in _temp_files(out_dir):
                try:
                    modes.add((out_dir / name).stat().st_mode & 0o777)
                except FileNotFoundError:
                    pass
            time.sleep(0.002)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert modes == {0o600}
    assert (out_dir / "big.bin").stat().st_size == BIG
    assert (out_dir / "big.bin").stat().st_mode & 0o777 == 0o600


# -- the boundary commands (owned elsewhere; the CLI entry point makes them unwind too) ----------

@pytest.fixture(scope="module")
def table(scratch):
    """A raw users table large enough for protect to be caught while it writes."""
    with pytest.MonkeyPatch.context() as mp:
        enter(scratch, mp)
        assert main(["datasets", "generate", "--users", "50000", "--out", "users.parquet"]) == 0
        (scratch / "policy.yaml").write_text(policy_text())
        assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out",
                     "prot"]) == 0
    return scratch


@pytest.mark.parametrize("signo", [signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_protect_interrupted_leaves_nothing(table, signo):
    out_dir = table / f"prot-{int(signo)}"
    # a new --out directory is staged whole beside it (.prot-N.*.tmp) and renamed at the end
    code, err, _ = interrupt(table, ["protect", "users.parquet", "--policy", "policy.yaml",
                                     "--out", out_dir.name], table, signo)
    assert code == 128 + signo, err
    assert "Traceback" not in err
    assert not out_dir.exists() or [p.name for p in out_dir.iterdir()] == []
    assert [p.name for p in table.iterdir() if p.name.startswith(f".{out_dir.name}")] == []


def test_export_interrupted_leaves_nothing(table):
    out_dir = table / "us"
    code, err, _ = interrupt(table, ["export", "prot", "--to", "US", "--out", "us/u.parquet",
                                     "--columns", "allowed"], out_dir, signal.SIGTERM)
    if code == 0:  # the signal came after the rename: the export is whole, nothing partial
        from pets.boundary import read_protected

        read_protected(out_dir / "u.parquet",
                       table / ".pets" / "keyring" / "boundary" / "signing-key.pub.pem")
        assert [p.name for p in out_dir.iterdir()] == ["u.parquet"]
        return
    assert code == 128 + signal.SIGTERM, err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []

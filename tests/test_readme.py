"""The README's Python example runs as printed."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, str(README), "exec"), namespace)
        frame = namespace["release"].to_frame()  # type: ignore[attr-defined]
        assert {"estimate", "ci_low", "ci_high"} <= set(frame.columns)


def test_quickstart_gives_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_console_blocks_run_as_printed(tmp_path):
    """The pipeline blocks, in order, in a fresh directory, with the documented environment."""
    import os
    import shutil
    import subprocess
    import sys

    blocks = [b for b in re.findall(r"```console\n(.*?)```", README.read_text(), flags=re.S)
              if b.startswith(("export PETS_", "pets "))]  # not the make set-up block
    assert len(blocks) >= 2, "README lost its pipeline examples"
    script = "\n".join(blocks).replace(
        "PETS_MASTER_KEY=…", "PETS_MASTER_KEY=" + "ab" * 32)
    assert "…" not in script
    bindir = Path(sys.executable).parent
    if shutil.which("pets", path=str(bindir)) is None:
        import pytest

        pytest.skip("the pets entry point is not installed next to this interpreter")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("PETS_JURISDICTION", "PETS_PRINCIPAL", "PETS_KEYRING", "PETS_DASK_SCHEDULER",
                 "PETS_KEYRING_PASSPHRASE"):
        env.pop(name, None)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "entries verify" in done.stdout
    assert (tmp_path / "us" / "users.parquet").is_file()
    assert (tmp_path / "us" / "events" / "_manifest.json").is_file()
    assert (tmp_path / "r.parquet").is_file() and (tmp_path / "release.parquet").is_file()

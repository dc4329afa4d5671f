"""Every notebook in ``notebooks/`` runs top to bottom, and is committed without outputs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]


def test_the_three_notebooks_exist():
    assert NAMES == ["01-quickstart.ipynb", "02-etl-walkthrough.ipynb",
                     "03-privacy-utility.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_outputs_are_cleared(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a code cell has a count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_runs_top_to_bottom(path, tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # The native "python3" kernel is this interpreter (jupyter_client maps "python" to
    # sys.executable), i.e. the project's venv with pets installed.
    client = NotebookClient(nb, kernel_name="python3", timeout=180,
                            resources={"metadata": {"path": str(path.parent)}},
                            extra_arguments=[f"--HistoryManager.hist_file={tmp_path / 'h.db'}"])
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert elapsed < 240, f"{path.name} took {elapsed:.0f} s"
    assert sys.executable  # the kernel ran under this interpreter's venv

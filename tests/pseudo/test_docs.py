"""docs/pseudonymization.md: every ``python`` block runs, in order, against the real package."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pets.datasets import synthetic_users
from pets.keys import Secret

DOC = Path(__file__).resolve().parents[2] / "docs" / "pseudonymization.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


class TestPseudonymizationDoc:
    def test_the_doc_has_python_examples(self):
        assert len(BLOCKS) >= 5

    def test_every_python_block_runs(self):
        dd = pytest.importorskip("dask.dataframe")
        users = synthetic_users(400, seed=3)
        ns: dict = {"users": users, "df": users, "root": Secret(bytes(range(32))),
                    "ddf": dd.from_pandas(users, npartitions=2)}
        for i, block in enumerate(BLOCKS):
            try:
                exec(compile(block, f"{DOC.name}[python block {i}]", "exec"), ns)
            except Exception as exc:  # pragma: no cover - the failure message is the point
                raise AssertionError(f"python block {i} of {DOC.name} fails: {exc!r}\n"
                                     f"{block}") from exc
        assert ns["res"].report.k >= 10
        assert isinstance(ns["out"], pd.DataFrame) and ns["out"]["email"].str.len().eq(32).all()
        assert ns["ddf"]["email"].compute().str.len().eq(32).all()

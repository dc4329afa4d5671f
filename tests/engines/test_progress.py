"""Progress is shown when asked (or interactive) and silent in pipelines."""

from __future__ import annotations

from tests.engines.conftest import require_dask

require_dask()

import dask  # noqa: E402
import pytest  # noqa: E402

from pets.engines._progress import compute, interactive  # noqa: E402


class TestCompute:
    @pytest.fixture(autouse=True)
    def _sync(self):
        with dask.config.set(scheduler="synchronous"):
            yield

    def test_progress_bar_on_request(self, capsys):
        assert compute(dask.delayed(sum)([1, 2]), progress=True) == (3,)
        assert "100%" in capsys.readouterr().err

    def test_silent_in_pipelines(self, capsys):
        assert interactive() is False  # captured stderr is not a terminal, no kernel
        assert compute(dask.delayed(sum)([1, 2])) == (3,)
        assert capsys.readouterr().err == ""

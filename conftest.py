# Root conftest: keep doctest collection away from the console-script entry points.
collect_ignore_glob = ["pets/__main__.py", "pets/cli/__main__.py"]

import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _no_leaked_distributed_scheduler():
    """After each module: a ``distributed`` client that is gone must not leave dask's global
    config pointing at it (a later module's plain ``.compute()`` then waits for a client that
    never comes). Seen once in a full run after the engine modules; reset, with a warning in
    the log rather than a hang."""
    yield
    if "dask" not in sys.modules or "distributed" not in sys.modules:
        return
    import dask
    from distributed import default_client

    if dask.config.get("scheduler", None) == "dask.distributed":
        try:
            default_client()
        except ValueError:  # no client is active: the setting leaked
            dask.config.set(scheduler=None)

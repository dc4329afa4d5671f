"""Engines: the same protections on pandas (default) and on Dask (scale-out).

Partition functions are pure ``DataFrame -> DataFrame``; secrets reach workers as
:class:`KeyRef` objects resolved through the key service on the worker (never key bytes in a
task graph); DP noise is added once, on the driver, to the reduced aggregate. The Dask API is
in :mod:`pets.engines.dask`; the pandas entry points also accept Dask frames and hand them here
(``pets.engines._dispatch``). The guide is ``docs/scale-out.md``.

Examples:
    >>> import pandas as pd
    >>> from pets.engines import engine_for
    >>> engine_for(pd.DataFrame({"x": [1]})).name
    'pandas'
"""

from pets.engines._engines import DaskEngine, PandasEngine, engine_for
from pets.engines._keyref import InProcessKeys, KeyRef, KeySource, WorkerKeys, forget_keys
from pets.engines._plan import PartitionFn, Rebuild, Step, Transform, ship

__all__ = [
    "DaskEngine",
    "InProcessKeys",
    "KeyRef",
    "KeySource",
    "PandasEngine",
    "PartitionFn",
    "Rebuild",
    "Step",
    "Transform",
    "WorkerKeys",
    "engine_for",
    "forget_keys",
    "ship",
]

"""Engines: the same protections on pandas (default) and on Dask (scale-out).

Partition functions are pure ``DataFrame -> DataFrame``; secrets reach workers as
:class:`KeyRef` objects resolved through the key service on the worker (never key bytes in a
task graph); DP noise is added once, on the driver, to the reduced aggregate.
"""

from pets.engines._keyref import InProcessKeys, KeyRef, KeySource, WorkerKeys, forget_keys
from pets.engines._plan import PartitionFn, Rebuild, Step, Transform, ship

__all__ = [
    "InProcessKeys",
    "KeyRef",
    "KeySource",
    "PartitionFn",
    "Rebuild",
    "Step",
    "Transform",
    "WorkerKeys",
    "forget_keys",
    "ship",
]

"""``python -m benchmarks throughput [--quick]``: per-component throughput vs the bare primitive.

See :mod:`benchmarks.throughput`.
"""

from __future__ import annotations

from benchmarks.throughput import ThroughputResult
from benchmarks.throughput import run as _run


def run(quick: bool = False) -> ThroughputResult:
    """Run the throughput benchmark (``quick``: 10k, 100k and 1M rows)."""
    return _run(quick=quick)

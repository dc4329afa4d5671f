"""``python -m benchmarks anonymity [--quick]``: utility lost to k-anonymity (``enforce_k``).

See :mod:`benchmarks.anonymity_utility`.
"""

from __future__ import annotations

from benchmarks.anonymity_utility import AnonymityResult
from benchmarks.anonymity_utility import run as _run


def run(quick: bool = False) -> AnonymityResult:
    """Run the anonymity benchmark (``quick``: 5 000 users, 5 values of k)."""
    return _run(quick=quick)

"""``python -m benchmarks utility [--quick]``: privacy/utility of pets against its peers.

See :mod:`benchmarks.privacy_utility`.
"""

from __future__ import annotations

from benchmarks.privacy_utility import UtilityResult
from benchmarks.privacy_utility import run as _run


def run(quick: bool = False) -> UtilityResult:
    """Run the utility benchmark (``quick``: 3 ε values, small data, a few minutes)."""
    return _run(quick=quick)

"""Two engines with one surface: pandas (the default) and Dask.

Both expose ``pseudonymize``, ``encrypt_columns``, ``protect`` and ``session``. The pandas
engine just calls the transforms; its ``pseudonymize`` runs the very
:class:`~pets.engines.PartitionFn` the Dask engine runs on each partition, which is why the two
agree row for row. :func:`engine_for` picks the engine from the frame's type.

Examples:
    >>> import pandas as pd
    >>> from pets.pseudo import Bucket
    >>> frame = pd.DataFrame({"age": [15, 27]})
    >>> engine = engine_for(frame)
    >>> engine.name
    'pandas'
    >>> engine.pseudonymize(frame, {"age": Bucket(width=10)})["age"].tolist()
    ['[10, 20)', '[20, 30)']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from pets._errors import InputError
from pets.engines._keyref import WorkerKeys
from pets.engines._plan import PartitionFn, Step, Transform

if TYPE_CHECKING:
    import dask.dataframe as dd

    from pets.boundary import BoundaryKeys, Policy, ProtectedFrame
    from pets.dp import Session
    from pets.engines._dp import DaskSession
    from pets.engines._protect import DaskProtected
    from pets.envelope import ColumnKeys
    from pets.jurisdiction import Context

__all__ = ["DaskEngine", "PandasEngine", "engine_for"]


class PandasEngine:
    """The default engine: pandas in, pandas out, in this process."""

    name = "pandas"

    def pseudonymize(self, frame: pd.DataFrame,
                     transforms: Mapping[str, Transform]) -> pd.DataFrame:
        """Apply ``{column: transform}`` (per-user transforms read their ``by`` column)."""
        return PartitionFn(tuple(Step(c, t) for c, t in transforms.items()))(frame)

    def encrypt_columns(self, frame: pd.DataFrame, columns: Any, **kw: Any
                        ) -> tuple[pd.DataFrame, ColumnKeys]:
        """:func:`pets.envelope.encrypt_columns`."""
        from pets.envelope import encrypt_columns

        return encrypt_columns(frame, columns, **kw)

    def protect(self, frame: pd.DataFrame, policy: Policy, keys: BoundaryKeys,
                context: Context, **kw: Any) -> ProtectedFrame:
        """:func:`pets.boundary.protect`."""
        from pets.boundary import protect

        return protect(frame, policy, keys, context, **kw)

    def session(self, frame: pd.DataFrame, **kw: Any) -> Session:
        """:class:`pets.dp.Session` over ``frame``."""
        from pets.dp import Session

        return Session(frame, **kw)


class DaskEngine:
    """The scale-out engine: Dask in, Dask out, keys shipped as references.

    Args:
        workers: How keys reach the workers (:class:`~pets.engines.WorkerKeys`).
    """

    name = "dask"

    def __init__(self, workers: WorkerKeys) -> None:
        self.workers = workers

    def pseudonymize(self, frame: dd.DataFrame,
                     transforms: Mapping[str, Transform]) -> dd.DataFrame:
        """:func:`pets.engines.dask.pseudonymize` with this engine's key references."""
        from pets.engines._dask import transform_columns

        return transform_columns(frame, transforms, keys=self.workers)

    def encrypt_columns(self, frame: dd.DataFrame, columns: Mapping[str, str] | Sequence[str],
                        **kw: Any) -> tuple[dd.DataFrame, ColumnKeys]:
        """:func:`pets.engines.dask.encrypt_columns` with this engine's key references."""
        from pets.engines._dask import encrypt_columns

        kw.pop("keys", None)
        kw.pop("context", None)
        return encrypt_columns(frame, columns, keys=self.workers, **kw)

    def protect(self, frame: dd.DataFrame, policy: Policy, keys: BoundaryKeys,
                context: Context, **kw: Any) -> DaskProtected:
        """:func:`pets.engines.dask.protect` (lazy; ``.write()`` or ``.compute()`` it)."""
        from pets.engines._protect import protect

        return protect(frame, policy, keys, context, workers=self.workers, **kw)

    def session(self, frame: dd.DataFrame, **kw: Any) -> DaskSession:
        """:class:`pets.engines.dask.DaskSession` over ``frame``."""
        from pets.engines._dp import DaskSession

        return DaskSession(frame, **kw)

    def __repr__(self) -> str:
        return f"DaskEngine({self.workers!r})"


def engine_for(frame: object, workers: WorkerKeys | None = None) -> PandasEngine | DaskEngine:
    """The engine for ``frame``: Dask for a Dask DataFrame (needs ``workers``), else pandas.

    Raises:
        InputError: A Dask frame without ``workers``, or a frame of another type.
    """
    from pets.engines._dask import is_dask

    if is_dask(frame):
        if workers is None:
            raise InputError("a Dask frame needs workers=WorkerKeys(...) (how keys reach the "
                             "workers)")
        return DaskEngine(workers)
    if isinstance(frame, pd.DataFrame):
        return PandasEngine()
    raise InputError(f"no engine for {type(frame).__name__}: pass a pandas or Dask DataFrame")

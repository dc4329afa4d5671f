"""pets — privacy-enhancing technologies for data that must stay in one jurisdiction.

The public API is re-exported here; everything in a module whose name starts with ``_`` is
private. See https://… (``make docs``) for the guides.

Example:
    >>> import pets
    >>> pets.Context("EU").jurisdiction
    'EU'
"""

from pets._errors import (
    BudgetExhausted,
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
    MissingDependencyError,
    PetsError,
    PetsWarning,
    PolicyError,
)
from pets.jurisdiction import Context, Jurisdiction

__version__ = "0.1.0"

__all__ = [
    "BudgetExhausted",
    "Context",
    "InputError",
    "IntegrityError",
    "Jurisdiction",
    "JurisdictionError",
    "KeyDestroyedError",
    "KeyNotFoundError",
    "KeyServiceError",
    "MissingDependencyError",
    "PetsError",
    "PetsWarning",
    "PolicyError",
]

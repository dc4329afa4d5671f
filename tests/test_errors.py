import pytest

import pets
from pets._errors import require


class TestHierarchy:
    @pytest.mark.parametrize(
        "cls, builtin, code",
        [
            (pets.InputError, ValueError, 1),
            (pets.PolicyError, ValueError, 3),
            (pets.JurisdictionError, PermissionError, 4),
            (pets.IntegrityError, ValueError, 5),
            (pets.BudgetExhausted, RuntimeError, 6),
            (pets.KeyServiceError, RuntimeError, 7),
            (pets.KeyNotFoundError, LookupError, 7),
            (pets.KeyDestroyedError, pets.KeyServiceError, 7),
            (pets.MissingDependencyError, ImportError, 1),
        ],
    )
    def test_each_error_is_a_pets_error_and_its_builtin(self, cls, builtin, code):
        assert issubclass(cls, pets.PetsError)
        assert issubclass(cls, builtin)
        assert cls.exit_code == code

    def test_exit_codes_of_refusals_are_distinct(self):
        codes = [c.exit_code for c in (pets.PolicyError, pets.JurisdictionError,
                                       pets.IntegrityError, pets.BudgetExhausted,
                                       pets.KeyServiceError)]
        assert len(set(codes)) == len(codes)

    def test_require_names_the_extra(self):
        with pytest.raises(pets.MissingDependencyError, match=r"pets\[plot\]"):
            require("definitely_not_installed_module", "plot")

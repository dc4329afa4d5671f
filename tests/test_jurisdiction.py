import pytest

from pets import Context, InputError, Jurisdiction


class TestContext:
    def test_code_is_normalised(self):
        assert Context(" eu ").jurisdiction == "EU"
        assert Context(Jurisdiction("sg")).jurisdiction == "SG"

    @pytest.mark.parametrize("bad", ["", "E", "E U", "eu/us", "x" * 20])
    def test_invalid_codes_are_rejected(self, bad):
        with pytest.raises(InputError):
            Context(bad)

    def test_principal_cannot_inject_log_lines(self):
        with pytest.raises(InputError):
            Context("EU", principal="bob\nforged entry")

    def test_from_env(self):
        ctx = Context.from_env({"PETS_JURISDICTION": "sg", "PETS_PRINCIPAL": "ana"})
        assert (ctx.jurisdiction, ctx.principal, ctx.access_token) == ("SG", "ana", "ana@SG")
        assert Context.from_env({}).jurisdiction == "EU"

    def test_is_frozen(self):
        ctx = Context("EU")
        with pytest.raises(AttributeError):
            ctx.jurisdiction = "US"  # type: ignore[misc]

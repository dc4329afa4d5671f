"""The public API is exactly what ``__all__`` says (httpx's test_exported_members)."""

import pets


def test_all_is_sorted_and_unique():
    assert list(pets.__all__) == sorted(set(pets.__all__))


def test_all_names_exist_and_are_public():
    for name in pets.__all__:
        assert hasattr(pets, name), name
        assert not name.startswith("_")


def test_every_public_attribute_is_exported():
    public = {n for n in dir(pets) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(pets, n)).__name__ == "module"}
    assert public - modules == set(pets.__all__)

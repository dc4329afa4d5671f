"""``pets.dp`` exports exactly its ``__all__`` (sorted)."""

import pets.dp


def test_all_is_sorted_and_public():
    assert list(pets.dp.__all__) == sorted(set(pets.dp.__all__))
    public = {n for n in dir(pets.dp) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(pets.dp, n)).__name__ == "module"}
    assert public - modules == set(pets.dp.__all__)

"""pets.boundary's public surface is exactly its sorted __all__."""

import pets.boundary


def test_all_is_sorted_unique_and_complete():
    names = list(pets.boundary.__all__)
    assert names == sorted(set(names))
    public = {n for n in dir(pets.boundary) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(pets.boundary, n)).__name__ == "module"}
    assert public - modules == set(names)

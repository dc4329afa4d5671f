"""The public API is exactly what ``__all__`` says (httpx's test_exported_members)."""

import subprocess
import sys

import pets


def test_all_is_sorted_and_unique():
    assert list(pets.__all__) == sorted(set(pets.__all__), key=str)


def test_all_names_resolve_and_are_public():
    for name in pets.__all__:
        assert getattr(pets, name) is not None, name
        assert not name.startswith("_")


def test_every_public_attribute_is_exported():
    public = {n for n in dir(pets) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(pets, n)).__name__ == "module"}
    assert public - modules == set(pets.__all__)


def test_lazy_names_come_from_their_subpackage():
    import pets.dp
    import pets.keys

    assert pets.Session is pets.dp.Session
    assert pets.LocalKeyring is pets.keys.LocalKeyring


def test_unknown_attribute_raises_attribute_error():
    try:
        pets.does_not_exist
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_pets_does_not_load_heavy_libraries():
    code = ("import sys, pets; heavy = [m for m in ('opendp', 'pyarrow', 'dask', 'pandas') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

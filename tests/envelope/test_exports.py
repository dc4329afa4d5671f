"""pets.envelope's public surface is exactly its sorted ``__all__``; pandas/pyarrow load lazily."""

import subprocess
import sys

import pytest

import pets.envelope


def test_all_is_sorted_unique_and_resolves():
    assert list(pets.envelope.__all__) == sorted(set(pets.envelope.__all__))
    for name in pets.envelope.__all__:
        assert getattr(pets.envelope, name) is not None, name
        assert name in dir(pets.envelope)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pets.envelope.nope


def test_streaming_path_does_not_import_pandas_or_pyarrow():
    code = ("import sys, pets.envelope; "
            "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"

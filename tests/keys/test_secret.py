import copy
import os
import pickle

import pytest

from pets.keys import Secret


class TestSecret:
    def test_repr_and_str_hide_the_bytes(self):
        raw = os.urandom(32)
        s = Secret(raw)
        for text in (repr(s), str(s), f"{s}", repr([s]), repr({"k": s})):
            assert raw.hex() not in text and repr(raw) not in text
        assert repr(s) == "Secret(<32 bytes>)"

    def test_pickle_and_copy_are_refused(self):
        s = Secret(os.urandom(32))
        for op in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match="cannot be pickled"):
                op(s)

    def test_equality_and_hash_agree(self):
        raw = os.urandom(32)
        a, b, c = Secret(raw), Secret(bytearray(raw)), Secret(os.urandom(32))
        assert a == b and a != c
        assert hash(a) == hash(b)
        assert len({a, b, c}) == 2

    def test_hash_is_not_a_function_of_the_bytes_alone(self):
        import subprocess
        import sys

        code = "from pets.keys import Secret; print(hash(Secret(bytes(32))))"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout
        assert int(other) != hash(Secret(bytes(32)))  # keyed per process

    def test_only_bytes(self):
        with pytest.raises(TypeError, match="Secret takes bytes"):
            Secret("k" * 32)  # type: ignore[arg-type]

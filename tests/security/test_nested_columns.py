"""Attack class: values changed under an unchanged digest (nested columns).

List and struct columns used to be digested by their printed text: after a Parquet read,
numpy prints 8 digits of a float and elides arrays over 1,000 items, so the review rewrote the
low bits of a ``list<double>`` column of a protected file (29 kB of raw e-mails, phones and IPs
hidden there) and both the gate and a receiver accepted it. Nested columns now have no digest:
protect refuses them, and a file carrying one is refused at the gate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pets import Context, InputError
from pets._digest import column_digest


class TestNoInexactDigest:
    @pytest.mark.parametrize("values", [
        [np.arange(3.0), np.arange(3.0)],                  # what a Parquet list column reads as
        [[1.0, 2.0], [3.0]],
        [{"a": 1}, {"a": 2}],
    ], ids=["ndarray", "list", "dict"])
    def test_container_values_are_refused(self, values):
        with pytest.raises(InputError, match="only scalar columns"):
            column_digest("scores", pd.Series(values, dtype=object))

    def test_a_low_bit_edit_of_a_long_float_array_cannot_hide(self):
        a = np.linspace(0, 1, 2000)
        b = a.copy()
        b[1000] = np.nextafter(b[1000], 2)  # invisible in numpy's elided text
        assert str(a) == str(b)  # the old text digest could not see it
        with pytest.raises(InputError):
            column_digest("x", pd.Series([a], dtype=object))

    def test_scalars_keep_their_digest(self):
        assert column_digest("x", pd.Series([1.5, None])) != column_digest(
            "x", pd.Series([1.5000000000000002, None]))


class TestProtectRefusesNestedColumns:
    def test_protect_of_a_list_column_is_refused_before_signing(self):
        from pets.boundary import BoundaryKeys, Policy, SigningKey, protect
        from pets.keys import KeyServices, MemoryKeyring

        ring = MemoryKeyring()
        ring.create("memory://eu/p", jurisdiction="EU")
        keys = BoundaryKeys(KeyServices([ring]), SigningKey.generate())
        policy = Policy.from_dict({
            "dataset": "users", "keys": {"pseudonyms": "memory://eu/p"},
            "columns": {"user_id": {"role": "identifier", "treatment": "keyed-hash"},
                        "scores": {"role": "metric", "treatment": "keep"}}})
        raw = pd.DataFrame({"user_id": ["u1", "u2"],
                            "scores": pd.Series([np.arange(3.0), np.arange(2.0)],
                                                dtype=object)})
        with pytest.raises(InputError, match="column 'scores'"):
            protect(raw, policy, keys, Context("EU"))

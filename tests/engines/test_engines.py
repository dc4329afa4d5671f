"""The engine surface: pandas and Dask engines agree; public names are exactly __all__."""

from __future__ import annotations

from tests.engines.conftest import require_dask

require_dask()

import dask  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import pets.engines  # noqa: E402
import pets.engines.dask  # noqa: E402
from pets import Context, InputError  # noqa: E402
from pets.datasets import synthetic_users  # noqa: E402
from pets.engines import DaskEngine, InProcessKeys, PandasEngine, WorkerKeys, engine_for  # noqa: E402
from pets.keys import KeyServices, MemoryKeyring, Secret  # noqa: E402
from pets.pseudo import (  # noqa: E402
    AgeBand,
    Bucket,
    DateShift,
    FF1Transform,
    IPPrefix,
    KeyedHash,
    Mask,
    PhoneFF1,
    PostcodePrefix,
    Suppress,
    Tokenizer,
    TopBottomCode,
    TruncateDate,
)

ROOT = Secret(bytes(range(32)))
EVERY_TRANSFORM = {
    "keyed-hash": ("email", KeyedHash(ROOT, domain="t.email", casefold=True)),
    "token": ("user_id", Tokenizer(ROOT, domain="t.user")),
    "ff1": ("digits", FF1Transform(ROOT, domain="t.digits")),
    "ff1-phone": ("phone", PhoneFF1(ROOT, domain="t.phone")),
    "date-shift": ("signup_ts", DateShift(ROOT, domain="t.dates", by="user_id")),
    "age-band": ("birth_date", AgeBand("2026-01-01", width=20)),
    "truncate-date": ("signup_ts", TruncateDate("month")),
    "postcode-prefix": ("postcode", PostcodePrefix(2)),
    "ip-prefix": ("ip", IPPrefix(v4=16)),
    "mask": ("phone", Mask(keep_last=2)),
    "suppress": ("country", Suppress()),
    "bucket-width": ("amount", Bucket(width=250)),
    "bucket-quantiles": ("amount", Bucket(quantiles=5)),
    "top-bottom-code": ("amount", TopBottomCode(lower=10, upper=900)),
}


@pytest.fixture
def workers() -> WorkerKeys:
    ring = MemoryKeyring()
    ring.create("memory://eu/kek", jurisdiction="EU")
    return WorkerKeys(InProcessKeys(KeyServices([ring])), "memory://eu/kek", Context("EU"))


@pytest.mark.parametrize("module", [pets.engines, pets.engines.dask])
class TestExportedMembers:
    def test_all_is_sorted_unique_and_public(self, module):
        assert list(module.__all__) == sorted(set(module.__all__))
        assert all(hasattr(module, n) and not n.startswith("_") for n in module.__all__)

    def test_every_public_attribute_is_exported(self, module):
        public = {n for n in dir(module) if not n.startswith("_")}
        modules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
        assert public - modules - {"annotations"} == set(module.__all__)


class TestEngineFor:
    def test_picks_by_frame_type(self, workers):
        assert isinstance(engine_for(pd.DataFrame()), PandasEngine)
        ddf = dd.from_pandas(pd.DataFrame({"a": [1]}), npartitions=1)
        assert isinstance(engine_for(ddf, workers), DaskEngine)

    def test_dask_frame_needs_key_references(self):
        ddf = dd.from_pandas(pd.DataFrame({"a": [1]}), npartitions=1)
        with pytest.raises(InputError, match="workers=WorkerKeys"):
            engine_for(ddf)

    def test_other_types_are_refused(self):
        with pytest.raises(InputError, match="no engine for list"):
            engine_for([1, 2])


class TestEnginesAgree:
    @pytest.mark.parametrize("name", sorted(EVERY_TRANSFORM))
    def test_every_transform_is_identical_on_dask(self, name, workers):
        users = synthetic_users(1_200, seed=9)
        rng = np.random.default_rng(9)
        users["digits"] = pd.array(rng.integers(10**8, 10**9, len(users)).astype(str),
                                   dtype="string")
        users["amount"] = rng.lognormal(5, 1, len(users))
        column, transform = EVERY_TRANSFORM[name]
        expected = PandasEngine().pseudonymize(users, {column: transform})
        with dask.config.set(scheduler="threads"):
            got = DaskEngine(workers).pseudonymize(dd.from_pandas(users, npartitions=5),
                                                   {column: transform}).compute()
        pd.testing.assert_frame_equal(got, expected)
        assert not got[column].equals(users[column])

    def test_dask_engine_equals_pandas_engine_in_process(self, workers):
        users = synthetic_users(1_500, seed=4)
        root = Secret.generate()
        transforms = {
            "email": KeyedHash(root, domain="d.email"),
            "birth_date": AgeBand(reference="2026-01-01", width=10),
            "signup_ts": DateShift(root, domain="d.dates", by="user_id"),
        }
        expected = PandasEngine().pseudonymize(users, transforms)
        with dask.config.set(scheduler="threads"):
            got = DaskEngine(workers).pseudonymize(dd.from_pandas(users, npartitions=4),
                                                   transforms).compute()
        pd.testing.assert_frame_equal(got, expected)
        assert not expected["signup_ts"].equals(users["signup_ts"])

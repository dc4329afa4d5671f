"""Specs, whole-frame pseudonymize, the .pets accessor and the public surface."""

from __future__ import annotations

import pandas as pd
import pytest

import pets.pseudo
from pets import InputError
from pets.keys import Secret
from pets.pseudo import (
    DateShift,
    FF1Transform,
    KeyedHash,
    KeyOrigin,
    Mask,
    Tokenizer,
    parse_spec,
    pseudonymize,
    transform_from_spec,
)


class TestPublicSurface:
    def test_all_is_sorted_unique_and_complete(self):
        names = pets.pseudo.__all__
        assert list(names) == sorted(set(names))
        public = {n for n in dir(pets.pseudo) if not n.startswith("_")}
        modules = {n for n in public if type(getattr(pets.pseudo, n)).__name__ == "module"}
        assert public - modules == set(names)

    def test_every_transform_states_name_reversibility_and_links(self):
        for name in names_of_transforms():
            cls = getattr(pets.pseudo, name)
            assert cls.name and isinstance(cls.reversible, bool) and cls.links
            assert hasattr(cls, "reverse") == cls.reversible or not cls.reversible


def names_of_transforms():
    return [n for n in pets.pseudo.__all__
            if isinstance(getattr(pets.pseudo, n), type)
            and issubclass(getattr(pets.pseudo, n), pets.pseudo.Transform)
            and getattr(pets.pseudo, n) not in (pets.pseudo.Transform,
                                                pets.pseudo.KeyedTransform)]


class TestSpecs:
    def test_parse(self):
        assert parse_spec("token:crm:strip") == ("token", "crm", {"strip": True})
        assert parse_spec("ip-prefix:v4=16:v6=32") == ("ip-prefix", None,
                                                       {"v4": "16", "v6": "32"})
        with pytest.raises(InputError):
            parse_spec("")
        with pytest.raises(InputError, match="unexpected part"):
            parse_spec("mask:4:oops")

    @pytest.mark.parametrize("spec,cls", [
        ("keyed-hash:crm:encoding=base32:casefold", KeyedHash),
        ("token:crm", Tokenizer),
        ("ff1:cards:alphabet=0123456789abcdef", FF1Transform),
        ("date-shift:visits:by=user_id:max_days=10", DateShift),
        ("mask:4", Mask),
    ])
    def test_build(self, spec, cls):
        t = transform_from_spec(spec, root=Secret(bytes(32)))
        assert isinstance(t, cls)

    def test_options_reach_the_transform(self):
        t = transform_from_spec("keyed-hash:crm:encoding=base32:casefold:strip",
                                root=Secret(bytes(32)), origin=KeyOrigin("memory://eu/k", 2, "EU"))
        d = t.describe()
        assert (d["encoding"], d["casefold"], d["strip"], d["key_version"]) == (
            "base32", True, True, 2)
        b = transform_from_spec("bucket:edges=18/30/65")
        assert b.describe()["edges"] == [18.0, 30.0, 65.0]
        assert transform_from_spec("age-band:2025-01-01:width=5:top=80").describe()["top"] == 80

    @pytest.mark.parametrize("spec,match", [
        ("keyed-hash:crm", "needs a root secret"),
        ("nope", "unknown transform"),
        ("bucket:width=x", "must be a number"),
        ("ip-prefix:v4=99", "IPPrefix"),
        ("age-band", "missing or bad"),
        ("mask:4:bogus=1", "mask"),
    ])
    def test_bad_specs(self, spec, match):
        with pytest.raises(InputError, match=match):
            transform_from_spec(spec)

    def test_keyed_spec_needs_a_domain(self):
        with pytest.raises(InputError, match="give a domain"):
            transform_from_spec("token", root=Secret(bytes(32)))


class TestPseudonymize:
    def test_applies_per_column_and_date_shift_reads_the_original_user(self):
        root = Secret(bytes(32))
        df = pd.DataFrame({
            "user_id": ["u1", "u1", "u2"],
            "visit": pd.to_datetime(["2025-01-01", "2025-01-05", "2025-01-01"]),
            "card": ["4111", "4222", "4333"],
        })
        ts = {"user_id": KeyedHash(root, domain="crm"),
              "visit": DateShift(root, domain="visits", by="user_id"),
              "card": Mask(keep_last=1)}
        out = pseudonymize(df, ts)
        assert df["user_id"].tolist() == ["u1", "u1", "u2"]  # input untouched
        assert (out["visit"][1] - out["visit"][0]).days == 4
        offsets = DateShift(root, domain="visits").offsets(df["user_id"])
        assert ((out["visit"] - df["visit"]).dt.days.tolist() == offsets.tolist())
        assert out["card"].tolist() == ["***1", "***2", "***3"]

    def test_errors(self):
        df = pd.DataFrame({"a": ["x"]})
        with pytest.raises(InputError, match="unknown column"):
            pseudonymize(df, {"b": Mask()})
        with pytest.raises(InputError, match="date-shift needs by="):
            pseudonymize(pd.DataFrame({"d": pd.to_datetime(["2025-01-01"])}),
                         {"d": DateShift(Secret(bytes(32)), domain="x")})

    def test_empty_frame(self):
        df = pd.DataFrame({"email": pd.Series([], dtype="string")})
        out = pseudonymize(df, {"email": KeyedHash(Secret(bytes(32)), domain="crm")})
        assert len(out) == 0 and list(out.columns) == ["email"]


class TestAccessor:
    def test_series_accessor_matches_the_classes(self):
        root = Secret(bytes(32))
        s = pd.Series(["4111111111111111", "5500000000000004"])
        assert s.pets.keyed_hash(root, domain="d").equals(KeyedHash(root, domain="d").apply(s))
        assert s.pets.ff1(root, domain="d").equals(FF1Transform(root, domain="d").apply(s))
        assert s.pets.apply(Mask(2)).tolist() == ["**************11", "**************04"]
        assert s.pets.tokenize(root, domain="d").str.startswith("t1.").all()
        assert pd.Series([3, 14]).pets.bucket(width=10).tolist() == ["[0, 10)", "[10, 20)"]

    def test_frame_accessor(self):
        df = pd.DataFrame({"zip": ["750", "750", "131"], "age": [31, 33, 47]})
        assert df.pets.anonymity_report(["zip"], k=2).k == 1
        res = df.pets.enforce_k(["zip"], 2, {"zip": [pets.pseudo.Suppress("*")]})
        assert res.frame["zip"].tolist() == ["*", "*", "*"]


class TestEmptyColumns:
    @pytest.mark.parametrize("spec,dtype", [
        ("keyed-hash:d", "string"), ("token:d", "string"), ("ff1:d", "string"),
        ("ff1-phone:d", "string"), ("bucket:width=5", "float64"),
        ("top-bottom-code:upper=3", "Int64"), ("truncate-date:week", "datetime64[s]"),
        ("age-band:2025-01-01", "datetime64[ns]"), ("postcode-prefix:2", "string"),
        ("ip-prefix", "string"), ("mask:2", "string"), ("suppress", "string"),
    ])
    def test_every_transform_handles_an_empty_column(self, spec, dtype):
        t = transform_from_spec(spec, root=Secret(bytes(32)))
        out = t.apply(pd.Series([], dtype=dtype, name="c"))
        assert len(out) == 0 and out.name == "c"

    @pytest.mark.parametrize("spec,dtype", [
        ("keyed-hash:d", "string"), ("token:d", "string"), ("ff1:d", "string"),
        ("ff1-phone:d", "string"), ("bucket:width=5", "float64"),
        ("truncate-date:week", "datetime64[s]"), ("age-band:2025-01-01", "datetime64[ns]"),
        ("postcode-prefix:2", "string"), ("ip-prefix", "string"), ("mask:2", "string"),
    ])
    def test_every_transform_keeps_nulls(self, spec, dtype):
        t = transform_from_spec(spec, root=Secret(bytes(32)))
        out = t.apply(pd.Series([None, None], dtype=dtype))
        assert out.isna().all() and len(out) == 2


KEYED_SPECS = ["keyed-hash:crm", "token:crm", "ff1:crm", "ff1-phone:crm",
               "date-shift:crm:by=user"]


class TestKeyedTransformsResistLeaking:
    @pytest.mark.parametrize("spec", KEYED_SPECS)
    def test_no_key_material_in_repr_describe_or_pickle(self, spec):
        import json
        import pickle

        from pets.pseudo import derive_domain_key

        root = Secret(bytes(range(32)))
        t = transform_from_spec(spec, root=root)
        key = derive_domain_key(root, t.purpose, "crm", length=t.key_length).expose()
        text = repr(t) + str(t) + json.dumps(t.describe()) + repr(t.worker_ref())
        for secret in (key, root.expose()):
            assert secret.hex() not in text.lower()
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(t)
        ref = pickle.loads(pickle.dumps(t.worker_ref()))
        assert root.expose() not in pickle.dumps(t.worker_ref())
        assert ref.build().describe() == t.describe()

    def test_accessor_reidentify(self):
        from pets import Context

        tok = Tokenizer(Secret(bytes(32)), domain="crm", jurisdiction="EU")
        t = pd.Series(["a", "b"]).pets.apply(tok)
        assert t.pets.reidentify(tok, context=Context("EU")).tolist() == ["a", "b"]


class TestReviewHardening:
    """Findings of the adversarial review (issue 4), each with the attack tried."""

    @pytest.mark.parametrize("spec,casefold", [
        ("keyed-hash:crm:casefold", True), ("keyed-hash:crm:casefold=true", True),
        ("keyed-hash:crm:casefold=false", False), ("keyed-hash:crm:casefold=0", False),
        ("keyed-hash:crm", False),
    ])
    def test_flags_spelled_as_options_mean_what_they_say(self, spec, casefold):
        # before: "casefold=false" became bool("false") == True
        t = transform_from_spec(spec, root=Secret(bytes(32)))
        assert t.casefold is casefold

    def test_flag_values_other_than_booleans_are_refused(self):
        with pytest.raises(InputError, match="strip must be true or false"):
            transform_from_spec("token:crm:strip=maybe", root=Secret(bytes(32)))

    def test_a_bad_hex_tweak_is_an_input_error(self):
        with pytest.raises(InputError, match="tweak must be bytes or hex"):
            FF1Transform(Secret(bytes(32)), domain="d", tweak="zz")  # type: ignore[arg-type]

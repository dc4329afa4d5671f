"""Keyed pseudonyms: RFC 4231 answers, determinism, domains, normalisation, hostile input."""

from __future__ import annotations

import hmac
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pets import Context, InputError, JurisdictionError
from pets.keys import Secret
from pets.pseudo import ENCODINGS, KeyedHash, WorkerKeyRef, derive_domain_key
from pets.pseudo._keyed import encode_digests, hmac_sha256_digests

from .conftest import load_vectors

RFC4231 = load_vectors("rfc4231.json")["vectors"]


class TestHmacPath:
    @pytest.mark.parametrize("v", RFC4231, ids=[f"case{v['case']}" for v in RFC4231])
    def test_rfc4231_vectors(self, v):
        out = hmac_sha256_digests(bytes.fromhex(v["key"]), [bytes.fromhex(v["data"])])
        assert out.hex()[: len(v["hmac_sha256"])] == v["hmac_sha256"]

    def test_all_vectors_in_one_batch_keep_their_order(self):
        key = bytes.fromhex(RFC4231[2]["key"])
        msgs = [bytes.fromhex(RFC4231[2]["data"]), b"", b"x"]
        out = hmac_sha256_digests(key, msgs)
        assert [out[i * 32:(i + 1) * 32] for i in range(3)] == [
            hmac.digest(key, m, "sha256") for m in msgs]

    def test_hex256_encoding_is_the_full_mac(self):
        v = RFC4231[1]
        digests = hmac_sha256_digests(bytes.fromhex(v["key"]), [bytes.fromhex(v["data"])])
        assert encode_digests(digests, "hex256")[0].decode() == v["hmac_sha256"]
        assert encode_digests(digests, "hex128")[0].decode() == v["hmac_sha256"][:32]


class TestKeyedHash:
    def test_output_is_hmac_of_the_utf8_value_under_the_domain_key(self, root):
        key = derive_domain_key(root, "keyed-hash", "crm").expose()
        out = KeyedHash(root, domain="crm", encoding="hex256").apply(pd.Series(["ann"]))
        assert out[0] == hmac.new(key, b"ann", "sha256").hexdigest()

    def test_deterministic_within_a_domain_and_unlinkable_across(self, root):
        s = pd.Series(["a@x.eu", "b@x.eu", "a@x.eu"])
        a1 = KeyedHash(root, domain="crm").apply(s)
        a2 = KeyedHash(root, domain="crm").apply(s)
        b = KeyedHash(root, domain="billing").apply(s)
        assert a1.equals(a2)
        assert a1[0] == a1[2] and a1[0] != a1[1]
        assert not set(a1) & set(b)

    def test_different_root_secrets_give_different_pseudonyms(self, root):
        s = pd.Series(["a"])
        other = Secret(bytes(32))
        assert KeyedHash(root, domain="d").apply(s)[0] != KeyedHash(other, domain="d").apply(s)[0]

    def test_nulls_stay_null_and_index_and_name_are_kept(self, root):
        s = pd.Series(["a", None, pd.NA, "a"], index=[10, 11, 12, 13], name="email",
                      dtype=object)
        out = KeyedHash(root, domain="d").apply(s)
        assert list(out.index) == [10, 11, 12, 13] and out.name == "email"
        assert out.isna().tolist() == [False, True, True, False]
        assert str(out.dtype) == "string"

    def test_all_null_and_empty_columns(self, root):
        h = KeyedHash(root, domain="d")
        assert h.apply(pd.Series([None, None], dtype=object)).isna().all()
        assert len(h.apply(pd.Series([], dtype="string"))) == 0
        assert len(h.apply(pd.Series([], dtype=object))) == 0

    @pytest.mark.parametrize("encoding", sorted(ENCODINGS))
    def test_encodings_have_fixed_width_and_alphabet(self, root, encoding):
        out = KeyedHash(root, domain="d", encoding=encoding).apply(
            pd.Series([f"user{i}" for i in range(50)]))
        width = ENCODINGS[encoding][1]
        assert (out.str.len() == width).all()
        allowed = {"hex128": "0123456789abcdef", "hex256": "0123456789abcdef",
                   "base32": "abcdefghijklmnopqrstuvwxyz234567",
                   "base64url": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"}
        assert set("".join(out)) <= set(allowed[encoding])
        assert out.nunique() == 50

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.binary(min_size=32, max_size=32), max_size=40))
    def test_base32_and_base64url_match_the_stdlib(self, digests):
        import base64

        joined = b"".join(digests)
        b32 = [x.decode() for x in encode_digests(joined, "base32")]
        b64 = [x.decode() for x in encode_digests(joined, "base64url")]
        assert b32 == [base64.b32encode(d[:16]).decode().rstrip("=").lower() for d in digests]
        assert b64 == [base64.urlsafe_b64encode(d[:16]).decode().rstrip("=") for d in digests]

    def test_unknown_encoding_is_refused(self, root):
        with pytest.raises(InputError, match="unknown encoding"):
            KeyedHash(root, domain="d", encoding="md5")  # type: ignore[arg-type]

    def test_unicode_is_nfc_normalised(self, root):
        h = KeyedHash(root, domain="d")
        out = h.apply(pd.Series(["caf\u00e9", "cafe\u0301", "cafe"]))
        assert out[0] == out[1] != out[2]

    def test_casefold_and_strip_are_explicit(self, root):
        s = pd.Series(["Ann@X.eu", " ann@x.eu ", "STRASSE", "straße"])
        plain = KeyedHash(root, domain="d").apply(s)
        assert plain[0] != plain[1]
        norm = KeyedHash(root, domain="d", casefold=True, strip=True).apply(s)
        assert norm[0] == norm[1]
        assert norm[2] == norm[3]  # full case folding: ß -> ss

    def test_integers_hash_as_their_decimal_string(self, root):
        h = KeyedHash(root, domain="d")
        ints = h.apply(pd.Series([42, -7, 2**62]))
        nullable = h.apply(pd.Series([42, None, -7], dtype="Int64"))
        strings = h.apply(pd.Series(["42", "-7", str(2**62)]))
        assert ints.tolist() == strings.tolist()
        assert nullable[0] == strings[0] and pd.isna(nullable[1]) and nullable[2] == strings[1]

    def test_unsigned_64_bit_ints_beyond_int64_are_exact(self, root):
        h = KeyedHash(root, domain="d")
        big = h.apply(pd.Series([2**64 - 1, 5], dtype="uint64"))
        assert big.tolist() == h.apply(pd.Series([str(2**64 - 1), "5"])).tolist()

    def test_huge_python_ints_are_decimal_too(self, root):
        h = KeyedHash(root, domain="d")
        big = 2**80
        assert h.apply(pd.Series([big], dtype=object))[0] == h.apply(pd.Series([str(big)]))[0]

    @pytest.mark.parametrize("values,kind", [
        ([1.5, 2.0], "float"),
        ([True, False], "bool"),
        (["a", 1], "mixed"),
        ([b"a"], "bytes"),
    ])
    def test_ambiguous_types_are_refused_naming_the_column(self, root, values, kind):
        with pytest.raises(InputError, match=r"column 'score'.*cannot be pseudonymized"):
            KeyedHash(root, domain="d").apply(pd.Series(values, name="score"))

    def test_datetimes_are_refused(self, root):
        s = pd.Series(pd.to_datetime(["2024-01-01"]), name="when")
        with pytest.raises(InputError, match="column 'when'"):
            KeyedHash(root, domain="d").apply(s)

    def test_a_10mb_value_is_rejected_cleanly(self, root):
        s = pd.Series(["ok", "x" * (10 * 1024 * 1024)], name="blob")
        with pytest.raises(InputError, match=r"column 'blob': value at position 1 is 10485760 "
                                             r"bytes; at most 65536"):
            KeyedHash(root, domain="d").apply(s)

    def test_categorical_columns_hash_their_values(self, root):
        h = KeyedHash(root, domain="d")
        cat = h.apply(pd.Series(["b", "a", "b", None], dtype="category"))
        plain = h.apply(pd.Series(["b", "a", "b", None]))
        assert cat.equals(plain)

    def test_direct_and_distinct_paths_agree(self, root):
        rng = np.random.default_rng(3)
        s = pd.Series(rng.integers(0, 300, 2000).astype(str))
        s[::7] = None
        h = KeyedHash(root, domain="d")
        assert h.apply(s, direct=True).equals(h.apply(s, direct=False))

    def test_sample_picks_the_direct_path_only_for_all_distinct_columns(self):
        import pyarrow as pa

        from pets.pseudo._columnar import use_direct_path

        distinct = pa.array([f"u{i}" for i in range(300_000)], pa.large_string())
        repeated = pa.array([f"u{i % 5000}" for i in range(300_000)], pa.large_string())
        assert use_direct_path(distinct) and not use_direct_path(repeated)

    def test_domain_must_be_sane(self, root):
        for bad in ("", "x" * 300, "a\x00b"):
            with pytest.raises(InputError, match="domain"):
                KeyedHash(root, domain=bad)

    def test_root_secret_must_be_a_32_byte_secret(self):
        with pytest.raises(InputError, match="32 bytes"):
            KeyedHash(Secret(bytes(16)), domain="d")
        with pytest.raises(InputError, match="Secret"):
            KeyedHash(bytes(32), domain="d")  # type: ignore[arg-type]

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.text(max_size=20), max_size=30))
    def test_injective_on_distinct_normalised_values(self, values):
        import unicodedata

        h = KeyedHash(Secret(bytes(range(32))), domain="prop")
        out = h.apply(pd.Series(values, dtype=object))
        norm = [unicodedata.normalize("NFC", v) for v in values]
        mapping: dict[str, str] = {}
        for n, o in zip(norm, out, strict=True):
            assert mapping.setdefault(n, o) == o
        assert len(set(mapping.values())) == len(mapping)

    @settings(max_examples=40, deadline=None)
    @given(st.text(min_size=0, max_size=30), st.text(min_size=1, max_size=10),
           st.text(min_size=1, max_size=10))
    def test_domains_separate_for_any_value(self, value, d1, d2):
        d1, d2 = d1.replace("\x00", "_"), d2.replace("\x00", "_")
        root = Secret(bytes(range(32)))
        a = KeyedHash(root, domain=d1).apply(pd.Series([value]))[0]
        b = KeyedHash(root, domain=d2).apply(pd.Series([value]))[0]
        assert (a == b) == (d1 == d2)


class TestKeyHandling:
    def test_repr_and_str_show_no_key_material(self, root):
        h = KeyedHash(root, domain="crm")
        key_hex = derive_domain_key(root, "keyed-hash", "crm").expose().hex()
        for text in (repr(h), str(h), str(h.describe()), repr(h.worker_ref())):
            assert key_hex not in text and root.expose().hex() not in text
        assert "hidden" in repr(h)

    def test_keyed_transforms_refuse_pickling(self, root):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(KeyedHash(root, domain="crm"))

    def test_worker_ref_carries_only_the_domain_key_and_rebuilds(self, root):
        h = KeyedHash(root, domain="crm", encoding="base32", casefold=True)
        ref = pickle.loads(pickle.dumps(h.worker_ref()))
        assert isinstance(ref, WorkerKeyRef)
        assert root.expose() not in pickle.dumps(h.worker_ref())
        rebuilt = ref.build()
        s = pd.Series(["Ann", "bob"])
        assert rebuilt.apply(s).equals(h.apply(s))
        assert rebuilt.describe() == h.describe()

    def test_from_key_unwraps_in_the_eu_and_records_the_key(self, services, wrapped, root):
        h = KeyedHash.from_key(services, wrapped, context=Context("EU"), domain="crm")
        d = h.describe()
        assert (d["key_uri"], d["key_version"], d["jurisdiction"]) == (
            "memory://eu/pseudo", 1, "EU")
        s = pd.Series(["x"])
        assert h.apply(s).equals(KeyedHash(root, domain="crm").apply(s))

    def test_from_key_is_refused_outside_the_eu(self, services, wrapped, events):
        with pytest.raises(JurisdictionError, match="belongs to EU"):
            KeyedHash.from_key(services, wrapped, context=Context("US"), domain="crm")
        assert events[-1].kind == "key.refused"

    def test_describe_is_json_able_and_names_what_it_links(self, root):
        import json

        d = KeyedHash(root, domain="crm").describe()
        json.dumps(d)
        assert d["name"] == "keyed-hash" and d["reversible"] is False
        assert "domain" in d["links"]


class TestReviewHardening:
    """Findings of the adversarial review (issue 4), each with the attack tried."""

    def test_lone_surrogates_are_refused_naming_the_column(self, root):
        # before: a bare UnicodeEncodeError from pyarrow, no column named
        s = pd.Series(["ok", "a\ud800"], name="email", dtype=object)
        with pytest.raises(InputError, match="column 'email': values are not valid Unicode"):
            KeyedHash(root, domain="d").apply(s)

    def test_values_that_case_folding_lengthens_past_max_bytes_are_refused(self, root):
        # "ŉ" is 2 UTF-8 bytes and case-folds to "ʼn" (3 bytes): the limit is checked after, too
        s = pd.Series(["\u0149" * 40], name="n")
        assert KeyedHash(root, domain="d", max_bytes=100).apply(s).notna().all()
        with pytest.raises(InputError, match=r"column 'n': value at position 0 is 120 bytes"):
            KeyedHash(root, domain="d", max_bytes=100, casefold=True).apply(s)

    def test_nfc_is_not_nfkc_and_casefold_folds_ligatures(self, root):
        s = pd.Series(["\ufb01", "fi", "\uff21", "A"])  # ligature fi, full-width A
        plain = KeyedHash(root, domain="d").apply(s)
        assert plain[0] != plain[1] and plain[2] != plain[3]
        folded = KeyedHash(root, domain="d", casefold=True).apply(s)
        assert folded[0] == folded[1] and folded[2] != folded[3]

    def test_purpose_with_nul_cannot_collide_with_another_pair(self, root):
        # before: purpose was unchecked; now neither part may hold NUL
        for bad in ("", "a\x00b", "caf\u00e9"):
            with pytest.raises(InputError, match="purpose"):
                derive_domain_key(root, bad, "c")

    @settings(max_examples=40, deadline=None)
    @given(st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1,
                   max_size=8),
           st.text(st.characters(exclude_characters="\x00", codec="utf-8"), min_size=1,
                   max_size=8),
           st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1,
                   max_size=8),
           st.text(st.characters(exclude_characters="\x00", codec="utf-8"), min_size=1,
                   max_size=8))
    def test_distinct_purpose_domain_pairs_give_distinct_keys(self, p1, d1, p2, d2):
        root = Secret(bytes(range(32)))
        k1 = derive_domain_key(root, p1, d1).expose()
        k2 = derive_domain_key(root, p2, d2).expose()
        assert (k1 == k2) == ((p1, d1) == (p2, d2))

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["Ann", "ann",
                                                                                " ann "])),
                    max_size=60),
           st.booleans(), st.booleans(), st.sampled_from(sorted(ENCODINGS)))
    def test_distinct_value_path_equals_the_direct_path(self, values, casefold, strip, enc):
        h = KeyedHash(Secret(bytes(range(32))), domain="p", casefold=casefold, strip=strip,
                      encoding=enc)
        s = pd.Series(values, dtype=object, index=range(100, 100 + len(values)), name="c")
        a, b = h.apply(s, direct=True), h.apply(s, direct=False)
        assert a.equals(b)
        key = derive_domain_key(Secret(bytes(range(32))), "keyed-hash", "p").expose()
        for v, o in zip(values, a, strict=True):  # and both equal the per-row definition
            if v is None:
                assert pd.isna(o)
                continue
            import unicodedata

            n = unicodedata.normalize("NFC", v)
            n = n.strip() if strip else n
            n = unicodedata.normalize("NFC", n.casefold()) if casefold else n
            want = encode_digests(hmac.digest(key, n.encode(), "sha256"), enc)[0].decode()
            assert o == want

    def test_exceptions_and_pickles_carry_no_key_bytes(self, root):
        h = KeyedHash(root, domain="crm")
        key = derive_domain_key(root, "keyed-hash", "crm").expose()
        for bad in (pd.Series([1.5], name="x"), pd.Series(["x" * 70_000], name="x")):
            with pytest.raises(InputError) as err:
                h.apply(bad)
            text = str(err.value) + repr(err.value.args)
            assert key.hex() not in text and root.expose().hex() not in text
        with pytest.raises(TypeError) as err2:
            pickle.dumps(h)
        assert key.hex() not in str(err2.value)

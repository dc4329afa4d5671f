"""FF1: NIST samples, vectorized == scalar, round trips, format preservation, hostile input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pets import Context, InputError, JurisdictionError
from pets.keys import Secret
from pets.pseudo import FF1, FF1Transform, PhoneFF1, ff1_min_length

from .conftest import load_vectors

NIST = load_vectors("ff1_nist.json")
SAMPLES = NIST["vectors"]
A62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _cipher(v) -> FF1:
    return FF1(bytes.fromhex(v["key"]), v["alphabet"], tweak=bytes.fromhex(v["tweak"]))


class TestNistSamples:
    def test_all_nine_samples_are_present(self):
        assert [v["sample"] for v in SAMPLES] == list(range(1, 10))
        assert {v["aes"] for v in SAMPLES} == {128, 192, 256}
        assert {v["radix"] for v in SAMPLES} == {10, 36}

    @pytest.mark.parametrize("v", SAMPLES, ids=[f"sample{v['sample']}" for v in SAMPLES])
    def test_scalar_encrypt_and_decrypt(self, v):
        f = _cipher(v)
        assert f.encrypt(v["plaintext"]) == v["ciphertext"]
        assert f.decrypt(v["ciphertext"]) == v["plaintext"]

    @pytest.mark.parametrize("v", SAMPLES, ids=[f"sample{v['sample']}" for v in SAMPLES])
    def test_vectorized_encrypt_and_decrypt(self, v):
        f = _cipher(v)
        enc = f.crypt_arrow(pa.array([v["plaintext"], None, v["plaintext"]])).to_pylist()
        assert enc == [v["ciphertext"], None, v["ciphertext"]]
        dec = f.crypt_arrow(pa.array([v["ciphertext"]]), encrypt=False).to_pylist()
        assert dec == [v["plaintext"]]

    @pytest.mark.parametrize("v", SAMPLES, ids=[f"sample{v['sample']}" for v in SAMPLES])
    def test_tweak_passed_per_call(self, v):
        f = FF1(bytes.fromhex(v["key"]), v["alphabet"])
        assert f.encrypt(v["plaintext"], bytes.fromhex(v["tweak"])) == v["ciphertext"]

    @pytest.mark.parametrize("bad", NIST["invalid"], ids=lambda b: b["reason"][:20])
    def test_invalid_inputs_are_refused(self, bad):
        f = FF1(bytes(16), A62[: bad["radix"]])
        with pytest.raises(InputError):
            f.encrypt(bad["plaintext"])
        with pytest.raises(InputError):
            f.crypt_arrow(pa.array([bad["plaintext"]]))


class TestVectorizedMatchesScalar:
    @pytest.mark.parametrize("radix", [2, 3, 10, 16, 36, 62])
    def test_lengths_across_the_vector_and_scalar_paths(self, radix):
        rng = np.random.default_rng(radix)
        alphabet = A62[:radix]
        f = FF1(bytes(range(32)), alphabet, tweak=b"column")
        lo = ff1_min_length(radix)
        for n in sorted({lo, lo + 1, 16, 19, 24, 38, 41, 60}):
            if n < lo:
                continue
            vals = ["".join(alphabet[i] for i in rng.integers(0, radix, n)) for _ in range(25)]
            vec = f.crypt_arrow(pa.array(vals)).to_pylist()
            assert vec == [f.encrypt(x) for x in vals], (radix, n)
            assert f.crypt_arrow(pa.array(vec), encrypt=False).to_pylist() == vals

    def test_mixed_lengths_and_nulls_keep_their_positions(self):
        f = FF1(bytes(16), "0123456789")
        vals = ["123456", None, "12345678901234567890", "1234567", None, "123456"]
        out = f.crypt_arrow(pa.array(vals)).to_pylist()
        assert [None if v is None else len(v) for v in out] == [
            None if v is None else len(v) for v in vals]
        assert out[0] == out[5] == f.encrypt("123456")
        assert out[2] == f.encrypt(vals[2])

    def test_numeral_matrix_for_raw_radix(self):
        f = FF1(bytes(16), 1000)
        rows = np.array([[1, 999, 0, 5], [7, 7, 7, 7]], dtype=np.uint32)
        enc = f.crypt_matrix(rows)
        assert enc.tolist() == [f.encrypt_numerals(r.tolist()) for r in rows]
        assert f.crypt_matrix(enc, encrypt=False).tolist() == rows.tolist()


class TestFF1Properties:
    @settings(max_examples=60, deadline=None)
    @given(st.integers(2, 62).flatmap(
        lambda r: st.tuples(st.just(r), st.lists(st.integers(0, r - 1),
                                                 min_size=ff1_min_length(r), max_size=48))))
    def test_roundtrip_and_format_preservation(self, case):
        radix, digits = case
        alphabet = A62[:radix]
        text = "".join(alphabet[d] for d in digits)
        f = FF1(bytes(range(16)), alphabet, tweak=b"t")
        enc = f.encrypt(text)
        assert len(enc) == len(text) and set(enc) <= set(alphabet)
        assert f.decrypt(enc) == text
        assert f.crypt_arrow(pa.array([text])).to_pylist() == [enc]

    @settings(max_examples=30, deadline=None)
    @given(st.sets(st.integers(0, 10**8 - 1), min_size=2, max_size=40))
    def test_injective(self, numbers):
        f = FF1(bytes(32), "0123456789")
        vals = [f"{x:08d}" for x in numbers]
        out = f.crypt_arrow(pa.array(vals)).to_pylist()
        assert len(set(out)) == len(vals)


class TestFF1Limits:
    def test_minimum_domain_follows_rev1(self):
        assert [ff1_min_length(r) for r in (2, 10, 36, 62, 1000)] == [20, 6, 4, 4, 2]
        f = FF1(bytes(16), "0123456789")
        with pytest.raises(InputError, match="at least 6 for radix 10"):
            f.encrypt("12345")
        assert len(f.encrypt("123456")) == 6

    def test_maximum_length_is_enforced(self):
        f = FF1(bytes(16), "0123456789", max_len=32)
        with pytest.raises(InputError, match="at most 32"):
            f.encrypt("1" * 33)
        with pytest.raises(InputError, match="at most 32"):
            f.crypt_arrow(pa.array(["1" * 33]))
        with pytest.raises(InputError, match="max_len"):
            FF1(bytes(16), "01", max_len=10)  # below radix-2 minimum of 20
        with pytest.raises(InputError, match="max_len"):
            FF1(bytes(16), "0123456789", max_len=10**6)

    @pytest.mark.parametrize("alphabet", ["0", "", "0123456789" * 7, "00123456789", "0123456789é"])
    def test_bad_alphabets_are_refused(self, alphabet):
        with pytest.raises(InputError, match="alphabet"):
            FF1(bytes(16), alphabet)

    @pytest.mark.parametrize("radix", [1, 0, -5, 2**16 + 1, 10**9])
    def test_huge_or_tiny_radix_is_refused(self, radix):
        with pytest.raises(InputError, match="radix"):
            FF1(bytes(16), radix)

    def test_bad_keys_and_tweaks_are_refused(self):
        with pytest.raises(InputError, match="16, 24 or 32 bytes"):
            FF1(bytes(20))
        with pytest.raises(InputError, match="tweak"):
            FF1(bytes(16), tweak=bytes(257))

    def test_a_10mb_value_is_refused_before_any_work(self):
        f = FF1(bytes(16), "0123456789")
        with pytest.raises(InputError, match="at most 256"):
            f.crypt_arrow(pa.array(["1" * (10 * 1024 * 1024)]), column="pan")

    def test_characters_outside_the_alphabet_name_the_column_and_position(self):
        f = FF1(bytes(16), "0123456789")
        with pytest.raises(InputError, match="column 'pan': value at position 1"):
            f.crypt_arrow(pa.array(["1234567", "12345x7"]), column="pan")
        with pytest.raises(InputError, match="column 'pan'"):
            f.crypt_arrow(pa.array(["12345é7"]), column="pan")

    def test_key_is_not_in_repr_and_not_picklable(self):
        import pickle

        f = FF1(bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C"))
        assert "2b7e" not in repr(f).lower()
        with pytest.raises(TypeError):
            pickle.dumps(f)


class TestFF1Transform:
    def test_apply_and_reverse_in_the_eu(self, root, events):
        f = FF1Transform(root, domain="cards", jurisdiction="EU", audit=events.append)
        s = pd.Series(["4111111111111111", None, "5500000000000004"], name="pan")
        out = f.apply(s)
        assert out.str.len().tolist()[::2] == [16, 16] and pd.isna(out[1])
        assert out.name == "pan"
        back = f.reverse(out, context=Context("EU"))
        assert back.fillna("-").tolist() == s.fillna("-").tolist()
        assert events[-1].fields["outcome"] == "ok" and events[-1].fields["nulls"] == 1

    def test_failed_reverse_is_audited(self, root, events):
        f = FF1Transform(root, domain="cards", jurisdiction="EU", audit=events.append)
        with pytest.raises(InputError):
            f.reverse(pd.Series(["12x4567"]), context=Context("EU"))
        assert events[-1].fields["outcome"] == "bad-input"
        p = PhoneFF1(root, domain="p", jurisdiction="EU", audit=events.append)
        with pytest.raises(InputError):
            p.reverse(pd.Series(["+49"]), context=Context("EU"))
        assert events[-1].fields["outcome"] == "bad-input"

    def test_reverse_is_refused_outside_the_eu(self, root, events):
        f = FF1Transform(root, domain="cards", jurisdiction="EU", audit=events.append)
        out = f.apply(pd.Series(["4111111111111111"]))
        with pytest.raises(JurisdictionError):
            f.reverse(out, context=Context("US"))
        assert events[-1].fields["outcome"] == "refused"

    def test_domains_and_tweaks_separate(self, root):
        s = pd.Series(["4111111111111111"])
        a = FF1Transform(root, domain="a").apply(s)[0]
        b = FF1Transform(root, domain="b").apply(s)[0]
        c = FF1Transform(root, domain="a", tweak=b"column-2").apply(s)[0]
        assert len({a, b, c}) == 3

    def test_alphanumeric_alphabet(self, root):
        f = FF1Transform(root, domain="ids", alphabet=A62, jurisdiction="EU")
        s = pd.Series(["AbC123xyz", "Zz9"])
        out = f.apply(s.iloc[:1])
        assert len(out[0]) == 9 and set(out[0]) <= set(A62)
        with pytest.raises(InputError, match="at least 4"):
            f.apply(s)

    def test_integer_columns_are_refused(self, root):
        with pytest.raises(InputError, match="zero-padding"):
            FF1Transform(root, domain="x").apply(pd.Series([1234567], name="n"))

    def test_worker_ref_rebuilds(self, root):
        import pickle

        f = FF1Transform(root, domain="cards", tweak=b"t", jurisdiction="EU")
        g = pickle.loads(pickle.dumps(f.worker_ref())).build()
        s = pd.Series(["4111111111111111"])
        assert g.apply(s).equals(f.apply(s))
        assert g.describe() == f.describe()


class TestPhoneFF1:
    def test_country_code_and_length_are_kept(self, root):
        p = PhoneFF1(root, domain="phones", jurisdiction="EU")
        s = pd.Series(["+4915112345678", "+33612345678", "+12025550123", "+35312345678",
                       None, "+4915112345678"])
        out = p.apply(s)
        for a, b in zip(s.dropna(), out.dropna(), strict=True):
            assert len(a) == len(b) and b[1:].isdigit()
        assert [o[:3] for o in out.dropna()[:2]] == ["+49", "+33"]
        assert out[2][:2] == "+1" and out[3][:4] == "+353"
        assert out[0] == out[5] and pd.isna(out[4])
        assert out[0] != s[0]
        back = p.reverse(out, context=Context("EU"))
        assert back.fillna("-").tolist() == s.fillna("-").tolist()

    def test_same_national_number_in_two_countries_differs(self, root):
        p = PhoneFF1(root, domain="phones")
        out = p.apply(pd.Series(["+49612345678", "+33612345678"]))
        assert out[0][3:] != out[1][3:]

    @pytest.mark.parametrize("bad", ["4915112345678", "+49 151 1234", "+49-151", "+4912345",
                                     "+1234567890123456", "++491511234567"])
    def test_non_e164_values_are_refused(self, root, bad):
        with pytest.raises(InputError, match="column 'phone': value at position 0"):
            PhoneFF1(root, domain="p").apply(pd.Series([bad], name="phone"))

    def test_on_synthetic_users(self, root):
        from pets.datasets import synthetic_users

        users = synthetic_users(300, seed=1)
        out = PhoneFF1(root, domain="p").apply(users["phone"])
        assert (out.str.len() == users["phone"].str.len()).all()
        assert (out.str[:3] == users["phone"].str[:3]).all()


def _reference_ff1(key: bytes, radix: int, tweak: bytes, x: list[int]) -> list[int]:
    """SP 800-38G Algorithm 7 written out literally; PRF = AES-CBC-MAC via cryptography's CBC."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def prf(data: bytes) -> bytes:
        enc = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
        return (enc.update(data) + enc.finalize())[-16:]

    def ciph(block: bytes) -> bytes:
        return prf(block)

    def num(xs: list[int]) -> int:
        out = 0
        for d in xs:
            out = out * radix + d
        return out

    def strm(v: int, m: int) -> list[int]:
        out = []
        for _ in range(m):
            v, r = divmod(v, radix)
            out.append(r)
        return out[::-1]

    n, t = len(x), len(tweak)
    u = n // 2
    v = n - u
    a, b_ = x[:u], x[u:]
    import math

    b = math.ceil(math.ceil(v * math.log2(radix)) / 8)
    d = 4 * math.ceil(b / 4) + 4
    p = (bytes([1, 2, 1]) + radix.to_bytes(3, "big") + bytes([10, u % 256])
         + n.to_bytes(4, "big") + t.to_bytes(4, "big"))
    for i in range(10):
        q = tweak + bytes((-t - b - 1) % 16) + bytes([i]) + num(b_).to_bytes(b, "big")
        r = prf(p + q)
        s = r
        for j in range(1, math.ceil(d / 16)):
            s += ciph(bytes(x ^ y for x, y in zip(r, j.to_bytes(16, "big"), strict=True)))
        y = int.from_bytes(s[:d], "big")
        m = u if i % 2 == 0 else v
        c = (num(a) + y) % radix**m
        a, b_ = b_, strm(c, m)
    return a + b_


class TestAgainstLiteralReference:
    @pytest.mark.parametrize("radix,lengths", [
        (10, [6, 16, 30, 38, 40, 64, 100]),
        (36, [4, 19, 31, 40, 60]),
        (2, [20, 64, 130, 200]),
    ])
    def test_all_paths_match_the_spec_written_out(self, radix, lengths):
        rng = np.random.default_rng(7)
        for tweak in (b"", b"0123456789abcdefghij"):
            f = FF1(bytes(range(32)), radix, tweak=tweak)
            for n in lengths:
                x = [int(d) for d in rng.integers(0, radix, n)]
                want = _reference_ff1(bytes(range(32)), radix, tweak, x)
                assert f.encrypt_numerals(x) == want, (radix, n, tweak)
                mat = np.array([x, x], dtype=np.uint32)
                assert f.crypt_matrix(mat).tolist() == [want, want]
                assert f.decrypt_numerals(want) == x


class TestReviewHardening:
    """Findings of the adversarial review (issue 4), each with the attack tried."""

    @pytest.mark.parametrize("v", SAMPLES, ids=[f"sample{v['sample']}" for v in SAMPLES])
    def test_nist_samples_really_take_the_vectorized_rounds(self, v):
        f = _cipher(v)
        n = len(v["plaintext"])
        assert f._param(n, f.tweak).vector  # so crypt_arrow above is not the scalar fallback
        mat = np.array([[v["alphabet"].index(c) for c in v["plaintext"]]] * 3, dtype=np.uint32)
        want = [v["alphabet"].index(c) for c in v["ciphertext"]]
        assert f.crypt_matrix(mat).tolist() == [want] * 3
        assert f.encrypt_numerals(mat[0].tolist()) == want  # scalar path

    @settings(max_examples=80, deadline=None)
    @given(st.one_of(st.integers(2, 62), st.sampled_from([63, 100, 255, 256, 257, 1000, 4096,
                                                           65535, 65536])).flatmap(
        lambda r: st.tuples(
            st.just(r),
            st.integers(ff1_min_length(r), max(ff1_min_length(r), 44)).flatmap(
                lambda n: st.lists(st.lists(st.integers(0, r - 1), min_size=n, max_size=n),
                                   min_size=1, max_size=6)),
            st.binary(max_size=40))))
    def test_vectorized_scalar_and_literal_spec_agree(self, case):
        radix, rows, tweak = case
        key = bytes(range(16))
        f = FF1(key, radix, tweak=tweak)
        mat = np.array(rows, dtype=np.uint32)
        vec = f.crypt_matrix(mat).tolist()
        assert vec == [f.encrypt_numerals(r) for r in rows]
        assert vec[0] == _reference_ff1(key, radix, tweak, rows[0])
        assert f.crypt_matrix(np.array(vec, dtype=np.uint32), encrypt=False).tolist() == rows

    @pytest.mark.parametrize("bad", [np.array([[-1, 0, 0, 0, 0, 0]], dtype=np.int64),
                                     np.array([[0.5] * 6]), np.arange(6)])
    def test_malformed_numeral_arrays_are_refused(self, bad):
        # before: -1 wrapped to 2^64-1 and encrypted to garbage that did not decrypt back
        with pytest.raises(InputError, match="numeral"):
            FF1(bytes(16), 10).crypt_matrix(bad)

    def test_python_ints_in_an_object_column_are_refused_like_integer_dtypes(self, root):
        # before: int64 refused but object ints silently lost their leading zeros
        with pytest.raises(InputError, match="column 'n': FF1 needs strings"):
            FF1Transform(root, domain="x").apply(pd.Series([1234567], dtype=object, name="n"))

    @pytest.mark.parametrize("bad", ["+٤٩15112345678", "+49151١2345678", "+4915112345²78"])
    def test_phone_numbers_with_non_ascii_digits_are_refused(self, root, bad):
        # before: str.isdigit accepted them and a non-ASCII country code was copied through
        with pytest.raises(InputError, match=r"column 'phone': value at position 0 is not an E\.164"):
            PhoneFF1(root, domain="p").apply(pd.Series([bad], name="phone"))

    def test_phone_tweak_too_long_for_the_country_suffix_is_refused_up_front(self, root):
        with pytest.raises(InputError, match="at most 252 bytes"):
            PhoneFF1(root, domain="p", tweak=bytes(253))
        assert len(PhoneFF1(root, domain="p", tweak=bytes(252)).apply(
            pd.Series(["+4915112345678"]))[0]) == 14

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["1", "7", "33", "49", "353", "880", "44"]),
                              st.text("0123456789", min_size=7, max_size=12)),
                    min_size=1, max_size=12))
    def test_phone_shape_is_kept_and_reverses(self, numbers):
        numbers = [(cc, nsn[: 15 - len(cc)]) for cc, nsn in numbers]
        root = Secret(bytes(range(32)))
        p = PhoneFF1(root, domain="phones", jurisdiction="EU")
        s = pd.Series([f"+{cc}{nsn}" for cc, nsn in numbers])
        out = p.apply(s)
        for (cc, nsn), o in zip(numbers, out, strict=True):
            assert o.startswith("+" + cc) and len(o) == len(cc) + len(nsn) + 1
            assert o[1:].isdigit() and o.isascii()
        assert p.reverse(out, context=Context("EU")).tolist() == s.tolist()

    def test_a_10mb_phone_value_is_refused_before_any_copy(self, root):
        # before: the column was first copied to a fixed-width numpy array: 40 MB per row here
        s = pd.Series(["+4915112345678"] * 2000 + ["+" + "1" * (10 * 1024 * 1024)], name="phone")
        import tracemalloc

        tracemalloc.start()
        try:
            with pytest.raises(InputError, match="column 'phone': value at position 2000"):
                PhoneFF1(root, domain="p").apply(s)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 200 * 1024 * 1024

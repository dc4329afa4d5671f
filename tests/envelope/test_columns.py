"""Column encryption: round trips, linkability as documented, tampering, keys, RFC 5297."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pets import (
    Context,
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
)
from pets.envelope import ColumnKeys, decrypt_columns, encrypt_columns
from pets.envelope._columns import ATTRS_KEY, siv_decrypt, siv_encrypt
from pets.keys import KeyServices
from tests.envelope.conftest import EU1, EU2

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "envelope" / "rfc5297.json"
HYPO = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def frame():
    return pd.DataFrame({
        "user_id": [1, 2, 3, 4],
        "email": ["a@x.eu", None, "a@x.eu", "c@x.eu"],
        "score": [1.5, np.nan, -0.0, 2.25],
        "blob": [b"\x00\x00", b"ab\x00", None, b""],
        "active": [True, False, True, True],
    })


def enc(frame, ring, eu, columns, **kw):
    return encrypt_columns(frame, columns, keys=ring, key_uris=EU1, context=eu, **kw)


class TestRoundTrip:
    @pytest.mark.parametrize("mode", ["randomized", "deterministic"])
    @pytest.mark.parametrize("encoding", ["bytes", "base64"])
    def test_every_supported_type(self, ring, eu, frame, mode, encoding):
        out, ck = enc(frame, ring, eu, list(frame.columns), mode=mode, encoding=encoding)
        for c in frame.columns:
            assert out[c].isna().tolist() == frame[c].isna().tolist(), c
        back = decrypt_columns(out, ck, keys=ring, context=eu)
        pd.testing.assert_frame_equal(back, frame)

    @HYPO
    @given(values=st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=40),
           mode=st.sampled_from(["randomized", "deterministic"]))
    def test_text_roundtrip(self, ring, eu, values, mode):
        df = pd.DataFrame({"v": pd.Series(values, dtype=object)})
        out, ck = enc(df, ring, eu, {"v": mode})
        pd.testing.assert_frame_equal(decrypt_columns(out, ck, keys=ring, context=eu), df)

    @HYPO
    @given(values=st.lists(st.binary(max_size=24), max_size=40),
           ints=st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=40),
           mode=st.sampled_from(["randomized", "deterministic"]))
    def test_bytes_and_int_roundtrip(self, ring, eu, values, ints, mode):
        df = pd.DataFrame({"b": pd.Series(values, dtype=object)})
        out, ck = enc(df, ring, eu, {"b": mode})
        pd.testing.assert_frame_equal(decrypt_columns(out, ck, keys=ring, context=eu), df)
        di = pd.DataFrame({"i": pd.array([*ints, None], dtype="Int64")})
        out, ck = enc(di, ring, eu, {"i": mode})
        pd.testing.assert_frame_equal(decrypt_columns(out, ck, keys=ring, context=eu), di)

    def test_frame_is_not_modified_and_other_columns_pass_through(self, ring, eu, frame):
        copy = frame.copy()
        out, _ = enc(frame, ring, eu, ["email"])
        pd.testing.assert_frame_equal(frame, copy)
        pd.testing.assert_series_equal(out["user_id"], frame["user_id"])

    def test_header_in_attrs_and_json_roundtrip(self, ring, eu, frame):
        out, ck = enc(frame, ring, eu, {"email": "deterministic"}, enc_context={"t": "users"})
        assert out.attrs[ATTRS_KEY] == ck.to_dict()
        text = ck.to_json()
        assert json.loads(text)["columns"][0]["mode"] == "deterministic"
        back = decrypt_columns(out, ColumnKeys.from_json(text), keys=ring, context=eu)
        assert back["email"].tolist()[0] == "a@x.eu"
        back2 = decrypt_columns(out, keys=ring, context=eu)  # from attrs
        pd.testing.assert_frame_equal(back, back2)

    def test_base64_cells_are_text(self, ring, eu, frame):
        out, _ = enc(frame, ring, eu, ["email"], encoding="base64")
        cell = out["email"][0]
        assert isinstance(cell, str) and len(base64.b64decode(cell)) == 12 + 6 + 16

    def test_randomized_cell_layout_is_nonce_ciphertext_tag(self, ring, eu, frame):
        out, _ = enc(frame, ring, eu, ["email"])
        assert len(out["email"][0]) == 12 + len("a@x.eu") + 16

    def test_audit_event(self, ring, eu, frame, events):
        enc(frame, ring, eu, ["email"], audit=events)
        assert "envelope.encrypt_columns" in events.kinds()


class TestLinkability:
    """Deterministic mode links equal values (documented); randomized mode does not."""

    def test_deterministic_equal_values_equal_ciphertexts(self, ring, eu, frame):
        out, _ = enc(frame, ring, eu, {"email": "deterministic"})
        assert out["email"][0] == out["email"][2] != out["email"][3]

    def test_deterministic_floats_keep_the_sign_of_zero(self, ring, eu):
        # factorizing treated -0.0 == 0.0: -0.0 came back as 0.0, and its ciphertext depended
        # on which of the two came first in the batch
        first = pd.DataFrame({"x": [0.0, -0.0, 1.0]})
        out, ck = enc(first, ring, eu, {"x": "deterministic"})
        assert out["x"][0] != out["x"][1]
        back = decrypt_columns(out, ck, keys=ring, context=eu)["x"].to_numpy()
        assert np.signbit(back).tolist() == [False, True, False]
        again, _ = enc(pd.DataFrame({"x": [-0.0, 0.0]}), ring, eu, {"x": "deterministic"},
                       column_keys=ck)
        assert again["x"].tolist() == [out["x"][1], out["x"][0]]

    def test_randomized_equal_values_differ(self, ring, eu, frame):
        out, _ = enc(frame, ring, eu, {"email": "randomized"})
        assert out["email"][0] != out["email"][2]

    def test_joinable_when_the_column_keys_are_reused(self, ring, eu):
        users = pd.DataFrame({"user": ["u1", "u2", "u3"]})
        events = pd.DataFrame({"user": ["u3", "u1", "u1"], "n": [1, 2, 3]})
        eu_users, ck = enc(users, ring, eu, {"user": "deterministic"})
        eu_events, ck2 = enc(events, ring, eu, {"user": "deterministic"}, column_keys=ck)
        assert ck2.columns["user"].wrapped_keys == ck.columns["user"].wrapped_keys
        joined = eu_events.merge(eu_users.assign(row=range(3)), on="user")
        assert joined["row"].tolist() == [2, 0, 0]

    def test_domain_separated_per_column_and_context(self, ring, eu, tmp_path):
        df = pd.DataFrame({"a": ["same"], "b": ["same"]})
        out, _ck = enc(df, ring, eu, {"a": "deterministic", "b": "deterministic"})
        assert out["a"][0] != out["b"][0]
        # same key, different column name or context: different ciphertext
        key = b"k" * 64
        from pets.envelope._columns import _aad

        a = siv_encrypt(key, [b"same"], [_aad("a", "deterministic", "str", "str", b"{}")])
        b = siv_encrypt(key, [b"same"], [_aad("b", "deterministic", "str", "str", b"{}")])
        c = siv_encrypt(key, [b"same"], [_aad("a", "deterministic", "str", "str",
                                              b'{"t":"x"}')])
        assert len({a[0], b[0], c[0]}) == 3

    def test_column_name_is_length_prefixed_in_the_associated_data(self):
        from pets.envelope._columns import _aad

        assert _aad("ab", "deterministic", "str", "str", b"c") != _aad(
            "a", "deterministic", "str", "str", b"bc")
        assert _aad("a", "deterministic", "str", "strx", b"") != _aad(
            "xa", "deterministic", "str", "str", b"")


class TestTampering:
    def test_flipped_byte_in_a_cell(self, ring, eu, frame):
        for mode in ("randomized", "deterministic"):
            out, ck = enc(frame, ring, eu, {"email": mode})
            cell = bytearray(out["email"][3])
            for i in range(len(cell)):
                bad = out.copy()
                flipped = bytearray(cell)
                flipped[i] ^= 1
                bad.loc[3, "email"] = bytes(flipped)
                with pytest.raises(IntegrityError, match="column 'email'"):
                    decrypt_columns(bad, ck, keys=ring, context=eu)

    def test_cell_moved_to_another_column(self, ring, eu):
        df = pd.DataFrame({"a": ["x", "y"], "b": ["x", "y"]})
        out, ck = enc(df, ring, eu, ["a", "b"])
        bad = out.copy()
        bad.loc[0, "b"] = out["a"][0]
        with pytest.raises(IntegrityError, match="column 'b'"):
            decrypt_columns(bad, ck, keys=ring, context=eu)

    @pytest.mark.parametrize("mode", ["randomized", "deterministic"])
    @pytest.mark.parametrize(("field", "value"), [("codec", "float64"), ("dtype", "int32"),
                                                   ("dtype", "float64")])
    def test_header_edited_to_reinterpret_cells_fails(self, ring, eu, mode, field, value):
        # before the codec and dtype were bound, int64 cells decoded silently as float64
        df = pd.DataFrame({"n": [31, 40, 2**40]})
        out, ck = enc(df, ring, eu, {"n": mode})
        d = ck.to_dict()
        d["columns"][0][field] = value
        with pytest.raises(IntegrityError, match="column 'n'"):
            decrypt_columns(out, d, keys=ring, context=eu)

    def test_header_with_thousands_of_wrapped_keys_is_refused_before_unwrapping(
            self, ring, eu, events):
        df = pd.DataFrame({"a": ["x"]})
        out, ck = enc(df, ring, eu, ["a"])
        d = ck.to_dict()
        d["columns"][0]["wrapped_keys"] = d["columns"][0]["wrapped_keys"] * 5000
        before = len(events)
        with pytest.raises(InputError, match="malformed column key for 'a'"):
            decrypt_columns(out, d, keys=ring, context=Context("US"))
        assert len(events) == before  # no key service was asked

    def test_wrapped_keys_swapped_between_columns(self, ring, eu):
        df = pd.DataFrame({"a": ["x"], "b": ["y"]})
        out, ck = enc(df, ring, eu, ["a", "b"])
        d = ck.to_dict()
        d["columns"][0]["wrapped_keys"], d["columns"][1]["wrapped_keys"] = (
            d["columns"][1]["wrapped_keys"], d["columns"][0]["wrapped_keys"])
        with pytest.raises(IntegrityError):
            decrypt_columns(out, d, keys=ring, context=eu)

    def test_wrong_context_in_header(self, ring, eu, frame):
        out, ck = enc(frame, ring, eu, ["email"], enc_context={"t": "users"})
        d = ck.to_dict()
        d["enc_context"] = {"t": "events"}
        with pytest.raises(IntegrityError):
            decrypt_columns(out, d, keys=ring, context=eu)

    def test_bad_base64(self, ring, eu, frame):
        out, ck = enc(frame, ring, eu, ["email"], encoding="base64")
        out.loc[0, "email"] = "!!!"
        with pytest.raises(IntegrityError, match="column 'email'"):
            decrypt_columns(out, ck, keys=ring, context=eu)

    def test_wrong_jurisdiction(self, ring, eu, us, frame):
        out, ck = enc(frame, ring, eu, ["email"])
        with pytest.raises(JurisdictionError):
            decrypt_columns(out, ck, keys=ring, context=us)

    def test_destroyed_kek(self, ring, eu, frame):
        out, ck = enc(frame, ring, eu, ["email"])
        ring.destroy(EU1)
        with pytest.raises(KeyDestroyedError):
            decrypt_columns(out, ck, keys=ring, context=eu)

    def test_two_keks_survive_one_destroyed(self, ring, eu, frame):
        out, ck = encrypt_columns(frame, ["email"], keys=ring, key_uris=[EU1, EU2], context=eu)
        ring.destroy(EU1)
        assert decrypt_columns(out, ck, keys=KeyServices([ring]), context=eu)["email"][0] == \
            "a@x.eu"


class TestInputs:
    def test_unknown_column(self, ring, eu, frame):
        with pytest.raises(InputError, match="no column 'nope'"):
            enc(frame, ring, eu, ["nope"])

    def test_randomized_cells_per_data_key_are_capped(self, ring, eu, frame, monkeypatch):
        from pets.envelope import _columns

        assert _columns.MAX_RANDOMIZED_CELLS == 2**32  # NIST SP 800-38D random-nonce bound
        monkeypatch.setattr(_columns, "MAX_RANDOMIZED_CELLS", 3)
        with pytest.raises(InputError, match="column 'user_id': 4 cells exceed"):
            enc(frame, ring, eu, {"user_id": "randomized"})
        # nulls are not encrypted and deterministic mode has no nonce to exhaust
        out, ck = enc(frame, ring, eu, {"email": "randomized", "user_id": "deterministic"})
        assert decrypt_columns(out, ck, keys=ring, context=eu).equals(frame)

    @pytest.mark.parametrize("dtype", ["uint64", "UInt64"])
    def test_unsigned_values_beyond_int64_are_refused(self, ring, eu, dtype):
        # they used to encrypt (wrapped negative) and then fail to decrypt with OverflowError
        with pytest.raises(InputError, match="column 'u': unsigned values above 2"):
            enc(pd.DataFrame({"u": pd.Series([2**64 - 1, 5], dtype=dtype)}), ring, eu, ["u"])
        small = pd.DataFrame({"u": pd.Series([2**63 - 1, 5], dtype=dtype)})
        out, ck = enc(small, ring, eu, ["u"])
        assert decrypt_columns(out, ck, keys=ring, context=eu).equals(small)

    def test_mixed_types(self, ring, eu):
        df = pd.DataFrame({"m": pd.Series(["a", 1], dtype=object)})
        with pytest.raises(InputError, match="column 'm'"):
            enc(df, ring, eu, ["m"])

    def test_unsupported_dtype(self, ring, eu):
        df = pd.DataFrame({"t": pd.to_datetime(["2024-01-01"])})
        with pytest.raises(InputError, match="column 't'"):
            enc(df, ring, eu, ["t"])

    def test_bad_mode_and_reserved_context(self, ring, eu, frame):
        with pytest.raises(InputError, match="mode"):
            enc(frame, ring, eu, {"email": "ecb"})
        with pytest.raises(InputError, match="reserved"):
            enc(frame, ring, eu, ["email"], enc_context={"pets.column": "x"})

    def test_column_keys_for_another_context_or_mode(self, ring, eu, frame):
        _, ck = enc(frame, ring, eu, {"email": "deterministic"})
        with pytest.raises(InputError, match="another encryption context"):
            enc(frame, ring, eu, ["email"], enc_context={"t": "x"}, column_keys=ck)
        with pytest.raises(InputError, match="column 'email'"):
            enc(frame, ring, eu, {"email": "randomized"}, column_keys=ck)

    def test_malformed_header(self, ring, eu, frame):
        out, _ = enc(frame, ring, eu, ["email"])
        with pytest.raises(InputError):
            decrypt_columns(out, {"format": 2}, keys=ring, context=eu)
        with pytest.raises(InputError):
            ColumnKeys.from_json("not json")
        with pytest.raises(InputError, match="no column_keys"):
            decrypt_columns(pd.DataFrame({"a": [1]}), keys=ring, context=eu)

    def test_header_holds_no_key_bytes(self, ring, eu, frame):
        _, ck = enc(frame, ring, eu, ["email"])
        assert set(ck.to_dict()["columns"][0]["wrapped_keys"][0]) == {
            "key_uri", "version", "jurisdiction", "blob"}


class TestRFC5297:
    """RFC 5297 Appendix A known answers through the deterministic column primitive."""

    vectors = json.loads(VECTORS.read_text())["verify"]

    @pytest.mark.parametrize("v", vectors, ids=[v["name"][:3] for v in vectors])
    def test_vectors(self, v):
        key = bytes.fromhex(v["key"])
        ad = [bytes.fromhex(a) for a in v["associated_data"]]
        pt, expected = bytes.fromhex(v["plaintext"]), bytes.fromhex(v["output"])
        assert siv_encrypt(key, [pt], ad) == [expected]
        assert siv_decrypt(key, [expected], ad) == [pt]

    @pytest.mark.parametrize("v", vectors, ids=[v["name"][:3] for v in vectors])
    def test_tampered_vectors_are_rejected(self, v):
        key = bytes.fromhex(v["key"])
        ad = [bytes.fromhex(a) for a in v["associated_data"]]
        out = bytearray.fromhex(v["output"])
        out[0] ^= 1
        with pytest.raises(IntegrityError):
            siv_decrypt(key, [bytes(out)], ad)
        with pytest.raises(IntegrityError):
            siv_decrypt(key, [bytes.fromhex(v["output"])], [*ad[:-1], b"other"])

    def test_column_path_uses_the_primitive(self, ring, eu):
        from pets.envelope import _columns

        df = pd.DataFrame({"v": ["x", "y", "x"]})
        calls = []
        real = _columns.siv_encrypt

        def spy(key, plaintexts, ad=None):
            calls.append((len(key), list(plaintexts), ad))
            return real(key, plaintexts, ad)

        _columns.siv_encrypt = spy
        try:
            enc(df, ring, eu, {"v": "deterministic"})
        finally:
            _columns.siv_encrypt = real
        # AES-256-SIV (64-byte key); each distinct value encrypted once
        assert calls == [(64, [b"x", b"y"], calls[0][2])]


class TestStorage:
    @pytest.mark.parametrize("encoding", ["bytes", "base64"])
    def test_parquet_roundtrip_carries_the_header_in_metadata(self, ring, eu, frame, tmp_path,
                                                              encoding):
        from pets._io import write_parquet

        out, _ = enc(frame, ring, eu, {"email": "deterministic", "user_id": "randomized"},
                     encoding=encoding)
        path = write_parquet(out, tmp_path / "enc.parquet")
        back = pd.read_parquet(path)
        assert ATTRS_KEY in back.attrs
        plain = decrypt_columns(back, keys=ring, context=eu)
        assert plain["email"].tolist()[:1] == ["a@x.eu"] and plain["email"].isna().tolist() == [
            False, True, False, False]
        assert plain["user_id"].tolist() == [1, 2, 3, 4]


class TestBatches:
    def test_all_null_batch_reuses_the_keys_codec(self, ring, eu):
        first = pd.DataFrame({"b": pd.Series([b"\x01", b"\x02"], dtype=object)})
        _, ck = enc(first, ring, eu, {"b": "deterministic"})
        empty = pd.DataFrame({"b": pd.Series([None, None], dtype=object)})
        out, ck2 = enc(empty, ring, eu, {"b": "deterministic"}, column_keys=ck)
        assert ck2.columns["b"].codec == "bytes" and out["b"].isna().all()
        back = decrypt_columns(out, ck2, keys=ring, context=eu)
        assert back["b"].isna().all()


def _text(events) -> str:
    return "\n".join(json.dumps({"kind": e.kind, "fields": dict(e.fields)}, sort_keys=True,
                                default=str) + repr(e) for e in events)


class TestAuditedKeyUse:
    """Column encryption asks the key service once per column (and key URI), never per cell."""

    @pytest.mark.parametrize("rows", [10, 5000])
    def test_one_wrap_per_column_and_key_one_unwrap_per_column(self, ring, eu, rows):
        from tests.envelope.conftest import Events

        seen = Events()
        services = KeyServices([ring], audit=seen)
        df = pd.DataFrame({"email": [f"u{i % 97}@x.eu" for i in range(rows)],
                           "age": np.arange(rows) % 90})
        enc, keys = encrypt_columns(df, {"email": "deterministic", "age": "randomized"},
                                    keys=services, key_uris=[EU1, EU2], context=eu,
                                    enc_context={"table": "users"})
        assert sorted((e.kind, e.fields["key"], e.fields["purpose"]) for e in seen) == sorted(
            ("key.wrap", uri, f"column:{col}") for col in ("email", "age") for uri in (EU1, EU2))
        seen.clear()
        back = decrypt_columns(enc, keys, keys=services, context=eu)
        pd.testing.assert_frame_equal(back, df)
        assert sorted((e.kind, e.fields["purpose"]) for e in seen) == [
            ("key.unwrap", "column:age"), ("key.unwrap", "column:email")]
        assert {(e.fields["principal"], e.fields["jurisdiction"]) for e in seen} == {
            ("etl@eu-dc1", "EU")}

    def test_a_destroyed_first_key_is_a_failure_then_the_second_key_unwraps(self, ring, eu):
        from tests.envelope.conftest import Events

        seen = Events()
        services = KeyServices([ring], audit=seen)
        df = pd.DataFrame({"email": ["a@x.eu", "b@x.eu"]})
        enc, keys = encrypt_columns(df, ["email"], keys=services, key_uris=[EU1, EU2],
                                    context=eu)
        services.destroy(EU1)
        seen.clear()
        decrypt_columns(enc, keys, keys=services, context=eu)
        assert [(e.kind, e.fields["key"]) for e in seen] == [("key.failed", EU1),
                                                             ("key.unwrap", EU2)]
        assert seen[0].fields["error"] == "KeyDestroyedError"

    def test_no_event_carries_a_data_key_a_kek_or_a_wrapped_key(self, ring, eu):
        from pets.envelope._columns import _wrap_context
        from tests.envelope.conftest import Events

        seen = Events()
        services = KeyServices([ring], audit=seen)
        df = pd.DataFrame({"email": ["a@x.eu", "b@x.eu"], "age": [31, 40]})
        enc, keys = encrypt_columns(df, ["email", "age"], keys=services, key_uris=[EU1, EU2],
                                    context=eu, enc_context={"table": "users"})
        decrypt_columns(enc, keys, keys=services, context=eu)
        with pytest.raises(JurisdictionError):
            decrypt_columns(enc, keys, keys=services, context=Context("US"))
        secrets = [k for uri in (EU1, EU2) for k in ring._keys[uri].values()]
        for col, ck in keys.columns.items():
            ctx = _wrap_context(keys.enc_context, col, ck.mode)
            secrets.append(ring.unwrap(ck.wrapped_keys[0], context=eu, enc_context=ctx))
            secrets += [w.blob for w in ck.wrapped_keys]
        text = _text(seen)
        forms = [f for s in secrets for f in (s.hex(), base64.b64encode(s).decode(), repr(s),
                                              s.decode("latin-1"))]
        assert len(seen) >= 6 and [f for f in forms if f in text] == []


class TestAuditFailureFailsClosed:
    def test_decryption_is_refused_and_not_blamed_on_the_data(self, ring, eu):
        """A corrupt audit log raised IntegrityError inside the unwrap; column decryption took
        it for a bad wrapped key and said the *column* failed to authenticate."""
        from pets import IntegrityError
        from pets.keys import AuditHookError
        from tests.envelope.test_envelope import FailingAudit

        df = pd.DataFrame({"email": ["a@x.eu", "b@x.eu"]})
        enc, ck = encrypt_columns(df, ["email"], keys=ring, key_uris=[EU1, EU2], context=eu)
        hook = FailingAudit(IntegrityError("audit.jsonl: the last entry is corrupt"))
        with pytest.raises(AuditHookError, match=rf"could not record key\.unwrap of {EU1} v1 "
                                                 r"\(IntegrityError\)$"):
            decrypt_columns(enc, ck, keys=KeyServices([ring], audit=hook), context=eu)
        assert hook.tried == ["key.unwrap"]

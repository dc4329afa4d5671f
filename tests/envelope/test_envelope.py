"""Envelope encryption of bytes and files: round trips, every tamper case, keys, re-wrap,
migration and crypto-shredding."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pets import (
    Context,
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
)
from pets.envelope import (
    EnvelopeFormatError,
    EnvelopeHeader,
    decrypt,
    decrypt_file,
    encrypt,
    encrypt_file,
    read_header,
    rewrap,
    rewrap_file,
)
from pets.keys import KeyServices, MemoryKeyring
from tests.envelope.conftest import EU1, EU2, US1

SEG = 64
DATA = bytes(range(256)) * 3 + b"tail"  # 772 bytes: 12 full segments of 64 + 4 bytes
HYPO = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def segments(blob: bytes) -> tuple[bytes, list[bytes]]:
    """Split an envelope into its header and ciphertext segments."""
    header, size = EnvelopeHeader.from_bytes(blob)
    step = header.segment_size + 16
    body = blob[size:]
    return blob[:size], [body[i:i + step] for i in range(0, len(body), step)]


@pytest.fixture
def blob(ring, eu):
    return encrypt(DATA, keys=ring, key_uris=EU1, context=eu, enc_context={"table": "users"},
                   segment_size=SEG)


class TestRoundTrip:
    @HYPO
    @given(data=st.binary(max_size=2000), seg=st.integers(64, 300),
           ctx=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
    def test_bytes_roundtrip(self, ring, eu, data, seg, ctx):
        blob = encrypt(data, keys=ring, key_uris=[EU1, EU2], context=eu, enc_context=ctx,
                       segment_size=seg)
        assert decrypt(blob, keys=ring, context=eu) == data
        assert decrypt(blob, keys=ring, context=eu, enc_context=ctx) == data

    @HYPO
    @given(data=st.binary(max_size=3000), seg=st.sampled_from([64, 100, 1024]))
    def test_file_roundtrip(self, ring, eu, tmp_path, data, seg):
        src, enc, out = tmp_path / "in.bin", tmp_path / "in.pets", tmp_path / "out.bin"
        src.write_bytes(data)
        info = encrypt_file(src, enc, keys=ring, key_uris=EU1, context=eu, segment_size=seg)
        assert info.plaintext_size == len(data)
        back = decrypt_file(enc, out, keys=ring, context=eu)
        assert out.read_bytes() == data and back.plaintext_size == len(data)
        # the file format and the bytes format are the same, both ways
        assert decrypt(enc.read_bytes(), keys=ring, context=eu) == data
        enc.write_bytes(encrypt(data, keys=ring, key_uris=EU1, context=eu, segment_size=seg))
        decrypt_file(enc, out, keys=ring, context=eu)
        assert out.read_bytes() == data

    def test_segment_count_and_sizes(self, blob):
        _, segs = segments(blob)
        assert [len(s) for s in segs] == [SEG + 16] * 12 + [4 + 16]

    def test_exact_multiple_of_segment_size_ends_with_a_full_last_segment(self, ring, eu):
        blob = encrypt(b"z" * 128, keys=ring, key_uris=EU1, context=eu, segment_size=SEG)
        _, segs = segments(blob)
        assert [len(s) for s in segs] == [80, 80]
        assert decrypt(blob, keys=ring, context=eu) == b"z" * 128

    def test_empty_message_is_one_empty_segment(self, ring, eu):
        blob = encrypt(b"", keys=ring, key_uris=EU1, context=eu)
        _, segs = segments(blob)
        assert [len(s) for s in segs] == [16]
        assert decrypt(blob, keys=ring, context=eu) == b""

    def test_same_plaintext_gives_different_envelopes(self, ring, eu):
        a = encrypt(b"same", keys=ring, key_uris=EU1, context=eu)
        b = encrypt(b"same", keys=ring, key_uris=EU1, context=eu)
        assert a != b and a[-20:] != b[-20:]

    def test_read_header_shows_public_facts_only(self, blob):
        info = read_header(blob)
        assert info.enc_context == {"table": "users"}
        assert [(w.key_uri, w.version, w.jurisdiction) for w in info.wrapped_keys] == [
            (EU1, 1, "EU")]
        assert info.authenticated is False
        d = info.to_dict()
        assert "blob" not in str(d["wrapped_keys"])

    def test_audit_events_carry_no_secrets(self, ring, eu, events):
        blob = encrypt(b"s3cret", keys=ring, key_uris=EU1, context=eu, audit=events)
        decrypt(blob, keys=ring, context=eu, audit=events)
        assert "envelope.encrypt" in events.kinds() and "envelope.unwrap" in events.kinds()
        assert "s3cret" not in repr(events)

    def test_bad_arguments_are_input_errors(self, ring, eu, tmp_path):
        with pytest.raises(InputError, match="at least one key URI"):
            encrypt(b"x", keys=ring, key_uris=[], context=eu)
        with pytest.raises(InputError, match="duplicate key URI"):
            encrypt(b"x", keys=ring, key_uris=[EU1, EU1], context=eu)
        with pytest.raises(InputError, match="segment size 10"):
            encrypt(b"x", keys=ring, key_uris=EU1, context=eu, segment_size=10)
        with pytest.raises(InputError, match="no such file"):
            encrypt_file(tmp_path / "missing", tmp_path / "o", keys=ring, key_uris=EU1,
                         context=eu)
        with pytest.raises(KeyNotFoundError, match="no key service supports"):
            encrypt(b"x", keys=ring, key_uris="local://eu/none", context=eu)
        blob = encrypt(b"x", keys=ring, key_uris=EU1, context=eu)
        with pytest.raises(InputError, match="decrypt takes bytes"):
            decrypt(blob.decode("latin-1"), keys=ring, context=eu)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="rewrap takes bytes"):
            rewrap(blob.decode("latin-1"), keys=ring, context=eu, to=EU1)  # type: ignore[arg-type]


class TestTampering:
    """Every modification is detected; the error is precise but says nothing about which check
    failed."""

    def test_flipped_byte_anywhere(self, ring, eu, blob):
        header, _size = EnvelopeHeader.from_bytes(blob)
        uri_start = 84 + len(header.context_bytes) + 2 + 2
        uri_end = uri_start + len(EU1)
        version_end = uri_end + 4
        for i in range(len(blob)):
            bad = bytearray(blob)
            bad[i] ^= 0x01
            if uri_start <= i < version_end:
                # the key URI / version are routing data: a changed one names no key we hold
                expected: type[Exception] = KeyNotFoundError
            elif i < 7:
                expected = EnvelopeFormatError
            else:
                expected = IntegrityError
            with pytest.raises(expected):
                decrypt(bytes(bad), keys=ring, context=eu)

    def test_flipped_uri_with_a_second_wrapped_key_fails_the_header_tag(self, ring, eu):
        blob = encrypt(DATA, keys=ring, key_uris=[EU1, EU2], context=eu, segment_size=SEG)
        header, _ = EnvelopeHeader.from_bytes(blob)
        i = 84 + len(header.context_bytes) + 2 + 2 + len("memory://eu-dc1/")
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            decrypt(bytes(bad), keys=ring, context=eu)

    @pytest.mark.parametrize("k", range(13))  # 13 segments: 0..12 kept
    def test_truncated_at_every_segment_boundary_and_inside(self, ring, eu, blob, k):
        head, segs = segments(blob)
        at_boundary = head + b"".join(segs[:k])
        with pytest.raises(IntegrityError):
            decrypt(at_boundary, keys=ring, context=eu)
        if k < len(segs):
            inside = at_boundary + segs[k][:len(segs[k]) // 2]
            with pytest.raises(IntegrityError):
                decrypt(inside, keys=ring, context=eu)

    def test_reordered_segments(self, ring, eu, blob):
        head, segs = segments(blob)
        swapped = segs[:]
        swapped[1], swapped[2] = swapped[2], swapped[1]
        with pytest.raises(IntegrityError):
            decrypt(head + b"".join(swapped), keys=ring, context=eu)

    def test_duplicated_segment(self, ring, eu, blob):
        head, segs = segments(blob)
        with pytest.raises(IntegrityError):
            decrypt(head + b"".join(segs[:3] + segs[2:]), keys=ring, context=eu)

    def test_removed_middle_segment(self, ring, eu, blob):
        head, segs = segments(blob)
        with pytest.raises(IntegrityError):
            decrypt(head + b"".join(segs[:5] + segs[6:]), keys=ring, context=eu)

    @pytest.mark.parametrize("extra", [b"\x00", b"x" * 16, b"x" * 80])
    def test_extended(self, ring, eu, blob, extra):
        with pytest.raises(IntegrityError):
            decrypt(blob + extra, keys=ring, context=eu)

    def test_last_segment_repeated_as_extension(self, ring, eu, blob):
        _, segs = segments(blob)
        with pytest.raises(IntegrityError):
            decrypt(blob + segs[-1], keys=ring, context=eu)

    def test_segments_swapped_between_files(self, ring, eu, blob):
        other = encrypt(DATA, keys=ring, key_uris=EU1, context=eu,
                        enc_context={"table": "users"}, segment_size=SEG)
        head_a, segs_a = segments(blob)
        _, segs_b = segments(other)
        mixed = segs_a[:]
        mixed[3] = segs_b[3]
        with pytest.raises(IntegrityError):
            decrypt(head_a + b"".join(mixed), keys=ring, context=eu)

    def test_header_swapped_between_files(self, ring, eu, blob):
        other = encrypt(DATA, keys=ring, key_uris=EU1, context=eu,
                        enc_context={"table": "users"}, segment_size=SEG)
        head_b, _ = segments(other)
        _, segs_a = segments(blob)
        with pytest.raises(IntegrityError):
            decrypt(head_b + b"".join(segs_a), keys=ring, context=eu)

    def test_wrong_encryption_context(self, ring, eu, blob):
        assert decrypt(blob, keys=ring, context=eu, enc_context={"table": "users"}) == DATA
        for wrong in ({}, {"table": "events"}, {"table": "users", "x": "y"}):
            with pytest.raises(IntegrityError):
                decrypt(blob, keys=ring, context=eu, enc_context=wrong)

    def test_wrong_key(self, eu, blob):
        impostor = MemoryKeyring()
        impostor.create(EU1, jurisdiction="EU")  # same URI, different key bytes
        with pytest.raises(IntegrityError):
            decrypt(blob, keys=impostor, context=eu)

    def test_error_messages_are_opaque(self, ring, eu, blob):
        bad = bytearray(blob)
        bad[-1] ^= 1
        with pytest.raises(IntegrityError) as a:
            decrypt(bytes(bad), keys=ring, context=eu)
        with pytest.raises(IntegrityError) as b:
            decrypt(blob, keys=ring, context=eu, enc_context={"x": "y"})
        assert str(a.value) == str(b.value) == "envelope failed to authenticate"

    def test_every_failed_check_has_the_same_message(self, ring, eu, blob):
        # a wrapped key or commitment failure used to say "this envelope ..." while the
        # header tag and segments said "envelope ...": an oracle for which check failed
        from dataclasses import replace

        header, size = EnvelopeHeader.from_bytes(blob)
        w = header.wrapped_keys[0]
        impostor = MemoryKeyring()
        impostor.create(EU1, jurisdiction="EU")  # same URI, other key: commitment fails
        cases = {
            "segment": (blob[:-1] + bytes([blob[-1] ^ 1]), ring),
            "header tag": (blob[:size - 1] + bytes([blob[size - 1] ^ 1]) + blob[size:], ring),
            "wrapped key": (replace(header, wrapped_keys=(replace(
                w, blob=bytes([w.blob[0] ^ 1]) + w.blob[1:]),)).to_bytes() + blob[size:], ring),
            "commitment": (blob, impostor),
        }
        messages = set()
        for data, keys in cases.values():
            with pytest.raises(IntegrityError) as err:
                decrypt(data, keys=keys, context=eu)
            messages.add(str(err.value))
        assert messages == {"envelope failed to authenticate"}

    def test_no_output_file_on_any_failure(self, ring, eu, tmp_path):
        src = tmp_path / "plain.bin"
        src.write_bytes(os.urandom(5000))
        enc = tmp_path / "c.pets"
        encrypt_file(src, enc, keys=ring, key_uris=EU1, context=eu, segment_size=SEG)
        good = enc.read_bytes()
        for name, bad in {
            "last-segment": good[:-1] + bytes([good[-1] ^ 1]),
            "truncated": good[:-20],
            "header": good[:60] + bytes([good[60] ^ 1]) + good[61:],
        }.items():
            enc.write_bytes(bad)
            out = tmp_path / f"out-{name}"
            with pytest.raises(IntegrityError):
                decrypt_file(enc, out, keys=ring, context=eu)
            assert not out.exists()
        # an existing destination is left untouched
        keep = tmp_path / "keep"
        keep.write_bytes(b"previous")
        with pytest.raises(JurisdictionError):
            decrypt_file(enc, keep, keys=ring, context=Context("US"))
        assert keep.read_bytes() == b"previous"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    def test_interrupted_decrypt_leaves_no_temp_file(self, ring, eu, tmp_path, monkeypatch):
        from pets.envelope import _envelope

        src = tmp_path / "c.pets"
        src.write_bytes(encrypt(DATA, keys=ring, key_uris=EU1, context=eu, segment_size=SEG))
        real = _envelope.segment_nonce
        calls = []

        def interrupt(prefix, counter, last):
            calls.append(counter)
            if counter == 3:
                raise KeyboardInterrupt
            return real(prefix, counter, last)

        monkeypatch.setattr(_envelope, "segment_nonce", interrupt)
        with pytest.raises(KeyboardInterrupt):
            decrypt_file(src, tmp_path / "out", keys=ring, context=eu)
        assert calls == [0, 1, 2, 3]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pets"]


class TestLimits:
    """The 32-bit segment counter is never allowed to wrap (nonce reuse), on either side."""

    @pytest.fixture
    def two_segments_max(self, monkeypatch):
        from pets.envelope import _envelope

        monkeypatch.setattr(_envelope, "MAX_SEGMENTS", 1)  # counters 0 and 1 only

    def test_encrypt_refuses_more_segments_than_the_counter_holds(self, ring, eu, tmp_path,
                                                                   two_segments_max):
        assert decrypt(encrypt(b"x" * 2 * SEG, keys=ring, key_uris=EU1, context=eu,
                               segment_size=SEG), keys=ring, context=eu) == b"x" * 2 * SEG
        with pytest.raises(InputError, match="too large"):
            encrypt(b"x" * (2 * SEG + 1), keys=ring, key_uris=EU1, context=eu,
                    segment_size=SEG)
        src = tmp_path / "p"
        src.write_bytes(b"x" * (2 * SEG + 1))
        with pytest.raises(InputError, match="too large"):
            encrypt_file(src, tmp_path / "c", keys=ring, key_uris=EU1, context=eu,
                         segment_size=SEG)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]

    def test_decrypt_refuses_a_counter_past_the_limit(self, ring, eu, tmp_path, monkeypatch):
        from pets.envelope import _envelope

        blob = encrypt(b"x" * (2 * SEG + 1), keys=ring, key_uris=EU1, context=eu,
                       segment_size=SEG)
        monkeypatch.setattr(_envelope, "MAX_SEGMENTS", 1)
        with pytest.raises(IntegrityError):
            decrypt(blob, keys=ring, context=eu)
        (tmp_path / "c").write_bytes(blob)
        with pytest.raises(IntegrityError):
            decrypt_file(tmp_path / "c", tmp_path / "out", keys=ring, context=eu)
        assert not (tmp_path / "out").exists()


class TestKeys:
    def test_any_wrapped_key_decrypts_multi_datacentre(self, ring, eu):
        blob = encrypt(DATA, keys=ring, key_uris=[EU1, EU2], context=eu)
        ring.destroy(EU1)
        assert decrypt(blob, keys=ring, context=eu) == DATA

    def test_services_holding_only_one_datacentre_decrypt(self, ring, local_ring, eu):
        local = "local://eu-local/kek"
        blob = encrypt(DATA, keys=KeyServices([ring, local_ring]), key_uris=[EU1, local],
                       context=eu)
        assert decrypt(blob, keys=local_ring, context=eu) == DATA
        assert decrypt(blob, keys=ring, context=eu) == DATA

    def test_two_keyrings_of_one_scheme_are_both_asked(self, eu):
        dc1, dc2 = MemoryKeyring(), MemoryKeyring()
        dc1.create(EU1, jurisdiction="EU")
        dc2.create(EU2, jurisdiction="EU")
        a = encrypt(DATA, keys=dc1, key_uris=EU1, context=eu)
        b = encrypt(DATA, keys=dc2, key_uris=EU2, context=eu)
        both = KeyServices([dc1, dc2])
        assert decrypt(a, keys=both, context=eu) == decrypt(b, keys=both, context=eu) == DATA

    def test_wrong_jurisdiction(self, ring, eu, us, events):
        blob = encrypt(DATA, keys=ring, key_uris=[EU1, EU2], context=eu)
        with pytest.raises(JurisdictionError, match="analyst@us"):
            decrypt(blob, keys=ring, context=us)
        refusals = [e for e in events if e.kind == "key.refused"]
        assert len(refusals) == 2 and refusals[0].fields["jurisdiction"] == "US"

    def test_a_key_of_the_callers_jurisdiction_is_used(self, ring, eu, us):
        blob = encrypt(DATA, keys=ring, key_uris=[EU1, US1], context=eu)
        assert decrypt(blob, keys=ring, context=us) == DATA
        assert decrypt(blob, keys=ring, context=eu) == DATA

    def test_no_service_for_any_key(self, ring, eu):
        blob = encrypt(DATA, keys=ring, key_uris=EU1, context=eu)
        with pytest.raises(KeyNotFoundError, match="memory://eu-dc1/kek v1"):
            decrypt(blob, keys=KeyServices([]), context=eu)

    def test_destroyed_version(self, ring, eu):
        blob = encrypt(DATA, keys=ring, key_uris=EU1, context=eu)
        ring.destroy(EU1, 1)
        with pytest.raises(KeyDestroyedError, match="destroyed"):
            decrypt(blob, keys=ring, context=eu)

    def test_retired_version(self, ring, eu):
        old = encrypt(DATA, keys=ring, key_uris=EU1, context=eu)
        ring.rotate(EU1)
        new = encrypt(DATA, keys=ring, key_uris=EU1, context=eu)
        ring.retire(EU1, 2)
        with pytest.raises(KeyDestroyedError, match="retired"):
            decrypt(old, keys=ring, context=eu)
        assert decrypt(new, keys=ring, context=eu) == DATA

    def test_destroyed_and_foreign_keys_report_destroyed(self, ring, eu):
        blob = encrypt(DATA, keys=ring, key_uris=[EU1, US1], context=eu)
        ring.destroy(EU1)
        with pytest.raises(KeyDestroyedError):
            decrypt(blob, keys=ring, context=eu)

    def test_foreign_and_unheld_keys_report_jurisdiction(self, ring, us):
        # one key refused for jurisdiction, the other not held by the caller's service: this
        # used to leak a bare StopIteration instead of a PetsError
        blob = encrypt(DATA, keys=ring, key_uris=[EU1, US1], context=Context("EU"))
        eu_only = MemoryKeyring()
        eu_only.create(EU1, jurisdiction="EU")
        with pytest.raises(JurisdictionError, match="analyst@us"):
            decrypt(blob, keys=eu_only, context=us)

    def test_tampered_wrapped_key_beside_a_refused_one_is_opaque(self, ring, us):
        blob = encrypt(DATA, keys=ring, key_uris=[EU1, US1], context=Context("EU"))
        header, size = EnvelopeHeader.from_bytes(blob)
        from dataclasses import replace

        eu_w, us_w = header.wrapped_keys
        bad_us = replace(us_w, blob=us_w.blob[:-1] + bytes([us_w.blob[-1] ^ 1]))
        bad = replace(header, wrapped_keys=(eu_w, bad_us)).to_bytes() + blob[size:]
        with pytest.raises(IntegrityError, match=r"^envelope failed to authenticate$"):
            decrypt(bad, keys=ring, context=us)

    def test_local_keyring(self, local_ring, eu, tmp_path):
        uri = "local://eu-local/kek"
        blob = encrypt(DATA, keys=local_ring, key_uris=uri, context=eu)
        assert decrypt(blob, keys=local_ring, context=eu) == DATA
        with pytest.raises(JurisdictionError):
            decrypt(blob, keys=local_ring, context=Context("US"))


class TestRewrap:
    def test_rotation_rewrites_only_the_header(self, ring, eu, tmp_path):
        src = tmp_path / "p.bin"
        src.write_bytes(os.urandom(10_000))
        enc = tmp_path / "p.pets"
        encrypt_file(src, enc, keys=ring, key_uris=EU1, context=eu, segment_size=1024)
        before = enc.read_bytes()
        h_before, size_before = EnvelopeHeader.from_bytes(before)
        ring.rotate(EU1)
        info = rewrap_file(enc, keys=ring, context=eu, to=EU1)
        after = enc.read_bytes()
        h_after, size_after = EnvelopeHeader.from_bytes(after)
        assert [w.version for w in info.wrapped_keys] == [2]
        assert hashlib.sha256(before[size_before:]).digest() == \
            hashlib.sha256(after[size_after:]).digest()
        assert h_after.fixed_bytes() == h_before.fixed_bytes()
        assert h_after.tag != h_before.tag
        ring.retire(EU1, 2)  # v1 can no longer unwrap: the rewrapped file still decrypts
        decrypt_file(enc, tmp_path / "back", keys=ring, context=eu)
        assert (tmp_path / "back").read_bytes() == src.read_bytes()
        with pytest.raises(KeyDestroyedError):
            decrypt(before, keys=ring, context=eu)

    def test_migration_between_key_services(self, ring, local_ring, eu):
        uri = "local://eu-local/kek"
        blob = encrypt(DATA, keys=ring, key_uris=[EU1], context=eu)
        moved = rewrap(blob, keys=KeyServices([ring, local_ring]), context=eu, to=[uri])
        assert [w.key_uri for w in read_header(moved).wrapped_keys] == [uri]
        assert segments(moved)[1] == segments(blob)[1]
        # the old service is no longer needed; destroying its key does not matter
        ring.destroy(EU1)
        assert decrypt(moved, keys=local_ring, context=eu) == DATA

    def test_migration_to_two_datacentres(self, ring, eu):
        blob = encrypt(DATA, keys=ring, key_uris=EU1, context=eu)
        moved = rewrap(blob, keys=ring, context=eu, to=[EU1, EU2])
        ring.destroy(EU1)
        assert decrypt(moved, keys=ring, context=eu) == DATA

    def test_migration_to_another_jurisdiction_needs_consent(self, ring, eu):
        blob = encrypt(DATA, keys=ring, key_uris=EU1, context=eu)
        with pytest.raises(JurisdictionError, match="allow_jurisdiction_change"):
            rewrap(blob, keys=ring, context=eu, to=US1)
        moved = rewrap(blob, keys=ring, context=eu, to=US1, allow_jurisdiction_change=True)
        assert decrypt(moved, keys=ring, context=Context("US")) == DATA

    def test_tampered_envelope_is_not_rewrapped(self, ring, eu, tmp_path):
        enc = tmp_path / "t.pets"
        enc.write_bytes(encrypt(DATA, keys=ring, key_uris=EU1, context=eu, segment_size=SEG))
        bad = bytearray(enc.read_bytes())
        bad[60] ^= 1
        enc.write_bytes(bytes(bad))
        with pytest.raises(IntegrityError):
            rewrap_file(enc, keys=ring, context=eu, to=EU2)
        assert enc.read_bytes() == bytes(bad)

    def test_rewrap_needs_the_right_jurisdiction(self, ring, eu, us, tmp_path):
        enc = tmp_path / "t.pets"
        enc.write_bytes(encrypt(DATA, keys=ring, key_uris=EU1, context=eu))
        with pytest.raises(JurisdictionError):
            rewrap_file(enc, keys=ring, context=us, to=EU2)

    def test_rewrap_keeps_the_file_mode(self, ring, eu, tmp_path):
        enc = tmp_path / "m.pets"
        enc.write_bytes(encrypt(DATA, keys=ring, key_uris=EU1, context=eu))
        enc.chmod(0o600)
        rewrap_file(enc, keys=ring, context=eu, to=EU2)
        assert enc.stat().st_mode & 0o777 == 0o600

    def test_local_to_hsm(self, local_ring, hsm_eu, eu, tmp_path):
        import uuid

        hsm_uri = f"pkcs11://EU/envelope-{uuid.uuid4().hex[:8]}"
        hsm_eu.create(hsm_uri, jurisdiction="EU")
        services = KeyServices([local_ring, hsm_eu])
        src, enc = tmp_path / "p.bin", tmp_path / "p.pets"
        src.write_bytes(os.urandom(3000))
        encrypt_file(src, enc, keys=services, key_uris="local://eu-local/kek", context=eu,
                     segment_size=1024)
        before = enc.read_bytes()
        rewrap_file(enc, keys=services, context=eu, to=hsm_uri)
        after = enc.read_bytes()
        assert segments(after)[1] == segments(before)[1]
        decrypt_file(enc, tmp_path / "back", keys=hsm_eu, context=eu)
        assert (tmp_path / "back").read_bytes() == src.read_bytes()
        with pytest.raises(JurisdictionError):
            decrypt(after, keys=hsm_eu, context=Context("US"))
        hsm_eu.destroy(hsm_uri)
        with pytest.raises(KeyDestroyedError):
            decrypt(after, keys=hsm_eu, context=eu)

    def test_garbage_wrapped_key_in_the_hsm_is_opaque(self, hsm_eu, eu):
        import uuid
        from dataclasses import replace

        uri = f"pkcs11://EU/envelope-{uuid.uuid4().hex[:8]}"
        hsm_eu.create(uri, jurisdiction="EU")
        blob = encrypt(DATA, keys=hsm_eu, key_uris=uri, context=eu, segment_size=SEG)
        header, size = EnvelopeHeader.from_bytes(blob)
        w = header.wrapped_keys[0]
        for junk in (b"\x00", os.urandom(12), os.urandom(28), os.urandom(len(w.blob)),
                     w.blob[:-1] + bytes([w.blob[-1] ^ 1])):
            bad = replace(header, wrapped_keys=(replace(w, blob=junk),)).to_bytes()
            with pytest.raises(IntegrityError, match=r"^envelope failed to authenticate$"):
                decrypt(bad + blob[size:], keys=hsm_eu, context=eu)
        hsm_eu.destroy(uri)


class TestCryptoShredding:
    def test_destroying_one_kek_version_shreds_only_its_data(self, ring, eu):
        a = encrypt(b"customer a", keys=ring, key_uris=EU1, context=eu)
        b = encrypt(b"customer b", keys=ring, key_uris=EU2, context=eu)
        ring.rotate(EU1)
        a2 = encrypt(b"customer a, later", keys=ring, key_uris=EU1, context=eu)
        ring.destroy(EU1, 1)
        with pytest.raises(KeyDestroyedError):
            decrypt(a, keys=ring, context=eu)
        assert decrypt(b, keys=ring, context=eu) == b"customer b"
        assert decrypt(a2, keys=ring, context=eu) == b"customer a, later"

    def test_local_keyring_shredding(self, local_ring, eu):
        uri = "local://eu-local/kek"
        blob = encrypt(DATA, keys=local_ring, key_uris=uri, context=eu)
        local_ring.destroy(uri, 1)
        with pytest.raises(KeyDestroyedError):
            decrypt(blob, keys=local_ring, context=eu)


class TestProperties:
    @HYPO
    @given(data=st.binary(min_size=1, max_size=1500), seg=st.integers(64, 200),
           where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
    def test_any_single_bit_flip_is_detected(self, ring, eu, data, seg, where, bit):
        blob = bytearray(encrypt(data, keys=ring, key_uris=[EU1, EU2], context=eu,
                                 segment_size=seg))
        blob[int(where * len(blob))] ^= 1 << bit
        # with two wrapped keys even a changed key URI ends at the header tag
        with pytest.raises(IntegrityError):
            decrypt(bytes(blob), keys=ring, context=eu)

    def test_file_decryption_runs_in_constant_memory(self, ring, eu, tmp_path):
        import tracemalloc

        seg = 64 * 1024
        src, enc = tmp_path / "big.bin", tmp_path / "big.pets"
        with open(src, "wb") as f:
            for _ in range(32):  # 8 MiB
                f.write(os.urandom(256 * 1024))
        encrypt_file(src, enc, keys=ring, key_uris=EU1, context=eu, segment_size=seg)
        tracemalloc.start()
        try:
            decrypt_file(enc, tmp_path / "out.bin", keys=ring, context=eu)
            encrypt_file(src, enc, keys=ring, key_uris=EU1, context=eu, segment_size=seg)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 * seg  # a few segment buffers, never the 8 MiB file
        assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()


class TestAuditedKeyUse:
    """A file is one unwrap, however many segments it has; every key use is on the record."""

    @pytest.mark.parametrize("size", [10, 200_000])
    def test_one_unwrap_per_file_whatever_its_size(self, ring, eu, tmp_path, size):
        from tests.envelope.conftest import Events

        seen = Events()
        services = KeyServices([ring], audit=seen)
        src, enc, out = tmp_path / "a.bin", tmp_path / "a.pets", tmp_path / "b.bin"
        src.write_bytes(os.urandom(size))
        encrypt_file(src, enc, keys=services, key_uris=[EU1, EU2], context=eu,
                     segment_size=SEG)
        assert [(e.kind, e.fields["key"], e.fields["purpose"]) for e in seen] == [
            ("key.wrap", EU1, "envelope"), ("key.wrap", EU2, "envelope")]
        seen.clear()
        decrypt_file(enc, out, keys=services, context=eu)
        assert out.read_bytes() == src.read_bytes()
        assert [(e.kind, e.fields["key"], e.fields["version"]) for e in seen] == [
            ("key.unwrap", EU1, 1)]

    def test_refused_and_destroyed_attempts_are_recorded(self, ring, eu, us):
        from tests.envelope.conftest import Events

        seen = Events()
        services = KeyServices([ring], audit=seen)
        blob = encrypt(DATA, keys=services, key_uris=[EU1, EU2], context=eu)
        services.destroy(EU1)
        seen.clear()
        assert decrypt(blob, keys=services, context=eu) == DATA
        with pytest.raises(JurisdictionError):
            decrypt(blob, keys=services, context=us)
        assert [(e.kind, e.fields["key"]) for e in seen] == [
            ("key.failed", EU1), ("key.unwrap", EU2), ("key.refused", EU1),
            ("key.refused", EU2)]
        assert seen[-1].fields["principal"] == "analyst@us"

    def test_rewrap_unwraps_once_and_wraps_once_per_target(self, ring, eu):
        from tests.envelope.conftest import Events

        seen = Events()
        services = KeyServices([ring], audit=seen)
        blob = encrypt(DATA, keys=services, key_uris=EU1, context=eu)
        services.rotate(EU1)
        seen.clear()
        rewrap(blob, keys=services, context=eu, to=[EU1, EU2])
        assert [(e.kind, e.fields["key"], e.fields["version"]) for e in seen] == [
            ("key.unwrap", EU1, 1), ("key.wrap", EU1, 2), ("key.wrap", EU2, 1)]


class FailingAudit:
    """An audit hook whose log cannot be written (disk full, or a corrupt chain tail)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.tried: list[str] = []

    def __call__(self, event) -> None:
        self.tried.append(event.kind)
        raise self.error


class TestAuditFailureFailsClosed:
    """A key use the audit log cannot record does not happen (as the export gate refuses to
    write when its audit entry fails): no plaintext, no second key tried, and the error says
    it was the audit, not the data."""

    @pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                       IntegrityError("audit.jsonl: the last entry is corrupt")])
    def test_decrypt_stops_at_the_first_unrecorded_unwrap(self, ring, eu, tmp_path, error):
        from pets.keys import AuditHookError

        src, enc, out = tmp_path / "a.bin", tmp_path / "a.pets", tmp_path / "b.bin"
        src.write_bytes(DATA)
        encrypt_file(src, enc, keys=ring, key_uris=[EU1, EU2], context=eu)
        hook = FailingAudit(error)
        with pytest.raises(AuditHookError, match=rf"^key use refused: the audit hook could "
                           rf"not record key\.unwrap of {EU1} v1 \({type(error).__name__}\)$"
                           ) as caught:
            decrypt_file(enc, out, keys=KeyServices([ring], audit=hook), context=eu)
        assert caught.value.__cause__ is error
        assert hook.tried == ["key.unwrap"]  # EU2 was not unwrapped un-recorded
        assert not out.exists()

    def test_encrypt_writes_nothing_when_the_wrap_cannot_be_recorded(self, ring, eu,
                                                                      tmp_path):
        from pets.keys import AuditHookError

        src, enc = tmp_path / "a.bin", tmp_path / "a.pets"
        src.write_bytes(DATA)
        with pytest.raises(AuditHookError, match=r"could not record key\.wrap of "):
            encrypt_file(src, enc, keys=KeyServices([ring], audit=FailingAudit(OSError(28, "x"))),
                         key_uris=[EU1], context=eu)
        assert not enc.exists()

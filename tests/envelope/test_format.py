"""The v1 header: layout, limits checked before allocation, unknown versions and suites."""

from __future__ import annotations

import struct

import pytest

from pets import IntegrityError
from pets.envelope import EnvelopeFormatError, EnvelopeHeader, encrypt
from pets.envelope._format import (
    MAGIC,
    MAX_BLOB_BYTES,
    MAX_CONTEXT_BYTES,
    MAX_HEADER_BYTES,
    MAX_SEGMENT_SIZE,
    MAX_URI_BYTES,
    MAX_WRAPPED_KEYS,
    derive_keys,
    segment_nonce,
)
from tests.envelope.conftest import EU1

FIXED = 84  # magic .. context length


class SpyReader:
    """A ``read(n)`` over bytes that records every size asked for."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.asked = data, 0, []

    def __call__(self, n: int) -> bytes:
        self.asked.append(n)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def fixed_part(*, version=1, suite=1, segment=1024, ctx=b"{}", clen=None):
    return struct.pack(">4sBHI32s7s32sH", MAGIC, version, suite, segment, b"s" * 32, b"p" * 7,
                       b"c" * 32, len(ctx) if clen is None else clen) + ctx


class TestLayout:
    def test_fixed_offsets_match_the_documented_layout(self, ring, eu):
        blob = encrypt(b"x", keys=ring, key_uris=EU1, context=eu, enc_context={"a": "b"},
                       segment_size=4096)
        header, size = EnvelopeHeader.from_bytes(blob)
        assert blob[0:4] == b"PETS" and blob[4] == 1 and blob[5:7] == b"\x00\x01"
        assert int.from_bytes(blob[7:11], "big") == 4096
        assert blob[11:43] == header.salt and blob[43:50] == header.nonce_prefix
        assert blob[50:82] == header.commitment
        assert int.from_bytes(blob[82:84], "big") == len(b'{"a":"b"}')
        assert blob[84:93] == b'{"a":"b"}'
        assert int.from_bytes(blob[93:95], "big") == 1
        uri_len = int.from_bytes(blob[95:97], "big")
        assert blob[97:97 + uri_len].decode() == EU1
        assert blob[size - 32:size] == header.tag
        # one segment: 1 plaintext byte + 16-byte tag
        assert len(blob) == size + 1 + 16

    def test_roundtrip_of_header_bytes(self, ring, eu):
        blob = encrypt(b"", keys=ring, key_uris=[EU1], context=eu)
        header, size = EnvelopeHeader.from_bytes(blob)
        assert header.to_bytes() == blob[:size]

    def test_keys_are_derived_per_salt_and_nonces_are_distinct(self):
        a, b = derive_keys(b"k" * 32, b"1" * 32), derive_keys(b"k" * 32, b"2" * 32)
        assert len({a.segment_key, a.header_key, a.commitment, b.segment_key}) == 4
        nonces = {segment_nonce(b"p" * 7, i, last) for i in range(3) for last in (False, True)}
        assert len(nonces) == 6

    def test_message_keys_do_not_show_in_repr_or_pickle(self):
        import pickle

        k = derive_keys(b"k" * 32, b"s" * 32)
        assert k.segment_key.hex() not in repr(k) and "segment_key" not in repr(k)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(k)


class TestUnknownFormats:
    def test_bad_magic(self):
        with pytest.raises(EnvelopeFormatError, match="bad magic"):
            EnvelopeHeader.from_bytes(b"NOPE" + bytes(200))

    def test_unknown_format_version_is_named(self):
        with pytest.raises(EnvelopeFormatError, match="unsupported pets envelope format version 2"):
            EnvelopeHeader.from_bytes(fixed_part(version=2))

    def test_unknown_suite_is_named(self):
        with pytest.raises(EnvelopeFormatError, match="suite 0x0002"):
            EnvelopeHeader.from_bytes(fixed_part(suite=2))

    def test_format_errors_are_integrity_errors(self):
        assert issubclass(EnvelopeFormatError, IntegrityError)

    def test_truncated_header(self, ring, eu):
        blob = encrypt(b"abc", keys=ring, key_uris=EU1, context=eu)
        _, size = EnvelopeHeader.from_bytes(blob)
        for cut in (0, 3, 10, FIXED, size - 1):
            with pytest.raises(EnvelopeFormatError, match="truncated header"):
                EnvelopeHeader.from_bytes(blob[:cut])


    def test_truncated_at_every_byte_offset(self, ring, eu, tmp_path):
        from pets.envelope import decrypt_file
        from tests.envelope.conftest import EU2

        blob = encrypt(b"abc", keys=ring, key_uris=[EU1, EU2], context=eu,
                       enc_context={"table": "users"})
        _, size = EnvelopeHeader.from_bytes(blob)
        for cut in range(size):
            with pytest.raises(EnvelopeFormatError, match="truncated header"):
                EnvelopeHeader.from_bytes(blob[:cut])
        src, dst = tmp_path / "c.pets", tmp_path / "out"
        for cut in (0, FIXED + 5, size - 1):
            src.write_bytes(blob[:cut])
            with pytest.raises(EnvelopeFormatError):
                decrypt_file(src, dst, keys=ring, context=eu)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pets"]


class TestHostileHeaders:
    """Every announced length is checked before the bytes it announces are read."""

    def test_huge_context_length_rejected_before_reading_it(self):
        spy = SpyReader(fixed_part(ctx=b"", clen=65535) + bytes(100))
        with pytest.raises(EnvelopeFormatError, match="encryption context of 65535 bytes"):
            EnvelopeHeader.read(spy)
        assert max(spy.asked) <= FIXED

    def test_huge_segment_size_rejected_before_allocating(self):
        spy = SpyReader(fixed_part(segment=0xFFFFFFFF))
        with pytest.raises(EnvelopeFormatError, match="segment size 4294967295"):
            EnvelopeHeader.read(spy)
        assert max(spy.asked) <= FIXED

    @pytest.mark.parametrize("segment", [0, 63, MAX_SEGMENT_SIZE + 1])
    def test_segment_size_out_of_range(self, segment):
        with pytest.raises(EnvelopeFormatError, match="segment size"):
            EnvelopeHeader.from_bytes(fixed_part(segment=segment))

    @pytest.mark.parametrize("count", [0, MAX_WRAPPED_KEYS + 1, 5000, 65535])
    def test_wrapped_key_count_out_of_range(self, count):
        spy = SpyReader(fixed_part() + count.to_bytes(2, "big") + bytes(64))
        with pytest.raises(EnvelopeFormatError, match=f"{count} wrapped keys"):
            EnvelopeHeader.read(spy)
        assert max(spy.asked) <= FIXED

    def test_huge_uri_length(self):
        spy = SpyReader(fixed_part() + b"\x00\x01" + (MAX_URI_BYTES + 1).to_bytes(2, "big"))
        with pytest.raises(EnvelopeFormatError, match="key URI of 513 bytes"):
            EnvelopeHeader.read(spy)
        assert max(spy.asked) <= FIXED

    def test_huge_blob_length(self):
        uri = EU1.encode()
        entry = len(uri).to_bytes(2, "big") + uri + (1).to_bytes(4, "big") + b"\x02EU"
        spy = SpyReader(fixed_part() + b"\x00\x01" + entry + (0xFFFF).to_bytes(2, "big"))
        with pytest.raises(EnvelopeFormatError, match="wrapped key of 65535 bytes"):
            EnvelopeHeader.read(spy)
        assert max(spy.asked) <= MAX_BLOB_BYTES

    def test_zero_or_long_jurisdiction(self):
        uri = EU1.encode()
        base = fixed_part() + b"\x00\x01" + len(uri).to_bytes(2, "big") + uri + bytes(4)
        for jlen in (0, 17, 255):
            with pytest.raises(EnvelopeFormatError, match="jurisdiction of"):
                EnvelopeHeader.from_bytes(base + bytes([jlen]) + bytes(300))

    def test_non_canonical_context_is_rejected(self):
        for ctx in (b'{"b":"1","a":"2"}', b'{"a": "1"}', b"[1]", b'{"a":1}', b"\xff"):
            with pytest.raises(EnvelopeFormatError, match="canonical JSON"):
                EnvelopeHeader.from_bytes(fixed_part(ctx=ctx) + bytes(10))

    def test_limits_bound_the_largest_header(self):
        assert MAX_HEADER_BYTES < 64 * 1024
        assert MAX_CONTEXT_BYTES == 8192

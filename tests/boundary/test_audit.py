"""The audit log: chaining, signatures, tamper detection, torn tails, concurrent writers."""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pets import Context, InputError, IntegrityError
from pets._events import emit
from pets.boundary import AuditLog, BadEntry, SigningKey, flows, incidents, verify_log


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append("test.event", i=i, note=f"entry {i}")


def _lines(path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


class TestAppend:
    def test_entries_chain_and_verify(self, log, log_path, signer):
        _fill(log, 5)
        entries = log.entries()
        assert [e["seq"] for e in entries] == list(range(5))
        assert entries[0]["prev_hash"] == "0" * 64
        for a, b in itertools.pairwise(entries):
            assert b["prev_hash"] == a["hash"]
        report = verify_log(log_path, signer.public_key)
        assert report.ok and report.entries == 5 and report.head_seq == 4
        assert report.head_hash == entries[-1]["hash"]
        assert report.first_bad is None and report.torn_tail is None

    def test_entry_records_actor_kind_fields_and_signer(self, log, signer):
        entry = log.append("boundary.export", destination="US", rows=3)
        assert entry["actor"] == "etl@EU"
        assert entry["kind"] == "boundary.export"
        assert entry["fields"] == {"destination": "US", "rows": 3}
        assert entry["signer"] == signer.key_id

    def test_hook_delivers_lower_layer_events(self, log):
        emit(log.hook, "key.refused", key="memory://eu/kek", principal="bob",
             jurisdiction="US", operation="unwrap")
        emit(log.hook, "key.create", key="memory://eu/kek2", version=1)
        refused, created = log.entries()
        assert refused["actor"] == "bob@US" and refused["kind"] == "key.refused"
        assert created["actor"] == "etl@EU"

    def test_numpy_and_path_fields_are_normalised(self, log, tmp_path):
        import numpy as np

        entry = log.append("x", n=np.int64(3), f=np.float64(0.5), p=tmp_path)
        assert entry["fields"] == {"n": 3, "f": 0.5, "p": str(tmp_path)}

    @pytest.mark.parametrize("bad", [b"raw", float("nan"), object()])
    def test_unjsonable_field_is_refused_and_nothing_written(self, log, log_path, bad):
        with pytest.raises(InputError):
            log.append("x", value=bad)
        assert not log_path.exists() or log_path.read_bytes() == b""

    def test_file_is_private(self, log, log_path):
        log.append("x")
        assert oct(log_path.stat().st_mode & 0o777) == "0o600"

    def test_corrupt_last_entry_blocks_appends(self, log, log_path):
        _fill(log, 2)
        lines = _lines(log_path)
        lines[-1] = lines[-1].replace(b"entry 1", b"entry X")
        _write(log_path, lines)
        with pytest.raises(IntegrityError, match="last entry is corrupt"):
            log.append("x")
        assert _lines(log_path) == lines

    def test_repr_names_signer_not_key(self, log, signer):
        assert signer.key_id in repr(log)


class TestVerifyDetectsTampering:
    N = 6

    @pytest.fixture
    def filled(self, log, log_path):
        _fill(log, self.N)
        return log_path

    def test_edit_without_rehash_is_caught_at_that_entry(self, filled, signer):
        lines = _lines(filled)
        lines[2] = lines[2].replace(b"entry 2", b"entry 9")
        _write(filled, lines)
        report = verify_log(filled, signer.public_key)
        assert not report.ok and report.entries == 2
        assert report.first_bad == BadEntry(3, 2, "hash does not match the entry's content (edited)")
        with pytest.raises(IntegrityError, match="line 3"):
            report.raise_for_status()

    def test_edit_with_recomputed_hash_fails_the_signature(self, filled, signer):
        import hashlib

        lines = _lines(filled)
        entry = json.loads(lines[3])
        entry["fields"]["note"] = "rewritten"
        body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
        entry["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                                  ensure_ascii=False).encode()).hexdigest()
        lines[3] = json.dumps(entry, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()
        _write(filled, lines)
        bad = verify_log(filled, signer.public_key).first_bad
        assert bad is not None and (bad.line, bad.seq) == (4, 3)
        assert bad.reason == "bad signature"
        # without the public key only the chain is checked: the next entry no longer chains
        bad = verify_log(filled, None).first_bad
        assert bad is not None and bad.line == 5 and "prev_hash" in bad.reason

    def test_dropped_entry_is_caught(self, filled, signer):
        lines = _lines(filled)
        del lines[2]
        _write(filled, lines)
        assert verify_log(filled, signer.public_key).first_bad == BadEntry(3, 3, "expected seq 2")

    def test_dropped_first_entry_is_caught(self, filled, signer):
        _write(filled, _lines(filled)[1:])
        assert verify_log(filled, signer.public_key).first_bad == BadEntry(1, 1, "expected seq 0")

    def test_reordered_entries_are_caught(self, filled, signer):
        lines = _lines(filled)
        lines[2], lines[3] = lines[3], lines[2]
        _write(filled, lines)
        assert verify_log(filled, signer.public_key).first_bad == BadEntry(3, 3, "expected seq 2")

    def test_replayed_entry_is_caught(self, filled, signer):
        lines = _lines(filled)
        lines.insert(3, lines[1])
        _write(filled, lines)
        assert verify_log(filled, signer.public_key).first_bad == BadEntry(4, 1, "expected seq 3")

    def test_inserted_forged_entry_is_caught_at_the_insertion(self, filled, signer, tmp_path):
        # the forger builds a perfectly chained entry, but with their own key
        lines = _lines(filled)
        forged_path = tmp_path / "forged.jsonl"
        _write(forged_path, lines[:3])
        AuditLog(forged_path, signer=SigningKey.generate(), actor="mallory@EU").append(
            "boundary.export", destination="US")
        lines.insert(3, _lines(forged_path)[3])
        _write(filled, lines)
        bad = verify_log(filled, signer.public_key).first_bad
        assert bad == BadEntry(4, 3, "not signed by this key")

    def test_rotated_signing_key_verifies_with_both_public_keys(self, filled, signer):
        new = SigningKey.generate()
        AuditLog(filled, signer=new, actor="etl@EU").append("after.rotation")
        assert verify_log(filled, [signer.public_key, new.public_key]).ok
        bad = verify_log(filled, signer.public_key).first_bad
        assert bad == BadEntry(self.N + 1, self.N, "not signed by this key")
        with pytest.raises(InputError, match="at least one public key"):
            verify_log(filled, [])

    def test_wrong_public_key_fails_at_the_first_entry(self, filled):
        bad = verify_log(filled, SigningKey.generate().public_key).first_bad
        assert bad == BadEntry(1, 0, "not signed by this key")

    def test_unsigned_log_fails_signature_check(self, log_path, signer):
        _fill(AuditLog(log_path, signer=None, actor="t@EU"), 2)
        assert verify_log(log_path, None).ok
        assert verify_log(log_path, signer.public_key).first_bad == BadEntry(
            1, 0, "not signed by this key")

    def test_signature_with_altered_padding_bits_is_caught(self, filled, signer):
        lines = _lines(filled)
        entry = json.loads(lines[2])
        sig = entry["sig"]
        assert sig.endswith("==")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = alphabet.index(sig[-3])
        entry["sig"] = sig[:-3] + alphabet[last ^ 0b0001] + "=="  # same decoded bytes
        assert base64.b64decode(entry["sig"]) == base64.b64decode(sig)
        lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()
        _write(filled, lines)
        assert verify_log(filled, signer.public_key).first_bad == BadEntry(
            3, 2, "malformed signature")

    def test_garbage_line_is_caught(self, filled, signer):
        lines = _lines(filled)
        lines[4] = b"{not json"
        _write(filled, lines)
        assert verify_log(filled, signer.public_key).first_bad == BadEntry(
            5, None, "not a JSON entry")

    def test_non_canonical_rewrite_is_caught(self, filled, signer):
        lines = _lines(filled)
        lines[1] = json.dumps(json.loads(lines[1]), indent=1).replace("\n", " ").encode()
        _write(filled, lines)
        bad = verify_log(filled, signer.public_key).first_bad
        assert bad == BadEntry(2, 1, "not in canonical form (edited)")

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def test_any_flipped_byte_is_caught_at_its_entry(self, filled, signer, data):
        original = filled.read_bytes()
        try:
            lines = _lines(filled)
            i = data.draw(st.integers(0, len(lines) - 1), label="entry")
            pos = data.draw(st.integers(0, len(lines[i]) - 1), label="byte")
            mask = data.draw(st.integers(1, 255), label="mask")
            line = bytearray(lines[i])
            line[pos] ^= mask
            lines[i] = bytes(line)
            _write(filled, lines)
            report = verify_log(filled, signer.public_key)
            assert not report.ok
            assert report.first_bad is not None and report.first_bad.line == i + 1
        finally:
            filled.write_bytes(original)


class TestNotedHead:
    def test_noted_head_still_present_after_more_appends(self, log, log_path, signer):
        _fill(log, 4)
        head = verify_log(log_path, signer.public_key)
        _fill(log, 2)
        report = verify_log(log_path, signer.public_key,
                            expect_head=(head.head_seq, head.head_hash[:16]))
        assert report.ok and report.entries == 6

    def test_clean_cut_of_newest_entries_is_caught_with_a_noted_head(self, log, log_path,
                                                                     signer):
        _fill(log, 6)
        head = verify_log(log_path, signer.public_key)
        _write(log_path, _lines(log_path)[:3])
        assert verify_log(log_path, signer.public_key).ok  # the chain alone cannot tell
        report = verify_log(log_path, signer.public_key,
                            expect_head=(head.head_seq, head.head_hash))
        assert not report.ok and report.first_bad == BadEntry(
            4, None, "the log ends before the noted head seq 5 (entries were cut)")

    def test_log_rewritten_by_the_key_holder_is_caught(self, log, log_path, signer, tmp_path):
        _fill(log, 3)
        head = verify_log(log_path, signer.public_key)
        other = AuditLog(tmp_path / "b.jsonl", signer=signer, actor="etl@EU")
        for i in range(3):
            other.append("test.event", i=i, note="rewritten")
        report = verify_log(other.path, signer.public_key,
                            expect_head=(head.head_seq, head.head_hash))
        assert report.first_bad is not None and report.first_bad.line == 3
        assert "differs from the head noted earlier" in report.first_bad.reason

    @pytest.mark.parametrize("head", [(-1, "ab" * 8), (0, "abc"), (0, "zz" * 8)])
    def test_malformed_head_is_an_input_error(self, log, log_path, signer, head):
        _fill(log, 1)
        with pytest.raises(InputError):
            verify_log(log_path, signer.public_key, expect_head=head)


class TestTornTail:
    def test_truncated_mid_entry_verifies_up_to_last_whole_entry(self, log, log_path, signer):
        _fill(log, 4)
        data = log_path.read_bytes()
        cut = data.rfind(b"\n", 0, len(data) - 1) + 1 + 40  # 40 bytes into the last entry
        log_path.write_bytes(data[:cut])
        report = verify_log(log_path, signer.public_key)
        assert report.ok and report.entries == 3 and report.head_seq == 2
        assert report.torn_tail is not None and report.torn_tail.line == 4
        assert report.torn_tail.bytes == 40
        assert "torn tail at line 4" in report.summary()

    def test_next_append_cuts_and_records_the_torn_tail(self, log, log_path, signer):
        _fill(log, 3)
        with open(log_path, "ab") as fh:
            fh.write(b'{"seq":3,"half an entr')
        entry = log.append("after.crash")
        assert entry["seq"] == 4
        report = verify_log(log_path, signer.public_key)
        assert report.ok and report.entries == 5 and report.torn_tail is None
        repaired = log.entries()[3]
        assert repaired["kind"] == "audit.repaired"
        assert repaired["fields"]["torn_bytes"] == len(b'{"seq":3,"half an entr')
        assert list(incidents(log_path)["kind"]) == ["audit.repaired"]

    def test_bad_entry_and_torn_tail_are_both_reported(self, log, log_path, signer):
        _fill(log, 4)
        lines = _lines(log_path)
        del lines[1]
        log_path.write_bytes(b"".join(line + b"\n" for line in lines) + b'{"seq":4')
        report = verify_log(log_path, signer.public_key)
        assert report.first_bad == BadEntry(2, 2, "expected seq 1")
        assert report.torn_tail is not None and report.torn_tail.line == 4

    def test_file_of_only_a_torn_line_restarts_at_seq_0(self, log, log_path, signer):
        log_path.write_bytes(b'{"seq":0,"prev')
        assert verify_log(log_path, signer.public_key).torn_tail is not None
        log.append("x")
        assert [e["seq"] for e in log.entries()] == [0, 1]
        assert verify_log(log_path, signer.public_key).ok


_WRITER = textwrap.dedent("""
    import sys
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from pets.boundary import AuditLog
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[2]))
    log = AuditLog(sys.argv[1], signer=key, actor="w" + sys.argv[3] + "@EU")
    for i in range(int(sys.argv[4])):
        log.append("test.concurrent", writer=int(sys.argv[3]), i=i)
""")


class TestConcurrentWriters:
    def test_appends_from_several_processes_all_verify(self, log_path):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption()).hex()
        writers, per = 4, 25
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(log_path), raw, str(w),
                                   str(per)], env=env) for w in range(writers)]
        assert all(p.wait(timeout=120) == 0 for p in procs)
        report = verify_log(log_path, key.public_key())
        assert report.ok and report.entries == writers * per and report.torn_tail is None
        seen = {(e["fields"]["writer"], e["fields"]["i"]) for e in AuditLog(log_path).entries()}
        assert seen == {(w, i) for w in range(writers) for i in range(per)}


class TestReports:
    def test_flows_lists_exports_with_protection_and_budget(self, log):
        log.append("boundary.protect", dataset="users", rows=10)
        log.append("boundary.export", destination="US", output="table", name="users",
                   columns=["user_id", "age"], treatments={"user_id": "keyed-hash",
                                                           "age": "age-band"},
                   rows=10, digest="ab" * 32, path="/out/users.parquet")
        log.append("boundary.export", destination="US", output="dp_release", name="by_country",
                   columns=["country", "count"], treatments={}, rows=27, digest="cd" * 32,
                   budget={"epsilon": 1.0, "delta": 0.0})
        table = flows(log.entries())
        assert list(table["output"]) == ["table", "dp_release"]
        assert table.loc[0, "protection"] == "user_id:keyed-hash, age:age-band"
        assert table.loc[1, "epsilon"] == 1.0 and table.loc[0, "rows"] == 10

    def test_incidents_lists_refusals_only(self, log):
        log.append("boundary.protect", dataset="users")
        log.append("boundary.refused", target="raw.parquet", destination="US",
                   reason="no manifest")
        emit(log.hook, "key.refused", key="memory://eu/kek", principal="bob", jurisdiction="US",
             operation="unwrap")
        table = incidents(log.entries())
        assert list(table["kind"]) == ["boundary.refused", "key.refused"]
        assert list(table["target"]) == ["raw.parquet", "memory://eu/kek"]
        assert list(table["actor"]) == ["etl@EU", "bob@US"]

    def test_empty_log_gives_empty_tables_with_columns(self, log_path):
        log_path.write_bytes(b"")
        assert flows(log_path).empty and "destination" in flows(log_path).columns
        assert incidents(log_path).empty


class TestKeyContext:
    def test_actor_defaults_to_environment(self, monkeypatch, log_path):
        monkeypatch.setenv("PETS_JURISDICTION", "EU")
        monkeypatch.setenv("PETS_PRINCIPAL", "cron")
        assert AuditLog(log_path).actor == "cron@EU"
        assert AuditLog(log_path, actor=Context("EU", principal="a")).actor == "a@EU"

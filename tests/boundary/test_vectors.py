"""Known-answer vectors for the audit log format (tests/vectors/boundary/README.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pets.boundary import AuditLog, verify_log

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "boundary"
RFC8032_TEST1 = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class TestAuditVectors:
    def test_vector_log_verifies(self):
        report = verify_log(VECTORS / "audit-v1.jsonl", VECTORS / "audit-v1.pub.pem")
        assert report.ok and report.entries == 4 and report.torn_tail is None

    def test_independent_implementation_accepts_every_entry(self):
        pub = serialization.load_pem_public_key((VECTORS / "audit-v1.pub.pem").read_bytes())
        prev = "0" * 64
        for seq, line in enumerate((VECTORS / "audit-v1.jsonl").read_bytes().splitlines()):
            entry = json.loads(line)
            assert _canonical(entry) == line
            body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
            digest = hashlib.sha256(_canonical(body)).hexdigest()
            assert (entry["seq"], entry["prev_hash"], entry["hash"]) == (seq, prev, digest)
            pub.verify(base64.b64decode(entry["sig"]),
                       b"pets.audit/1\x00" + bytes.fromhex(digest))
            prev = digest

    def test_pets_reproduces_the_vector_byte_for_byte(self, tmp_path):
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_TEST1))
        times = iter(f"2026-01-01T00:00:0{i}.000000+00:00" for i in range(10))
        log = AuditLog(tmp_path / "a.jsonl", signer=key, actor="etl@EU",
                       clock=lambda: next(times))
        log.append("boundary.protect", dataset="users", rows=3,
                   treatments={"user_id": "keyed-hash"})
        log.append("boundary.export", destination="US", output="table", name="users",
                   columns=["user_id"], treatments={"user_id": "keyed-hash"}, rows=3,
                   digest="00" * 32)
        log.append("boundary.refused", actor="analyst@US", operation="export",
                   target="DataFrame", destination="US",
                   reason="PolicyError: raw data cannot be exported")
        log.append("dp.release", epsilon=0.5, delta=0.0, note="é ünïcode")
        assert log.path.read_bytes() == (VECTORS / "audit-v1.jsonl").read_bytes()

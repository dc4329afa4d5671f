"""BoundaryKeys: one signing key and one root per KEK, stored wrapped, shared by processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pets import Context, InputError, IntegrityError, JurisdictionError
from pets.boundary import BoundaryKeys


def _open(d, services, ctx=Context("EU")):
    """Set the boundary up on first use (as `pets boundary init` does), then open it."""
    if BoundaryKeys.exists(d):
        return BoundaryKeys.open(d, services, context=ctx)
    return BoundaryKeys.create(d, services, context=ctx, signing_kek="memory://eu/kek",
                               audit_log=d / "audit.jsonl", ledger=d / "ledger.sqlite")


class TestBoundaryKeys:
    def test_signing_key_is_created_once(self, tmp_path, services):
        a = _open(tmp_path, services)
        b = BoundaryKeys.open(tmp_path, services, context=Context("EU"))
        assert a.signer.key_id == b.signer.key_id
        pem = BoundaryKeys.public_key_path(tmp_path).read_bytes()
        assert pem == a.signer.public_pem()

    def test_roots_are_stable_and_stored_wrapped(self, tmp_path, services):
        a = _open(tmp_path, services)
        root = a.root_for("memory://eu/pseudonyms", context=Context("EU"))
        b = _open(tmp_path, services)
        assert b.root_for("memory://eu/pseudonyms", context=Context("EU")) == root
        doc = json.loads((tmp_path / "roots.json").read_text())
        assert list(doc["roots"]) == ["memory://eu/pseudonyms"]
        assert oct((tmp_path / "roots.json").stat().st_mode & 0o777) == "0o600"

    def test_open_never_creates_a_signing_key(self, tmp_path, services):
        with pytest.raises(InputError, match=r"no boundary at .*: set it up once with "
                                             r"`pets boundary init`"):
            BoundaryKeys.open(tmp_path, services, context=Context("EU"))
        assert not (tmp_path / "signing-key.json").exists()

    def test_create_twice_changes_nothing(self, tmp_path, services):
        a = _open(tmp_path, services)
        before = (tmp_path / "boundary.json").read_bytes()
        with pytest.raises(InputError, match="already set up"):
            BoundaryKeys.create(tmp_path, services, context=Context("EU"),
                                signing_kek="memory://eu/kek", audit_log=tmp_path / "other",
                                ledger=tmp_path / "l2")
        assert (tmp_path / "boundary.json").read_bytes() == before
        assert BoundaryKeys.open(tmp_path, services, context=Context("EU")).signer.key_id == \
            a.signer.key_id

    def test_us_context_cannot_open_eu_keys(self, tmp_path, services):
        _open(tmp_path, services)
        with pytest.raises(JurisdictionError):
            BoundaryKeys.open(tmp_path, services, context=Context("US", principal="a"))

    def test_missing_root_is_not_created_when_asked_not_to(self, tmp_path, services):
        keys = _open(tmp_path, services)
        with pytest.raises(InputError, match="no root secret"):
            keys.root_for("memory://eu/tokens", context=Context("EU"), create=False)

    def test_corrupt_roots_file(self, tmp_path, services):
        keys = _open(tmp_path, services)
        (tmp_path / "roots.json").write_text("[]")
        with pytest.raises(InputError, match="not a pets roots file"):
            keys.root_for("memory://eu/x", context=Context("EU"))

    def test_concurrent_first_runs_agree_on_one_root(self, tmp_path):
        from pets.keys import KeyServices, LocalKeyring, Secret

        ring_dir = tmp_path / "ring"
        ring = LocalKeyring.init(ring_dir, name="eu", master_key=Secret(b"\x07" * 32))
        for name in ("kek", "p"):
            ring.create(f"local://eu/{name}", jurisdiction="EU")
        script = textwrap.dedent("""
            import sys
            from pets import Context
            from pets.boundary import BoundaryKeys
            from pets.keys import KeyServices, LocalKeyring, Secret
            ring = LocalKeyring(sys.argv[1], master_key=Secret(b"\\x07" * 32))
            keys = BoundaryKeys.open(sys.argv[2], KeyServices([ring]), context=Context("EU"))
            print(keys.signer.key_id, keys.root_for("local://eu/p", context=Context("EU")).blob.hex())
        """)
        BoundaryKeys.create(tmp_path / "b", KeyServices([ring]), context=Context("EU"),
                            signing_kek="local://eu/kek", audit_log=tmp_path / "a.jsonl",
                            ledger=tmp_path / "l.sqlite")
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        procs = [subprocess.Popen([sys.executable, "-c", script, str(ring_dir),
                                   str(tmp_path / "b")], stdout=subprocess.PIPE, env=env,
                                  text=True) for _ in range(3)]
        outs = {p.communicate(timeout=120)[0].strip() for p in procs}
        assert all(p.returncode == 0 for p in procs)
        assert len(outs) == 1


class TestPinnedAnchors:
    """boundary.json pins the home, the signing keys, the log and the ledger: signed, so
    editing it without the home KEK is refused."""

    def test_anchors_pin_the_signer_log_and_ledger(self, tmp_path, services):
        keys = _open(tmp_path, services)
        a = keys.anchors
        assert a.home == "EU" and a.pinned == (keys.signer.key_id,)
        assert a.audit_log == (tmp_path / "audit.jsonl").resolve()
        assert a.ledger == (tmp_path / "ledger.sqlite").resolve()
        assert [k.public_bytes_raw() for k in keys.pinned_public_keys] == \
            [keys.signer.public_key.public_bytes_raw()]

    @pytest.mark.parametrize("field, value", [
        ("audit_log", "/dev/null"), ("ledger", "/tmp/elsewhere.sqlite"), ("home", "US"),
        ("signing_kek", "memory://eu/tokens")])
    def test_an_edited_anchor_is_refused(self, tmp_path, services, field, value):
        _open(tmp_path, services)
        path = tmp_path / "boundary.json"
        doc = json.loads(path.read_text())
        doc[field] = value
        path.write_text(json.dumps(doc))
        with pytest.raises(IntegrityError, match="anchors do not verify under its signing key"):
            BoundaryKeys.open(tmp_path, services, context=Context("EU"))

    def test_an_attacker_key_added_to_the_pins_is_refused(self, tmp_path, services):
        from pets.boundary import SigningKey

        _open(tmp_path, services)
        path = tmp_path / "boundary.json"
        doc = json.loads(path.read_text())
        evil = SigningKey.generate()
        doc["pinned"].insert(0, evil.key_id)
        doc["public_keys"][evil.key_id] = evil.public_pem().decode()
        path.write_text(json.dumps(doc))
        with pytest.raises(IntegrityError, match="anchors do not verify"):
            BoundaryKeys.open(tmp_path, services, context=Context("EU"))

    def test_anchors_re_signed_by_a_foreign_key_are_refused(self, tmp_path, services):
        """The attacker re-signs boundary.json with a key of their own: the signing key that
        only the home KEK unwraps is not that key."""
        import base64

        from pets.boundary import SigningKey
        from pets.boundary._keys import _canonical

        _open(tmp_path, services)
        path = tmp_path / "boundary.json"
        doc = json.loads(path.read_text())
        evil = SigningKey.generate()
        doc["pinned"], doc["public_keys"] = [evil.key_id], {evil.key_id: evil.public_pem().decode()}
        doc["signer"] = evil.key_id
        doc["signature"] = base64.b64encode(evil.sign(_canonical(doc))).decode()
        path.write_text(json.dumps(doc))
        with pytest.raises(IntegrityError, match="anchors do not verify"):
            BoundaryKeys.open(tmp_path, services, context=Context("EU"))

    def test_a_kek_of_another_jurisdiction_cannot_wrap_the_signing_key(self, tmp_path,
                                                                        services):
        services.for_uri("memory://us/kek").create("memory://us/kek", jurisdiction="US")
        with pytest.raises(JurisdictionError, match="belongs to US"):
            BoundaryKeys.create(tmp_path, services, context=Context("EU"),
                                signing_kek="memory://us/kek", audit_log=tmp_path / "a",
                                ledger=tmp_path / "l")
        assert not (tmp_path / "signing-key.json").exists()

    def test_rotation_pins_one_more_key_and_is_audited(self, tmp_path, services):
        seen = []
        keys = _open(tmp_path, services)
        keys.audit = seen.append
        old = keys.signer.key_id
        new = keys.rotate_signing_key(context=Context("EU"))
        again = BoundaryKeys.open(tmp_path, services, context=Context("EU"))
        assert again.signer.key_id == new.key_id != old
        assert again.anchors.pinned == (old, new.key_id)
        assert [e.kind for e in seen] == ["boundary.signing_key.rotate"]
        assert seen[0].fields["previous"] == old

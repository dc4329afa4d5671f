"""`pets encrypt|decrypt|rewrap` end to end through pets.cli.main with a local keyring."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from pets.cli import main
from pets.envelope import EnvelopeHeader
from pets.keys import LocalKeyring, Secret

KEY = os.urandom(32)
URI = "local://eu/users"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PETS_MASTER_KEY", KEY.hex())
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    monkeypatch.setenv("PETS_PRINCIPAL", "ops@eu")
    for var in ("PETS_KEYRING", "PETS_KEYRING_PASSPHRASE", "PETS_PKCS11_LIBRARY",
                "PETS_PKCS11_TOKEN", "PETS_PKCS11_PIN", "PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS"):
        monkeypatch.delenv(var, raising=False)
    ring = LocalKeyring.init(tmp_path / ".pets" / "keyring", name="eu", master_key=Secret(KEY))
    ring.create(URI, jurisdiction="EU")
    ring.create("local://eu/backup", jurisdiction="EU")
    # key use is always on the signed record: the boundary first
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary"]) == 0
    (tmp_path / "plain.csv").write_bytes(b"id,email\n" + b"1,a@x.eu\n" * 5000)
    return tmp_path


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def body_hash(path):
    data = path.read_bytes()
    _, size = EnvelopeHeader.from_bytes(data)
    return hashlib.sha256(data[size:]).hexdigest()


class TestEnvelopeCli:
    @pytest.mark.parametrize("cmd", ["encrypt", "decrypt", "rewrap"])
    def test_help(self, capsys, cmd):
        code, out, _ = run(capsys, cmd, "--help")
        assert code == 0 and "--keyring" in out and "--json" in out

    def test_encrypt_decrypt_roundtrip_json(self, env, capsys):
        code, out, err = run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI,
                             "--key", "local://eu/backup", "--context", "table=users",
                             "--segment-size", "4096", "--json")
        assert code == 0, err
        info = json.loads(out)
        assert [w["key_uri"] for w in info["wrapped_keys"]] == [URI, "local://eu/backup"]
        assert info["enc_context"] == {"table": "users"}
        code, out, err = run(capsys, "decrypt", "c.pets", "back.csv", "--json")
        assert code == 0, err
        assert (env / "back.csv").read_bytes() == (env / "plain.csv").read_bytes()
        assert json.loads(out)["plaintext_size"] == (env / "plain.csv").stat().st_size
        code, out, _ = run(capsys, "decrypt", "c.pets", "back2.csv", "--context", "table=users")
        assert code == 0 and "decrypted" in out

    def test_exit_codes(self, env, capsys):
        assert run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI)[0] == 0
        # wrong context -> integrity (5), nothing written
        code, _, err = run(capsys, "decrypt", "c.pets", "o1", "--context", "table=x")
        assert code == 5 and "IntegrityError" in err and not (env / "o1").exists()
        # wrong jurisdiction -> 4
        code, _, err = run(capsys, "decrypt", "c.pets", "o2", "--jurisdiction", "US")
        assert code == 4 and "JurisdictionError" in err and not (env / "o2").exists()
        # tampered -> 5
        raw = bytearray((env / "c.pets").read_bytes())
        raw[-3] ^= 1
        (env / "t.pets").write_bytes(bytes(raw))
        code, _, err = run(capsys, "decrypt", "t.pets", "o3")
        assert code == 5 and not (env / "o3").exists()
        # not an envelope -> 5 with a format message
        code, _, err = run(capsys, "decrypt", "plain.csv", "o4")
        assert code == 5 and "not a valid pets envelope" in err
        # bad --context syntax -> 1
        code, _, err = run(capsys, "encrypt", "plain.csv", "x.pets", "--key", URI,
                           "--context", "novalue")
        assert code == 1 and "KEY=VALUE" in err
        # destroyed key version -> key service (7)
        LocalKeyring(env / ".pets" / "keyring", master_key=Secret(KEY)).destroy(URI, 1)
        code, _, err = run(capsys, "decrypt", "c.pets", "o5")
        assert code == 7 and "KeyDestroyedError" in err and not (env / "o5").exists()

    def test_rewrap_in_place_after_rotation(self, env, capsys):
        assert run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI,
                   "--segment-size", "1024")[0] == 0
        before = body_hash(env / "c.pets")
        ring = LocalKeyring(env / ".pets" / "keyring", master_key=Secret(KEY))
        ring.rotate(URI)
        code, out, err = run(capsys, "rewrap", "c.pets", "--to", URI, "--json")
        assert code == 0, err
        payload = json.loads(out)
        assert payload["from"][0]["version"] == 1 and payload["wrapped_keys"][0]["version"] == 2
        assert body_hash(env / "c.pets") == before
        ring.retire(URI, 2)
        assert run(capsys, "decrypt", "c.pets", "back.csv")[0] == 0
        assert (env / "back.csv").read_bytes() == (env / "plain.csv").read_bytes()

    def test_rewrap_to_another_key_and_out(self, env, capsys):
        assert run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI)[0] == 0
        code, out, _ = run(capsys, "rewrap", "c.pets", "--to", "local://eu/backup",
                           "--out", "moved.pets")
        assert code == 0 and "local://eu/backup v1" in out
        assert body_hash(env / "moved.pets") == body_hash(env / "c.pets")
        code, _, _err = run(capsys, "rewrap", "c.pets", "--to", URI, "--jurisdiction", "US")
        assert code == 4


LOG = ".pets/audit.jsonl"
PEM = ".pets/keyring/boundary/signing-key.pub.pem"


@pytest.fixture
def signed(env):
    """The boundary signing key exists (as after the first `pets protect`)."""

    return env


class TestKeyUseInTheSignedLog:
    def _entries(self, env):
        from pets.boundary import read_entries, verify_log

        assert verify_log(env / LOG, env / PEM).ok
        return read_entries(env / LOG)

    def test_without_a_boundary_no_key_is_used(self, env, capsys):
        """No bootstrap state runs unlogged: a boundary directory that was never set up is
        an error before any key is touched (it used to encrypt and decrypt with no record)."""
        code, _, err = run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI,
                           "--boundary", "elsewhere")
        assert code == 1 and "no boundary at elsewhere: set it up once with `pets boundary " \
            "init`" in err
        assert not (env / "c.pets").exists() and not (env / "elsewhere").exists()

    def test_every_wrap_and_unwrap_is_one_signed_entry_never_per_segment(self, signed,
                                                                          capsys):
        env = signed
        code, _, err = run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI, "--key",
                           "local://eu/backup", "--segment-size", "1024")
        assert code == 0, err
        assert run(capsys, "decrypt", "c.pets", "back.csv", "--principal", "analyst")[0] == 0
        entries = self._entries(env)
        uses = [(e["kind"], e["fields"]["key"], e["fields"]["purpose"], e["actor"])
                for e in entries if e["kind"].startswith("key.")
                and e["fields"]["key"] != "local://eu/boundary"]  # each command's signer
        assert uses == [("key.wrap", URI, "envelope", "ops@eu@EU"),
                        ("key.wrap", "local://eu/backup", "envelope", "ops@eu@EU"),
                        ("key.unwrap", URI, "envelope", "analyst@EU")]  # 44 segments, 1 unwrap
        assert [e["kind"] for e in entries if e["kind"].startswith("envelope.")] == [
            "envelope.encrypt", "envelope.unwrap"]
        unwrap = next(e for e in entries if e["kind"] == "key.unwrap"
                      and e["fields"]["key"] == URI)["fields"]
        assert (unwrap["principal"], unwrap["jurisdiction"], unwrap["version"]) == (
            "analyst", "EU", 1)

    def test_the_log_holds_no_key_bytes(self, signed, capsys):
        import base64

        from pets import Context

        env = signed
        assert run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI)[0] == 0
        assert run(capsys, "decrypt", "c.pets", "back.csv")[0] == 0
        header, _ = EnvelopeHeader.from_bytes((env / "c.pets").read_bytes())
        w = header.wrapped_keys[0]
        ring = LocalKeyring(env / ".pets" / "keyring", master_key=Secret(KEY))
        dek = ring.unwrap(w, context=Context("EU"), enc_context=header.enc_context)
        text = (env / LOG).read_text()
        for secret in (dek, w.blob, KEY):
            for form in (secret.hex(), base64.b64encode(secret).decode()):
                assert form not in text

    def test_refusals_and_shredded_keys_are_on_the_record(self, signed, capsys):
        env = signed
        assert run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI, "--key",
                   "local://eu/backup")[0] == 0
        assert run(capsys, "keys", "destroy", URI, "--yes")[0] == 0
        assert run(capsys, "decrypt", "c.pets", "back.csv")[0] == 0  # the backup key
        entries = self._entries(env)
        tail = [(e["kind"], e["fields"].get("key")) for e in entries
                if e["fields"].get("key") != "local://eu/boundary"][-4:]
        assert tail == [("key.destroy", URI), ("key.failed", URI),
                        ("key.unwrap", "local://eu/backup"), ("envelope.unwrap",
                                                              "local://eu/backup")]
        # a US caller cannot even open the signing key: nothing runs unlogged
        code, _, err = run(capsys, "decrypt", "c.pets", "o", "--jurisdiction", "US")
        assert code == 4 and "JurisdictionError" in err and not (env / "o").exists()

    def test_a_log_that_cannot_be_appended_to_stops_decryption_with_exit_7(self, signed,
                                                                           capsys):
        """A corrupt log tail (append refuses to extend it): `pets decrypt` used to report the
        *envelope* as tampered (exit 5) after unwrapping the backup key too, un-recorded."""
        env = signed
        assert run(capsys, "encrypt", "plain.csv", "c.pets", "--key", URI, "--key",
                   "local://eu/backup")[0] == 0
        log = env / LOG
        before = log.read_bytes()
        log.write_bytes(before[:-2] + b"X\n")  # the last entry no longer hashes
        code, _, err = run(capsys, "decrypt", "c.pets", "back.csv")
        assert code == 7, err
        # the first key use of the command (opening the signing key) already fails closed
        assert ("key use refused: the audit hook could not record key.unwrap of "
                "local://eu/boundary (IntegrityError)") in err
        assert not (env / "back.csv").exists()

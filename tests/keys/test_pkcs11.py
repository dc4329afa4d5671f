"""Pkcs11Keyring against a real SoftHSM2 token (no mocks). Skipped locally without SoftHSM2,
a failure under CI=true (see tests/conftest.py::require_service)."""

import os
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pets import (
    Context,
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
)
from pets.keys import KeyService, WrappedKey, wrapping_aad
from tests.keys.conftest import HSM_LIB, HSM_PIN

pytestmark = pytest.mark.hsm

EU = Context("EU", principal="etl@eu")
SG = Context("SG", principal="etl@sg")


def fresh(token: str = "EU") -> str:
    return f"pkcs11://{token}/kek-{uuid.uuid4().hex[:10]}"


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1:]


class TestPkcs11Keyring:
    def test_implements_the_protocol(self, hsm_eu):
        assert isinstance(hsm_eu, KeyService)
        assert hsm_eu.supports("pkcs11://EU/x") and not hsm_eu.supports("pkcs11://SG/x")
        assert not hsm_eu.supports("local://EU/x")

    def test_roundtrip_with_encryption_context(self, hsm_eu):
        uri = fresh()
        info = hsm_eu.create(uri, jurisdiction="EU")
        assert (info.backend, info.jurisdiction, info.primary_version) == ("pkcs11", "EU", 1)
        assert info.attributes["extractable"] is False
        dek = os.urandom(32)
        w = hsm_eu.wrap(uri, dek, context=EU, enc_context={"table": "users"})
        assert (w.key_uri, w.version, w.jurisdiction, len(w.blob)) == (uri, 1, "EU", 12 + 32 + 16)
        assert hsm_eu.unwrap(w, context=EU, enc_context={"table": "users"}) == dek
        with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
            hsm_eu.unwrap(w, context=EU, enc_context={"table": "events"})

    def test_kek_is_generated_non_extractable_and_sensitive(self, hsm_eu):
        import pkcs11
        from pkcs11 import Attribute, ObjectClass

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        label = uri.rsplit("/", 1)[1]
        [obj] = hsm_eu._find({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})
        assert obj[Attribute.EXTRACTABLE] is False
        assert obj[Attribute.SENSITIVE] is True
        assert obj[Attribute.NEVER_EXTRACTABLE] is True
        assert obj[Attribute.TOKEN] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            obj[Attribute.VALUE]

    def test_every_flipped_byte_and_truncation_is_detected(self, hsm_eu):
        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        w = hsm_eu.wrap(uri, b"d" * 32, context=EU)
        for i in range(len(w.blob)):
            with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
                hsm_eu.unwrap(WrappedKey(uri, 1, "EU", flip(w.blob, i)), context=EU)
        for cut in (0, 11, 27, len(w.blob) - 1):
            with pytest.raises(IntegrityError):
                hsm_eu.unwrap(WrappedKey(uri, 1, "EU", w.blob[:cut]), context=EU)

    def test_other_jurisdiction_is_refused_and_reported(self, softhsm, events):
        from pets.keys import Pkcs11Keyring

        ring = Pkcs11Keyring(HSM_LIB, "EU", HSM_PIN, jurisdiction="EU", audit=events)
        uri = fresh()
        ring.create(uri, jurisdiction="EU")
        w = ring.wrap(uri, b"d" * 32, context=EU)
        us = Context("US", principal="analyst@us")
        with pytest.raises(JurisdictionError,
                           match=rf"^key {uri} belongs to EU; unwrap refused for analyst@us@US$"):
            ring.unwrap(w, context=us)
        assert events.kinds() == ["key.create", "key.refused"]
        assert events[-1].fields["principal"] == "analyst@us"

    def test_one_token_per_jurisdiction(self, hsm_eu, hsm_sg):
        uri = fresh("SG")
        hsm_sg.create(uri, jurisdiction="SG")
        w = hsm_sg.wrap(uri, b"s" * 32, context=SG)
        assert hsm_sg.unwrap(w, context=SG) == b"s" * 32
        with pytest.raises(JurisdictionError, match="belongs to SG"):
            hsm_sg.unwrap(w, context=EU)
        with pytest.raises(KeyNotFoundError, match="this is token pkcs11://EU"):
            hsm_eu.unwrap(w, context=EU)

    def test_create_for_another_jurisdiction_is_refused(self, hsm_eu):
        with pytest.raises(InputError, match="token 'EU' holds EU keys; cannot create"):
            hsm_eu.create(fresh(), jurisdiction="US")

    def test_token_cannot_be_reopened_under_another_jurisdiction(self, hsm_eu):
        from pets.keys import Pkcs11Keyring

        with pytest.raises(KeyServiceError,
                           match=r"^PKCS#11 token 'EU' holds EU keys; it cannot be opened as US$"):
            Pkcs11Keyring(HSM_LIB, "EU", HSM_PIN, jurisdiction="US")

    def test_wrong_pin_names_the_token_not_the_pin(self, softhsm):
        from pets.keys import Pkcs11Keyring

        bad = "9999-wrong-pin"
        # PINTEST is never logged in before: the HSM itself rejects this PIN.
        with pytest.raises(KeyServiceError) as exc:
            Pkcs11Keyring(HSM_LIB, "PINTEST", bad, jurisdiction="EU")
        assert str(exc.value) == "login to PKCS#11 token 'PINTEST' failed: incorrect PIN"
        assert exc.value.__suppress_context__
        # EU is already logged in by this process: the PIN is compared, not trusted.
        with pytest.raises(KeyServiceError) as exc2:
            Pkcs11Keyring(HSM_LIB, "EU", bad, jurisdiction="EU")
        assert str(exc2.value) == "login to PKCS#11 token 'EU' failed: incorrect PIN"
        for e in (exc, exc2):
            assert bad not in repr(e.value) and HSM_PIN not in repr(e.value)

    def test_unknown_token_and_library(self, softhsm, tmp_path):
        from pets.keys import Pkcs11Keyring

        with pytest.raises(KeyNotFoundError, match="no PKCS#11 token labelled 'NOPE'"):
            Pkcs11Keyring(HSM_LIB, "NOPE", HSM_PIN, jurisdiction="EU")
        with pytest.raises(KeyServiceError, match=r"PKCS#11 library .* not found"):
            Pkcs11Keyring(str(tmp_path / "nolib.so"), "EU", HSM_PIN, jurisdiction="EU")

    def test_repr_and_describe_hold_no_secret(self, hsm_eu):
        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        text = repr(hsm_eu) + repr(hsm_eu.describe(uri)) + repr(hsm_eu.list())
        assert HSM_PIN not in text
        import pickle

        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(hsm_eu)

    def test_unknown_key_and_version(self, hsm_eu):
        uri = fresh()
        with pytest.raises(KeyNotFoundError, match=rf"^no key {uri}$"):
            hsm_eu.describe(uri)
        hsm_eu.create(uri, jurisdiction="EU")
        with pytest.raises(KeyServiceError, match="already exists"):
            hsm_eu.create(uri, jurisdiction="EU")
        w = hsm_eu.wrap(uri, b"d" * 32, context=EU)
        with pytest.raises(KeyNotFoundError, match="has no version 5"):
            hsm_eu.unwrap(WrappedKey(uri, 5, "EU", w.blob), context=EU)


class TestPkcs11Lifecycle:
    def test_rotate_retire_destroy(self, hsm_eu, events):
        from pkcs11 import Attribute, ObjectClass

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        w1 = hsm_eu.wrap(uri, b"1" * 32, context=EU)
        info = hsm_eu.rotate(uri)
        assert info.primary_version == 2
        w2 = hsm_eu.wrap(uri, b"2" * 32, context=EU)
        assert w2.version == 2
        assert hsm_eu.unwrap(w1, context=EU) == b"1" * 32

        info = hsm_eu.retire(uri, 2)
        assert [v.state for v in info.versions] == ["retired", "active"]
        with pytest.raises(KeyDestroyedError, match=r"v1 is retired \(min_decryption_version=2\)"):
            hsm_eu.unwrap(w1, context=EU)
        hsm_eu.retire(uri, 1)
        assert hsm_eu.unwrap(w1, context=EU) == b"1" * 32

        info = hsm_eu.destroy(uri, 1)
        assert [v.state for v in info.versions] == ["destroyed", "active"]
        with pytest.raises(KeyDestroyedError, match=rf"^{uri} v1 is destroyed$"):
            hsm_eu.unwrap(w1, context=EU)
        assert hsm_eu.unwrap(w2, context=EU) == b"2" * 32
        label = uri.rsplit("/", 1)[1]
        left = hsm_eu._find({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})
        assert len(left) == 1  # the version-1 object is gone from the token

        hsm_eu.destroy(uri)
        with pytest.raises(KeyDestroyedError, match="v2 is destroyed"):
            hsm_eu.wrap(uri, b"x" * 32, context=EU)
        assert hsm_eu._find({Attribute.CLASS: ObjectClass.SECRET_KEY,
                             Attribute.LABEL: label}) == []

    def test_metadata_survives_updates_as_one_object(self, hsm_eu):
        from pkcs11 import Attribute, ObjectClass

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        for _ in range(3):
            hsm_eu.rotate(uri)
        label = "pets-meta:" + uri.rsplit("/", 1)[1]
        assert len(hsm_eu._find({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label})) == 1
        assert hsm_eu.describe(uri).primary_version == 4
        assert uri in [i.uri for i in hsm_eu.list()]

    def test_reopened_keyring_sees_the_same_keys(self, hsm_eu):
        from pets.keys import Pkcs11Keyring

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        w = hsm_eu.wrap(uri, b"r" * 32, context=EU)
        again = Pkcs11Keyring(HSM_LIB, "EU", HSM_PIN, jurisdiction="EU")
        assert again.unwrap(w, context=EU) == b"r" * 32


class TestInterop:
    """The token's AES-GCM output is standard: `cryptography` reads it and vice versa."""

    def test_token_gcm_matches_cryptography_aesgcm(self, hsm_eu):
        import pkcs11
        from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag

        label = f"interop-{uuid.uuid4().hex[:8]}"
        with hsm_eu._shared.lock:
            key = hsm_eu._session.generate_key(
                KeyType.AES, 256, label=label, store=False,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
            )
            raw = bytes(key[Attribute.VALUE])
        uri = "pkcs11://EU/interop"
        aad = wrapping_aad(uri, 1, {"table": "users"})
        dek, nonce = os.urandom(32), os.urandom(12)
        with hsm_eu._shared.lock:
            ct = bytes(key.encrypt(dek, mechanism=Mechanism.AES_GCM,
                                   mechanism_param=pkcs11.GCMParams(nonce, aad, 128)))
        assert AESGCM(raw).decrypt(nonce, ct, aad) == dek
        nonce2 = os.urandom(12)
        ct2 = AESGCM(raw).encrypt(nonce2, dek, aad)
        with hsm_eu._shared.lock:
            back = bytes(key.decrypt(ct2, mechanism=Mechanism.AES_GCM,
                                     mechanism_param=pkcs11.GCMParams(nonce2, aad, 128)))
        assert back == dek


class TestInitSoftHsmTokens:
    def test_is_idempotent(self, softhsm):
        import subprocess

        from pets.keys._pkcs11 import init_softhsm_tokens
        from tests.keys.conftest import HSM_SO_PIN, HSM_TOKENS

        again = init_softhsm_tokens(softhsm.parent, HSM_TOKENS, pin=HSM_PIN, so_pin=HSM_SO_PIN,
                                    set_env=False)
        assert again == softhsm
        shown = subprocess.run(["softhsm2-util", "--show-slots"], capture_output=True, text=True,
                               env={**os.environ, "SOFTHSM2_CONF": str(softhsm)},
                               check=True).stdout
        labels = [line.split(":", 1)[1].strip() for line in shown.splitlines()
                  if line.strip().startswith("Label:")]
        assert sorted(label for label in labels if label) == sorted(HSM_TOKENS)


class TestAcrossProcesses:
    def test_rotation_and_destruction_in_another_process_are_seen(self, hsm_eu):
        import subprocess
        import sys
        from pathlib import Path

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        w1 = hsm_eu.wrap(uri, b"1" * 32, context=EU)
        code = ("from pets.keys import Pkcs11Keyring as P; import sys; "
                "r = P(sys.argv[1], 'EU', sys.argv[2], jurisdiction='EU'); "
                "r.rotate(sys.argv[3]); r.destroy(sys.argv[3], 1)")
        root = str(Path(__file__).resolve().parents[2])
        res = subprocess.run([sys.executable, "-c", code, HSM_LIB, HSM_PIN, uri],
                             capture_output=True, text=True, check=False,
                             env={**os.environ, "PYTHONPATH": root})
        assert res.returncode == 0, res.stderr
        assert hsm_eu.describe(uri).primary_version == 2
        assert hsm_eu.wrap(uri, b"2" * 32, context=EU).version == 2
        with pytest.raises(KeyDestroyedError, match="v1 is destroyed"):
            hsm_eu.unwrap(w1, context=EU)


class TestTokenFailures:
    def test_token_errors_become_key_service_errors(self, hsm_eu, monkeypatch):
        import pkcs11

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")

        def broken(attrs):
            raise pkcs11.exceptions.DeviceRemoved()

        monkeypatch.setattr(hsm_eu, "_find", broken)
        with pytest.raises(KeyServiceError, match=r"^PKCS#11 token 'EU' failed: DeviceRemoved$"):
            hsm_eu.describe(uri)


class TestKeyObjectChecks:
    """Someone holding the PIN plants a key whose bytes they know under a pets label."""

    def _plant(self, hsm, uri, version, *, value=None, local_copy=False):
        from pkcs11 import Attribute as A
        from pkcs11 import KeyType, ObjectClass

        from pets.keys._pkcs11 import _version_id

        label = uri.rsplit("/", 1)[1]
        with hsm._shared.lock:
            if local_copy:  # a second, genuine-looking generated object: a duplicate
                return hsm._session.generate_key(
                    KeyType.AES, 256, label=label, id=_version_id(version), store=True,
                    template={A.SENSITIVE: True, A.EXTRACTABLE: False})
            return hsm._session.create_object({
                A.CLASS: ObjectClass.SECRET_KEY, A.KEY_TYPE: KeyType.AES, A.TOKEN: True,
                A.PRIVATE: True, A.LABEL: label, A.ID: _version_id(version),
                A.VALUE: value, A.ENCRYPT: True, A.DECRYPT: True,
                A.SENSITIVE: True, A.EXTRACTABLE: False,
            })

    def test_imported_key_under_a_pets_label_is_never_used(self, hsm_eu):
        from pkcs11 import Attribute, ObjectClass

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        label = uri.rsplit("/", 1)[1]
        with hsm_eu._shared.lock:
            for obj in hsm_eu._find({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                     Attribute.LABEL: label}):
                obj.destroy()  # the genuine KEK is gone...
        known = os.urandom(32)
        self._plant(hsm_eu, uri, 1, value=known)  # ...and one the attacker knows replaces it
        refused = rf"^{uri} v1: the key object in the token is not a KEK pets generated there"
        with pytest.raises(IntegrityError, match=refused):
            hsm_eu.wrap(uri, b"d" * 32, context=EU)
        forged = AESGCM(known)
        nonce = os.urandom(12)
        blob = nonce + forged.encrypt(nonce, b"e" * 32, wrapping_aad(uri, 1, None))
        with pytest.raises(IntegrityError, match=refused):
            hsm_eu.unwrap(WrappedKey(uri, 1, "EU", blob), context=EU)

    def test_duplicated_version_object_is_refused(self, hsm_eu):
        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        self._plant(hsm_eu, uri, 1, local_copy=True)
        with pytest.raises(IntegrityError, match="imported, extractable or duplicated"):
            hsm_eu.wrap(uri, b"d" * 32, context=EU)

    def test_new_keks_cannot_be_modified_or_copied(self, hsm_eu):
        import pkcs11
        from pkcs11 import Attribute

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        label = uri.rsplit("/", 1)[1]
        [obj] = hsm_eu._find({Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY,
                              Attribute.LABEL: label})
        assert obj[Attribute.MODIFIABLE] is False and obj[Attribute.COPYABLE] is False
        assert obj[Attribute.LOCAL] is True and obj[Attribute.ALWAYS_SENSITIVE] is True
        assert obj[Attribute.WRAP] is False and obj[Attribute.UNWRAP] is False
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            obj[Attribute.WRAP] = True


class TestNonces:
    def test_every_wrap_draws_a_fresh_nonce(self, hsm_eu):
        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        blobs = [hsm_eu.wrap(uri, b"d" * 32, context=EU).blob for _ in range(100)]
        assert len({b[:12] for b in blobs}) == 100
        assert len(set(blobs)) == 100


class TestErrorMapping:
    def test_a_failing_token_during_unwrap_is_not_reported_as_tampering(self, hsm_eu,
                                                                        monkeypatch):
        import pkcs11

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        w = hsm_eu.wrap(uri, b"d" * 32, context=EU)

        class Unplugged:
            def decrypt(self, *a, **kw):
                raise pkcs11.exceptions.DeviceRemoved()

        monkeypatch.setattr(hsm_eu, "_key", lambda uri, version: Unplugged())
        with pytest.raises(KeyServiceError, match=r"^PKCS#11 token 'EU' failed: DeviceRemoved$"):
            hsm_eu.unwrap(w, context=EU)

    def test_wrapped_key_claiming_another_jurisdiction_is_refused(self, hsm_eu):
        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        w = hsm_eu.wrap(uri, b"d" * 32, context=EU)
        with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
            hsm_eu.unwrap(WrappedKey(uri, 1, "SG", w.blob), context=EU)


ROTATOR = (
    "import sys\n"
    "from pets.keys import Pkcs11Keyring\n"
    "r = Pkcs11Keyring(sys.argv[1], 'EU', sys.argv[2], jurisdiction='EU')\n"
    "for _ in range(int(sys.argv[4])):\n"
    "    r.rotate(sys.argv[3])\n"
)


class TestConcurrentProcesses:
    def test_processes_rotating_one_key_lose_no_version(self, hsm_eu):
        """Without a cross-process lock, two rotations both made version N+1 (two token
        objects, one surviving metadata generation) and the key could no longer wrap."""
        import subprocess
        import sys
        from pathlib import Path

        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        n_procs, rounds = 3, 4
        root = str(Path(__file__).resolve().parents[2])
        procs = [subprocess.Popen([sys.executable, "-c", ROTATOR, HSM_LIB, HSM_PIN, uri,
                                   str(rounds)], stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": root})
                 for _ in range(n_procs)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        info = hsm_eu.describe(uri)
        total = n_procs * rounds + 1
        assert [v.version for v in info.versions] == list(range(1, total + 1))
        assert info.primary_version == total
        w = hsm_eu.wrap(uri, b"d" * 32, context=EU)
        assert w.version == total and hsm_eu.unwrap(w, context=EU) == b"d" * 32


class TestInterruptedOperations:
    def _generate_orphan(self, hsm, uri, version):
        from pets.keys._pkcs11 import _version_id

        with hsm._shared.lock:
            hsm._generate(uri, version)  # a key object, but no metadata records it
        return _version_id(version)

    def test_rotation_interrupted_before_its_metadata_does_not_break_the_next_one(self, hsm_eu):
        uri = fresh()
        hsm_eu.create(uri, jurisdiction="EU")
        self._generate_orphan(hsm_eu, uri, 2)  # crash between generate and save
        assert hsm_eu.rotate(uri).primary_version == 2
        w = hsm_eu.wrap(uri, b"d" * 32, context=EU)
        assert w.version == 2 and hsm_eu.unwrap(w, context=EU) == b"d" * 32

    def test_create_over_orphan_key_objects_is_refused(self, hsm_eu):
        uri = fresh()
        self._generate_orphan(hsm_eu, uri, 1)
        with pytest.raises(KeyServiceError, match="without pets metadata"):
            hsm_eu.create(uri, jurisdiction="EU")

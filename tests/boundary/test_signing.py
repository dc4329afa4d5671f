"""Signing keys: wrapped at rest under an EU KEK, unusable elsewhere, public half as PEM."""

from __future__ import annotations

import json
import pickle

import pytest
from cryptography.hazmat.primitives import serialization

from pets import Context, InputError, IntegrityError, JurisdictionError
from pets.boundary import SigningKey, load_public_key


class TestSigningKey:
    def test_save_load_roundtrip(self, tmp_path, services, signer):
        path = tmp_path / "sk.json"
        signer.save(path, services, "memory://eu/kek", context=Context("EU"))
        loaded = SigningKey.load(path, services, context=Context("EU"))
        assert loaded.key_id == signer.key_id
        assert oct(path.stat().st_mode & 0o777) == "0o600"

    def test_file_holds_no_private_key_bytes(self, tmp_path, services, signer):
        path = tmp_path / "sk.json"
        signer.save(path, services, "memory://eu/kek", context=Context("EU"))
        raw = signer._key.private_bytes(serialization.Encoding.Raw,
                                        serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
        text = path.read_bytes()
        assert raw not in text and raw.hex().encode() not in text
        import base64

        assert base64.b64encode(raw) not in text

    def test_load_from_us_is_refused(self, tmp_path, services, signer):
        path = tmp_path / "sk.json"
        signer.save(path, services, "memory://eu/kek", context=Context("EU"))
        with pytest.raises(JurisdictionError):
            SigningKey.load(path, services, context=Context("US", principal="analyst"))

    def test_swapped_key_id_fails_authentication(self, tmp_path, services, signer):
        path = tmp_path / "sk.json"
        signer.save(path, services, "memory://eu/kek", context=Context("EU"))
        doc = json.loads(path.read_text())
        doc["key_id"] = SigningKey.generate().key_id
        path.write_text(json.dumps(doc))
        with pytest.raises(IntegrityError):
            SigningKey.load(path, services, context=Context("EU"))

    def test_not_a_key_file(self, tmp_path, services):
        path = tmp_path / "x.json"
        path.write_text("{}")
        with pytest.raises(InputError, match="not a pets signing-key file"):
            SigningKey.load(path, services, context=Context("EU"))

    def test_no_pickling_and_no_secret_in_repr(self, signer):
        with pytest.raises(TypeError):
            pickle.dumps(signer)
        assert repr(signer) == f"SigningKey(key_id='{signer.key_id}')"

    def test_public_pem_roundtrips(self, tmp_path, signer):
        pem = tmp_path / "pub.pem"
        pem.write_bytes(signer.public_pem())
        for form in (pem, str(pem), signer.public_pem(), signer.public_pem().decode()):
            assert SigningKey(signer._key).key_id == signer.key_id
            loaded = load_public_key(form)
            loaded.verify(signer.sign(b"m"), b"m")

    def test_non_ed25519_public_key_is_refused(self, tmp_path):
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        with pytest.raises(InputError, match="not an Ed25519 public key"):
            load_public_key(pem)
        with pytest.raises(InputError, match="cannot read public key"):
            load_public_key(tmp_path / "missing.pem")

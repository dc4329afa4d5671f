import base64
import os
from pathlib import Path

import pytest

from pets import Context, InputError, KeyServiceError
from pets.keys import KeyConfig, LocalKeyring, Pkcs11TokenConfig, Secret, key_services
from pets.keys._config import DEFAULT_KEYRING, master_key_from_env
from tests.keys.conftest import HSM_LIB, HSM_PIN

EU = Context("EU")


@pytest.fixture
def keyring_env(tmp_path):
    key = os.urandom(32)
    ring = LocalKeyring.init(tmp_path / "ring", name="eu", master_key=Secret(key))
    ring.create("local://eu/k", jurisdiction="EU")
    return ring, {"PETS_MASTER_KEY": key.hex(), "PETS_KEYRING": str(ring.path)}


class TestMasterKeyFromEnv:
    def test_hex_and_base64(self):
        key = os.urandom(32)
        for text in (key.hex(), key.hex().upper(), base64.b64encode(key).decode(),
                     f"  {key.hex()}\n"):
            got, phrase = master_key_from_env({"PETS_MASTER_KEY": text})
            assert got is not None and got.expose() == key and phrase is None

    @pytest.mark.parametrize("bad", ["zz" * 32, "ab" * 31, base64.b64encode(b"x" * 16).decode(),
                                     "not base64!"])
    def test_malformed_key_is_refused_without_echo(self, bad):
        with pytest.raises(InputError) as exc:
            master_key_from_env({"PETS_MASTER_KEY": bad})
        assert bad not in str(exc.value)

    def test_passphrase_and_nothing(self):
        assert master_key_from_env({"PETS_KEYRING_PASSPHRASE": "pw"}) == (None, "pw")
        assert master_key_from_env({}) == (None, None)


class TestKeyConfig:
    def test_precedence_explicit_then_env_then_default(self, tmp_path):
        env = {"PETS_KEYRING": "/from/env"}
        assert KeyConfig.from_env(env, keyring=tmp_path).keyring == tmp_path
        assert KeyConfig.from_env(env).keyring == Path("/from/env")
        cfg = KeyConfig.from_env({})
        assert (cfg.keyring, cfg.keyring_explicit) == (DEFAULT_KEYRING, False)

    def test_tokens_from_env(self):
        env = {"PETS_PKCS11_LIBRARY": HSM_LIB, "PETS_PKCS11_TOKEN": "EU=EU, sg-hsm=sg",
               "PETS_PKCS11_JURISDICTION": "UK"}
        cfg = KeyConfig.from_env(env)
        assert cfg.pkcs11_tokens == (Pkcs11TokenConfig("EU", "EU"),
                                     Pkcs11TokenConfig("sg-hsm", "SG"))
        cfg = KeyConfig.from_env(env, pkcs11_tokens=["other"])
        assert cfg.pkcs11_tokens == (Pkcs11TokenConfig("other", "UK"),)

    def test_token_without_library_or_jurisdiction(self):
        with pytest.raises(InputError, match="no library"):
            KeyConfig.from_env({}, pkcs11_tokens=["EU=EU"])
        with pytest.raises(InputError, match="needs a jurisdiction"):
            KeyConfig.from_env({"PETS_PKCS11_LIBRARY": HSM_LIB}, pkcs11_tokens=["EU"])

    def test_services_from_env(self, keyring_env):
        _, env = keyring_env
        services = key_services(environ=env)
        w = services.wrap("local://eu/k", b"d" * 32, context=EU)
        assert services.unwrap(w, context=EU) == b"d" * 32

    def test_missing_keyring_says_how_to_create_one(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(KeyServiceError, match=r"no keyring at \.pets/keyring: create one"):
            key_services(environ={"PETS_MASTER_KEY": "00" * 32})
        with pytest.raises(KeyServiceError, match="no keyring at /nowhere"):
            key_services(keyring="/nowhere", environ={})

    def test_wrong_or_missing_master_key(self, keyring_env):
        _, env = keyring_env
        with pytest.raises(KeyServiceError, match="wrong master key or passphrase"):
            key_services(environ={**env, "PETS_MASTER_KEY": "00" * 32})
        with pytest.raises(KeyServiceError, match="needs its master key"):
            key_services(environ={"PETS_KEYRING": env["PETS_KEYRING"]})

    def test_local_keyring_plus_hsm_tokens(self, keyring_env, softhsm, hsm_eu, hsm_sg):
        _, env = keyring_env
        env = {**env, "PETS_PKCS11_LIBRARY": HSM_LIB, "PETS_PKCS11_TOKEN": "EU=EU,SG=SG",
               "PETS_PKCS11_PIN": HSM_PIN}
        services = key_services(environ=env)
        kinds = [type(s).__name__ for s in services]
        assert kinds == ["LocalKeyring", "Pkcs11Keyring", "Pkcs11Keyring"]
        assert services.for_uri("pkcs11://SG/x").jurisdiction == "SG"  # type: ignore[attr-defined]
        assert HSM_PIN not in repr(services)
        with pytest.raises(KeyServiceError, match="set PETS_PKCS11_PIN"):
            key_services(environ={k: v for k, v in env.items() if k != "PETS_PKCS11_PIN"})

    def test_hsm_only_without_local_keyring(self, tmp_path, monkeypatch, softhsm, hsm_eu):
        monkeypatch.chdir(tmp_path)
        env = {"PETS_PKCS11_LIBRARY": HSM_LIB, "PETS_PKCS11_TOKEN": "EU=EU",
               "PETS_PKCS11_PIN": HSM_PIN}
        assert [type(s).__name__ for s in key_services(environ=env)] == ["Pkcs11Keyring"]


class TestKeyConfigShipping:
    def test_key_config_pickles_without_secrets(self, keyring_env):
        import pickle

        _, env = keyring_env
        cfg = KeyConfig.from_env(env)
        blob = pickle.dumps(cfg)
        assert env["PETS_MASTER_KEY"].encode() not in blob
        again = pickle.loads(blob)
        assert again == cfg and hash(again) == hash(cfg)
        w = again.services(environ=env).wrap("local://eu/k", b"d" * 32, context=EU)
        assert w.key_uri == "local://eu/k"


class TestAuditWiring:
    def test_the_hook_reaches_the_backends_and_the_registry(self, keyring_env):
        from tests.keys.conftest import Events

        _, env = keyring_env
        seen = Events()
        services = key_services(environ=env, audit=seen)
        assert services.audit is seen
        w = services.wrap("local://eu/k", b"d" * 32, context=EU)
        services.unwrap(w, context=EU)
        services.rotate("local://eu/k")
        with pytest.raises(Exception):
            services.unwrap(w, context=Context("US", principal="x"))
        # one refusal entry although both the backend and the registry hold the hook
        assert seen.kinds() == ["key.wrap", "key.unwrap", "key.rotate", "key.refused"]

    def test_without_a_hook_nothing_is_reported(self, keyring_env):
        _, env = keyring_env
        assert key_services(environ=env).audit is None

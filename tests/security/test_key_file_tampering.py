"""Attack class: the key store's own files are corrupted, truncated, swapped or replaced.

A keyring key file whose bytes were flipped, that was truncated, swapped with another key's file
or replaced by another keyring's file must not make ``pets decrypt`` blame the data
("envelope failed to authenticate"): the refusal is a ``KeyStoreIntegrityError`` (exit 5) that
names the key file and the key URI, and no plaintext is written. The boundary's
``signing-key.json`` is held to the same rule: a corrupted one says the signing-key file is
corrupt, not that a manifest is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pets import Context, IntegrityError, KeyStoreIntegrityError
from pets.boundary._signing import SigningKey
from pets.cli import main
from pets.envelope import decrypt_file, encrypt_file
from pets.keys import KeyServices, LocalKeyring, MemoryKeyring, Secret

EU = Context("EU", principal="ops@eu")
URI = "local://eu/users"
MASTER = os.urandom(32)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A keyring (``users``, ``other``), another keyring also named ``eu`` (another master
    key), and ``c.pets`` encrypted under ``local://eu/users``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PETS_MASTER_KEY", MASTER.hex())
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    monkeypatch.setenv("PETS_PRINCIPAL", "ops@eu")
    for var in ("PETS_KEYRING", "PETS_KEYRING_PASSPHRASE", "PETS_PKCS11_LIBRARY",
                "PETS_PKCS11_TOKEN", "PETS_PKCS11_PIN", "PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS",
                "PETS_BOUNDARY"):
        monkeypatch.delenv(var, raising=False)
    ring = LocalKeyring.init(tmp_path / ".pets" / "keyring", name="eu", master_key=Secret(MASTER))
    ring.create(URI, jurisdiction="EU")
    ring.create("local://eu/other", jurisdiction="EU")
    # the CLI needs a boundary (signing key, pinned audit log) before any key use
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary"]) == 0
    twin = LocalKeyring.init(tmp_path / "twin", name="eu", master_key=Secret(os.urandom(32)))
    twin.create(URI, jurisdiction="EU")
    (tmp_path / "plain.csv").write_bytes(b"id,email\n" + b"1,a@x.eu\n" * 200)
    encrypt_file(tmp_path / "plain.csv", tmp_path / "c.pets", keys=ring, key_uris=URI,
                 context=EU)
    keys = ring.path / "keys"
    return {"ring": ring, "file": keys / "users.json", "other": keys / "other.json",
            "twin": twin.path / "keys" / "users.json", "dir": tmp_path}


def _flip(site: dict[str, Any]) -> None:
    raw = bytearray(site["file"].read_bytes())
    raw[raw.index(b'"kek"') + 12] ^= 0x01
    site["file"].write_bytes(bytes(raw))


def _truncate(site: dict[str, Any]) -> None:
    raw = site["file"].read_bytes()
    site["file"].write_bytes(raw[: len(raw) // 2])


def _swap(site: dict[str, Any]) -> None:
    site["file"].write_bytes(site["other"].read_bytes())


def _foreign(site: dict[str, Any]) -> None:
    site["file"].write_bytes(site["twin"].read_bytes())


ATTACKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "flipped byte": (_flip, "failed to authenticate under the master key: corrupted or replaced"),
    "truncated": (_truncate, "is not JSON (truncated or overwritten): failed to authenticate"),
    "swapped with another key's file": (
        _swap, "holds the key 'local://eu/other', not local://eu/users: swapped"),
    "replaced by another keyring's file": (
        _foreign, "failed to authenticate under the master key: corrupted or replaced"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
class TestKeyringFileTampering:
    def test_python_api_names_the_key_file_and_writes_nothing(self, site, attack):
        tamper, why = ATTACKS[attack]
        tamper(site)
        out = site["dir"] / "out.csv"
        with pytest.raises(KeyStoreIntegrityError) as err:
            decrypt_file(site["dir"] / "c.pets", out, keys=site["ring"], context=EU)
        message = str(err.value)
        assert f"keyring file {site['file']} for {URI}" in message
        assert why in message
        assert "envelope failed to authenticate" not in message
        assert not out.exists()
        assert not [p for p in site["dir"].iterdir() if p.name.startswith("out")]

    def test_pets_decrypt_exits_5_naming_the_key_file(self, site, attack, capsys):
        tamper, why = ATTACKS[attack]
        tamper(site)
        code = main(["decrypt", "c.pets", "out.csv"])
        err = capsys.readouterr().err
        assert code == 5, err
        assert "KeyStoreIntegrityError" in err
        assert f"keys/users.json for {URI}" in err and why in err
        assert not (site["dir"] / "out.csv").exists()


class TestWhatIsNotTheKeyFile:
    def test_tampered_data_still_blames_the_envelope_opaquely(self, site):
        raw = bytearray((site["dir"] / "c.pets").read_bytes())
        raw[-1] ^= 0x01
        (site["dir"] / "c.pets").write_bytes(bytes(raw))
        with pytest.raises(IntegrityError) as err:
            decrypt_file(site["dir"] / "c.pets", site["dir"] / "out.csv", keys=site["ring"],
                         context=EU)
        assert not isinstance(err.value, KeyStoreIntegrityError)
        assert str(err.value) == "envelope failed to authenticate"
        assert not (site["dir"] / "out.csv").exists()

    def test_wrong_master_key_says_master_key(self, site, monkeypatch, capsys):
        monkeypatch.setenv("PETS_MASTER_KEY", os.urandom(32).hex())
        code = main(["decrypt", "c.pets", "out.csv"])
        err = capsys.readouterr().err
        assert code == 7, err
        assert "wrong master key or passphrase" in err and "users.json" not in err
        assert not (site["dir"] / "out.csv").exists()


class TestSigningKeyFile:
    @pytest.fixture
    def signing(self, tmp_path: Path) -> dict[str, Any]:
        ring = MemoryKeyring()
        ring.create("memory://eu/boundary", jurisdiction="EU")
        services = KeyServices([ring])
        path = tmp_path / "signing-key.json"
        SigningKey.generate().save(path, services, "memory://eu/boundary", context=EU)
        return {"path": path, "services": services}

    def _load(self, signing: dict[str, Any]) -> SigningKey:
        return SigningKey.load(signing["path"], signing["services"], context=EU)

    def test_flipped_wrapped_key_says_the_signing_key_file_is_corrupt(self, signing):
        doc = json.loads(signing["path"].read_text())
        blob = doc["wrapped"]["blob"]
        doc["wrapped"]["blob"] = ("B" if blob[8] == "A" else "A").join((blob[:8], blob[9:]))
        signing["path"].write_text(json.dumps(doc))
        with pytest.raises(KeyStoreIntegrityError,
                           match=rf"^signing key file {signing['path']} failed to authenticate "
                                 r"under memory://eu/boundary v1: corrupted or replaced"):
            self._load(signing)

    def test_truncated_file_says_the_signing_key_file_is_corrupt(self, signing):
        raw = signing["path"].read_bytes()
        signing["path"].write_bytes(raw[: len(raw) // 2])
        with pytest.raises(KeyStoreIntegrityError,
                           match=rf"^signing key file {signing['path']} is corrupted or "
                                 r"replaced: not JSON"):
            self._load(signing)

    def test_binary_garbage_says_the_signing_key_file_is_corrupt(self, signing):
        signing["path"].write_bytes(b"\xff\xfe" + os.urandom(64))
        with pytest.raises(KeyStoreIntegrityError, match=r"signing key file .* not JSON"):
            self._load(signing)

    def test_replaced_by_another_boundarys_file(self, signing, tmp_path):
        other = tmp_path / "other.json"
        ring = MemoryKeyring()
        ring.create("memory://eu/boundary", jurisdiction="EU")
        SigningKey.generate().save(other, KeyServices([ring]), "memory://eu/boundary",
                                   context=EU)
        signing["path"].write_bytes(other.read_bytes())
        with pytest.raises(KeyStoreIntegrityError,
                           match=rf"^signing key file {signing['path']} failed to authenticate"):
            self._load(signing)

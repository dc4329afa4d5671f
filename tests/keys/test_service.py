"""One contract, every backend: MemoryKeyring, LocalKeyring and Pkcs11Keyring behave alike."""

import os
import uuid

import pytest

from pets import (
    Context,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
)
from pets.keys import KeyService, LocalKeyring, MemoryKeyring, Secret, WrappedKey

EU = Context("EU", principal="etl@eu")


@pytest.fixture(params=["memory", "local", "pkcs11"])
def backend(request, tmp_path, events):
    """(service, a fresh EU key URI) for each backend."""
    name = f"k{uuid.uuid4().hex[:10]}"
    if request.param == "memory":
        return MemoryKeyring(audit=events), f"memory://eu/{name}"
    if request.param == "local":
        ring = LocalKeyring.init(tmp_path / "r", name="eu", master_key=Secret(os.urandom(32)),
                                 audit=events)
        return ring, f"local://eu/{name}"
    hsm = request.getfixturevalue("hsm_eu")
    hsm.audit = events
    request.addfinalizer(lambda: setattr(hsm, "audit", None))
    return hsm, f"pkcs11://EU/{name}"


class TestKeyServiceContract:
    def test_full_lifecycle_has_the_same_semantics(self, backend, events):
        svc, uri = backend
        assert isinstance(svc, KeyService) and svc.supports(uri)
        info = svc.create(uri, jurisdiction="EU")
        assert (info.uri, info.jurisdiction, info.primary_version,
                info.min_decryption_version) == (uri, "EU", 1, 1)
        w1 = svc.wrap(uri, b"1" * 32, context=EU, enc_context={"c": "x"})
        assert (w1.key_uri, w1.version, w1.jurisdiction) == (uri, 1, "EU")
        svc.rotate(uri)
        w2 = svc.wrap(uri, b"2" * 32, context=EU, enc_context={"c": "x"})
        assert w2.version == 2
        assert svc.unwrap(w1, context=EU, enc_context={"c": "x"}) == b"1" * 32

        with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
            svc.unwrap(w2, context=EU, enc_context={"c": "y"})
        bad = WrappedKey(uri, 2, "EU", w2.blob[:-1] + bytes([w2.blob[-1] ^ 1]))
        with pytest.raises(IntegrityError):
            svc.unwrap(bad, context=EU, enc_context={"c": "x"})
        with pytest.raises(JurisdictionError, match=f"^key {uri} belongs to EU; unwrap refused"):
            svc.unwrap(w2, context=Context("US"), enc_context={"c": "x"})

        assert [v.state for v in svc.retire(uri, 2).versions] == ["retired", "active"]
        with pytest.raises(KeyDestroyedError, match=r"v1 is retired \(min_decryption_version=2\)"):
            svc.unwrap(w1, context=EU, enc_context={"c": "x"})
        assert [v.state for v in svc.retire(uri, 1).versions] == ["active", "active"]
        assert svc.unwrap(w1, context=EU, enc_context={"c": "x"}) == b"1" * 32

        assert [v.state for v in svc.destroy(uri, 1).versions] == ["destroyed", "active"]
        with pytest.raises(KeyDestroyedError, match=rf"^{uri} v1 is destroyed$"):
            svc.unwrap(w1, context=EU, enc_context={"c": "x"})
        assert svc.unwrap(w2, context=EU, enc_context={"c": "x"}) == b"2" * 32
        with pytest.raises(KeyNotFoundError, match="has no version 9"):
            svc.unwrap(WrappedKey(uri, 9, "EU", w2.blob), context=EU)

        assert svc.describe(uri) == next(i for i in svc.list() if i.uri == uri)
        kinds = [e.kind for e in events if e.kind != "keyring.init"]
        assert kinds == ["key.create", "key.rotate", "key.refused", "key.retire", "key.retire",
                         "key.destroy"]

    def test_unknown_key(self, backend):
        svc, uri = backend
        with pytest.raises(KeyNotFoundError, match=f"^no key {uri}$"):
            svc.describe(uri)

    @pytest.mark.parametrize("dek", [32, "k" * 32, b"", b"k" * 1025, None])
    def test_bad_data_key_is_input_error(self, backend, dek):
        from pets import InputError

        svc, uri = backend
        svc.create(uri, jurisdiction="EU")
        with pytest.raises(InputError, match="a data key must be"):
            svc.wrap(uri, dek, context=EU)

    def test_wrapped_key_stating_another_jurisdiction_is_refused(self, backend, events):
        svc, uri = backend
        svc.create(uri, jurisdiction="EU")
        w = svc.wrap(uri, b"d" * 32, context=EU)
        with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
            svc.unwrap(WrappedKey(uri, 1, "US", w.blob), context=EU)
        with pytest.raises(JurisdictionError):
            svc.unwrap(WrappedKey(uri, 1, "US", w.blob), context=Context("US"))
        assert [e.kind for e in events][-1] == "key.refused"


def _forms(secret: bytes) -> list[str]:
    import base64

    return [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode().rstrip("="), repr(secret)]


class TestNoSecretInErrors:
    def test_no_error_of_any_failure_mode_carries_the_data_key(self, backend, events, caplog):
        """Every failure mode of every backend: message, repr, notes, chained context."""
        import logging

        svc, uri = backend
        caplog.set_level(logging.DEBUG)
        svc.create(uri, jurisdiction="EU")
        dek = os.urandom(32)
        w = svc.wrap(uri, dek, context=EU, enc_context={"t": "users"})
        svc.rotate(uri)
        bad_blob = WrappedKey(uri, 1, "EU", w.blob[:-1] + bytes([w.blob[-1] ^ 1]))
        calls = [
            lambda: svc.unwrap(w, context=Context("US"), enc_context={"t": "users"}),
            lambda: svc.unwrap(w, context=EU, enc_context={"t": "events"}),
            lambda: svc.unwrap(bad_blob, context=EU, enc_context={"t": "users"}),
            lambda: svc.unwrap(WrappedKey(uri, 1, "EU", w.blob[:20]), context=EU),
            lambda: svc.unwrap(WrappedKey(uri, 2, "EU", w.blob), context=EU,
                               enc_context={"t": "users"}),
            lambda: svc.unwrap(WrappedKey(uri, 1, "US", w.blob), context=EU),
            lambda: svc.wrap(uri, dek + dek[:1] * 1000, context=EU),
            lambda: svc.retire(uri, 2) and svc.unwrap(w, context=EU, enc_context={"t": "users"}),
            lambda: svc.destroy(uri, 1) and svc.unwrap(w, context=EU, enc_context={"t": "users"}),
        ]
        texts = []
        for call in calls:
            with pytest.raises(Exception) as exc:
                call()
            e = exc.value
            texts.append(f"{e}|{e!r}|{getattr(e, '__notes__', '')}|{e.__context__!r}"
                         f"|{e.__cause__!r}")
        texts += [repr(ev) for ev in events] + [r.getMessage() for r in caplog.records]
        texts += [repr(svc), repr(svc.describe(uri)), repr(svc.list())]
        leaked = [t for t in texts for f in _forms(dek) if f in t]
        assert leaked == []


class TestWrappedKeyParsing:
    @pytest.mark.parametrize("version", ["1", 1.5, 1.0, True, 0, -1, 1 << 32, None])
    def test_version_must_be_a_plain_integer(self, version):
        from pets import InputError

        d = {"key_uri": "memory://eu/k", "version": version, "jurisdiction": "EU", "blob": ""}
        with pytest.raises(InputError, match="version must be an integer"):
            WrappedKey.from_dict(d)

    @pytest.mark.parametrize("field, value", [("key_uri", 7), ("jurisdiction", ["EU"]),
                                              ("blob", b"AA==")])
    def test_text_fields_must_be_text(self, field, value):
        from pets import InputError

        d = {"key_uri": "memory://eu/k", "version": 1, "jurisdiction": "EU", "blob": "AA=="}
        d[field] = value
        with pytest.raises(InputError, match="malformed wrapped key"):
            WrappedKey.from_dict(d)

    def test_roundtrip(self):
        w = WrappedKey("memory://eu/k", 3, "EU", os.urandom(60))
        assert WrappedKey.from_json(w.to_json()) == w


class TestCanonicalContext:
    def test_lone_surrogate_is_input_error(self):
        from pets import InputError
        from pets.keys import canonical_context

        with pytest.raises(InputError, match="valid Unicode"):
            canonical_context({"a": "\ud800"})


class TestExports:
    def test_all_is_sorted_and_is_exactly_the_public_surface(self):
        import types

        import pets.keys as keys

        assert list(keys.__all__) == sorted(set(keys.__all__))
        public = {n for n in dir(keys) if not n.startswith("_")
                  and not isinstance(getattr(keys, n), types.ModuleType)}
        assert public == set(keys.__all__)

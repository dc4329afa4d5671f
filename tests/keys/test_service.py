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


class _Proxy:
    """A third-party backend: the protocol only, no ``changes`` hub of its own."""

    def __init__(self, inner):
        self._inner = inner
        self.audit = None

    def __getattr__(self, name):
        if name == "changes":
            raise AttributeError(name)
        return getattr(self._inner, name)


class Recorder:
    """A key-change subscriber (a method of a living object: held weakly, kept alive here)."""

    def __init__(self):
        self.seen = []

    def __call__(self, uri, version, what):
        self.seen.append((uri, version, what))

    def on_change(self, uri, version, what):
        self.seen.append((uri, version, what))


class TestKeyChanges:
    def test_rotate_retire_destroy_through_the_registry_notify_each_version(self, backend):
        from pets.keys import KeyServices

        svc, uri = backend
        services = KeyServices([svc])
        rec = Recorder()
        services.subscribe(rec.on_change)
        svc.create(uri, jurisdiction="EU")
        services.rotate(uri)
        services.rotate(uri)
        services.retire(uri, 2)
        services.destroy(uri)  # every version: one notice per version
        assert rec.seen == [(uri, 2, "rotate"), (uri, 3, "rotate"), (uri, 2, "retire"),
                            (uri, 1, "destroy"), (uri, 2, "destroy"), (uri, 3, "destroy")]

    def test_changes_made_on_the_backend_object_reach_the_registry(self, backend):
        from pets.keys import KeyServices

        svc, uri = backend
        services = KeyServices([svc])
        rec = Recorder()
        services.subscribe(rec.on_change)
        svc.create(uri, jurisdiction="EU")
        svc.rotate(uri)
        svc.destroy(uri, 1)
        assert rec.seen == [(uri, 2, "rotate"), (uri, 1, "destroy")]

    def test_a_failed_change_notifies_nobody(self, backend):
        from pets.keys import KeyServices

        svc, uri = backend
        services = KeyServices([svc])
        rec = Recorder()
        services.subscribe(rec.on_change)
        svc.create(uri, jurisdiction="EU")
        with pytest.raises(KeyNotFoundError):
            services.destroy(uri, 7)
        from pets import InputError

        with pytest.raises(InputError):
            services.retire(uri, 5)
        assert rec.seen == []

    def test_a_backend_without_a_hub_is_notified_through_the_registry_only(self):
        from pets.keys import KeyServices

        ring = MemoryKeyring()
        proxy = _Proxy(ring)
        services = KeyServices([proxy])
        rec = Recorder()
        services.subscribe(rec.on_change)
        ring.create("memory://eu/k", jurisdiction="EU")
        ring.rotate("memory://eu/k")
        ring.rotate("memory://eu/k")  # around the registry: not seen (documented)
        services.destroy("memory://eu/k")
        services.retire("memory://eu/k", 3)
        assert rec.seen == [("memory://eu/k", 1, "destroy"), ("memory://eu/k", 2, "destroy"),
                            ("memory://eu/k", 3, "destroy"), ("memory://eu/k", 3, "retire")]

    def test_subscribers_are_held_weakly(self):
        import gc
        import weakref

        from pets.keys import KeyServices

        ring = MemoryKeyring()
        ring.create("memory://eu/k", jurisdiction="EU")
        services = KeyServices([ring])
        rec = Recorder()
        gone = weakref.ref(rec)
        services.subscribe(rec.on_change)
        services.subscribe(rec)
        del rec
        gc.collect()
        assert gone() is None  # the subscription did not keep it alive
        services.rotate("memory://eu/k")  # and a dead subscriber is skipped
        assert len(services._changes) == 0

    def test_the_registry_itself_is_not_kept_alive_by_its_backends(self):
        import gc
        import weakref

        from pets.keys import KeyServices

        ring = MemoryKeyring()
        services = KeyServices([ring])
        gone = weakref.ref(services)
        del services
        gc.collect()
        assert gone() is None and len(ring.changes) == 0

    def test_the_same_callback_is_subscribed_once_and_can_unsubscribe(self):
        from pets.keys import KeyChanges

        changes = KeyChanges()
        rec = Recorder()
        for _ in range(3):
            changes.subscribe(rec.on_change)
        changes.notify("memory://eu/k", 1, "destroy")
        assert rec.seen == [("memory://eu/k", 1, "destroy")]
        changes.unsubscribe(rec.on_change)
        changes.notify("memory://eu/k", 2, "destroy")
        assert len(rec.seen) == 1 and len(changes) == 0

    def test_a_callable_that_cannot_be_held_weakly_is_refused_plainly(self):
        from pets import InputError
        from pets.keys import KeyChanges

        with pytest.raises(InputError, match="held weakly"):
            KeyChanges().subscribe([].append)
        with pytest.raises(InputError, match="must be callable"):
            KeyChanges().subscribe("not callable")

    def test_a_failing_subscriber_does_not_stop_the_others_and_is_raised(self):
        from pets.keys import KeyChanges

        changes = KeyChanges()
        first, last = Recorder(), Recorder()

        class Broken:
            def on_change(self, *args):
                raise RuntimeError("cache could not be dropped")

        broken = Broken()
        changes.subscribe(first.on_change)
        changes.subscribe(broken.on_change)
        changes.subscribe(last.on_change)
        with pytest.raises(RuntimeError, match="cache could not be dropped"):
            changes.notify("memory://eu/k", 1, "destroy")
        assert first.seen == last.seen == [("memory://eu/k", 1, "destroy")]

    def test_a_failing_subscriber_does_not_stop_the_notices_of_later_versions(self, backend):
        """Attack: a destroy of every version, and a subscriber that fails on the first notice.
        Each remaining version must still be announced (a cache dropping per version would
        otherwise keep serving v2 and v3 after the shred), and the failure still raised."""
        from pets.keys import KeyServices

        svc, uri = backend
        services = KeyServices([svc])
        rec = Recorder()

        class Broken:
            def on_change(self, *args):
                raise RuntimeError("cache could not be dropped")

        broken = Broken()
        services.subscribe(broken.on_change)
        services.subscribe(rec.on_change)
        svc.create(uri, jurisdiction="EU")
        with pytest.raises(RuntimeError):
            services.rotate(uri)
        with pytest.raises(RuntimeError):
            services.rotate(uri)
        rec.seen.clear()
        with pytest.raises(RuntimeError, match="cache could not be dropped"):
            services.destroy(uri)
        assert rec.seen == [(uri, 1, "destroy"), (uri, 2, "destroy"), (uri, 3, "destroy")]
        assert {v.state for v in svc.describe(uri).versions} == {"destroyed"}

    def test_a_failing_subscriber_still_lets_the_key_event_be_audited(self, events):
        ring = MemoryKeyring(audit=events)
        ring.create("memory://eu/k", jurisdiction="EU")

        class Broken:
            def on_change(self, *args):
                raise RuntimeError("boom")

        broken = Broken()
        ring.changes.subscribe(broken.on_change)
        with pytest.raises(RuntimeError):
            ring.destroy("memory://eu/k")
        assert events.kinds()[-1] == "key.destroy"
        assert ring.describe("memory://eu/k").versions[0].state == "destroyed"

    def test_every_local_keyring_object_on_one_directory_shares_the_notices(self, tmp_path):
        from pets.keys import KeyServices

        master = Secret(os.urandom(32))
        a = LocalKeyring.init(tmp_path / "r", name="eu", master_key=master)
        b = LocalKeyring(tmp_path / "r", master_key=master)
        a.create("local://eu/k", jurisdiction="EU")
        services = KeyServices([a])
        rec = Recorder()
        services.subscribe(rec.on_change)
        b.destroy("local://eu/k", 1)  # another object, e.g. the one `pets keys` opened
        assert rec.seen == [("local://eu/k", 1, "destroy")]

    def test_a_keyring_recreated_at_the_same_path_is_another_keyring(self, tmp_path):
        import shutil

        from pets.keys import KeyServices

        master = Secret(os.urandom(32))
        old = LocalKeyring.init(tmp_path / "r", name="eu", master_key=master)
        services = KeyServices([old])
        rec = Recorder()
        services.subscribe(rec.on_change)
        shutil.rmtree(tmp_path / "r")
        new = LocalKeyring.init(tmp_path / "r", name="eu", master_key=master)
        new.create("local://eu/k", jurisdiction="EU")
        new.rotate("local://eu/k")
        assert rec.seen == []


def _serialized(events) -> str:
    import json

    return "\n".join(json.dumps({"kind": e.kind, "fields": dict(e.fields), "at": e.at},
                                sort_keys=True) + repr(e) for e in events)


def _forms_b(secret: bytes) -> list[str]:
    return [*_forms(secret), secret.decode("latin-1")]


class TestAuditedKeyUse:
    @pytest.fixture
    def audited(self, backend):
        from pets.keys import KeyServices
        from tests.keys.conftest import Events

        svc, uri = backend
        svc.create(uri, jurisdiction="EU")
        seen = Events()
        return KeyServices([svc], audit=seen), svc, uri, seen

    def test_wrap_and_unwrap_are_each_one_event_with_who_what_where(self, audited):
        services, _, uri, seen = audited
        dek = os.urandom(32)
        w = services.wrap(uri, dek, context=EU, enc_context={"t": "users"}, purpose="test")
        assert services.unwrap(w, context=EU, enc_context={"t": "users"}) == dek
        assert seen.kinds() == ["key.wrap", "key.unwrap"]
        for e in seen:
            assert e.fields["key"] == uri and e.fields["version"] == 1
            assert e.fields["key_jurisdiction"] == "EU"
            assert (e.fields["jurisdiction"], e.fields["principal"]) == ("EU", "etl@eu")
        assert seen[0].fields["purpose"] == "test"
        assert seen[1].fields["purpose"] is None

    def test_purpose_defaults_to_the_encryption_contexts(self, audited):
        services, _, uri, seen = audited
        w = services.wrap(uri, b"d" * 32, context=EU, enc_context={"purpose": "pets.signing-key"})
        services.unwrap(w, context=EU, enc_context={"purpose": "pets.signing-key"},
                        purpose="override")
        assert [e.fields["purpose"] for e in seen] == ["pets.signing-key", "override"]

    def test_no_event_carries_key_or_wrapped_key_bytes(self, audited):
        import base64

        services, svc, uri, seen = audited
        dek = os.urandom(32)
        w = services.wrap(uri, dek, context=EU, enc_context={"t": "users"})
        services.unwrap(w, context=EU, enc_context={"t": "users"})
        services.rotate(uri)
        w2 = services.wrap(uri, dek, context=EU)
        services.retire(uri, 2)
        for bad in (lambda: services.unwrap(w, context=EU, enc_context={"t": "users"}),
                    lambda: services.unwrap(WrappedKey(uri, 2, "EU", w2.blob[:-1] + b"\0"),
                                            context=EU),
                    lambda: services.unwrap(w2, context=Context("US"))):
            with pytest.raises(Exception):
                bad()
        text = _serialized(seen)
        assert len(seen) >= 6
        secrets = [dek, w.blob, w2.blob]
        if isinstance(svc, MemoryKeyring):  # the KEKs themselves, where the test can see them
            secrets += [k for k in svc._keys[uri].values() if k is not None]
        leaked = [f for s in secrets for f in [*_forms_b(s), base64.b64encode(s).decode()]
                  if f in text]
        assert leaked == []

    def test_destroyed_and_tampered_unwraps_are_reported_as_failures(self, audited):
        services, _, uri, seen = audited
        w = services.wrap(uri, b"d" * 32, context=EU)
        bad = WrappedKey(uri, 1, "EU", w.blob[:-1] + bytes([w.blob[-1] ^ 1]))
        with pytest.raises(IntegrityError):
            services.unwrap(bad, context=EU)
        services.destroy(uri, 1)
        with pytest.raises(KeyDestroyedError):
            services.unwrap(w, context=EU)
        failed = [e.fields for e in seen if e.kind == "key.failed"]
        assert [(f["error"], f["reason"], f["operation"]) for f in failed] == [
            ("IntegrityError", "wrapped key failed to authenticate", "unwrap"),
            ("KeyDestroyedError", f"{uri} v1 is destroyed", "unwrap")]
        assert seen.kinds().count("key.unwrap") == 0

    def test_a_wrap_under_a_destroyed_primary_is_reported(self, audited):
        services, _, uri, seen = audited
        services.destroy(uri)
        with pytest.raises(KeyDestroyedError):
            services.wrap(uri, b"d" * 32, context=EU)
        assert [(e.kind, e.fields["operation"], e.fields["error"]) for e in seen] == [
            ("key.failed", "wrap", "KeyDestroyedError")]

    def test_a_refusal_is_reported_once_whoever_holds_the_hook(self, audited, events):
        from pets.keys import KeyServices

        services, svc, uri, seen = audited
        w = services.wrap(uri, b"d" * 32, context=EU)
        us = Context("US", principal="analyst@us")
        # the backend reports to `events`, the registry to `seen`: each hears it once
        with pytest.raises(JurisdictionError):
            services.unwrap(w, context=us)
        assert seen.kinds()[-1] == "key.refused" and events.kinds()[-1] == "key.refused"
        assert seen[-1].fields["principal"] == "analyst@us"
        assert seen[-1].fields["operation"] == "unwrap"
        # one hook on both (the CLI's wiring): one event, not two
        shared = KeyServices([svc], audit=events)
        before = len(events)
        with pytest.raises(JurisdictionError):
            shared.unwrap(w, context=us)
        assert events.kinds()[before:] == ["key.refused"]
        # the same method of the same log, fetched twice, is the same hook

        class Log:
            def __init__(self):
                self.kinds = []

            def hook(self, event):
                self.kinds.append(event.kind)

        log = Log()
        svc.audit = log.hook
        try:
            with pytest.raises(JurisdictionError):
                KeyServices([svc], audit=log.hook).unwrap(w, context=us)
        finally:
            svc.audit = events
        assert log.kinds == ["key.refused"]
        # two different hooks that merely compare equal (empty lists) are not the same
        from tests.keys.conftest import Events

        quiet, other = Events(), Events()
        svc.audit = quiet
        try:
            with pytest.raises(JurisdictionError):
                KeyServices([svc], audit=other).unwrap(w, context=us)
        finally:
            svc.audit = events
        assert quiet.kinds() == other.kinds() == ["key.refused"]

    def test_a_use_the_hook_cannot_record_is_refused(self, backend):
        """Fail closed, like the export gate: no key leaves an unrecorded unwrap or wrap, and
        a refusal that cannot be recorded is not passed off as the plain refusal."""
        from pets.keys import AuditHookError, KeyServices

        svc, uri = backend
        svc.create(uri, jurisdiction="EU")
        svc.audit = None  # only the registry's hook
        w = KeyServices([svc]).wrap(uri, b"d" * 32, context=EU)
        disk_full = OSError(28, "No space left on device")

        def hook(event):
            raise disk_full

        services = KeyServices([svc], audit=hook)
        for call, kind in ((lambda: services.unwrap(w, context=EU), "key.unwrap"),
                           (lambda: services.wrap(uri, b"d" * 32, context=EU), "key.wrap"),
                           (lambda: services.unwrap(w, context=Context("US")), "key.refused")):
            with pytest.raises(AuditHookError) as caught:
                call()
            assert str(caught.value) == (f"key use refused: the audit hook could not record "
                                         f"{kind} of {uri} v1 (OSError)")
            assert caught.value.__cause__ is disk_full
            assert caught.value.exit_code == 7
            if kind == "key.unwrap":  # error trackers capture frame locals: no data key there
                tb, values = caught.value.__traceback__, []
                while tb is not None:
                    values += list(tb.tb_frame.f_locals.values())
                    tb = tb.tb_next
                assert not any(isinstance(v, bytes) and v == b"d" * 32 for v in values)

    def test_a_failure_records_the_keys_own_jurisdiction_not_the_headers(self, audited):
        """``WrappedKey.jurisdiction`` is an unauthenticated header field: a tampered one said
        'US' in the key.failed entry of an EU key (a false trail for the auditor)."""
        services, _, uri, seen = audited
        w = services.wrap(uri, b"d" * 32, context=EU)
        seen.clear()
        with pytest.raises(IntegrityError):
            services.unwrap(WrappedKey(uri, 1, "US", w.blob), context=EU)
        with pytest.raises(JurisdictionError):
            services.unwrap(WrappedKey(uri, 1, "US", w.blob), context=Context("US"))
        assert [(e.kind, e.fields["key_jurisdiction"]) for e in seen] == [
            ("key.failed", "EU"), ("key.refused", "EU")]

    def test_unknown_keys_are_not_reported(self, audited):
        services, _, uri, seen = audited
        with pytest.raises(KeyNotFoundError):
            services.unwrap(WrappedKey(uri + "x", 1, "EU", b"x" * 60), context=EU)
        assert list(seen) == []

    def test_service_must_be_a_member(self, audited):
        from pets import InputError

        services, _, uri, _seen = audited
        w = services.wrap(uri, b"d" * 32, context=EU)
        with pytest.raises(InputError, match="not one of these key services"):
            services.unwrap(w, context=EU, service=MemoryKeyring())

    def test_a_registry_without_audit_emits_nothing(self, backend):
        from pets.keys import KeyServices

        svc, uri = backend
        svc.create(uri, jurisdiction="EU")
        services = KeyServices([svc])
        w = services.wrap(uri, b"d" * 32, context=EU)
        assert services.unwrap(w, context=EU) == b"d" * 32
        assert services.audit is None

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pets import (
    Context,
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
)
from pets.keys import KeyServices, LocalKeyring, MemoryKeyring, Secret, rewrap

EU = Context("EU", principal="ops@eu")


@pytest.fixture
def two_dcs(tmp_path):
    """Two EU data centres, each with its own keyring and master key."""
    a = LocalKeyring.init(tmp_path / "dc-a", name="eu-dc-a", master_key=Secret(os.urandom(32)))
    b = LocalKeyring.init(tmp_path / "dc-b", name="eu-dc-b", master_key=Secret(os.urandom(32)))
    a.create("local://eu-dc-a/kek", jurisdiction="EU")
    b.create("local://eu-dc-b/kek", jurisdiction="EU")
    return a, b


class TestRewrap:
    def test_rotation_rewraps_under_the_new_primary(self, ring):
        uri = "local://eu/kek"
        ring.create(uri, jurisdiction="EU")
        old = ring.wrap(uri, b"d" * 32, context=EU, enc_context={"f": "x"})
        ring.rotate(uri)
        new = rewrap(old, source=ring, context=EU, enc_context={"f": "x"})
        assert (new.key_uri, new.version) == (uri, 2)
        ring.retire(uri, 2)
        with pytest.raises(KeyDestroyedError):
            ring.unwrap(old, context=EU, enc_context={"f": "x"})
        assert ring.unwrap(new, context=EU, enc_context={"f": "x"}) == b"d" * 32

    def test_migration_between_data_centres(self, two_dcs, events):
        a, b = two_dcs
        old = a.wrap("local://eu-dc-a/kek", b"m" * 32, context=EU)
        services = KeyServices([a, b])
        new = rewrap(old, source=services, target_uri="local://eu-dc-b/kek", target=services,
                     context=EU, audit=events)
        assert new.key_uri == "local://eu-dc-b/kek"
        assert b.unwrap(new, context=EU) == b"m" * 32
        a.destroy("local://eu-dc-a/kek")  # DC A is decommissioned: the copy still opens
        assert b.unwrap(new, context=EU) == b"m" * 32
        assert events.kinds() == ["key.rewrap"]
        assert set(events[0].fields) == {"key", "version", "target", "target_version",
                                         "key_jurisdiction", "target_jurisdiction",
                                         "principal", "jurisdiction"}

    def test_new_encryption_context_can_be_bound(self, two_dcs):
        a, b = two_dcs
        old = a.wrap("local://eu-dc-a/kek", b"m" * 32, context=EU, enc_context={"dc": "a"})
        new = rewrap(old, source=a, target_uri="local://eu-dc-b/kek", target=b, context=EU,
                     enc_context={"dc": "a"}, target_enc_context={"dc": "b"})
        assert b.unwrap(new, context=EU, enc_context={"dc": "b"}) == b"m" * 32
        with pytest.raises(IntegrityError):
            b.unwrap(new, context=EU, enc_context={"dc": "a"})

    def test_caller_outside_the_jurisdiction_is_refused(self, two_dcs, events):
        a, b = two_dcs
        a.audit = events
        old = a.wrap("local://eu-dc-a/kek", b"m" * 32, context=EU)
        with pytest.raises(JurisdictionError, match="unwrap refused for analyst@US"):
            rewrap(old, source=a, target_uri="local://eu-dc-b/kek", target=b,
                   context=Context("US", principal="analyst"))
        assert events.kinds() == ["key.refused"]

    def test_moving_to_another_jurisdiction_needs_consent(self, ring, events):
        ring.create("local://eu/kek", jurisdiction="EU")
        ring.create("local://eu/us-kek", jurisdiction="US")
        old = ring.wrap("local://eu/kek", b"m" * 32, context=EU)
        with pytest.raises(JurisdictionError, match=r"moves the data to another jurisdiction"):
            rewrap(old, source=ring, target_uri="local://eu/us-kek", context=EU, audit=events)
        assert events.kinds()[-1] == "key.rewrap_refused"
        new = rewrap(old, source=ring, target_uri="local://eu/us-kek", context=EU,
                     allow_jurisdiction_change=True)
        assert ring.unwrap(new, context=Context("US")) == b"m" * 32

    def test_destroyed_source_and_unknown_target(self, ring):
        ring.create("local://eu/kek", jurisdiction="EU")
        old = ring.wrap("local://eu/kek", b"m" * 32, context=EU)
        with pytest.raises(KeyNotFoundError, match="no key local://eu/missing"):
            rewrap(old, source=ring, target_uri="local://eu/missing", context=EU)
        with pytest.raises(KeyNotFoundError, match="does not serve"):
            rewrap(old, source=ring, target_uri="memory://eu/x", context=EU)
        ring.destroy("local://eu/kek", 1)
        ring.rotate("local://eu/kek")
        with pytest.raises(KeyDestroyedError, match="v1 is destroyed"):
            rewrap(old, source=ring, context=EU)

    def test_local_to_hsm_migration(self, ring, hsm_eu):
        import uuid

        ring.create("local://eu/kek", jurisdiction="EU")
        target = f"pkcs11://EU/migrated-{uuid.uuid4().hex[:8]}"
        hsm_eu.create(target, jurisdiction="EU")
        old = ring.wrap("local://eu/kek", b"h" * 32, context=EU, enc_context={"t": "users"})
        services = KeyServices([ring, hsm_eu])
        new = rewrap(old, source=services, target_uri=target, target=services, context=EU,
                     enc_context={"t": "users"})
        assert (new.key_uri, new.version, new.jurisdiction) == (target, 1, "EU")
        assert hsm_eu.unwrap(new, context=EU, enc_context={"t": "users"}) == b"h" * 32

    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(dek=st.binary(min_size=1, max_size=64), rotations=st.integers(0, 3))
    def test_rewrap_preserves_the_data_key(self, dek, rotations):
        mem = MemoryKeyring()
        mem.create("memory://eu/k", jurisdiction="EU")
        mem.create("memory://eu/k2", jurisdiction="EU")
        w = mem.wrap("memory://eu/k", dek, context=EU)
        for _ in range(rotations):
            mem.rotate("memory://eu/k")
            w = rewrap(w, source=mem, context=EU)
        assert w.version == rotations + 1
        w = rewrap(w, source=mem, target_uri="memory://eu/k2", context=EU)
        assert mem.unwrap(w, context=EU) == dek


class TestRewrapHardening:
    def test_refusal_comes_before_any_kek_is_decrypted(self, ring, events, monkeypatch):
        ring.create("local://eu/kek", jurisdiction="EU")
        ring.create("local://eu/kek2", jurisdiction="EU")
        old = ring.wrap("local://eu/kek", b"m" * 32, context=EU)
        opened = []
        real = LocalKeyring._open_kek
        monkeypatch.setattr(LocalKeyring, "_open_kek",
                            lambda self, *a: opened.append(a) or real(self, *a))
        with pytest.raises(JurisdictionError, match="unwrap refused for spy@US"):
            rewrap(old, source=ring, target_uri="local://eu/kek2",
                   context=Context("US", principal="spy"), audit=events)
        assert opened == []
        assert events.kinds()[-1] == "key.refused"

    def test_a_context_that_is_not_a_context_is_refused_first(self, ring):
        ring.create("local://eu/kek", jurisdiction="EU")
        ring.create("local://eu/us-kek", jurisdiction="US")
        old = ring.wrap("local://eu/kek", b"m" * 32, context=EU)
        for target in ("local://eu/kek", "local://eu/us-kek"):
            with pytest.raises(InputError, match=r"^context must be a pets\.Context$"):
                rewrap(old, source=ring, target_uri=target, context="EU")  # type: ignore[arg-type]

    def test_cross_jurisdiction_move_is_audited_with_both_jurisdictions(self, ring, events):
        ring.create("local://eu/kek", jurisdiction="EU")
        ring.create("local://eu/us-kek", jurisdiction="US")
        old = ring.wrap("local://eu/kek", b"m" * 32, context=EU)
        rewrap(old, source=ring, target_uri="local://eu/us-kek", context=EU,
               allow_jurisdiction_change=True, audit=events)
        ev = events[-1]
        assert ev.kind == "key.rewrap"
        assert (ev.fields["key_jurisdiction"], ev.fields["target_jurisdiction"]) == ("EU", "US")

    def test_the_data_key_appears_in_no_event_result_or_error(self, ring, events):
        import base64

        dek = os.urandom(32)
        ring.create("local://eu/kek", jurisdiction="EU")
        ring.create("local://eu/us-kek", jurisdiction="US")
        old = ring.wrap("local://eu/kek", dek, context=EU, enc_context={"t": "u"})
        ring.rotate("local://eu/kek")
        new = rewrap(old, source=ring, context=EU, enc_context={"t": "u"}, audit=events)
        texts = [repr(new), new.to_json(), repr(events)]
        for call in (
            lambda: rewrap(old, source=ring, context=EU, enc_context={"t": "x"}, audit=events),
            lambda: rewrap(old, source=ring, target_uri="local://eu/us-kek", context=EU,
                           enc_context={"t": "u"}, audit=events),
            lambda: rewrap(old, source=ring, context=Context("US"), enc_context={"t": "u"}),
        ):
            with pytest.raises(Exception) as exc:
                call()
            texts.append(f"{exc.value}|{exc.value!r}")
        forms = (dek.hex(), base64.b64encode(dek).decode(), repr(dek))
        assert not [t for t in texts for f in forms if f in t]

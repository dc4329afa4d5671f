"""Key references: picklable, key-free, resolved through the key service once per process."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pytest

from pets import IntegrityError, JurisdictionError, KeyServiceError
from pets.engines import InProcessKeys, KeyRef, WorkerKeys, forget_keys
from pets.engines._keyref import _in_process_from_handle
from pets.keys import KeyServices, MemoryKeyring, Secret
from tests.engines.conftest import KEK


@dataclass(frozen=True)
class CountingSource:
    """A key source that counts how often this process opens it (picklable, no secrets)."""

    inner: InProcessKeys
    opened: ClassVar[int] = 0

    def services(self, *, environ: Any = None) -> KeyServices:
        CountingSource.opened += 1
        return self.inner.services()


@pytest.fixture
def memory_services() -> KeyServices:
    ring = MemoryKeyring()
    ring.create("memory://eu/kek", jurisdiction="EU")
    return KeyServices([ring])


class TestKeyRef:
    def test_roundtrip_through_local_keyring_with_master_key_from_env(self, keyring, master_key_env,
                                                                       eu):
        root = Secret.generate()
        ref = KeyRef.wrap(root, KEK, source=keyring["config"], context=eu)
        forget_keys()  # as on a fresh worker: nothing cached
        again = pickle.loads(pickle.dumps(ref))
        assert again.resolve() == root

    def test_pickled_reference_holds_no_key_bytes(self, keyring, master_key_env, eu):
        root = Secret.generate()
        ref = KeyRef.wrap(root, KEK, source=keyring["config"], context=eu)
        blob = pickle.dumps(ref)
        assert root.expose() not in blob
        assert keyring["master"] not in blob
        assert bytes.fromhex(keyring["env"]["PETS_MASTER_KEY"]).hex().encode() not in blob
        assert root.expose().hex() not in repr(ref)

    def test_resolve_outside_the_key_jurisdiction_is_refused(self, keyring, master_key_env, eu,
                                                             us):
        ref = KeyRef.wrap(Secret.generate(), KEK, source=keyring["config"], context=eu)
        forget_keys()
        with pytest.raises(JurisdictionError, match="belongs to EU"):
            replace(ref, context=us).resolve()

    def test_tampered_wrapped_key_is_rejected(self, keyring, master_key_env, eu):
        ref = KeyRef.wrap(Secret.generate(), KEK, source=keyring["config"], context=eu)
        blob = bytearray(ref.wrapped.blob)
        blob[-1] ^= 1
        forget_keys()
        with pytest.raises(IntegrityError):
            replace(ref, wrapped=replace(ref.wrapped, blob=bytes(blob))).resolve()

    def test_purpose_is_bound_so_a_different_context_fails(self, keyring, master_key_env, eu):
        ref = KeyRef.wrap(Secret.generate(), KEK, source=keyring["config"], context=eu)
        forget_keys()
        with pytest.raises(IntegrityError):
            replace(ref, enc_context=(("purpose", "something-else"),)).resolve()

    def test_worker_without_master_key_cannot_resolve(self, keyring, eu, monkeypatch):
        monkeypatch.setenv("PETS_MASTER_KEY", keyring["env"]["PETS_MASTER_KEY"])
        ref = KeyRef.wrap(Secret.generate(), KEK, source=keyring["config"], context=eu)
        forget_keys()
        monkeypatch.setenv("PETS_MASTER_KEY", "00" * 32)
        with pytest.raises(KeyServiceError, match="wrong master key"):
            ref.resolve()

    def test_unwraps_once_per_process(self, memory_services, eu):
        source = CountingSource(InProcessKeys(memory_services))
        CountingSource.opened = 0
        ref = KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=source, context=eu)
        forget_keys()
        copies = [pickle.loads(pickle.dumps(ref)) for _ in range(5)]
        assert len({c.resolve().expose() for c in copies}) == 1
        assert CountingSource.opened == 2  # once to wrap, once to unwrap; then cached
        assert forget_keys() == 1
        copies[0].resolve()
        assert CountingSource.opened == 3


class TestInProcessKeys:
    def test_resolves_in_the_driver_process(self, memory_services, eu):
        root = Secret.generate()
        ref = KeyRef.wrap(root, "memory://eu/kek", source=InProcessKeys(memory_services),
                          context=eu)
        forget_keys()
        assert pickle.loads(pickle.dumps(ref)).resolve() == root

    def test_another_process_gets_a_clear_error(self):
        orphan = _in_process_from_handle("0" * 32)  # what a worker process unpickles
        with pytest.raises(KeyServiceError, match="driver process only"):
            orphan.services()

    def test_pickle_keeps_only_the_handle(self, memory_services):
        source = InProcessKeys(memory_services)
        assert b"MemoryKeyring" not in pickle.dumps(source)


class TestWorkerKeys:
    def test_equal_secrets_share_one_reference(self, memory_services, eu):
        wk = WorkerKeys(InProcessKeys(memory_services), "memory://eu/kek", eu)
        a = wk.ref(Secret(b"a" * 32))
        assert wk.ref(Secret(b"a" * 32)) is a
        assert wk.ref(Secret(b"b" * 32)) is not a

    def test_stays_on_the_driver(self, memory_services, eu):
        wk = WorkerKeys(InProcessKeys(memory_services), "memory://eu/kek", eu)
        with pytest.raises(TypeError, match="stays on the driver"):
            pickle.dumps(wk)

    def test_kek_of_another_jurisdiction_is_refused_on_the_driver(self, eu):
        ring = MemoryKeyring()
        ring.create("memory://us/kek", jurisdiction="US")
        wk = WorkerKeys(InProcessKeys(KeyServices([ring])), "memory://us/kek", eu)
        ref = wk.ref(Secret.generate())  # wrapping is allowed anywhere ...
        forget_keys()
        with pytest.raises(JurisdictionError):  # ... unwrapping only in the key's jurisdiction
            ref.resolve()

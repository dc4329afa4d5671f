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


class TestKeyChangesDropCachedSecrets:
    """A worker-side cache must not outlive crypto-shredding of its KEK in this process."""

    @pytest.fixture
    def heard(self):
        from pets.engines._keyref import on_invalidate

        forget_keys()  # other tests' cached references are not this test's business
        heard: list[Any] = []
        remove = on_invalidate(heard.append)
        yield heard
        remove()

    def test_destroyed_kek_is_refused_even_for_a_cached_secret(self, memory_services, eu,
                                                                 heard):
        from pets import KeyDestroyedError

        root = Secret.generate()
        ref = KeyRef.wrap(root, "memory://eu/kek", source=InProcessKeys(memory_services),
                          context=eu)
        assert ref.resolve() == root  # cached since the wrap
        memory_services.destroy("memory://eu/kek")
        assert heard == [frozenset({ref})]
        with pytest.raises(KeyDestroyedError) as warm:
            ref.resolve()
        forget_keys()
        with pytest.raises(KeyDestroyedError) as cold:
            ref.resolve()
        assert str(warm.value) == str(cold.value) == "memory://eu/kek v1 is destroyed"

    def test_retired_version_is_refused_and_rotation_keeps_the_cache(self, memory_services,
                                                                       eu, heard):
        from pets import KeyDestroyedError

        ref = KeyRef.wrap(Secret.generate(), "memory://eu/kek",
                          source=InProcessKeys(memory_services), context=eu)
        memory_services.rotate("memory://eu/kek")
        assert heard == []  # v1 still unwraps: nothing to drop
        memory_services.retire("memory://eu/kek", 2)
        assert heard == [frozenset({ref})]
        with pytest.raises(KeyDestroyedError, match="v1 is retired"):
            ref.resolve()

    def test_references_under_other_keks_stay_cached(self, eu, heard):
        from tests.keys.conftest import Events

        ring = MemoryKeyring()
        for uri in ("memory://eu/a", "memory://eu/b"):
            ring.create(uri, jurisdiction="EU")
        seen = Events()
        services = KeyServices([ring], audit=seen)
        source = InProcessKeys(services)
        a = KeyRef.wrap(Secret.generate(), "memory://eu/a", source=source, context=eu)
        b = KeyRef.wrap(Secret.generate(), "memory://eu/b", source=source, context=eu)
        ring.destroy("memory://eu/a")  # on the backend object: heard through the registry
        assert heard == [frozenset({a})]
        seen.clear()
        b.resolve()
        assert seen.kinds() == []  # served from the cache: no unwrap was needed

    def test_a_destroy_by_another_keyring_object_reaches_the_workers_cache(self, tmp_path,
                                                                            eu, monkeypatch):
        """What a threaded/synchronous worker sees when `pets keys destroy` runs in-process."""
        import secrets as _secrets
        from pathlib import Path

        from pets import KeyDestroyedError
        from pets.keys import KeyConfig, LocalKeyring

        master = _secrets.token_bytes(32)
        ring = LocalKeyring.init(tmp_path / "r", name="eu", master_key=Secret(master))
        ring.create("local://eu/w", jurisdiction="EU")
        monkeypatch.setenv("PETS_MASTER_KEY", master.hex())
        config = KeyConfig(keyring=Path(tmp_path / "r"), keyring_explicit=True)
        ref = KeyRef.wrap(Secret.generate(), "local://eu/w", source=config, context=eu)
        forget_keys()
        ref.resolve()  # as on a worker: opened from the config, unwrapped, cached
        LocalKeyring(tmp_path / "r", master_key=Secret(master)).destroy("local://eu/w")
        with pytest.raises(KeyDestroyedError, match="v1 is destroyed"):
            ref.resolve()

    def test_a_secret_unwrapped_while_its_kek_is_destroyed_is_not_cached(self, eu):
        from pets import KeyDestroyedError

        ring = MemoryKeyring()
        ring.create("memory://eu/kek", jurisdiction="EU")

        def destroy_during_unwrap(event):
            if event.kind == "key.unwrap":  # the unwrap is done; the cache not yet filled
                ring.destroy("memory://eu/kek")

        services = KeyServices([ring], audit=destroy_during_unwrap)
        root = Secret.generate()
        ref = KeyRef.wrap(root, "memory://eu/kek", source=InProcessKeys(services), context=eu)
        forget_keys()
        assert ref.resolve() == root  # unwrapped before the destroy: returned ...
        with pytest.raises(KeyDestroyedError):  # ... but not cached
            ref.resolve()

    def test_forget_keys_tells_listeners_everything_went(self, memory_services, eu, heard):
        KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=InProcessKeys(memory_services),
                    context=eu)
        forget_keys()
        assert heard == [None]


class TestWarmEqualsCold:
    """Invariant: after any sequence of key changes, resolving through the warm cache gives
    exactly what a cold unwrap gives (the same secret, or the same error and message)."""

    @staticmethod
    def _outcome(fn):
        from pets import PetsError

        try:
            return ("ok", fn().expose())
        except PetsError as exc:
            return (type(exc).__name__, str(exc))

    def test_any_sequence_of_changes(self, eu):
        from hypothesis import given, settings
        from hypothesis import strategies as st

        ops = st.lists(st.tuples(st.sampled_from(["rotate", "retire", "destroy", "wrap"]),
                                 st.integers(1, 6)), min_size=1, max_size=12)

        @settings(max_examples=60, deadline=None)
        @given(ops)
        def run(sequence):
            forget_keys()
            ring = MemoryKeyring()
            uri = "memory://eu/kek"
            ring.create(uri, jurisdiction="EU")
            services = KeyServices([ring])
            source = InProcessKeys(services)
            refs = [KeyRef.wrap(Secret.generate(), uri, source=source, context=eu)]
            for op, n in sequence:
                info = ring.describe(uri)
                live = [v.version for v in info.versions if v.state != "destroyed"]
                if op == "rotate":
                    services.rotate(uri)
                elif op == "retire":
                    services.retire(uri, min(n, info.primary_version))
                elif op == "destroy" and live:
                    services.destroy(uri, live[(n - 1) % len(live)])
                elif op == "wrap" and info.primary_version in live:
                    refs.append(KeyRef.wrap(Secret.generate(), uri, source=source, context=eu))
                for ref in refs:
                    warm = self._outcome(ref.resolve)
                    cold = self._outcome(lambda r=ref: Secret(services.unwrap(
                        r.wrapped, context=r.context, enc_context=dict(r.enc_context))))
                    assert warm == cold

        run()


class TestInvalidationOutlivesTheWrappingRegistry:
    """Attack: wrap through a registry nobody keeps, drop it, shred the KEK on the backend.

    The registry was the only subscriber between the backend's change hub and the secret
    cache (hubs hold subscribers weakly), so once it was collected the destroy reached no one
    and the cached secret kept resolving after the shred.
    """

    def test_destroy_after_the_registry_is_collected_still_drops_the_secret(self, eu):
        import gc

        from pets import KeyDestroyedError

        forget_keys()
        ring = MemoryKeyring()
        ring.create("memory://eu/kek", jurisdiction="EU")
        root = Secret.generate()
        ref = KeyRef.wrap(root, "memory://eu/kek", source=InProcessKeys(KeyServices([ring])),
                          context=eu, services=KeyServices([ring]))
        gc.collect()
        ring.destroy("memory://eu/kek")
        with pytest.raises(KeyDestroyedError, match=r"^memory://eu/kek v1 is destroyed$"):
            ref.resolve()

    def test_worker_keys_dropped_before_the_destroy(self, eu):
        """The engine's own pattern: WorkerKeys(services=...) for one job, the job's lazy
        graph (its KeyRef) kept, the helper and the registry dropped, then a shred."""
        import gc

        from pets import KeyDestroyedError

        forget_keys()
        ring = MemoryKeyring()
        ring.create("memory://eu/kek", jurisdiction="EU")
        wk = WorkerKeys(InProcessKeys(KeyServices([ring])), "memory://eu/kek", eu,
                        services=KeyServices([ring]))
        ref = wk.ref(Secret.generate())
        del wk
        gc.collect()
        ring.destroy("memory://eu/kek")
        with pytest.raises(KeyDestroyedError, match=r"^memory://eu/kek v1 is destroyed$"):
            ref.resolve()


class TestPurposeIsBound:
    def test_enc_context_cannot_relabel_the_audited_purpose(self, eu):
        """``{"purpose": PURPOSE, **enc_context}`` let a caller's entry replace the bound
        purpose, so worker unwraps could be logged as e.g. ``pets.signing-key`` unwraps."""
        from pets import InputError
        from tests.keys.conftest import Events

        ring = MemoryKeyring()
        ring.create("memory://eu/kek", jurisdiction="EU")
        seen = Events()
        services = KeyServices([ring], audit=seen)
        with pytest.raises(InputError, match=r"purpose is always pets\.engines\.keyref"):
            KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=InProcessKeys(services),
                        context=eu, enc_context={"purpose": "pets.signing-key"})
        assert seen.kinds() == []
        KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=InProcessKeys(services),
                    context=eu, enc_context={"job": "nightly"})
        assert [e.fields["purpose"] for e in seen] == ["pets.engines.keyref"]


class TestAChangeThisProcessDoesNotHear:
    """Attack: the KEK is destroyed by another process (the driver shredding a key while Dask
    workers hold it, or `pets keys destroy` in a shell beside a notebook). No notice arrives;
    the cache used to serve the secret (and the transforms built from it) until forget_keys(),
    with no bound at all. Now it asks the key service again once an entry is
    CACHE_LIFETIME_SECONDS old, like ParquetCrypto's pyarrow cache."""

    @pytest.fixture
    def unheard(self, monkeypatch):
        from pets.engines import _keyref

        forget_keys()
        now = [1000.0]
        monkeypatch.setattr(_keyref, "_clock", lambda: now[0])
        ring = MemoryKeyring()
        ring.create("memory://eu/kek", jurisdiction="EU")
        services = KeyServices([ring])
        ring.changes.unsubscribe(services._relay)  # as if the destroy happened elsewhere
        return ring, services, now

    def test_a_stale_secret_is_refused_after_the_cache_lifetime(self, unheard, eu):
        from pets import KeyDestroyedError
        from pets.engines._keyref import CACHE_LIFETIME_SECONDS

        ring, services, now = unheard
        root = Secret.generate()
        ref = KeyRef.wrap(root, "memory://eu/kek", source=InProcessKeys(services), context=eu)
        ring.destroy("memory://eu/kek")
        now[0] += CACHE_LIFETIME_SECONDS - 1
        assert ref.resolve() == root  # within the lifetime: the documented window
        now[0] += 2
        with pytest.raises(KeyDestroyedError, match=r"^memory://eu/kek v1 is destroyed$"):
            ref.resolve()

    def test_a_transform_built_from_it_is_refused_too(self, unheard, eu):
        from pets import KeyDestroyedError
        from pets.engines import Rebuild
        from pets.engines._keyref import CACHE_LIFETIME_SECONDS
        from pets.pseudo import KeyedHash

        ring, services, now = unheard
        ref = KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=InProcessKeys(services),
                          context=eu)
        rb = Rebuild.of(KeyedHash, ref, domain="crm")
        rb.build()
        ring.destroy("memory://eu/kek")
        now[0] += CACHE_LIFETIME_SECONDS + 1
        with pytest.raises(KeyDestroyedError, match=r"^memory://eu/kek v1 is destroyed$"):
            rb.build()

    def test_a_live_key_is_unwrapped_again_once_per_lifetime(self, unheard, eu):
        from pets.engines._keyref import CACHE_LIFETIME_SECONDS
        from tests.keys.conftest import Events

        ring, _, now = unheard
        seen = Events()
        services = KeyServices([ring], audit=seen)
        root = Secret.generate()
        ref = KeyRef.wrap(root, "memory://eu/kek", source=InProcessKeys(services), context=eu)
        for _ in range(3):
            assert ref.resolve() == root
        now[0] += CACHE_LIFETIME_SECONDS + 1
        for _ in range(3):
            assert ref.resolve() == root
        assert seen.kinds() == ["key.wrap", "key.unwrap"]

    def test_renewing_a_live_key_keeps_what_was_built_from_it(self, unheard, eu):
        from pets.engines import Rebuild
        from pets.engines._keyref import CACHE_LIFETIME_SECONDS
        from pets.pseudo import KeyedHash

        _, services, now = unheard
        ref = KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=InProcessKeys(services),
                          context=eu)
        rb = Rebuild.of(KeyedHash, ref, domain="crm")
        first = rb.build()
        now[0] += CACHE_LIFETIME_SECONDS + 1
        assert rb.build() is first  # re-validated with the key service, not rebuilt
        assert rb.build() is first and ref.cached()

    def test_expired_secrets_are_swept_when_new_ones_are_cached(self, unheard, eu):
        """A long-lived driver wraps job keys run after run: expired entries (and the
        transforms rebuilt from them) must not stay in memory for the life of the process."""
        from pets.engines import Rebuild
        from pets.engines._keyref import CACHE_LIFETIME_SECONDS, on_invalidate
        from pets.pseudo import KeyedHash

        _, services, now = unheard
        source = InProcessKeys(services)
        old = [KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=source, context=eu)
               for _ in range(3)]
        Rebuild.of(KeyedHash, old[0], domain="crm").build()
        heard: list[Any] = []
        remove = on_invalidate(heard.append)
        try:
            now[0] += CACHE_LIFETIME_SECONDS + 1
            new = KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=source, context=eu)
        finally:
            remove()
        assert heard == [frozenset(old)]
        assert [r.cached() for r in old] == [False] * 3 and new.cached()
        from pets.engines._plan import _BUILT

        assert all(rb.ref not in old for rb in _BUILT)


class TestWorkerUnwrapsInItsOwnContext:
    """Another process unwraps in *its own* context (its environment), the driver's is a hint.

    ``replace(ref, origin="")`` is the reference as any other process sees it; the environment
    is this process's (monkeypatched). Real separate processes: tests/security/
    test_worker_jurisdiction.py.
    """

    @pytest.fixture
    def opened(self, memory_services: KeyServices) -> CountingSource:
        CountingSource.opened = 0
        return CountingSource(InProcessKeys(memory_services))

    def test_the_making_process_unwraps_in_the_references_context(self, opened, eu,
                                                                   monkeypatch):
        monkeypatch.setenv("PETS_JURISDICTION", "US")  # the driver's own env does not matter
        ref = KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=opened, context=eu)
        forget_keys()
        assert ref.unwrap_context() == eu
        assert pickle.loads(pickle.dumps(ref)).unwrap_context() == eu  # same process
        ref.resolve()

    def test_a_worker_whose_environment_is_us_is_refused_a_reference_claiming_eu(
            self, opened, eu, monkeypatch):
        ref = replace(KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=opened,
                                  context=eu), origin="")
        forget_keys()
        monkeypatch.setenv("PETS_JURISDICTION", "US")
        monkeypatch.setenv("PETS_PRINCIPAL", "svc@us")
        before = CountingSource.opened
        with pytest.raises(JurisdictionError,
                           match=r"memory://eu/kek was made for EU \(driver principal "
                                 r"test@eu\), but this process's own environment says US "
                                 r"\(PETS_JURISDICTION; principal svc@us\)"):
            ref.resolve()
        assert CountingSource.opened == before  # the key service was not even opened
        assert not ref.cached() and forget_keys() == 0  # nothing unwrapped

    def test_a_worker_in_the_jurisdiction_unwraps_as_its_own_principal(self, eu, monkeypatch):
        seen: list[Any] = []
        ring = MemoryKeyring()
        ring.create("memory://eu/kek", jurisdiction="EU")
        root = Secret.generate()
        ref = replace(KeyRef.wrap(root, "memory://eu/kek",
                                  source=InProcessKeys(KeyServices([ring], audit=seen.append)),
                                  context=eu),
                      origin="")
        forget_keys()
        monkeypatch.setenv("PETS_JURISDICTION", "eu")
        monkeypatch.setenv("PETS_PRINCIPAL", "svc-dask")
        assert ref.resolve() == root
        unwraps = [e.fields for e in seen if e.kind == "key.unwrap"]
        assert unwraps[-1]["principal"] == "svc-dask"  # not the driver's test@eu

    def test_a_hint_that_does_not_match_the_worker_is_refused(self, opened, eu, us,
                                                              monkeypatch):
        # an EU worker handed a reference whose driver context says US (an EU KEK): refused by
        # the hint check, before the key service could unwrap it in the worker's EU context
        ref = replace(KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=opened,
                                  context=eu), context=us, origin="")
        forget_keys()
        monkeypatch.setenv("PETS_JURISDICTION", "EU")
        with pytest.raises(JurisdictionError, match=r"memory://eu/kek was made for US .* says EU"):
            ref.resolve()
        assert forget_keys() == 0

    def test_a_us_worker_matching_a_forged_us_hint_is_refused_by_the_key_service(
            self, opened, eu, us, monkeypatch):
        ref = replace(KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=opened,
                                  context=eu), context=us, origin="")
        forget_keys()
        monkeypatch.setenv("PETS_JURISDICTION", "US")
        with pytest.raises(JurisdictionError, match="belongs to EU; unwrap refused"):
            ref.resolve()
        assert forget_keys() == 0

    def test_an_invalid_jurisdiction_in_the_environment_is_refused(self, opened, eu,
                                                                    monkeypatch):
        ref = replace(KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=opened,
                                  context=eu), origin="")
        monkeypatch.setenv("PETS_JURISDICTION", "not a code!")
        with pytest.raises(JurisdictionError, match="names no valid jurisdiction"):
            ref.resolve()

    def test_a_secret_cached_under_one_context_is_not_served_to_another(self, opened, eu,
                                                                        monkeypatch):
        ref = replace(KeyRef.wrap(Secret.generate(), "memory://eu/kek", source=opened,
                                  context=eu), origin="")
        forget_keys()
        monkeypatch.setenv("PETS_JURISDICTION", "EU")
        monkeypatch.setenv("PETS_PRINCIPAL", "a")
        ref.resolve()
        assert ref.cached()
        monkeypatch.setenv("PETS_PRINCIPAL", "b")
        assert not ref.cached()  # cached for a@EU only: b@EU asks the key service itself
        monkeypatch.setenv("PETS_JURISDICTION", "US")
        assert not ref.cached()
        with pytest.raises(JurisdictionError):  # the EU entry is not served to a US process
            ref.resolve()

    def test_a_forked_child_is_another_process(self):
        import multiprocessing

        from pets.engines import _keyref

        if "fork" not in multiprocessing.get_all_start_methods():
            pytest.skip("no fork on this platform")
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_send_origin, args=(child,))
        proc.start()
        theirs = parent.recv()
        proc.join(10)
        assert theirs != _keyref._ORIGIN[0]


def _send_origin(conn: Any) -> None:
    from pets.engines import _keyref

    conn.send(_keyref._ORIGIN[0])
    conn.close()

"""Partition plumbing: shipping refuses key bytes; partition functions are pure."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

from pets import Context, InputError
from pets.engines import InProcessKeys, KeyRef, PartitionFn, Rebuild, Step, forget_keys, ship
from pets.engines._plan import forget_built
from pets.keys import KeyServices, MemoryKeyring, Secret
from pets.pseudo import KeyedHash, Mask


class Leaky:
    """A transform that holds a key but has no worker reference."""

    name = "leaky"

    def __init__(self, key: Secret) -> None:
        self.key = key

    def apply(self, s: pd.Series) -> pd.Series:
        return s


BUILT: list[int] = []


def counting_factory(secret: Secret, *, domain: str) -> KeyedHash:
    BUILT.append(1)
    return KeyedHash(secret, domain=domain)


class TestShip:
    def test_transform_holding_a_key_is_refused(self):
        with pytest.raises(InputError, match="'leaky' holds a key"):
            ship(Leaky(Secret.generate()))

    def test_keyed_pseudo_transform_without_keys_is_refused(self):
        with pytest.raises(TypeError):
            pickle.dumps(KeyedHash(Secret.generate(), domain="x"))
        with pytest.raises(InputError, match="holds a key"):
            ship(KeyedHash(Secret.generate(), domain="x"))

    def test_keyless_transform_ships_as_itself(self):
        m = Mask()
        assert ship(m) is m


class TestPartitionFn:
    def test_missing_column_names_it(self):
        fn = PartitionFn((Step("email", Mask()),))
        with pytest.raises(InputError, match="'email'"):
            fn(pd.DataFrame({"x": [1]}))

    def test_does_not_modify_its_input(self):
        frame = pd.DataFrame({"email": ["a@b.eu"], "n": [1]})
        before = frame.copy()
        PartitionFn((Step("email", Mask()), Step("n", drop=True)))(frame)
        pd.testing.assert_frame_equal(frame, before)


class TestRebuild:
    def test_builds_once_per_process_and_matches_the_driver(self):
        ring = MemoryKeyring()
        ring.create("memory://eu/k", jurisdiction="EU")
        root = Secret.generate()
        ref = KeyRef.wrap(root, "memory://eu/k", source=InProcessKeys(KeyServices([ring])),
                          context=Context("EU"))
        rb = Rebuild.of(counting_factory, ref, domain="crm")
        forget_keys()
        forget_built()
        BUILT.clear()
        s = pd.Series(["ann", "bob"])
        copies = [pickle.loads(pickle.dumps(rb)) for _ in range(3)]
        outs = [c.build().apply(s) for c in copies]
        assert len(BUILT) == 1
        pd.testing.assert_series_equal(outs[0], KeyedHash(root, domain="crm").apply(s))

    def test_a_transform_built_from_a_destroyed_kek_is_not_served_from_the_cache(self):
        from pets import KeyDestroyedError

        ring = MemoryKeyring()
        ring.create("memory://eu/k", jurisdiction="EU")
        ring.create("memory://eu/other", jurisdiction="EU")
        services = KeyServices([ring])
        refs = [KeyRef.wrap(Secret.generate(), uri, source=InProcessKeys(services),
                            context=Context("EU")) for uri in ("memory://eu/k",
                                                               "memory://eu/other")]
        shredded, kept = (Rebuild.of(counting_factory, r, domain="crm") for r in refs)
        s = pd.Series(["ann"])
        shredded.build().apply(s)
        kept.build().apply(s)
        BUILT.clear()
        services.destroy("memory://eu/k")
        with pytest.raises(KeyDestroyedError, match="memory://eu/k v1 is destroyed"):
            shredded.build()  # the warm cache held a transform built from the shredded key
        kept.build().apply(s)
        assert BUILT == []  # the transform under another KEK stayed cached


SHRED: list[tuple[KeyServices, str]] = []


def shredding_factory(secret: Secret, *, domain: str) -> KeyedHash:
    """Builds the transform, but the KEK is destroyed while it does (a concurrent shred)."""
    for services, uri in SHRED:
        services.destroy(uri)
    SHRED.clear()
    return KeyedHash(secret, domain=domain)


class TestRebuildRaces:
    def test_a_kek_destroyed_while_a_transform_is_built_does_not_leave_it_cached(self):
        from pets import KeyDestroyedError

        forget_keys()
        forget_built()
        ring = MemoryKeyring()
        ring.create("memory://eu/k", jurisdiction="EU")
        services = KeyServices([ring])
        ref = KeyRef.wrap(Secret.generate(), "memory://eu/k", source=InProcessKeys(services),
                          context=Context("EU"))
        rb = Rebuild.of(shredding_factory, ref, domain="crm")
        SHRED.append((services, "memory://eu/k"))
        rb.build()  # resolved before the shred: this one call may still use it
        with pytest.raises(KeyDestroyedError, match=r"^memory://eu/k v1 is destroyed$"):
            rb.build()  # ... but the next one must ask the key service again

    def test_a_failing_listener_does_not_stop_the_others(self):
        from pets import KeyDestroyedError
        from pets.engines._keyref import on_invalidate

        forget_keys()
        ring = MemoryKeyring()
        ring.create("memory://eu/k", jurisdiction="EU")
        services = KeyServices([ring])
        ref = KeyRef.wrap(Secret.generate(), "memory://eu/k", source=InProcessKeys(services),
                          context=Context("EU"))
        rb = Rebuild.of(counting_factory, ref, domain="crm")
        rb.build()
        heard: list[object] = []

        def broken(refs: object) -> None:
            raise RuntimeError("listener bug")

        removers = [on_invalidate(broken), on_invalidate(heard.append)]
        try:
            with pytest.raises(RuntimeError, match="listener bug"):
                services.destroy("memory://eu/k")  # the failure is not swallowed ...
        finally:
            for remove in removers:
                remove()
        assert heard == [frozenset({ref})]  # ... and every other listener still ran
        with pytest.raises(KeyDestroyedError, match=r"^memory://eu/k v1 is destroyed$"):
            rb.build()

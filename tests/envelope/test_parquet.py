"""Parquet modular encryption over pets key services: round trips, the warm-cache jurisdiction
test, rotation without rewriting data, shredding one column's key."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pets import Context, InputError, IntegrityError, JurisdictionError, KeyDestroyedError
from pets.envelope import (
    ParquetCrypto,
    read_encrypted_parquet,
    rotate_parquet_keys,
    write_encrypted_parquet,
)
from pets.envelope._parquet import key_material_path, master_key_id, uri_from_master_key_id
from pets.keys import KeyServices

FOOTER = "memory://eu-dc1/footer"
PII = "memory://eu-dc1/pii"
METRICS = "memory://eu-dc1/metrics"
LOCAL = "local://eu-local/kek"


@pytest.fixture
def pring(ring):
    for uri in (FOOTER, PII, METRICS):
        ring.create(uri, jurisdiction="EU")
    return ring


@pytest.fixture
def users():
    return pd.DataFrame({
        "user_id": [1, 2, 3],
        "email": ["a@x.eu", "b@x.eu", None],
        "country": ["DE", "FR", "IT"],
        "watch_s": [10.5, 0.0, 3.25],
    })


COLS = {PII: ["email"], METRICS: ["watch_s"]}


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestRoundTrip:
    @settings(max_examples=10, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(emails=st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=30),
           plaintext_footer=st.booleans(), double_wrapping=st.booleans())
    def test_roundtrip(self, pring, eu, tmp_path, emails, plaintext_footer, double_wrapping):
        df = pd.DataFrame({"email": pd.Series(emails, dtype="str"),
                           "n": range(len(emails))})
        path = tmp_path / "u.parquet"
        write_encrypted_parquet(df, path, keys=pring, context=eu, footer_key=FOOTER,
                                column_keys={PII: ["email"]}, plaintext_footer=plaintext_footer,
                                double_wrapping=double_wrapping)
        back = read_encrypted_parquet(path, keys=pring, context=eu)
        pd.testing.assert_frame_equal(back, df, check_dtype=False)

    def test_encrypted_footer_is_unreadable_without_keys(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        write_encrypted_parquet(users, path, keys=pring, context=eu, footer_key=FOOTER,
                                column_keys=COLS)
        with pytest.raises(OSError):
            pq.read_table(path)
        assert b"a@x.eu" not in path.read_bytes()

    def test_plaintext_footer_hides_encrypted_columns(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        write_encrypted_parquet(users, path, keys=pring, context=eu, footer_key=FOOTER,
                                column_keys=COLS, plaintext_footer=True)
        assert pq.read_table(path, columns=["country"]).column(0).to_pylist() == \
            ["DE", "FR", "IT"]
        with pytest.raises(OSError):
            pq.read_table(path, columns=["email"])

    def test_master_key_ids_are_uris(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(pring)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                 internal_key_material=False)
        material = json.loads(key_material_path(path).read_text())
        ids = {json.loads(v)["masterKeyID"] for v in material.values()}
        assert {uri_from_master_key_id(i) for i in ids} == {FOOTER, PII, METRICS}
        assert master_key_id(PII) in ids

    @given(st.lists(st.from_regex(
        r"\A[a-z][a-z0-9+.-]{0,5}://[A-Za-z0-9_.-]{1,6}/[A-Za-z0-9_.-]{1,6}\Z"),
        min_size=2, max_size=6, unique=True))
    @settings(max_examples=60, deadline=None)
    def test_master_key_id_mapping_is_injective(self, uris):
        ids = [master_key_id(u) for u in uris]
        assert len(set(ids)) == len(uris)  # no two key URIs share a pyarrow key id
        assert [uri_from_master_key_id(i) for i in ids] == uris
        assert not any(ch in i for i in ids for ch in ",;:")  # pyarrow's column-key syntax

    def test_bad_column_keys(self, pring, eu, users, tmp_path):
        with pytest.raises(InputError, match="not in the data"):
            write_encrypted_parquet(users, tmp_path / "x.parquet", keys=pring, context=eu,
                                    footer_key=FOOTER, column_keys={PII: ["nope"]})
        with pytest.raises(InputError, match="two keys"):
            write_encrypted_parquet(users, tmp_path / "x.parquet", keys=pring, context=eu,
                                    footer_key=FOOTER,
                                    column_keys={PII: ["email"], METRICS: ["email"]})
        for empty in ({}, {PII: []}):  # was pyarrow's bare OSError "Either column_keys or ..."
            with pytest.raises(InputError, match=r"^column_keys names no column to encrypt"):
                write_encrypted_parquet(users, tmp_path / "x.parquet", keys=pring, context=eu,
                                        footer_key=FOOTER, column_keys=empty)
        assert not (tmp_path / "x.parquet").exists()

    @pytest.mark.parametrize("name", ["a,b", "a;b", "a:b", " a"])
    def test_column_names_pyarrow_would_misparse_are_refused(self, pring, eu, tmp_path, name):
        # pyarrow re-parses "key:col,col;..." - "a,b" was stored in clear, "a", "b" encrypted
        df = pd.DataFrame({name: ["secret"], "a": ["x"], "b": ["y"]})
        path = tmp_path / "u.parquet"
        with pytest.raises(InputError, match="reserves"):
            ParquetCrypto(pring).write(df, path, context=eu, footer_key=FOOTER,
                                       column_keys={PII: [name]}, plaintext_footer=True)
        assert list(tmp_path.iterdir()) == []

    def test_failed_write_leaves_nothing(self, pring, eu, users, tmp_path):
        pring.destroy(PII)
        for internal in (True, False):
            with pytest.raises(KeyDestroyedError):
                ParquetCrypto(pring).write(users, tmp_path / "x.parquet", context=eu,
                                           footer_key=FOOTER, column_keys=COLS,
                                           internal_key_material=internal)
        assert list(tmp_path.iterdir()) == []


class TestJurisdiction:
    def test_us_context_cannot_read_through_a_warm_cache(self, pring, eu, users, tmp_path,
                                                          events):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(pring)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS)
        assert pc.read(path, context=eu)["email"][0] == "a@x.eu"  # cache now warm for EU
        before = len([e for e in events if e.kind == "key.refused"])
        with pytest.raises(JurisdictionError, match="analyst@us"):
            pc.read(path, context=Context("US", principal="analyst@us"))
        assert len([e for e in events if e.kind == "key.refused"]) == before + 1
        # a second EU principal is also asked for afresh (and allowed)
        assert pc.read(path, context=Context("EU", principal="other"))["country"].tolist() == \
            ["DE", "FR", "IT"]

    def test_plaintext_footer_columns_stay_refused_through_a_warm_cache(self, pring, eu, users,
                                                                         tmp_path):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(pring)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                 plaintext_footer=True)
        assert pc.read(path, context=eu)["email"][0] == "a@x.eu"
        us = Context("US", principal="analyst@us")
        # every read asks the key service afresh (even of a clear column: pyarrow verifies
        # the plaintext footer's signature with the footer key)
        for cols in (["email"], ["watch_s"], ["country"], None):
            with pytest.raises(JurisdictionError):
                pc.read(path, context=us, columns=cols)
        pc.forget(eu)  # dropping the EU entries changes nothing for US
        with pytest.raises(JurisdictionError):
            pc.read(path, context=us, columns=["email"])
        assert pc.read(path, context=eu)["email"][0] == "a@x.eu"

    def test_forget_drops_the_cache(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(pring)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS)
        pc.read(path, context=eu)
        pring.destroy(FOOTER)
        pc.forget(eu)
        with pytest.raises(KeyDestroyedError):
            pc.read(path, context=eu)


class TestRotation:
    def test_rotate_rewrites_only_key_material(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(pring)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                 internal_key_material=False)
        data_before, km_before = sha(path), key_material_path(path).read_text()
        for uri in (FOOTER, PII, METRICS):
            pring.rotate(uri)
        rotate_parquet_keys(path, keys=pring, context=eu)
        assert sha(path) == data_before
        km_after = key_material_path(path).read_text()
        assert km_after != km_before
        versions = set()
        for v in json.loads(km_after).values():
            wrapped = json.loads(json.loads(v)["wrappedKEK"])
            versions.add(wrapped["version"])
        assert versions == {2}
        for uri in (FOOTER, PII, METRICS):
            pring.retire(uri, 2)
        back = ParquetCrypto(pring).read(path, context=eu)
        pd.testing.assert_frame_equal(back, users, check_dtype=False)

    def test_unrotated_file_fails_after_retirement(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        write_encrypted_parquet(users, path, keys=pring, context=eu, footer_key=FOOTER,
                                column_keys=COLS)
        pring.rotate(FOOTER)
        pring.retire(FOOTER, 2)
        with pytest.raises(KeyDestroyedError, match="retired"):
            read_encrypted_parquet(path, keys=pring, context=eu)

    def test_rotate_needs_external_key_material(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        write_encrypted_parquet(users, path, keys=pring, context=eu, footer_key=FOOTER,
                                column_keys=COLS)
        with pytest.raises(InputError, match="internal_key_material=False"):
            rotate_parquet_keys(path, keys=pring, context=eu)


class TestShreddingAndTampering:
    def test_destroying_one_column_key_shreds_only_that_column(self, pring, eu, users,
                                                               tmp_path):
        path = tmp_path / "u.parquet"
        write_encrypted_parquet(users, path, keys=pring, context=eu, footer_key=FOOTER,
                                column_keys=COLS)
        pring.destroy(PII)
        pc = ParquetCrypto(pring)
        assert pc.read(path, context=eu, columns=["user_id", "watch_s"])["watch_s"].tolist() \
            == [10.5, 0.0, 3.25]
        with pytest.raises(KeyDestroyedError):
            pc.read(path, context=eu, columns=["email"])

    def test_flipped_data_byte(self, pring, eu, tmp_path):
        df = pd.DataFrame({"email": [f"user{i}@example.eu" for i in range(200)]})
        path = tmp_path / "u.parquet"
        write_encrypted_parquet(df, path, keys=pring, context=eu, footer_key=FOOTER,
                                column_keys={PII: ["email"]})
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 3] ^= 1  # inside the encrypted column chunk
        path.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError):
            read_encrypted_parquet(path, keys=pring, context=eu)

    def test_tampered_key_material(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        ParquetCrypto(pring).write(users, path, context=eu, footer_key=FOOTER,
                                   column_keys=COLS, internal_key_material=False)
        km = key_material_path(path)
        doc = json.loads(km.read_text())
        footer = json.loads(doc["footerKey"])
        wrapped = json.loads(footer["wrappedKEK"])
        wrapped["key_uri"] = PII  # claim another master key
        footer["wrappedKEK"] = json.dumps(wrapped)
        doc["footerKey"] = json.dumps(footer)
        km.write_text(json.dumps(doc))
        with pytest.raises(IntegrityError):
            read_encrypted_parquet(path, keys=pring, context=eu)

    def test_missing_file(self, pring, eu, tmp_path):
        with pytest.raises(InputError, match="no such file"):
            read_encrypted_parquet(tmp_path / "none.parquet", keys=pring, context=eu)


class TestMigration:
    def test_memory_to_local_keyring_without_touching_data(self, pring, local_ring, eu, users,
                                                           tmp_path):
        path = tmp_path / "u.parquet"
        services = KeyServices([pring, local_ring])
        pc = ParquetCrypto(services)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                 internal_key_material=False)
        before = sha(path)
        pc.migrate(path, context=eu, to={FOOTER: LOCAL, PII: LOCAL})
        assert sha(path) == before
        ids = {json.loads(v)["masterKeyID"]
               for v in json.loads(key_material_path(path).read_text()).values()}
        assert ids == {master_key_id(LOCAL), master_key_id(METRICS)}
        pring.destroy(FOOTER)
        pring.destroy(PII)
        back = ParquetCrypto(services).read(path, context=eu)
        pd.testing.assert_frame_equal(back, users, check_dtype=False)

    def test_migration_to_another_jurisdiction_needs_consent(self, pring, eu, users,
                                                             tmp_path):
        pring.create("memory://us-east/footer", jurisdiction="US")
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(pring)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                 internal_key_material=False)
        km = key_material_path(path).read_text()
        with pytest.raises(JurisdictionError, match="allow_jurisdiction_change"):
            pc.migrate(path, context=eu, to={FOOTER: "memory://us-east/footer"})
        assert key_material_path(path).read_text() == km

    def test_migration_is_refused_outside_the_jurisdiction(self, pring, local_ring, us, eu,
                                                           users, tmp_path):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(KeyServices([pring, local_ring]))
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                 internal_key_material=False)
        with pytest.raises(JurisdictionError):
            pc.migrate(path, context=us, to={FOOTER: LOCAL})

    def test_migration_needs_external_key_material(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        write_encrypted_parquet(users, path, keys=pring, context=eu, footer_key=FOOTER,
                                column_keys=COLS)
        with pytest.raises(InputError, match="internal_key_material=False"):
            ParquetCrypto(pring).migrate(path, context=eu, to={FOOTER: PII})

    def test_unknown_source_key(self, pring, eu, users, tmp_path):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(pring)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                 internal_key_material=False)
        with pytest.raises(InputError, match="uses no key"):
            pc.migrate(path, context=eu, to={"memory://eu-dc2/kek": PII})

    @pytest.mark.parametrize("entry", ['[1]', '5', '{"masterKeyID": 5}',
                                       '{"masterKeyID": "no-slash"}', '"x"'])
    def test_hostile_key_material_is_an_integrity_error(self, pring, eu, users, tmp_path,
                                                        entry):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(pring)
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                 internal_key_material=False)
        km = key_material_path(path)
        doc = json.loads(km.read_text())
        doc[next(iter(doc))] = entry
        km.write_text(json.dumps(doc))
        before = km.read_bytes()
        with pytest.raises(IntegrityError, match="key material failed to authenticate"):
            pc.migrate(path, context=eu, to={PII: METRICS})
        assert km.read_bytes() == before

    def test_local_to_hsm(self, local_ring, hsm_eu, eu, users, tmp_path):
        import uuid

        hsm_uri = f"pkcs11://EU/parquet-{uuid.uuid4().hex[:8]}"
        hsm_eu.create(hsm_uri, jurisdiction="EU")
        services = KeyServices([local_ring, hsm_eu])
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(services)
        pc.write(users, path, context=eu, footer_key=LOCAL, column_keys={LOCAL: ["email"]},
                 internal_key_material=False)
        before = sha(path)
        pc.migrate(path, context=eu, to={LOCAL: hsm_uri})
        assert sha(path) == before
        back = ParquetCrypto(hsm_eu).read(path, context=eu)
        pd.testing.assert_frame_equal(back, users, check_dtype=False)
        with pytest.raises(JurisdictionError):
            ParquetCrypto(hsm_eu).read(path, context=Context("US"))


@pytest.fixture(params=["memory", "local", "pkcs11"])
def kek_backend(request, tmp_path):
    """(services, backend, footer URI, PII URI, metrics URI) with fresh EU KEKs per backend."""
    import os
    import uuid

    from pets.keys import LocalKeyring, MemoryKeyring, Secret

    tag = uuid.uuid4().hex[:8]
    if request.param == "memory":
        backend, base = MemoryKeyring(), "memory://eu-dc1"
    elif request.param == "local":
        backend = LocalKeyring.init(tmp_path / "ring", name="eu-shred",
                                    master_key=Secret(os.urandom(32)))
        base = "local://eu-shred"
    else:
        backend, base = request.getfixturevalue("hsm_eu"), "pkcs11://EU"
    uris = [f"{base}/{role}-{tag}" for role in ("footer", "pii", "metrics")]
    for uri in uris:
        backend.create(uri, jurisdiction="EU")
    return KeyServices([backend]), backend, *uris


def _cold_error(services, path, eu, **kw):
    """What a read with a cold cache raises now (a fresh ParquetCrypto)."""
    with pytest.raises(Exception) as cold:
        ParquetCrypto(services).read(path, context=eu, **kw)
    return cold.value


class TestKeyChangesDropTheCache:
    """Crypto-shredding against a warm pyarrow key cache: the attack is a read through the same
    ParquetCrypto after the KEK is gone; it must fail exactly as a cold read does."""

    def _warm(self, services, footer, pii, metrics, users, tmp_path, eu, **kw):
        path = tmp_path / "u.parquet"
        pc = ParquetCrypto(services)
        pc.write(users, path, context=eu, footer_key=footer,
                 column_keys={pii: ["email"], metrics: ["watch_s"]}, **kw)
        pd.testing.assert_frame_equal(pc.read(path, context=eu), users, check_dtype=False)
        return pc, path

    def test_destroyed_footer_kek_is_refused_through_a_warm_cache(self, kek_backend, users,
                                                                   tmp_path, eu):
        services, _, footer, pii, metrics = kek_backend
        pc, path = self._warm(services, footer, pii, metrics, users, tmp_path, eu)
        services.destroy(footer)
        cold = _cold_error(services, path, eu)
        assert type(cold) is KeyDestroyedError and str(cold) == f"{footer} v1 is destroyed"
        with pytest.raises(KeyDestroyedError) as warm:
            pc.read(path, context=eu)
        assert type(warm.value) is type(cold) and str(warm.value) == str(cold)

    def test_destroyed_column_kek_shreds_that_column_only(self, kek_backend, users, tmp_path,
                                                          eu):
        services, _, footer, pii, metrics = kek_backend
        pc, path = self._warm(services, footer, pii, metrics, users, tmp_path, eu)
        services.destroy(pii, 1)
        cold = _cold_error(services, path, eu, columns=["email"])
        with pytest.raises(KeyDestroyedError) as warm:
            pc.read(path, context=eu, columns=["email"])
        assert str(warm.value) == str(cold) == f"{pii} v1 is destroyed"
        assert pc.read(path, context=eu, columns=["watch_s"])["watch_s"].tolist() == \
            [10.5, 0.0, 3.25]

    def test_retired_version_is_refused_through_a_warm_cache(self, kek_backend, users,
                                                              tmp_path, eu):
        services, _, footer, pii, metrics = kek_backend
        pc, path = self._warm(services, footer, pii, metrics, users, tmp_path, eu)
        services.rotate(footer)
        services.retire(footer, 2)
        cold = _cold_error(services, path, eu)
        with pytest.raises(KeyDestroyedError, match="retired") as warm:
            pc.read(path, context=eu)
        assert str(warm.value) == str(cold)

    def test_destroy_on_the_backend_object_itself_also_drops_the_cache(self, kek_backend,
                                                                        users, tmp_path, eu):
        services, backend, footer, pii, metrics = kek_backend
        pc, path = self._warm(services, footer, pii, metrics, users, tmp_path, eu)
        backend.destroy(footer)  # not through the registry the ParquetCrypto holds
        with pytest.raises(KeyDestroyedError, match=r"v1 is destroyed$"):
            pc.read(path, context=eu)

    def test_control_without_the_subscription_pyarrow_serves_the_destroyed_key(
            self, pring, users, tmp_path, eu):
        """The gap being closed is real: unsubscribed, the warm cache still decrypts."""
        pc, path = self._warm(KeyServices([pring]), FOOTER, PII, METRICS, users, tmp_path, eu)
        pc._keys.unsubscribe(pc._on_key_change)
        pring.destroy(FOOTER)
        pring.destroy(PII)
        assert pc.read(path, context=eu)["email"][0] == "a@x.eu"  # the hole
        pc.forget()
        with pytest.raises(KeyDestroyedError):
            pc.read(path, context=eu)

    def test_a_local_keyring_opened_elsewhere_in_the_process_is_heard(self, users, tmp_path,
                                                                       eu):
        """`pets keys destroy` run in this process opens its own LocalKeyring object."""
        import os

        from pets.keys import LocalKeyring, Secret

        master = Secret(os.urandom(32))
        ring = LocalKeyring.init(tmp_path / "ring", name="eu", master_key=master)
        footer, pii = "local://eu/footer", "local://eu/pii"
        for uri in (footer, pii):
            ring.create(uri, jurisdiction="EU")
        pc = ParquetCrypto(ring)
        path = tmp_path / "u.parquet"
        pc.write(users, path, context=eu, footer_key=footer, column_keys={pii: ["email"]})
        assert pc.read(path, context=eu)["email"][0] == "a@x.eu"
        LocalKeyring(tmp_path / "ring", master_key=master).destroy(pii)
        with pytest.raises(KeyDestroyedError, match=f"^{pii} v1 is destroyed$"):
            pc.read(path, context=eu, columns=["email"])

    def test_rotation_is_used_by_the_next_write_at_once(self, pring, users, tmp_path, eu):
        """A warm write cache kept wrapping new files under the old version, which a later
        destroy of that version would shred."""
        pc = ParquetCrypto(pring)
        first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
        for path in (first, second):
            if path is second:
                pring.rotate(FOOTER)
                pring.rotate(PII)
            pc.write(users, path, context=eu, footer_key=FOOTER, column_keys={PII: ["email"]},
                     internal_key_material=False)

        def versions(path):
            doc = json.loads(key_material_path(path).read_text())
            return {json.loads(json.loads(v)["wrappedKEK"])["version"] for v in doc.values()}

        assert versions(first) == {1} and versions(second) == {2}
        pring.destroy(FOOTER, 1)
        pring.destroy(PII, 1)
        pd.testing.assert_frame_equal(pc.read(second, context=eu), users, check_dtype=False)
        with pytest.raises(KeyDestroyedError):
            pc.read(first, context=eu)

    def test_the_subscription_does_not_keep_a_parquet_crypto_alive(self, pring):
        import gc
        import weakref

        services = KeyServices([pring])
        pc = ParquetCrypto(services)
        gone = weakref.ref(pc)
        del pc
        gc.collect()
        assert gone() is None
        pring.destroy(FOOTER)  # a dead subscriber is skipped quietly
        assert len(services._changes) == 0

    def test_lifetime_default_and_validation(self, pring):
        from pets.envelope._parquet import DEFAULT_CACHE_LIFETIME_SECONDS

        assert ParquetCrypto(pring)._lifetime == DEFAULT_CACHE_LIFETIME_SECONDS == 60.0
        for bad in (0, -1, float("nan")):
            with pytest.raises(InputError, match="cache_lifetime_seconds must be positive"):
                ParquetCrypto(pring, cache_lifetime_seconds=bad)


class TestAuditedKeyUse:
    """pyarrow's KMS calls are key uses: one event per call, never per row or page."""

    @staticmethod
    def _calls(pring, eu, path, rows, **write):
        """(wraps, cold-read unwraps, warm-read unwraps) for a fresh file of ``rows`` rows."""
        from tests.envelope.conftest import Events

        seen = Events()
        services = KeyServices([pring], audit=seen)
        df = pd.DataFrame({"user_id": range(rows),
                           "email": [f"u{i}@x.eu" for i in range(rows)],
                           "watch_s": [i / 7 for i in range(rows)]})
        ParquetCrypto(services).write(df, path, context=eu, footer_key=FOOTER, column_keys=COLS,
                                      **write)
        wraps = [e for e in seen if e.kind == "key.wrap"]
        seen.clear()
        pc = ParquetCrypto(services)
        assert len(pc.read(path, context=eu)) == rows
        unwraps = [e for e in seen if e.kind == "key.unwrap"]
        assert {e.fields["key"] for e in unwraps} == {FOOTER, PII, METRICS}
        assert {e.fields["purpose"] for e in unwraps + wraps} == {"parquet"}
        assert {e.fields["principal"] for e in unwraps} == {eu.principal}
        seen.clear()
        pc.read(path, context=eu)
        return len(wraps), len(unwraps), len([e for e in seen if e.kind == "key.unwrap"])

    def test_double_wrapping_asks_once_per_master_key_whatever_the_size(self, pring, eu,
                                                                        tmp_path):
        small = self._calls(pring, eu, tmp_path / "s.parquet", 10)
        big = self._calls(pring, eu, tmp_path / "b.parquet", 20_000, row_group_size=1000)
        assert small == big == (3, 3, 0)  # 20 row groups: still one call per master key

    def test_single_wrapping_asks_per_column_chunk_not_per_row(self, pring, eu, tmp_path):
        """pyarrow keeps no data-key cache without double wrapping: every column chunk it opens
        is a KMS call, and each is recorded. More rows in as many row groups: no more calls."""
        small = self._calls(pring, eu, tmp_path / "s.parquet", 10, double_wrapping=False)
        big = self._calls(pring, eu, tmp_path / "b.parquet", 20_000, double_wrapping=False)
        assert small == big and small[2] == small[1]  # the warm read asks again
        chunks = self._calls(pring, eu, tmp_path / "c.parquet", 20_000, double_wrapping=False,
                             row_group_size=1000)
        assert chunks[1] > 10 * small[1]  # grows with row groups: prefer double wrapping

    def test_a_warm_read_after_destroy_is_a_recorded_failure(self, pring, eu, users, tmp_path):
        from tests.envelope.conftest import Events

        seen = Events()
        services = KeyServices([pring], audit=seen)
        pc = ParquetCrypto(services)
        path = tmp_path / "u.parquet"
        pc.write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS)
        pc.read(path, context=eu)
        services.destroy(FOOTER)
        seen.clear()
        with pytest.raises(KeyDestroyedError):
            pc.read(path, context=eu)
        assert [(e.kind, e.fields["key"], e.fields["error"]) for e in seen] == [
            ("key.failed", FOOTER, "KeyDestroyedError")]


class TestWarmEqualsColdProperty:
    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.sampled_from(["rotate", "retire", "destroy", "write"]),
                              st.sampled_from([FOOTER, PII]), st.integers(1, 4)),
                    min_size=1, max_size=8))
    def test_a_warm_read_always_equals_a_cold_read(self, users, eu, tmp_path, sequence):
        """After any sequence of key changes, every file read through the long-lived (warm)
        ParquetCrypto gives what a fresh one gives: the same frame, or the same error."""
        import uuid

        from pets import PetsError
        from pets.keys import MemoryKeyring

        ring = MemoryKeyring()
        for uri in (FOOTER, PII):
            ring.create(uri, jurisdiction="EU")
        services = KeyServices([ring])
        pc = ParquetCrypto(services)

        def outcome(reader, path):
            try:
                return ("ok", reader.read(path, context=eu).to_json())
            except PetsError as exc:
                return (type(exc).__name__, str(exc))

        files = []

        def write():
            path = tmp_path / f"{uuid.uuid4().hex}.parquet"
            try:
                pc.write(users, path, context=eu, footer_key=FOOTER,
                         column_keys={PII: ["email"]})
            except PetsError:
                return  # a destroyed primary version refuses to wrap: nothing written
            files.append(path)

        write()
        for op, uri, n in sequence:
            info = ring.describe(uri)
            live = [v.version for v in info.versions if v.state != "destroyed"]
            if op == "rotate":
                services.rotate(uri)
            elif op == "retire":
                services.retire(uri, min(n, info.primary_version))
            elif op == "destroy" and live:
                services.destroy(uri, live[(n - 1) % len(live)])
            elif op == "write":
                write()
            for path in files:
                assert outcome(pc, path) == outcome(ParquetCrypto(services), path)


class TestAuditFailureFailsClosed:
    def test_an_unrecordable_unwrap_reads_nothing_and_does_not_blame_the_file(self, pring, eu,
                                                                             users, tmp_path):
        """A full disk under the audit log made the read fail as '<file>: cannot read (No space
        left on device)', an InputError about the Parquet file."""
        from pets.keys import AuditHookError
        from tests.envelope.test_envelope import FailingAudit

        path = tmp_path / "u.parquet"
        ParquetCrypto(pring).write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS)
        hook = FailingAudit(OSError(28, "No space left on device"))
        with pytest.raises(AuditHookError, match=r"could not record key\.unwrap of "
                                                 rf"{FOOTER} v1 \(OSError\)$"):
            ParquetCrypto(KeyServices([pring], audit=hook)).read(path, context=eu)
        assert hook.tried == ["key.unwrap"]

    def test_the_parquet_hook_failing_is_not_blamed_on_the_file_either(self, pring, eu, users,
                                                                      tmp_path):
        from pets.keys import AuditHookError
        from tests.envelope.test_envelope import FailingAudit

        path = tmp_path / "u.parquet"
        ParquetCrypto(pring).write(users, path, context=eu, footer_key=FOOTER, column_keys=COLS)
        hook = FailingAudit(OSError(28, "No space left on device"))
        with pytest.raises(AuditHookError, match=r"could not record parquet\.unwrap of "
                                                 rf"{FOOTER} v1 \(OSError\)$"):
            ParquetCrypto(pring, audit=hook).read(path, context=eu)


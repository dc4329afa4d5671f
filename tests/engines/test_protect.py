"""protect() on Dask: the same protected data and manifest as the pandas boundary."""

from __future__ import annotations

from tests.engines.conftest import require_dask

require_dask()

import dataclasses  # noqa: E402

import dask  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from pets import Context, IntegrityError, JurisdictionError, PolicyError  # noqa: E402
from pets.boundary import BoundaryKeys, Policy, ProtectedFrame, SigningKey  # noqa: E402
from pets.boundary import protect as pd_protect  # noqa: E402
from pets.datasets import synthetic_events, synthetic_users  # noqa: E402
from pets.engines import WorkerKeys  # noqa: E402
from pets.engines._protect import QuantileBucket, protect, verify_dataset  # noqa: E402
from pets.envelope import decrypt_columns  # noqa: E402
from pets.keys import KeyServices  # noqa: E402
from pets.pseudo import Bucket  # noqa: E402
from tests.engines.conftest import EVENTS_POLICY, KEK, POLICY  # noqa: E402

EU = Context("EU", principal="etl@eu")


@pytest.fixture(scope="module")
def users() -> pd.DataFrame:
    return synthetic_users(2_500, seed=21)


@pytest.fixture(scope="module")
def bkeys(keyring) -> BoundaryKeys:
    return BoundaryKeys(KeyServices([keyring["ring"]]), SigningKey.generate())


@pytest.fixture(scope="module")
def workers(keyring, bkeys) -> WorkerKeys:
    return WorkerKeys(keyring["config"], KEK, EU, services=bkeys.services)


@pytest.fixture(autouse=True)
def _sync(master_key_env):
    with dask.config.set(scheduler="synchronous"):
        yield


def _decrypted(pf: ProtectedFrame, services: KeyServices) -> pd.DataFrame:
    out = pf.data
    for col in pf.manifest.columns:
        if col.treatment == "encrypt":
            out = decrypt_columns(out, col.header, keys=services, context=EU)
    return out


def assert_same_protection(a: ProtectedFrame, b: ProtectedFrame, services) -> None:
    """Equal data (encrypted columns after decryption) and equal manifest facts."""
    pd.testing.assert_frame_equal(_decrypted(a, services), _decrypted(b, services))
    ma, mb = a.manifest, b.manifest
    assert ma.rows == mb.rows and ma.k_anonymity == mb.k_anonymity
    assert ma.treatments() == mb.treatments()
    for ca, cb in zip(ma.columns, mb.columns, strict=True):
        if ca.treatment == "encrypt" and ca.mode != "deterministic":
            ca, cb = (dataclasses.replace(c, digest="", header=None) for c in (ca, cb))
        elif ca.treatment == "encrypt":
            ca, cb = (dataclasses.replace(c, header=None, digest="") for c in (ca, cb))
        assert ca == cb


class TestProtect:
    def test_same_as_the_pandas_boundary(self, users, bkeys, workers):
        policy = Policy.from_yaml(POLICY)
        expected = pd_protect(users, policy, bkeys, EU)
        got = protect(dd.from_pandas(users, npartitions=4), policy, bkeys, EU,
                      workers=workers, progress=False).compute(progress=False)
        assert got.manifest.k_anonymity["suppressed_rows"] > 0  # suppression was exercised
        assert_same_protection(got, expected, bkeys.services)
        got.manifest.verify(bkeys.public_key).verify_data(got.data)

    def test_date_shift_and_quantile_buckets_match_the_pandas_boundary(self, bkeys, workers):
        events = synthetic_events(4_000, n_users=300, seed=8)
        policy = Policy.from_yaml(EVENTS_POLICY)
        expected = pd_protect(events, policy, bkeys, EU)
        got = protect(dd.from_pandas(events, npartitions=5), policy, bkeys, EU,
                      workers=workers, progress=False).compute(progress=False)
        assert got.data["watch_seconds"].nunique() > 1  # global quantile edges, not per part
        assert_same_protection(got, expected, bkeys.services)

    def test_protect_graph_holds_no_root_domain_or_column_keys(self, users, bkeys, workers):
        import cloudpickle

        from pets.keys import Secret, WrappedKey
        from pets.pseudo import derive_domain_key

        policy = Policy.from_yaml(POLICY)
        lazy = protect(dd.from_pandas(users, npartitions=2), policy, bkeys, EU,
                       workers=workers, progress=False)
        blob = cloudpickle.dumps(dict(lazy.data.__dask_graph__()))
        wrapped = bkeys.root_for(policy.keys["pseudonyms"], context=EU, create=False)
        root = Secret(bkeys.services.unwrap(wrapped, context=EU))
        from pets.pseudo import KeyedHash, Tokenizer  # the keys protect's transforms hold

        secrets = [root.expose()] + [
            derive_domain_key(root, cls.purpose, domain, length=cls.key_length).expose()
            for cls, domain in ((KeyedHash, "users.user_id"), (Tokenizer, "users.email"))]

        assert KeyedHash.from_key(bkeys.services, wrapped, context=EU, domain="users.user_id"
                                  ).worker_ref().domain_key == secrets[1]
        assert Tokenizer.from_key(bkeys.services, wrapped, context=EU, domain="users.email"
                                  ).worker_ref().domain_key == secrets[2]
        for col in ("phone", "postcode"):
            ck = next(c for c in lazy.columns if c["name"] == col)["header"]
            w = ck["columns"][0]["wrapped_keys"][0]
            mode = ck["columns"][0]["mode"]
            secrets.append(bkeys.services.unwrap(
                WrappedKey.from_dict(w), context=EU,
                enc_context={**ck["enc_context"], "pets.column": col,
                             "pets.column_mode": mode}))
        for s in secrets:
            assert s not in blob and s.hex().encode() not in blob

    def test_audit_records_the_run_and_refusals(self, users, bkeys, workers):
        seen = []
        policy = Policy.from_yaml(POLICY)
        lazy = protect(dd.from_pandas(users, npartitions=2), policy, bkeys, EU,
                       workers=workers, audit=seen.append, progress=False)
        assert seen == []  # nothing is protected until data is produced
        pf = lazy.compute(progress=False)
        (event,) = seen
        assert event.kind == "boundary.protect" and event.fields["engine"] == "dask"
        assert event.fields["rows"] == len(pf.data) and event.fields["rows_in"] == len(users)
        with pytest.raises(JurisdictionError):
            protect(dd.from_pandas(users, npartitions=2), policy, bkeys, Context("US"),
                    workers=workers, audit=seen.append)
        assert seen[-1].kind == "boundary.refused"

    def test_refuses_outside_the_home_jurisdiction(self, users, bkeys, workers):
        with pytest.raises(JurisdictionError, match="policy's home EU"):
            protect(dd.from_pandas(users, npartitions=2), Policy.from_yaml(POLICY), bkeys,
                    Context("US"), workers=workers)

    def test_k_anonymity_refusal_without_enforcement(self, users, bkeys, workers):
        policy = Policy.from_yaml(POLICY.replace("enforce_k: true", "enforce_k: false"))
        with pytest.raises(PolicyError, match="k-anonymity of \\(country\\) is"):
            protect(dd.from_pandas(users, npartitions=2), policy, bkeys, EU, workers=workers)

    def test_policy_must_cover_the_columns(self, users, bkeys, workers):
        with pytest.raises(PolicyError, match="no rule for this column"):
            protect(dd.from_pandas(users.assign(extra=1), npartitions=2),
                    Policy.from_yaml(POLICY), bkeys, EU, workers=workers)


class TestWriteDataset:
    def test_parts_are_signed_protected_frames_and_the_dataset_verifies(self, users, bkeys,
                                                                       workers, tmp_path):
        policy = Policy.from_yaml(POLICY)
        lazy = protect(dd.from_pandas(users, npartitions=3), policy, bkeys, EU,
                       workers=workers, progress=False)
        manifest = lazy.write(tmp_path / "out", progress=False)
        files = sorted((tmp_path / "out").glob("part.*.parquet"))
        assert len(files) == 3 and manifest.rows == sum(
            len(ProtectedFrame.read(f).data) for f in files)
        for f in files:
            pf = ProtectedFrame.read(f)
            pf.manifest.verify(bkeys.public_key).verify_data(pf.data)
        assert verify_dataset(tmp_path / "out", bkeys.public_key).rows == manifest.rows
        assert [p.name for p in tmp_path.iterdir()] == ["out"]

    def test_a_missing_or_swapped_part_is_detected(self, users, bkeys, workers, tmp_path):
        lazy = protect(dd.from_pandas(users, npartitions=3), Policy.from_yaml(POLICY), bkeys,
                       EU, workers=workers, progress=False)
        lazy.write(tmp_path / "out", progress=False)
        a, b = tmp_path / "out" / "part.00000.parquet", tmp_path / "out" / "part.00001.parquet"
        a.rename(tmp_path / "x")
        b.rename(a)
        (tmp_path / "x").rename(b)
        with pytest.raises(IntegrityError):
            verify_dataset(tmp_path / "out", bkeys.public_key)
        b.unlink()
        with pytest.raises(IntegrityError):
            verify_dataset(tmp_path / "out", bkeys.public_key)

    def test_signature_by_another_key_is_rejected(self, users, bkeys, workers, tmp_path):
        lazy = protect(dd.from_pandas(users, npartitions=2), Policy.from_yaml(POLICY), bkeys,
                       EU, workers=workers, progress=False)
        lazy.write(tmp_path / "out", progress=False)
        with pytest.raises(IntegrityError):
            verify_dataset(tmp_path / "out", SigningKey.generate().public_key)


class TestQuantileBucket:
    def test_global_edges_give_the_pandas_labels(self):
        x = pd.Series(np.random.default_rng(3).lognormal(3, 1, 5_000))
        x[::97] = np.nan
        expected = Bucket(quantiles=7).apply(x)
        q = np.linspace(0, 1, 8)
        edges = np.unique(np.quantile(x.dropna().to_numpy(), q))
        fitted = QuantileBucket(tuple(edges), 7)
        got = pd.concat([fitted.apply(x.iloc[i:i + 1_000]) for i in range(0, len(x), 1_000)])
        pd.testing.assert_series_equal(got, expected)


EXPORTABLE = POLICY.replace(
    "min_k: 40", "min_k: 40\ndestinations: {pseudonymized: [US], kept: [US]}")


class TestExportGateOnDatasets:
    """The gate on what DaskProtected.write produces (the boundary tests cover each refusal)."""

    @pytest.fixture
    def encrypted(self, users, bkeys, workers, keyring, tmp_path):
        from pets.engines import dask as pets_dask

        lazy = protect(dd.from_pandas(users, npartitions=2), Policy.from_yaml(EXPORTABLE), bkeys,
                       EU, workers=workers, progress=False)
        enc = pets_dask.ParquetEncryption.of(keyring["config"], EU, footer_key=KEK,
                                             column_keys={KEK: ["email"]})
        lazy.write(tmp_path / "enc", encryption=enc, progress=False)
        assert verify_dataset(tmp_path / "enc", bkeys.public_key, encryption=enc).rows > 0
        return tmp_path / "enc"

    def _export(self, src, bkeys, tmp_path):
        from pets.boundary import AuditLog, export

        log = AuditLog(tmp_path / "audit.jsonl", signer=bkeys.signer, actor=EU)
        return log, lambda: export(src, "US", tmp_path / "us", policy=Policy.from_yaml(EXPORTABLE),
                                   keys=bkeys, context=EU, audit=log,
                                   columns=["user_id", "email", "country"])

    def test_modular_encryption_is_refused_clearly(self, encrypted, bkeys, tmp_path):
        from pets import InputError

        log, run = self._export(encrypted, bkeys, tmp_path)
        with pytest.raises(InputError, match="Parquet modular encryption"):
            run()
        assert not (tmp_path / "us").exists()
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]

    def test_hiding_the_encryption_flag_only_fails_verification(self, encrypted, bkeys,
                                                               tmp_path):
        import json

        doc = json.loads((encrypted / "_manifest.json").read_text())
        doc["encrypted"] = False
        (encrypted / "_manifest.json").write_text(json.dumps(doc))
        _, run = self._export(encrypted, bkeys, tmp_path)
        with pytest.raises(IntegrityError, match="dataset does not match its manifest"):
            run()
        assert not (tmp_path / "us").exists()

    def test_an_exported_dataset_verifies_with_the_engine_function_too(self, users, bkeys,
                                                                      workers, tmp_path):
        lazy = protect(dd.from_pandas(users, npartitions=2), Policy.from_yaml(EXPORTABLE), bkeys,
                       EU, workers=workers, progress=False)
        manifest = lazy.write(tmp_path / "plain", progress=False)
        _, run = self._export(tmp_path / "plain", bkeys, tmp_path)
        receipt = run()
        assert receipt.parts == 2 and receipt.rows == manifest.rows
        assert verify_dataset(tmp_path / "us", bkeys.public_key) == manifest

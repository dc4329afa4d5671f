"""The Dask engine on a real 2-process LocalCluster: identical to pandas, no keys in graphs."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import replace
from typing import Any

import pytest

from tests.engines.conftest import KEK, POLICY, require_dask

require_dask()

import cloudpickle  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pets import Context, IntegrityError, JurisdictionError  # noqa: E402
from pets.boundary import BoundaryKeys, Policy, SigningKey  # noqa: E402
from pets.boundary import protect as pd_protect  # noqa: E402
from pets.datasets import synthetic_events, synthetic_users  # noqa: E402
from pets.dp import Budget  # noqa: E402
from pets.engines import KeyRef, WorkerKeys  # noqa: E402
from pets.engines._dask import decrypt_columns, encrypt_columns, transform_columns  # noqa: E402
from pets.engines._dp import BoundingSpec, DaskSession, bounded_aggregates  # noqa: E402
from pets.engines._parquet import ParquetEncryption, read_dataset, write_dataset  # noqa: E402
from pets.engines._protect import protect, verify_dataset  # noqa: E402
from pets.engines._run import run_protect_dask  # noqa: E402
from pets.envelope import decrypt_columns as pd_decrypt  # noqa: E402
from pets.envelope import encrypt_columns as pd_encrypt  # noqa: E402
from pets.keys import KeyServices, Secret  # noqa: E402
from pets.pseudo import DateShift, KeyedHash, PhoneFF1, Tokenizer  # noqa: E402

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def users() -> pd.DataFrame:
    return synthetic_users(3_000, seed=11)


@pytest.fixture(scope="module")
def root() -> Secret:
    return Secret.generate()


@pytest.fixture(scope="module")
def services(keyring) -> KeyServices:
    return KeyServices([keyring["ring"]])


@pytest.fixture(scope="module")
def worker_keys(keyring, services) -> WorkerKeys:
    return WorkerKeys(keyring["config"], KEK, Context("EU", principal="etl@eu"),
                      services=services)


@pytest.fixture(scope="module")
def transforms(root) -> dict[str, Any]:
    return {
        "email": KeyedHash(root, domain="crm.email", casefold=True),
        "user_id": Tokenizer(root, domain="crm.user"),
        "phone": PhoneFF1(root, domain="crm.phone"),
        "signup_ts": DateShift(root, domain="crm.dates", by="user_id", max_days=45),
    }


def _graph_bytes(ddf: Any) -> bytes:
    """What would travel to the scheduler: the (optimized) task graph, pickled."""
    (opt,) = __import__("dask").optimize(ddf)
    return cloudpickle.dumps(dict(ddf.__dask_graph__())) + cloudpickle.dumps(
        dict(opt.__dask_graph__()))


def _digest_of(ref: KeyRef) -> str:
    return hashlib.sha256(ref.resolve().expose()).hexdigest()


class TestPseudonymize:
    def test_identical_to_pandas(self, dask_client, users, transforms, worker_keys):
        ddf = dd.from_pandas(users, npartitions=4)
        out = transform_columns(ddf, transforms, keys=worker_keys)
        assert isinstance(out, dd.DataFrame) and out.npartitions == 4
        got = out.compute()
        expected = users.copy()
        for col, t in transforms.items():
            extra = {"by": users[t.by]} if getattr(t, "by", None) else {}
            expected[col] = t.apply(users[col], **extra)
        pd.testing.assert_frame_equal(got, expected)
        assert dict(out.dtypes) == dict(got.dtypes)  # the declared meta is the real schema

    def test_partitioning_does_not_change_the_result(self, dask_client, users, transforms,
                                                     worker_keys):
        a = transform_columns(dd.from_pandas(users, npartitions=3), transforms, keys=worker_keys)
        b = transform_columns(dd.from_pandas(users, npartitions=7), transforms, keys=worker_keys)
        pd.testing.assert_frame_equal(a.compute(), b.compute())

    def test_keyed_transform_without_key_reference_is_refused(self, users, transforms):
        with pytest.raises(Exception, match="keyed: pass keys=WorkerKeys"):
            transform_columns(dd.from_pandas(users, npartitions=2), transforms)


    def test_quantile_buckets_refuse_an_infinite_value_as_pandas_does(self):
        from pets import InputError
        from pets.pseudo import Bucket

        frame = pd.DataFrame({"x": [1.0, None, 3.0, float("inf"), 5.0]})
        with pytest.raises(InputError) as pandas_error:
            Bucket(quantiles=2).apply(frame["x"])
        with pytest.raises(InputError) as dask_error:
            transform_columns(dd.from_pandas(frame, npartitions=2), {"x": Bucket(quantiles=2)})
        assert str(dask_error.value) == str(pandas_error.value)
        assert "infinite value at position 3" in str(pandas_error.value)


class TestGraphHoldsNoKeys:
    def test_root_and_domain_keys_are_absent_from_the_graph(self, users, transforms,
                                                            worker_keys, root, keyring):
        out = transform_columns(dd.from_pandas(users, npartitions=3), transforms,
                                keys=worker_keys)
        blob = _graph_bytes(out)
        secrets = [root.expose(), keyring["master"]]
        secrets += [t.worker_ref().domain_key for t in transforms.values()]
        for s in secrets:
            assert s not in blob
            assert s.hex().encode() not in blob

    def test_the_inspection_catches_a_leaky_graph(self, users, transforms):
        # Shipping pets.pseudo's own worker_ref() would put the domain key in every task.
        t = transforms["email"]
        leaky = dd.from_pandas(users, npartitions=2).map_partitions(
            lambda df, r: df.assign(email=r.build().apply(df["email"])), t.worker_ref(),
            meta=users.iloc[:0])
        assert t.worker_ref().domain_key in _graph_bytes(leaky)


class TestWorkersResolveThroughTheKeyService:
    def test_worker_unwraps_with_its_own_master_key(self, dask_client, worker_keys):
        secret = Secret.generate()
        ref = worker_keys.ref(secret)
        digests = dask_client.run(_digest_of, ref)  # on every worker process
        assert set(digests.values()) == {hashlib.sha256(secret.expose()).hexdigest()}

    def test_worker_outside_the_jurisdiction_is_refused(self, dask_client, worker_keys):
        ref = replace(worker_keys.ref(Secret.generate()), context=Context("US"))
        # the worker's own environment (EU) and the reference's claim (US) disagree: refused
        # on the worker before the key service is asked (tests/security/
        # test_worker_jurisdiction.py tries a US worker with an EU claim)
        with pytest.raises(JurisdictionError, match="was made for US"):
            dask_client.submit(_digest_of, ref, pure=False).result()


class TestEncryptColumns:
    def test_randomized_and_deterministic_decrypt_to_the_same_plaintext(
            self, dask_client, users, worker_keys, services):
        cols = {"email": "randomized", "postcode": "deterministic"}
        out, header = encrypt_columns(dd.from_pandas(users, npartitions=4), cols,
                                      keys=worker_keys, key_uris=KEK,
                                      enc_context={"table": "users"})
        enc = out.compute()
        assert enc["email"].map(type).eq(bytes).all()
        back = pd_decrypt(enc, header, keys=services, context=worker_keys.context)
        pd.testing.assert_frame_equal(back, users)
        # deterministic cells are exactly what the pandas path makes under the same header
        ref, _ = pd_encrypt(users, {"postcode": "deterministic"}, keys=services, key_uris=KEK,
                            context=worker_keys.context, enc_context={"table": "users"},
                            column_keys=header)
        assert enc["postcode"].tolist() == ref["postcode"].tolist()

    def test_graph_holds_only_wrapped_column_keys(self, users, worker_keys):
        out, header = encrypt_columns(dd.from_pandas(users, npartitions=2), ["email"],
                                      keys=worker_keys, key_uris=KEK)
        blob = _graph_bytes(out)
        dek = worker_keys.services().unwrap(
            header.columns["email"].wrapped_keys[0], context=worker_keys.context,
            enc_context={"pets.column": "email", "pets.column_mode": "randomized"})
        assert dek not in blob

    def test_dask_decrypt_roundtrip_and_tamper(self, dask_client, users, worker_keys):
        out, header = encrypt_columns(dd.from_pandas(users, npartitions=3), ["email", "phone"],
                                      keys=worker_keys, key_uris=KEK)
        back = decrypt_columns(out, header, keys=worker_keys).compute()
        pd.testing.assert_frame_equal(back, users)

        def flip(df: pd.DataFrame) -> pd.DataFrame:
            cells = df["email"].copy()
            cells.iloc[0] = cells.iloc[0][:-1] + bytes([cells.iloc[0][-1] ^ 1])
            return df.assign(email=cells)

        tampered = out.map_partitions(flip, meta=out._meta)
        with pytest.raises(IntegrityError, match="email"):
            decrypt_columns(tampered, header, keys=worker_keys).compute()


class TestParquetModularEncryption:
    def test_encrypted_dataset_roundtrip_on_the_cluster(self, dask_client, users, keyring,
                                                        tmp_path):
        enc = ParquetEncryption.of(keyring["config"], Context("EU", principal="etl@eu"),
                                   footer_key=KEK, column_keys={KEK: ["email", "phone"]})
        n = write_dataset(dd.from_pandas(users, npartitions=3), tmp_path / "ds",
                          encryption=enc, row_group_size=500, progress=False)
        files = sorted((tmp_path / "ds").glob("*.parquet"))
        assert n == len(users) and len(files) == 3
        with pytest.raises(OSError):  # no keys: footer and columns unreadable
            pq.read_table(files[0])
        back = read_dataset(tmp_path / "ds", encryption=enc).compute().reset_index(drop=True)
        expected = users.astype({"birth_date": "datetime64[ms]",
                                 "signup_ts": "datetime64[ms, UTC]"})
        pd.testing.assert_frame_equal(back, expected)

    def test_reading_from_another_jurisdiction_is_refused(self, dask_client, users, keyring,
                                                          tmp_path):
        enc = ParquetEncryption.of(keyring["config"], Context("EU"), footer_key=KEK,
                                   column_keys={KEK: ["email"]})
        write_dataset(dd.from_pandas(users.iloc[:100], npartitions=1), tmp_path / "ds",
                      encryption=enc, progress=False)
        us = replace(enc, context=Context("US", principal="analyst@us"))
        with pytest.raises(JurisdictionError):
            read_dataset(tmp_path / "ds", encryption=us)


def test_key_reference_pickle_is_small_and_key_free(worker_keys):
    ref = worker_keys.ref(Secret(b"s" * 32))
    blob = pickle.dumps(ref)
    assert b"s" * 32 not in blob and len(blob) < 4096


class TestDPOnTheCluster:
    def test_exact_bounded_aggregates_equal_pandas_and_release_spends_once(self, dask_client):
        events = synthetic_events(8_000, n_users=500, seed=2)
        keys = ["DE", "FR", "IT", "ES"]
        spec = BoundingSpec("user_id", ("country",), tuple((k,) for k in keys),
                            (("count",),), 1, 4, seed=7)
        got = bounded_aggregates(dd.from_pandas(events, npartitions=6), spec, progress=False)
        sub = events[events["country"].isin(keys)]
        per_user = sub.groupby(["country", "user_id"]).size().clip(upper=4).groupby(
            "country").sum()
        assert got.vectors[("count",)].tolist() == [int(per_user[k]) for k in keys]
        ds = DaskSession(dd.from_pandas(events, npartitions=6), privacy_unit="user_id",
                         budget=Budget.pure(1.0))
        r = ds.query(by="country", keys=keys, max_rows=4).count().sum(
            "watch_seconds", bounds=(0, 3600)).release(epsilon=0.6, progress=False)
        assert r.to_frame()["country"].tolist() == [k for k in keys for _ in range(2)]
        assert ds.budget.spent.epsilon == pytest.approx(0.6)


class TestProtectOnTheCluster:
    def test_protect_write_with_modular_encryption_and_verify(self, dask_client, users, keyring,
                                                              services, worker_keys, tmp_path,
                                                              master_key_env):
        bkeys = BoundaryKeys(services, SigningKey.generate())
        policy = Policy.from_yaml(POLICY)
        ctx = worker_keys.context
        expected = pd_protect(users, policy, bkeys, ctx)
        lazy = protect(dd.from_pandas(users, npartitions=3), policy, bkeys, ctx,
                       workers=worker_keys, progress=False)
        enc = ParquetEncryption.of(keyring["config"], ctx, footer_key=KEK,
                                   column_keys={KEK: ["email"]})
        manifest = lazy.write(tmp_path / "ds", encryption=enc, progress=False)
        assert manifest.rows == expected.manifest.rows
        assert manifest.k_anonymity == expected.manifest.k_anonymity
        with pytest.raises(OSError):
            pq.read_table(tmp_path / "ds" / "part.00000.parquet")
        assert verify_dataset(tmp_path / "ds", bkeys.public_key, encryption=enc).rows == \
            expected.manifest.rows

    def test_run_protect_dask_on_an_existing_client(self, dask_client, users, keyring,
                                                    services, tmp_path):
        bkeys = BoundaryKeys(services, SigningKey.generate())
        write_dataset(dd.from_pandas(users, npartitions=4), tmp_path / "raw", progress=False)
        summary = run_protect_dask(tmp_path / "raw", Policy.from_yaml(POLICY), tmp_path / "out",
                                   workers=2, keys=bkeys, key_source=keyring["config"],
                                   context=Context("EU", principal="etl@eu"),
                                   client=dask_client, progress=False)
        assert summary["parts"] == 4 and summary["workers"] == 2
        assert (tmp_path / "out" / "manifest.json").exists()
        assert verify_dataset(tmp_path / "out" / "users", bkeys.public_key).rows == \
            summary["rows"]


class TestRunProtectDaskOwnCluster:
    def test_starts_and_stops_its_own_local_cluster(self, users, keyring, services, tmp_path,
                                                    master_key_env):
        bkeys = BoundaryKeys(services, SigningKey.generate())
        users.to_parquet(tmp_path / "raw.parquet", index=False)
        enc = {KEK: ["user_id"]}
        summary = run_protect_dask(tmp_path / "raw.parquet", Policy.from_yaml(POLICY),
                                   tmp_path / "out", workers=1, keys=bkeys,
                                   key_source=keyring["config"], context=Context("EU"),
                                   parquet_encryption=enc, footer_key=KEK, progress=False)
        assert summary["workers"] == 1 and summary["parquet_encryption"] is True
        assert (tmp_path / "out" / "signing-key.pub.pem").read_bytes() == \
            bkeys.signer.public_pem()
        with pytest.raises(OSError):  # modular encryption: unreadable without the keys
            pq.read_table(next((tmp_path / "out" / "users").glob("part.*.parquet")))

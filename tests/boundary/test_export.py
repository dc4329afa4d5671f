"""The export gate: each refusal writes nothing and is an incident; exports are recorded."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pets import Context, InputError, IntegrityError, JurisdictionError, PolicyError
from pets.boundary import (
    BoundaryKeys,
    Policy,
    ProtectedFrame,
    SigningKey,
    export,
    flows,
    incidents,
    protect,
    read_protected,
    verify_log,
)
from pets.boundary._manifest import MANIFEST_KEY

SAFE = ["user_id", "email", "country", "minutes"]


@pytest.fixture
def pf(raw, policy, keys, eu_ctx):
    return protect(raw, policy, keys, eu_ctx)


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "us"
    d.mkdir()
    return d


def _refused(log, out, exc_type, match, fn):
    before = len(log.entries())
    with pytest.raises(exc_type, match=match):
        fn()
    assert list(out.iterdir()) == [], "a refused export wrote something"
    new = log.entries()[before:]
    assert [e["kind"] for e in new] == ["boundary.refused"]
    assert list(incidents(log.entries())["kind"])[-1] == "boundary.refused"
    return new[0]


class TestExportAllowed:
    def test_selected_columns_leave_and_are_recorded(self, pf, policy, signer, eu_ctx, log,
                                                     out, keys):
        dest = out / "users.parquet"
        receipt = export(pf, "US", dest, policy=policy, keys=keys,
                         context=eu_ctx, audit=log, columns=SAFE)
        assert receipt.columns == tuple(SAFE) and receipt.rows == 12
        assert receipt.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
        # the receiver verifies with the public key alone
        got, record = read_protected(dest, signer.public_key.public_bytes(
            *_pem_args()))
        assert list(got.data.columns) == SAFE and record["destination"] == "US"
        assert got.data["user_id"].tolist() == pf.data["user_id"].tolist()
        entry = log.entries()[-1]
        assert entry["kind"] == "boundary.export"
        f = entry["fields"]
        assert (f["destination"], f["rows"], f["digest"], f["columns"]) == (
            "US", 12, receipt.sha256, SAFE)
        assert f["treatments"] == {"user_id": "keyed-hash", "email": "token",
                                   "country": "keep", "minutes": "keep"}
        table = flows(log.entries())
        assert table.loc[0, "protection"].startswith("user_id:keyed-hash, email:token")
        assert verify_log(log.path, signer.public_key).ok

    def test_export_from_a_protected_file(self, pf, policy, signer, eu_ctx, log, tmp_path,
                                          out, keys):
        src = pf.write(tmp_path / "protected.parquet")
        export(src, "US", out / "u.parquet", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        assert (out / "u.parquet").exists()


class TestExportRefused:
    def test_raw_frame(self, raw, policy, signer, eu_ctx, log, out, keys):
        e = _refused(log, out, PolicyError, "raw data cannot be exported", lambda: export(
            raw, "US", out / "x.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log))
        assert e["fields"]["destination"] == "US" and e["fields"]["target"] == "DataFrame"

    def test_raw_file_without_manifest(self, raw, policy, signer, eu_ctx, log, out, tmp_path, keys):
        src = tmp_path / "raw.parquet"
        raw.to_parquet(src)
        _refused(log, out, IntegrityError, "no pets manifest", lambda: export(
            src, "US", out / "x.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log))

    def test_encrypted_column_may_not_leave(self, pf, policy, signer, eu_ctx, log, out, keys):
        e = _refused(log, out, PolicyError, r"keeps these columns from US: phone \(encrypted\)",
                     lambda: export(pf, "US", out / "x.parquet", policy=policy,
                                    keys=keys, context=eu_ctx, audit=log))
        assert "phone" in e["fields"]["reason"]

    def test_wrong_destination(self, pf, policy, signer, eu_ctx, log, out, keys):
        _refused(log, out, PolicyError, "keeps these columns from SG: user_id", lambda: export(
            pf, "SG", out / "x.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_tampered_manifest(self, pf, policy, signer, eu_ctx, log, out, keys):
        cols = tuple(dataclasses.replace(c, output="kept") if c.name == "phone" else c
                     for c in pf.manifest.columns)
        forged = ProtectedFrame(pf.data, dataclasses.replace(pf.manifest, columns=cols))
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            forged, "US", out / "x.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log))

    def test_tampered_manifest_in_file(self, pf, policy, signer, eu_ctx, log, out, tmp_path, keys):
        src = pf.write(tmp_path / "p.parquet")
        table = pq.read_table(src)
        doc = json.loads(table.schema.metadata[MANIFEST_KEY])
        for c in doc["columns"]:
            c["output"] = "kept"
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, MANIFEST_KEY: json.dumps(doc).encode()}), src)
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            src, "US", out / "x.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log))

    def test_file_with_broken_pandas_metadata(self, pf, policy, signer, eu_ctx, log, out,
                                              tmp_path, keys):
        src = pf.write(tmp_path / "p.parquet")
        table = pq.read_table(src)
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, b"pandas": b"{broken"}), src)
        _refused(log, out, IntegrityError, "data does not match its manifest", lambda: export(
            src, "US", out / "x.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_wrong_signature(self, pf, policy, signer, eu_ctx, log, out, keys):
        mallory = SigningKey.generate()
        resigned = ProtectedFrame(pf.data, pf.manifest.sign(mallory))
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            resigned, "US", out / "x.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_tampered_data(self, pf, policy, signer, eu_ctx, log, out, keys):
        data = pf.data.copy()
        data.loc[0, "minutes"] = 999.0
        _refused(log, out, IntegrityError, "data does not match its manifest", lambda: export(
            ProtectedFrame(data, pf.manifest), "US", out / "x.parquet", policy=policy,
            keys=keys, context=eu_ctx, audit=log, columns=SAFE))

    def test_raw_column_swapped_in(self, raw, pf, policy, signer, eu_ctx, log, out, keys):
        data = pf.data.assign(email=raw["email"])
        _refused(log, out, IntegrityError, "data does not match", lambda: export(
            ProtectedFrame(data, pf.manifest), "US", out / "x.parquet", policy=policy,
            keys=keys, context=eu_ctx, audit=log, columns=SAFE))

    def test_another_policy(self, pf, signer, eu_ctx, log, out, keys):
        from tests.boundary.conftest import POLICY

        loose = Policy.from_yaml(POLICY.replace("encrypted: []", "encrypted: [US]"))
        _refused(log, out, PolicyError, "protected under another policy", lambda: export(
            pf, "US", out / "x.parquet", policy=loose, keys=keys,
            context=eu_ctx, audit=log))

    def test_gate_runs_only_at_home(self, pf, policy, signer, us_ctx, log, out, keys):
        e = _refused(log, out, JurisdictionError, "exports leave from the policy's home EU",
                     lambda: export(pf, "US", out / "x.parquet", policy=policy,
                                    keys=keys, context=us_ctx, audit=log,
                                    columns=SAFE))
        assert e["actor"] == "analyst@US"

    def test_other_objects(self, policy, signer, eu_ctx, log, out, keys):
        _refused(log, out, PolicyError, "cannot export a dict", lambda: export(
            {"a": 1}, "US", out / "x.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log))

    def test_existing_destination_is_untouched_on_refusal(self, raw, policy, signer, eu_ctx,
                                                          log, out, keys):
        dest = out / "x.parquet"
        dest.write_bytes(b"previous")
        with pytest.raises(InputError, match="exists and is not an earlier export"):
            export(raw, "US", dest, policy=policy, keys=keys,
                   context=eu_ctx, audit=log)
        assert dest.read_bytes() == b"previous" and sorted(out.iterdir()) == [dest]


class TestExportRelease:
    def test_dp_release_leaves_with_its_budget(self, raw, policy, signer, eu_ctx, log, out, keys):
        dp = pytest.importorskip("pets.dp")
        session = dp.Session(raw.assign(user_id=raw["user_id"].astype(str)),
                             privacy_unit="user_id", budget=dp.Budget.pure(1.0),
                             ledger=dp.Ledger(out.parent / "ledger.sqlite"), dataset_id="users")
        release = session.query(by="country", keys=["DE", "FR", "IT"]).count().release(
            epsilon=0.5)
        receipt = export(release, "BR", out / "r.parquet", policy=policy,
                         keys=keys, context=eu_ctx, audit=log, ledger=session.ledger)
        assert receipt.output == "dp_release"
        back = pd.read_parquet(out / "r.parquet")
        assert len(back) == 3 and "estimate" in back.columns
        row = flows(log.entries()).iloc[-1]
        assert row["output"] == "dp_release" and row["epsilon"] == 0.5
        assert row["destination"] == "BR"

    def test_dp_release_to_a_closed_destination(self, raw, signer, eu_ctx, log, out, keys):
        dp = pytest.importorskip("pets.dp")
        from tests.boundary.conftest import POLICY

        closed = Policy.from_yaml(POLICY.replace('dp_release: ["*"]', "dp_release: [SG]"))
        session = dp.Session(raw.assign(user_id=raw["user_id"].astype(str)),
                             privacy_unit="user_id", budget=dp.Budget.pure(1.0))
        release = session.query().count().release(epsilon=0.5)
        _refused(log, out, PolicyError, "does not let DP releases go to US", lambda: export(
            release, "US", out / "r.parquet", policy=closed, keys=keys,
            context=Context("EU"), audit=log))


def _pem_args():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


class TestExportWriteFailure:
    def test_unwritable_destination_is_an_input_error_and_recorded(self, pf, policy, signer,
                                                                   eu_ctx, log, out, keys):
        from pets import InputError

        (out / "taken").mkdir()
        with pytest.raises(InputError, match="cannot write"):
            export(pf, "US", out / "taken", policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]
        assert sorted(p.name for p in out.iterdir()) == ["taken"]


class TestExportAllowedColumns:
    def test_allowed_picks_exactly_what_may_go(self, pf, policy, signer, eu_ctx, log, out, keys):
        r = export(pf, "US", out / "u.parquet", policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns="allowed")
        assert list(r.columns) == SAFE
        assert log.entries()[-1]["fields"]["columns"] == SAFE

    def test_allowed_with_nothing_allowed_is_refused(self, pf, policy, signer, eu_ctx, log,
                                                     out, keys):
        _refused(log, out, PolicyError, "lets no column of 'users' go to BR", lambda: export(
            pf, "BR", out / "u.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns="allowed"))


# -- protected datasets (pets protect --engine dask) ---------------------------------------------

def _dask_dataset(raw, policy, keys, dest, *, npartitions=3):
    """A protected dataset written by the Dask engine (synchronous scheduler, in-process keys)."""
    from tests.conftest import require_service
    from tests.engines.conftest import DASK, HAVE_DASK

    require_service(HAVE_DASK, DASK)
    import dask
    import dask.dataframe as dd

    from pets.engines import InProcessKeys, WorkerKeys
    from pets.engines.dask import protect as dask_protect

    eu = Context("EU", principal="etl")
    workers = WorkerKeys(InProcessKeys(keys.services), "memory://eu/kek", eu,
                         services=keys.services)
    with dask.config.set(scheduler="synchronous"):
        lazy = dask_protect(dd.from_pandas(raw, npartitions=npartitions), policy, keys, eu,
                            workers=workers, progress=False)
        lazy.write(dest, progress=False)
    return dest


def _frames(directory):
    parts = sorted(directory.glob("part.*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


@pytest.fixture
def big_raw(raw):
    return pd.concat([raw] * 5, ignore_index=True).assign(
        user_id=pd.array([f"u{i:03d}" for i in range(60)], dtype="string"),
        minutes=[float(i) for i in range(60)])


@pytest.fixture
def dataset(big_raw, policy, keys, tmp_path):
    return _dask_dataset(big_raw, policy, keys, tmp_path / "protected" / "users")


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


class TestExportDataset:
    def test_allowed_columns_leave_part_by_part_and_verify_at_the_receiver(
            self, dataset, policy, signer, eu_ctx, log, out, keys):
        from pets.boundary._dataset import files_digest, read_index, verify_dataset

        dest = out / "users"
        receipt = export(dataset, "US", dest, policy=policy, keys=keys,
                         context=eu_ctx, audit=log, columns="allowed")
        assert receipt.columns == tuple(SAFE) and receipt.rows == 60 and receipt.parts == 3
        names = sorted(p.name for p in dest.iterdir())
        assert names == ["_manifest.json", "part.00000.parquet", "part.00001.parquet",
                         "part.00002.parquet"]
        # every part: the selected columns, the original signed part manifest, the record
        for part in sorted(dest.glob("part.*.parquet")):
            got, record = read_protected(part, signer.public_key)
            assert list(got.data.columns) == SAFE
            assert record["destination"] == "US" and record["columns"] == SAFE
            assert record["exported_by"] == "etl@EU"
            assert got.manifest.to_dict() == ProtectedFrame.read(
                dataset / part.name).manifest.to_dict()
        # the receiver needs only the public key (PEM) to check every file
        pem = signer.public_key.public_bytes(*_pem_args())
        manifest = verify_dataset(dest, pem)
        assert manifest.to_dict() == read_index(dataset).manifest.to_dict()
        assert read_index(dest).export["columns"] == SAFE
        pd.testing.assert_frame_equal(_frames(dest), _frames(dataset)[SAFE])
        # one audit entry, with a digest over every file that left
        entry = log.entries()[-1]
        f = entry["fields"]
        assert entry["kind"] == "boundary.export" and entry["seq"] == receipt.audit_seq
        assert (f["destination"], f["rows"], f["parts"], f["columns"], f["path"]) == (
            "US", 60, 3, SAFE, str(dest))
        files = {n: hashlib.sha256((dest / n).read_bytes()).hexdigest() for n in names}
        assert f["digest"] == receipt.sha256 == files_digest(files)
        assert [e["kind"] for e in log.entries()] == ["boundary.export"]
        assert verify_log(log.path, signer.public_key).ok
        assert flows(log.entries()).loc[0, "rows"] == 60

    def test_one_part_in_memory_at_a_time(self, dataset, policy, signer, eu_ctx, log, out,
                                          monkeypatch, keys):
        import gc
        import weakref

        from pets.boundary import Manifest

        seen: list[weakref.ref] = []
        alive_before: list[int] = []
        check = Manifest.verify_data

        def spy(self, frame, **kw):
            gc.collect()
            alive_before.append(sum(r() is not None for r in seen))
            seen.append(weakref.ref(frame))
            return check(self, frame, **kw)

        monkeypatch.setattr(Manifest, "verify_data", spy)
        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        assert alive_before == [0, 0, 0]  # each part's values are gone before the next read

    def test_the_recorded_digest_is_what_sha256sum_gives(self, dataset, policy, signer,
                                                         eu_ctx, log, out, keys):
        import shutil
        import subprocess

        if shutil.which("sha256sum") is None or shutil.which("sh") is None:
            pytest.skip("coreutils sha256sum not installed")
        receipt = export(dataset, "US", out / "users", policy=policy,
                         keys=keys, context=eu_ctx, audit=log, columns=SAFE)
        done = subprocess.run(["sh", "-c", "LC_ALL=C sha256sum * | sha256sum"],
                              cwd=out / "users", capture_output=True, text=True, check=True)
        assert done.stdout.split()[0] == receipt.sha256

    def test_an_earlier_export_is_replaced_whole(self, dataset, policy, signer, eu_ctx, log,
                                                 out, keys):
        dest = out / "users"
        export(dataset, "US", dest, policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        r = export(dataset, "US", dest, policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=["user_id"])
        assert r.columns == ("user_id",)
        assert list(pq.read_table(dest / "part.00000.parquet").column_names) == ["user_id"]
        assert sorted(p.name for p in out.iterdir()) == ["users"]  # no temp dirs left

    def test_same_rows_and_columns_as_exporting_the_pandas_file(self, dataset, policy,
                                                                 signer, eu_ctx, log, out, keys):
        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        whole = _frames(dataset)
        assert len(_frames(out / "users")) == len(whole) == 60
        assert "phone" not in _frames(out / "users").columns


class TestExportDatasetRefused:
    def test_outside_the_home(self, dataset, policy, signer, us_ctx, log, out, keys):
        e = _refused(log, out, JurisdictionError, "exports leave from the policy's home EU",
                     lambda: export(dataset, "US", out / "users", policy=policy,
                                    keys=keys, context=us_ctx, audit=log,
                                    columns=SAFE))
        assert e["fields"]["target"] == str(dataset)

    def test_raw_directory_without_dataset_manifest(self, big_raw, policy, signer, eu_ctx, log,
                                                    out, tmp_path, keys):
        raw_dir = tmp_path / "raw"
        raw_dir.mkdir()
        for i in range(3):
            big_raw.iloc[i * 20:(i + 1) * 20].to_parquet(raw_dir / f"part.{i:05d}.parquet")
        _refused(log, out, IntegrityError, "no pets dataset manifest", lambda: export(
            raw_dir, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_unsigned_dataset_manifest(self, dataset, policy, signer, eu_ctx, log, out, keys):
        doc = json.loads((dataset / "_manifest.json").read_text())
        doc["manifest"]["signature"] = None
        (dataset / "_manifest.json").write_text(json.dumps(doc))
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_signed_by_another_key(self, dataset, policy, eu_ctx, log, out, services):
        other = BoundaryKeys(services, SigningKey.generate())
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=other, context=eu_ctx,
            audit=log, columns=SAFE))

    def test_flipped_byte_in_a_value_of_one_part(self, dataset, policy, signer, eu_ctx, log,
                                                 out, keys):
        import struct

        part = dataset / "part.00001.parquet"
        table = pq.read_table(part)
        pq.write_table(table, part, compression="none", use_dictionary=False,
                       write_statistics=False)  # each value once, in its page
        export(dataset, "US", out.parent / "ok", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)  # rewritten, same values: still fine
        value = table.column("minutes")[7].as_py()
        offset = part.read_bytes().index(struct.pack("<d", value))
        _flip(part, offset + 3)
        assert pq.read_table(part).column("minutes")[7].as_py() != value
        _refused(log, out, IntegrityError, "^data does not match its manifest$",
                 lambda: export(dataset, "US", out / "users", policy=policy,
                                keys=keys, context=eu_ctx, audit=log,
                                columns=SAFE))

    @pytest.mark.parametrize(("where", "match"), [
        (-1, "dataset does not match its manifest"),     # trailing magic number
        (-8, "dataset does not match its manifest"),     # footer length
        (-9, "dataset does not match its manifest"),     # end of the footer
    ])
    def test_flipped_byte_in_the_footer(self, dataset, policy, signer, eu_ctx, log, out,
                                        where, match, keys):
        part = dataset / "part.00002.parquet"
        _flip(part, where % part.stat().st_size)
        _refused(log, out, IntegrityError, match, lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_edited_part_manifest(self, dataset, policy, signer, eu_ctx, log, out, keys):
        part = dataset / "part.00001.parquet"
        table = pq.read_table(part)
        doc = json.loads(table.schema.metadata[MANIFEST_KEY])
        for c in doc["columns"]:
            c["output"] = "kept"
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, MANIFEST_KEY: json.dumps(doc).encode()}), part)
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log))

    def test_a_flip_that_changes_no_value_is_harmless(self, dataset, policy, signer, eu_ctx,
                                                      log, out, keys):
        # Digests cover values, not file bytes: the leading magic number is not read, and the
        # gate writes every exported file anew from verified values.
        _flip(dataset / "part.00002.parquet", 0)
        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        assert (out / "users" / "part.00002.parquet").read_bytes()[:4] == b"PAR1"

    def test_removed_part(self, dataset, policy, signer, eu_ctx, log, out, keys):
        (dataset / "part.00001.parquet").unlink()
        _refused(log, out, IntegrityError, "dataset does not match its manifest", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_removed_part_and_its_listing(self, dataset, policy, signer, eu_ctx, log, out, keys):
        (dataset / "part.00002.parquet").unlink()
        doc = json.loads((dataset / "_manifest.json").read_text())
        doc["parts"] = doc["parts"][:2]
        (dataset / "_manifest.json").write_text(json.dumps(doc))
        _refused(log, out, IntegrityError, "dataset does not match its manifest", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_added_part(self, dataset, policy, signer, eu_ctx, log, out, keys):
        import shutil

        shutil.copy(dataset / "part.00001.parquet", dataset / "part.00003.parquet")
        _refused(log, out, IntegrityError, "dataset does not match its manifest", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_added_part_with_its_listing(self, dataset, policy, signer, eu_ctx, log, out, keys):
        import shutil

        shutil.copy(dataset / "part.00001.parquet", dataset / "part.00003.parquet")
        doc = json.loads((dataset / "_manifest.json").read_text())
        doc["parts"].append({"file": "part.00003.parquet", "rows": doc["parts"][1]["rows"]})
        (dataset / "_manifest.json").write_text(json.dumps(doc))
        _refused(log, out, IntegrityError, "dataset does not match its manifest", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_reordered_parts(self, dataset, policy, signer, eu_ctx, log, out, keys):
        a, b = dataset / "part.00000.parquet", dataset / "part.00001.parquet"
        a.rename(dataset / "x")
        b.rename(a)
        (dataset / "x").rename(b)
        _refused(log, out, IntegrityError, "dataset does not match its manifest", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_part_from_another_run_swapped_in(self, big_raw, dataset, policy, keys, signer,
                                              eu_ctx, log, out, tmp_path):
        other = _dask_dataset(big_raw.assign(minutes=big_raw["minutes"] + 1), policy, keys,
                              tmp_path / "other")
        name = "part.00001.parquet"
        (dataset / name).write_bytes((other / name).read_bytes())
        read_protected_ok = ProtectedFrame.read(dataset / name)  # a valid file on its own
        read_protected_ok.manifest.verify(signer.public_key).verify_data(read_protected_ok.data)
        _refused(log, out, IntegrityError, "dataset does not match its manifest", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_another_policy(self, dataset, signer, eu_ctx, log, out, keys):
        from tests.boundary.conftest import POLICY

        loose = Policy.from_yaml(POLICY.replace("encrypted: []", "encrypted: [US]"))
        _refused(log, out, PolicyError, "protected under another policy", lambda: export(
            dataset, "US", out / "users", policy=loose, keys=keys,
            context=eu_ctx, audit=log))

    def test_integrity_is_checked_before_the_policy_as_for_a_file(self, dataset, signer,
                                                                  eu_ctx, log, out, keys):
        from tests.boundary.conftest import POLICY

        part = dataset / "part.00000.parquet"
        table = pq.read_table(part)
        minutes = table.column("minutes").to_pylist()
        minutes[0] += 1.0
        import pyarrow as pa

        pq.write_table(table.set_column(table.schema.get_field_index("minutes"), "minutes",
                                        pa.array(minutes)), part)
        loose = Policy.from_yaml(POLICY.replace("encrypted: []", "encrypted: [US]"))
        _refused(log, out, IntegrityError, "data does not match its manifest", lambda: export(
            dataset, "US", out / "users", policy=loose, keys=keys,
            context=eu_ctx, audit=log))

    def test_a_column_the_policy_keeps_home(self, dataset, policy, signer, eu_ctx, log, out, keys):
        e = _refused(log, out, PolicyError, r"keeps these columns from US: phone \(encrypted\)",
                     lambda: export(dataset, "US", out / "users", policy=policy,
                                    keys=keys, context=eu_ctx, audit=log))
        assert "phone" in e["fields"]["reason"]

    def test_parquet_modular_encryption_is_refused_clearly(self, dataset, policy, signer,
                                                           eu_ctx, log, out, keys):
        doc = json.loads((dataset / "_manifest.json").read_text())
        doc["encrypted"] = True
        (dataset / "_manifest.json").write_text(json.dumps(doc))
        from pets import InputError

        _refused(log, out, InputError, "Parquet modular encryption", lambda: export(
            dataset, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_an_export_is_not_exported_again(self, dataset, policy, signer, eu_ctx, log, out,
                                             tmp_path, keys):
        from pets import InputError

        first = tmp_path / "first"
        export(dataset, "US", first, policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        _refused(log, out, InputError, "already exported", lambda: export(
            first, "US", out / "users", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_an_existing_directory_is_not_replaced(self, dataset, policy, signer, eu_ctx, log,
                                                   out, keys):
        from pets import InputError

        (out / "users").mkdir()
        (out / "users" / "notes.txt").write_text("keep me")
        with pytest.raises(InputError, match="not an earlier export"):
            export(dataset, "US", out / "users", policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert (out / "users" / "notes.txt").read_text() == "keep me"
        assert sorted(p.name for p in out.iterdir()) == ["users"]
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]

    def test_nothing_is_written_into_the_source(self, dataset, policy, signer, eu_ctx, log, keys):
        from pets import InputError

        before = sorted(p.name for p in dataset.iterdir())
        with pytest.raises(InputError, match="into or over its source"):
            export(dataset, "US", dataset / "us", policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert sorted(p.name for p in dataset.iterdir()) == before


# -- adversarial review: what the gate copies besides the signed values --------------------------

def _smuggle(part, secret):
    """Rewrite a protected part so its values stay as signed but its footer carries ``secret``:
    in ``DataFrame.attrs`` (pandas metadata) and as unused categories of a kept column."""
    table = pq.read_table(part)
    frame = table.to_pandas()
    frame.attrs["smuggled"] = secret
    used = sorted(set(frame["country"].dropna()))
    frame["country"] = pd.Categorical(frame["country"], categories=used + [
        f"RAW:{s}" for s in secret])
    out = pa_table_from(frame)
    pq.write_table(out.replace_schema_metadata(
        {**out.schema.metadata, MANIFEST_KEY: table.schema.metadata[MANIFEST_KEY]}), part)


def pa_table_from(frame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def _carried(path, secret):
    """Whether anything of ``secret`` reaches a reader of ``path`` (attrs or categories)."""
    got = pq.read_table(path).to_pandas()
    text = json.dumps(got.attrs, default=str) + " ".join(
        str(c) for col in got.columns if isinstance(got[col].dtype, pd.CategoricalDtype)
        for c in got[col].cat.categories)
    return any(s in text for s in secret)


class TestExportCarriesOnlySignedValues:
    """The signature covers values; whatever else a reader restores must not leave."""

    def test_dataset_part_footer_smuggling_does_not_leave(self, dataset, big_raw, policy,
                                                          signer, eu_ctx, log, out, keys):
        from pets.boundary._dataset import verify_dataset

        secret = big_raw["phone"].tolist()[:5]
        _smuggle(dataset / "part.00001.parquet", secret)
        verify_dataset(dataset, signer.public_key)  # values unchanged: the source verifies
        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        for part in sorted((out / "users").glob("part.*.parquet")):
            assert not _carried(part, secret), part.name
            assert not any(s.encode() in part.read_bytes() for s in secret)
        got = pq.read_table(out / "users" / "part.00001.parquet").to_pandas()
        assert got.attrs == {}
        assert list(got["country"].cat.categories) == list(pd.unique(got["country"]))
        verify_dataset(out / "users", signer.public_key)

    def test_file_footer_smuggling_does_not_leave(self, pf, raw, policy, signer, eu_ctx, log,
                                                  out, tmp_path, keys):
        src = pf.write(tmp_path / "p.parquet")
        secret = raw["phone"].tolist()[:5]
        _smuggle(src, secret)
        export(src, "US", out / "u.parquet", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        assert not _carried(out / "u.parquet", secret)
        read_protected(out / "u.parquet", signer.public_key)

    def test_attrs_of_an_in_memory_frame_do_not_leave(self, pf, raw, policy, signer, eu_ctx,
                                                      log, out, keys):
        data = pf.data.copy()
        data.attrs["note"] = raw["phone"].tolist()
        export(ProtectedFrame(data, pf.manifest), "US", out / "u.parquet", policy=policy,
               keys=keys, context=eu_ctx, audit=log, columns=SAFE)
        assert pq.read_table(out / "u.parquet").to_pandas().attrs == {}

    def test_ordered_categories_keep_their_order_without_unused_ones(self, pf, policy,
                                                                     signer, eu_ctx, log, out, keys):
        data = pf.data.copy()
        data["country"] = pd.Categorical(data["country"], categories=["IT", "XX", "FR", "DE"],
                                         ordered=True)
        manifest = pf.manifest  # digests cover values: categories are not signed
        export(ProtectedFrame(data, manifest), "US", out / "u.parquet", policy=policy,
               keys=keys, context=eu_ctx, audit=log, columns=SAFE)
        got = pq.read_table(out / "u.parquet").to_pandas()["country"]
        assert got.cat.ordered and list(got.cat.categories) == ["IT", "FR", "DE"]


class TestExportDatasetDirectoryRefused:
    """The gate refuses a source directory holding anything but its listed regular parts."""

    @pytest.mark.parametrize("attack", ["trailing space", "hidden file", "upper-case suffix",
                                        "sub-directory", "symlinked part",
                                        "symlinked _manifest.json", "fifo part",
                                        "renamed part", "part listed twice",
                                        "part duplicated under another name",
                                        "truncated part", "bytes appended to a part"])
    def test_refused_and_recorded(self, dataset, policy, signer, eu_ctx, log, out, tmp_path,
                                  attack, keys):
        from tests.boundary.test_dataset import TAMPERED_DIRECTORY

        TAMPERED_DIRECTORY[attack](dataset, tmp_path)
        _refused(log, out, IntegrityError, "^dataset does not match its manifest$",
                 lambda: export(dataset, "US", out / "users", policy=policy,
                                keys=keys, context=eu_ctx, audit=log,
                                columns=SAFE))


# -- adversarial review: the audit trail says exactly what left ----------------------------------

def _failing_rename(monkeypatch, target):
    """``os.replace`` fails (no space left) for the rename that publishes ``target``."""
    import errno
    import os

    real = os.replace

    def replace(src, dst, **kw):
        if os.fspath(dst) == os.fspath(target) and ".tmp" in os.fspath(src):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, **kw)

    monkeypatch.setattr(os, "replace", replace)


def _failing_export_entry(monkeypatch, log):
    real = log.append

    def append(kind, **fields):
        if kind == "boundary.export":
            raise OSError(28, "No space left on device")
        return real(kind, **fields)

    monkeypatch.setattr(log, "append", append)


class TestAuditMatchesWhatLeft:
    @pytest.mark.parametrize("kind", ["file", "dataset"])
    def test_a_failed_rename_records_no_export(self, kind, pf, dataset, policy, signer,
                                               eu_ctx, log, out, monkeypatch, keys):
        from pets import InputError

        src, dest = (pf, out / "u.parquet") if kind == "file" else (dataset, out / "users")
        _failing_rename(monkeypatch, dest)
        e = _refused(log, out, InputError, "cannot write", lambda: export(
            src, "US", dest, policy=policy, keys=keys, context=eu_ctx,
            audit=log, columns=SAFE))
        assert "No space left" in e["fields"]["reason"]

    @pytest.mark.parametrize("kind", ["file", "dataset"])
    def test_an_export_that_cannot_be_recorded_leaves_nothing_and_keeps_the_earlier_one(
            self, kind, pf, dataset, policy, signer, eu_ctx, log, out, monkeypatch, keys):
        src, dest = (pf, out / "u.parquet") if kind == "file" else (dataset, out / "users")
        export(src, "US", dest, policy=policy, keys=keys, context=eu_ctx,
               audit=log, columns=SAFE)
        before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        _failing_export_entry(monkeypatch, log)
        with pytest.raises(_pets_error(), match=r"audit log cannot record it \(No space left"):
            export(src, "US", dest, policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=["user_id"])
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before  # the earlier export, whole; no temp files
        assert [e["kind"] for e in log.entries()] == ["boundary.export", "boundary.refused"]

    def test_an_export_that_cannot_be_recorded_leaves_no_new_output(
            self, dataset, policy, signer, eu_ctx, log, out, monkeypatch, keys):
        _failing_export_entry(monkeypatch, log)
        with pytest.raises(_pets_error(), match=r"audit log cannot record it \(No space left"):
            export(dataset, "US", out / "users", policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert list(out.iterdir()) == []
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]

    @pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"),
                                       KeyError("x")])
    def test_every_failure_is_recorded(self, error, dataset, policy, signer, eu_ctx, log, out,
                                       monkeypatch, keys):
        import pets.boundary._export as gate

        def boom(*a, **k):
            raise error

        monkeypatch.setattr(gate, "_file_sha256", boom)
        with pytest.raises((type(error), _pets_error())):
            export(dataset, "US", out / "users", policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]
        assert list(out.iterdir()) == []

    def test_a_source_that_cannot_be_inspected_is_recorded(self, dataset, policy, signer,
                                                           eu_ctx, log, out, monkeypatch, keys):
        import pathlib

        real = pathlib.Path.is_dir

        def is_dir(self):
            if self == dataset:
                raise PermissionError(13, "Permission denied")
            return real(self)

        monkeypatch.setattr(pathlib.Path, "is_dir", is_dir)
        with pytest.raises(_pets_error(), match=r"users: cannot read \(Permission denied\)"):
            export(dataset, "US", out / "users", policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]

    def test_the_recorded_digest_is_recomputed_from_the_files_that_left(
            self, dataset, policy, signer, eu_ctx, log, out, keys):
        from pets.boundary._dataset import files_digest

        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        entries = [e for e in log.entries() if e["kind"] == "boundary.export"]
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (out / "users").iterdir()}
        assert len(entries) == 1 and entries[0]["fields"]["digest"] == files_digest(files)


def _pets_error():
    from pets import PetsError

    return PetsError


def _with_raw_column(part, values, *, as_index):
    """Add a raw column to a part (same signed manifest); ``as_index``: pandas metadata makes
    it the frame's index (``__index_level_0__``), so the frame's columns still match."""
    import pyarrow as pa

    table = pq.read_table(part)
    meta = dict(table.schema.metadata)
    name = "__index_level_0__" if as_index else "ip"
    table = table.append_column(name, pa.array(values[:table.num_rows]))
    if as_index:
        pandas_meta = json.loads(meta[b"pandas"])
        pandas_meta["index_columns"] = [name]
        pandas_meta["columns"].append({"name": None, "field_name": name,
                                       "pandas_type": "unicode", "numpy_type": "object",
                                       "metadata": None})
        meta[b"pandas"] = json.dumps(pandas_meta).encode()
    pq.write_table(table.replace_schema_metadata(meta), part)


class TestExportDatasetColumns:
    def test_a_raw_column_appended_to_a_part_is_refused(self, dataset, big_raw, policy,
                                                         signer, eu_ctx, log, out, keys):
        _with_raw_column(dataset / "part.00001.parquet", big_raw["ip"].tolist(),
                         as_index=False)
        _refused(log, out, IntegrityError, "^data does not match its manifest$",
                 lambda: export(dataset, "US", out / "users", policy=policy,
                                keys=keys, context=eu_ctx, audit=log,
                                columns=SAFE))

    def test_a_raw_index_column_does_not_leave(self, dataset, big_raw, policy, signer, eu_ctx,
                                               log, out, keys):
        raw_ips = big_raw["ip"].tolist()
        _with_raw_column(dataset / "part.00000.parquet", raw_ips, as_index=True)
        assert pq.read_table(dataset / "part.00000.parquet").to_pandas().index[0] == raw_ips[0]
        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        for part in (out / "users").glob("part.*.parquet"):
            assert pq.read_table(part).column_names == SAFE
            assert not any(ip.encode() in part.read_bytes() for ip in raw_ips[:20])

    def test_a_raw_index_column_added_abroad_is_refused_by_the_receiver(
            self, dataset, big_raw, policy, signer, eu_ctx, log, out, keys):
        from pets.boundary._dataset import verify_dataset

        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        _with_raw_column(out / "users" / "part.00000.parquet", big_raw["ip"].tolist(),
                         as_index=True)
        with pytest.raises(IntegrityError, match=r"^dataset does not match its manifest$"):
            verify_dataset(out / "users", signer.public_key)

    def test_footer_keys_of_the_source_are_not_copied(self, dataset, policy, signer, eu_ctx,
                                                      log, out, keys):
        part = dataset / "part.00002.parquet"
        table = pq.read_table(part)
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, b"smuggled": b"+4930 raw phone"}), part)
        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        meta = pq.read_schema(out / "users" / part.name).metadata
        assert set(meta) == {b"pandas", MANIFEST_KEY, b"pets.export"}


class TestExportDatasetSymlinkedDestination:
    def test_a_destination_symlinked_to_the_source_is_refused(self, dataset, policy, signer,
                                                              eu_ctx, log, out, keys):
        from pets import InputError

        (out / "users").symlink_to(dataset, target_is_directory=True)
        before = sorted(p.name for p in dataset.iterdir())
        with pytest.raises(InputError, match="into or over its source"):
            export(dataset, "US", out / "users", policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert sorted(p.name for p in dataset.iterdir()) == before
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]

    def test_a_destination_whose_parent_links_into_the_source_is_refused(
            self, dataset, policy, signer, eu_ctx, log, out, keys):
        from pets import InputError

        (out / "link").symlink_to(dataset, target_is_directory=True)
        with pytest.raises(InputError, match="into or over its source"):
            export(dataset, "US", out / "link" / "users", policy=policy,
                   keys=keys, context=eu_ctx, audit=log, columns=SAFE)
        assert sorted(p.name for p in dataset.iterdir()) == ["_manifest.json"] + [
            f"part.0000{i}.parquet" for i in range(3)]

    def test_a_symlink_to_an_earlier_export_is_replaced_not_followed(
            self, dataset, policy, signer, eu_ctx, log, out, tmp_path, keys):
        first = tmp_path / "first"
        export(dataset, "US", first, policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        (out / "users").symlink_to(first, target_is_directory=True)
        export(dataset, "US", out / "users", policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=["user_id"])
        assert not (out / "users").is_symlink()
        assert pq.read_schema(first / "part.00000.parquet").names == SAFE  # untouched
        assert pq.read_schema(out / "users" / "part.00000.parquet").names == ["user_id"]


class TestExportDatasetManifestFile:
    @pytest.mark.parametrize("edit", [lambda b: b[:-40], lambda b: b + b"{}",
                                      lambda b: b.replace(b"{", b"[", 1)])
    def test_a_truncated_or_extended_dataset_manifest_is_refused(self, dataset, policy,
                                                                 signer, eu_ctx, log, out,
                                                                 edit, keys):
        file = dataset / "_manifest.json"
        file.write_bytes(edit(file.read_bytes()))
        _refused(log, out, IntegrityError, "^malformed dataset manifest$",
                 lambda: export(dataset, "US", out / "users", policy=policy,
                                keys=keys, context=eu_ctx, audit=log,
                                columns=SAFE))


class TestExportDestinationSafety:
    def test_an_earlier_export_with_other_files_is_not_replaced(self, dataset, policy, signer,
                                                                eu_ctx, log, out, keys):
        from pets import InputError

        dest = out / "users"
        export(dataset, "US", dest, policy=policy, keys=keys,
               context=eu_ctx, audit=log, columns=SAFE)
        (dest / "notes.txt").write_text("the receiver's own notes")
        with pytest.raises(InputError, match="not an earlier export"):
            export(dataset, "US", dest, policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=["user_id"])
        assert (dest / "notes.txt").read_text() == "the receiver's own notes"
        assert pq.read_schema(dest / "part.00000.parquet").names == SAFE

    def test_a_fifo_as_the_source_file_is_refused_without_blocking(self, policy, signer,
                                                                   eu_ctx, log, out, tmp_path, keys):
        import os

        from pets import InputError

        fifo = tmp_path / "protected.parquet"
        os.mkfifo(fifo)
        _refused(log, out, InputError, "protected.parquet: cannot read", lambda: export(
            fifo, "US", out / "u.parquet", policy=policy, keys=keys,
            context=eu_ctx, audit=log, columns=SAFE))


class TestExportDoesNotOverwriteItsWitnesses:
    def test_the_audit_log_is_not_a_destination(self, pf, policy, signer, eu_ctx, log, out, keys):
        from pets import InputError

        protect_entries = len(log.entries())
        log.append("note", text="before")
        before = log.path.read_bytes()
        with pytest.raises(InputError, match="cannot write over the audit log"):
            export(pf, "US", log.path, policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert log.path.read_bytes().startswith(before)
        assert [e["kind"] for e in log.entries()][protect_entries:] == ["note",
                                                                       "boundary.refused"]
        assert verify_log(log.path, signer.public_key).ok

    def test_a_protected_file_is_not_replaced_by_its_export(self, pf, policy, signer, eu_ctx,
                                                            log, tmp_path, keys):
        from pets import InputError

        src = pf.write(tmp_path / "p.parquet")
        before = src.read_bytes()
        with pytest.raises(InputError, match="over its source"):
            export(src, "US", src, policy=policy, keys=keys,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert src.read_bytes() == before

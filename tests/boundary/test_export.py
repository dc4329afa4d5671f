"""The export gate: each refusal writes nothing and is an incident; exports are recorded."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pets import Context, IntegrityError, JurisdictionError, PolicyError
from pets.boundary import (
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
                                                     out):
        dest = out / "users.parquet"
        receipt = export(pf, "US", dest, policy=policy, public_key=signer.public_key,
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
                                          out):
        src = pf.write(tmp_path / "protected.parquet")
        export(src, "US", out / "u.parquet", policy=policy, public_key=signer.public_key,
               context=eu_ctx, audit=log, columns=SAFE)
        assert (out / "u.parquet").exists()


class TestExportRefused:
    def test_raw_frame(self, raw, policy, signer, eu_ctx, log, out):
        e = _refused(log, out, PolicyError, "raw data cannot be exported", lambda: export(
            raw, "US", out / "x.parquet", policy=policy, public_key=signer.public_key,
            context=eu_ctx, audit=log))
        assert e["fields"]["destination"] == "US" and e["fields"]["target"] == "DataFrame"

    def test_raw_file_without_manifest(self, raw, policy, signer, eu_ctx, log, out, tmp_path):
        src = tmp_path / "raw.parquet"
        raw.to_parquet(src)
        _refused(log, out, IntegrityError, "no pets manifest", lambda: export(
            src, "US", out / "x.parquet", policy=policy, public_key=signer.public_key,
            context=eu_ctx, audit=log))

    def test_encrypted_column_may_not_leave(self, pf, policy, signer, eu_ctx, log, out):
        e = _refused(log, out, PolicyError, r"keeps these columns from US: phone \(encrypted\)",
                     lambda: export(pf, "US", out / "x.parquet", policy=policy,
                                    public_key=signer.public_key, context=eu_ctx, audit=log))
        assert "phone" in e["fields"]["reason"]

    def test_wrong_destination(self, pf, policy, signer, eu_ctx, log, out):
        _refused(log, out, PolicyError, "keeps these columns from SG: user_id", lambda: export(
            pf, "SG", out / "x.parquet", policy=policy, public_key=signer.public_key,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_tampered_manifest(self, pf, policy, signer, eu_ctx, log, out):
        cols = tuple(dataclasses.replace(c, output="kept") if c.name == "phone" else c
                     for c in pf.manifest.columns)
        forged = ProtectedFrame(pf.data, dataclasses.replace(pf.manifest, columns=cols))
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            forged, "US", out / "x.parquet", policy=policy, public_key=signer.public_key,
            context=eu_ctx, audit=log))

    def test_tampered_manifest_in_file(self, pf, policy, signer, eu_ctx, log, out, tmp_path):
        src = pf.write(tmp_path / "p.parquet")
        table = pq.read_table(src)
        doc = json.loads(table.schema.metadata[MANIFEST_KEY])
        for c in doc["columns"]:
            c["output"] = "kept"
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, MANIFEST_KEY: json.dumps(doc).encode()}), src)
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            src, "US", out / "x.parquet", policy=policy, public_key=signer.public_key,
            context=eu_ctx, audit=log))

    def test_wrong_signature(self, pf, policy, signer, eu_ctx, log, out):
        mallory = SigningKey.generate()
        resigned = ProtectedFrame(pf.data, pf.manifest.sign(mallory))
        _refused(log, out, IntegrityError, "manifest signature is not valid", lambda: export(
            resigned, "US", out / "x.parquet", policy=policy, public_key=signer.public_key,
            context=eu_ctx, audit=log, columns=SAFE))

    def test_tampered_data(self, pf, policy, signer, eu_ctx, log, out):
        data = pf.data.copy()
        data.loc[0, "minutes"] = 999.0
        _refused(log, out, IntegrityError, "data does not match its manifest", lambda: export(
            ProtectedFrame(data, pf.manifest), "US", out / "x.parquet", policy=policy,
            public_key=signer.public_key, context=eu_ctx, audit=log, columns=SAFE))

    def test_raw_column_swapped_in(self, raw, pf, policy, signer, eu_ctx, log, out):
        data = pf.data.assign(email=raw["email"])
        _refused(log, out, IntegrityError, "data does not match", lambda: export(
            ProtectedFrame(data, pf.manifest), "US", out / "x.parquet", policy=policy,
            public_key=signer.public_key, context=eu_ctx, audit=log, columns=SAFE))

    def test_another_policy(self, pf, signer, eu_ctx, log, out):
        from tests.boundary.conftest import POLICY

        loose = Policy.from_yaml(POLICY.replace("encrypted: []", "encrypted: [US]"))
        _refused(log, out, PolicyError, "protected under another policy", lambda: export(
            pf, "US", out / "x.parquet", policy=loose, public_key=signer.public_key,
            context=eu_ctx, audit=log))

    def test_gate_runs_only_at_home(self, pf, policy, signer, us_ctx, log, out):
        e = _refused(log, out, JurisdictionError, "exports leave from the policy's home EU",
                     lambda: export(pf, "US", out / "x.parquet", policy=policy,
                                    public_key=signer.public_key, context=us_ctx, audit=log,
                                    columns=SAFE))
        assert e["actor"] == "analyst@US"

    def test_other_objects(self, policy, signer, eu_ctx, log, out):
        _refused(log, out, PolicyError, "cannot export a dict", lambda: export(
            {"a": 1}, "US", out / "x.parquet", policy=policy, public_key=signer.public_key,
            context=eu_ctx, audit=log))

    def test_existing_destination_is_untouched_on_refusal(self, raw, policy, signer, eu_ctx,
                                                          log, out):
        dest = out / "x.parquet"
        dest.write_bytes(b"previous")
        with pytest.raises(PolicyError):
            export(raw, "US", dest, policy=policy, public_key=signer.public_key,
                   context=eu_ctx, audit=log)
        assert dest.read_bytes() == b"previous" and sorted(out.iterdir()) == [dest]


class TestExportRelease:
    def test_dp_release_leaves_with_its_budget(self, raw, policy, signer, eu_ctx, log, out):
        dp = pytest.importorskip("pets.dp")
        session = dp.Session(raw.assign(user_id=raw["user_id"].astype(str)),
                             privacy_unit="user_id", budget=dp.Budget.pure(1.0))
        release = session.query(by="country", keys=["DE", "FR", "IT"]).count().release(
            epsilon=0.5)
        receipt = export(release, "BR", out / "r.parquet", policy=policy,
                         public_key=signer.public_key, context=eu_ctx, audit=log)
        assert receipt.output == "dp_release"
        back = pd.read_parquet(out / "r.parquet")
        assert len(back) == 3 and "estimate" in back.columns
        row = flows(log.entries()).iloc[-1]
        assert row["output"] == "dp_release" and row["epsilon"] == 0.5
        assert row["destination"] == "BR"

    def test_dp_release_to_a_closed_destination(self, raw, signer, eu_ctx, log, out):
        dp = pytest.importorskip("pets.dp")
        from tests.boundary.conftest import POLICY

        closed = Policy.from_yaml(POLICY.replace('dp_release: ["*"]', "dp_release: [SG]"))
        session = dp.Session(raw.assign(user_id=raw["user_id"].astype(str)),
                             privacy_unit="user_id", budget=dp.Budget.pure(1.0))
        release = session.query().count().release(epsilon=0.5)
        _refused(log, out, PolicyError, "does not let DP releases go to US", lambda: export(
            release, "US", out / "r.parquet", policy=closed, public_key=signer.public_key,
            context=Context("EU"), audit=log))


def _pem_args():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


class TestExportWriteFailure:
    def test_unwritable_destination_is_an_input_error_and_recorded(self, pf, policy, signer,
                                                                   eu_ctx, log, out):
        from pets import InputError

        (out / "taken").mkdir()
        with pytest.raises(InputError, match="cannot write"):
            export(pf, "US", out / "taken", policy=policy, public_key=signer.public_key,
                   context=eu_ctx, audit=log, columns=SAFE)
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]
        assert sorted(p.name for p in out.iterdir()) == ["taken"]


class TestExportAllowedColumns:
    def test_allowed_picks_exactly_what_may_go(self, pf, policy, signer, eu_ctx, log, out):
        r = export(pf, "US", out / "u.parquet", policy=policy, public_key=signer.public_key,
                   context=eu_ctx, audit=log, columns="allowed")
        assert list(r.columns) == SAFE
        assert log.entries()[-1]["fields"]["columns"] == SAFE

    def test_allowed_with_nothing_allowed_is_refused(self, pf, policy, signer, eu_ctx, log,
                                                     out):
        _refused(log, out, PolicyError, "lets no column of 'users' go to BR", lambda: export(
            pf, "BR", out / "u.parquet", policy=policy, public_key=signer.public_key,
            context=eu_ctx, audit=log, columns="allowed"))

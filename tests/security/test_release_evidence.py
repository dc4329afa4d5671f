"""Attack: a DP release edited, copied, forged or made elsewhere leaves as a "DP release".

The export gate lets a release go only if the ledger it is given holds the release's id with
the digest of the table and metadata being exported *now*. Each test tries one attack and
checks the refusal (IntegrityError, exit 5), that nothing was written and that the refusal is
an incident in the audit log.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pets import Context, IntegrityError
from pets.boundary import AuditLog, BoundaryKeys, Policy, SigningKey, export, incidents
from pets.dp import Budget, Ledger, PrivacyLoss, Release, Session

MISMATCH = "does not match its ledger record"

POLICY = """\
dataset: events
keys: {pseudonyms: "memory://eu/p"}
destinations: {dp_release: ["*"]}
columns:
  user_id: {role: identifier, treatment: keyed-hash}
  country: {role: metric, treatment: keep, public_values: [DE, FR, IT]}
  minutes: {role: metric, treatment: keep}
"""


@pytest.fixture
def signer():
    return SigningKey.generate()


@pytest.fixture
def log(tmp_path, signer):
    return AuditLog(tmp_path / "audit.jsonl", signer=signer, actor=Context("EU", "etl"))


@pytest.fixture
def gate(signer, log):
    """export() with the boundary's keys (``keys=`` or, before that change, ``public_key=``)."""
    from pets.keys import KeyServices

    params = inspect.signature(export).parameters
    trust = ({"keys": BoundaryKeys(KeyServices([]), signer)} if "keys" in params
             else {"public_key": signer.public_key})
    policy = Policy.from_yaml(POLICY)

    def run(obj, dest, **kw):
        return export(obj, "US", dest, policy=policy, context=Context("EU", "etl"), audit=log,
                      **trust, **kw)

    return run


@pytest.fixture
def events():
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(40)],
                         "country": ["DE", "FR"] * 20,
                         "minutes": [float(i % 7) for i in range(40)]})


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.sqlite")


@pytest.fixture
def session(events, ledger, log):
    return Session(events, privacy_unit="user_id", budget=Budget.pure(2.0), ledger=ledger,
                   dataset_id="events", audit=log.hook)


@pytest.fixture
def release(session):
    return session.query(by="country", keys=["DE", "FR"]).count().sum(
        "minutes", bounds=(0, 10)).release(epsilon=0.5)


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "us"
    d.mkdir()
    return d


def _refused(log, out, match, fn):
    before = len(log.entries())
    with pytest.raises(IntegrityError, match=match):
        fn()
    assert list(out.iterdir()) == [], "a refused export wrote something"
    new = log.entries()[before:]
    assert [e["kind"] for e in new] == ["boundary.refused"]
    assert MISMATCH in new[0]["fields"]["reason"]
    assert list(incidents(log.entries())["kind"])[-1] == "boundary.refused"
    return new[0]


class TestHonestRelease:
    def test_is_exported_with_a_receipt_and_its_evidence_in_the_log(self, gate, release, log,
                                                                    ledger, out):
        receipt = gate(release, out / "r.parquet", ledger=ledger)
        assert receipt.output == "dp_release" and receipt.rows == len(release.frame)
        made = [e["fields"] for e in log.entries() if e["kind"] == "dp.release"]
        assert made[-1]["release_id"] == release.release_id
        assert made[-1]["digest"] == release.digest()
        assert made[-1]["rows"] == len(release.frame) and "estimate" in made[-1]["columns"]
        assert log.entries()[-1]["kind"] == "boundary.export"
        sent = log.entries()[-1]["fields"]
        assert sent["release_id"] == release.release_id
        assert sent["release_digest"] == release.digest()
        rec = ledger.release_record(release.release_id)
        assert rec is not None and rec.digest == release.digest() and rec.epsilon == 0.5

    def test_a_postprocessed_release_is_recorded_and_leaves(self, gate, release, ledger, out,
                                                           log, session):
        spent = session.budget.spent
        p = release.postprocess(nonnegative=True, decimals=1)
        assert p.release_id != release.release_id and p.derived_from == release.release_id
        assert session.budget.spent == spent  # post-processing spends nothing
        assert ledger.release_record(p.release_id).parent_id == release.release_id
        assert log.entries()[-1]["fields"]["derived_from"] == release.release_id
        assert gate(p, out / "p.parquet", ledger=ledger).rows == len(p.frame)

    def test_the_ledger_may_be_given_as_its_path(self, gate, release, ledger, out):
        assert gate(release, out / "r.parquet", ledger=ledger.path).output == "dp_release"


class TestEditedReleases:
    def test_a_frame_replaced_by_raw_rows_is_refused(self, gate, release, events, ledger, log,
                                                     out):
        raw = dataclasses.replace(release, frame=events)
        _refused(log, out, MISMATCH, lambda: gate(raw, out / "r.parquet", ledger=ledger))

    def test_a_frame_swapped_in_place_is_refused(self, gate, release, events, ledger, log, out):
        object.__setattr__(release, "frame", events)  # "frozen" is no defence in Python
        _refused(log, out, MISMATCH, lambda: gate(release, out / "r.parquet", ledger=ledger))

    def test_noisy_estimates_overwritten_with_true_values_are_refused(self, gate, release,
                                                                       events, ledger, log,
                                                                       out):
        truth = events.groupby("country").size()
        counts = release.frame["statistic"] == "count"
        release.frame.loc[counts, "estimate"] = release.frame.loc[counts, "country"].map(
            truth).astype(float)
        _refused(log, out, MISMATCH, lambda: gate(release, out / "r.parquet", ledger=ledger))

    def test_a_deep_copy_with_edited_epsilon_is_refused(self, gate, release, ledger, log, out):
        forged = copy.deepcopy(release)
        object.__setattr__(forged, "loss", PrivacyLoss(epsilon=0.01))
        assert forged.release_id == release.release_id
        _refused(log, out, MISMATCH, lambda: gate(forged, out / "r.parquet", ledger=ledger))
        # the original still leaves: the copy shares nothing it could spoil
        assert gate(release, out / "r.parquet", ledger=ledger).output == "dp_release"

    def test_edited_metadata_cannot_be_laundered_by_postprocessing(self, release, ledger):
        forged = dataclasses.replace(release, level=0.5)
        with pytest.raises(IntegrityError, match=MISMATCH):
            forged.postprocess(nonnegative=True)
        assert len(ledger.releases("events", "user_id")) == 1

    def test_a_hand_built_release_is_refused(self, gate, release, ledger, log, out):
        fake = Release(release.frame.copy(), release.by, release.loss, "events", "user_id",
                       0.95, release.query, "pure", release.created_at,
                       release_id="f" * 32)
        _refused(log, out, "holds no release with this id",
                 lambda: gate(fake, out / "r.parquet", ledger=ledger))

    def test_a_release_of_another_ledger_is_refused(self, gate, events, ledger, log, out,
                                                    tmp_path):
        other = Session(events, privacy_unit="user_id", budget=Budget.pure(1.0),
                        ledger=Ledger(tmp_path / "other.sqlite"), dataset_id="events")
        elsewhere = other.query().count().release(epsilon=0.5)
        _refused(log, out, "holds no release with this id",
                 lambda: gate(elsewhere, out / "r.parquet", ledger=ledger))

    def test_no_ledger_no_export(self, gate, release, log, out):
        _refused(log, out, "no ledger was given", lambda: gate(release, out / "r.parquet"))


class TestReleaseFiles:
    @pytest.fixture
    def release_file(self, tmp_path, events, ledger, monkeypatch):
        from pets.cli import main

        _cli_boundary(tmp_path, monkeypatch, ledger.path)
        src = tmp_path / "events.parquet"
        events.to_parquet(src, index=False)
        dest = tmp_path / "release.parquet"
        assert main(["release", str(src), "--unit", "user_id", "--dataset-id", "events",
                     "--group-by", "country", "--keys", "DE,FR", "--agg",
                     "count,mean:minutes[0,10]", "--epsilon", "0.5", "--budget-epsilon", "2",
                     "--nonnegative", "--ledger", str(ledger.path), "--out", str(dest)]) == 0
        return dest

    def test_the_honest_file_is_exported(self, gate, release_file, ledger, out):
        receipt = gate(release_file, out / "r.parquet", ledger=ledger)
        assert receipt.output == "dp_release" and receipt.rows == 4

    def test_an_edited_file_is_refused(self, gate, release_file, ledger, log, out, tmp_path):
        table = pq.read_table(release_file)
        est = table.column("estimate").to_pylist()
        edited = table.set_column(table.schema.get_field_index("estimate"), "estimate",
                                  pa.array([e + 1 for e in est]))
        forged = tmp_path / "forged.parquet"
        pq.write_table(edited.replace_schema_metadata(table.schema.metadata), forged)
        _refused(log, out, MISMATCH, lambda: gate(forged, out / "r.parquet", ledger=ledger))

    def test_a_file_with_edited_metadata_is_refused(self, gate, release_file, ledger, log, out,
                                                    tmp_path):
        table = pq.read_table(release_file)
        meta = dict(table.schema.metadata)
        doc = json.loads(meta[b"pets.release"])
        doc["loss"]["epsilon"] = 0.001
        meta[b"pets.release"] = json.dumps(doc).encode()
        forged = tmp_path / "forged.parquet"
        pq.write_table(table.replace_schema_metadata(meta), forged)
        _refused(log, out, MISMATCH, lambda: gate(forged, out / "r.parquet", ledger=ledger))


def _cli_boundary(tmp_path, monkeypatch, ledger):
    """A keyring and a boundary whose pinned ledger is ``ledger`` (`pets release` spends
    from the boundary's ledger only)."""
    import os

    from pets.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PETS_MASTER_KEY", os.urandom(32).hex())
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    for var in ("PETS_KEYRING", "PETS_AUDIT_LOG", "PETS_BOUNDARY", "PETS_BOUNDARY_KEYS",
                "PETS_PKCS11_TOKEN", "PETS_PKCS11_LIBRARY"):
        monkeypatch.delenv(var, raising=False)
    assert main(["keys", "init", "--name", "eu"]) == 0
    assert main(["boundary", "init", "--signing-kek", "local://eu/boundary", "--ledger",
                 str(ledger), "--log", str(tmp_path / "cli-audit.jsonl")]) == 0


def test_cli_export_of_a_release_file_checks_the_pinned_ledger(tmp_path, monkeypatch, events):
    """``pets export RELEASE``: checked against the boundary's pinned ledger; the honest file
    leaves (0), an edited one exits 5."""
    from pets.cli import main
    from tests.security._cli_env import LEDGER, policy_text, setup_boundary

    setup_boundary(tmp_path, monkeypatch)
    (tmp_path / "policy.yaml").write_text(policy_text())
    events.to_parquet(tmp_path / "events.parquet", index=False)
    (tmp_path / LEDGER).parent.mkdir(parents=True, exist_ok=True)
    assert main(["release", "events.parquet", "--unit", "user_id", "--agg", "count",
                 "--epsilon", "0.5", "--budget-epsilon", "2", "--ledger", LEDGER,
                 "--out", "release.parquet"]) == 0
    args = ["--to", "US", "--policy", "policy.yaml"]
    assert main(["export", "release.parquet", "--out", "us/r.parquet", *args]) == 0
    table = pq.read_table(tmp_path / "release.parquet")
    edited = table.set_column(table.schema.get_field_index("estimate"), "estimate",
                              pa.array([1e6] * table.num_rows))
    pq.write_table(edited.replace_schema_metadata(table.schema.metadata),
                   tmp_path / "forged.parquet")
    assert main(["export", "forged.parquet", "--out", "us/f.parquet", *args]) == 5
    assert not (tmp_path / "us" / "f.parquet").exists()

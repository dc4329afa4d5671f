"""Attack class: make the boundary trust its caller (a key, a log, a boundary of their own).

The boundary is set up once (`pets boundary init`); its anchors (home, pinned signing keys,
audit log, ledger) are in ``boundary.json``, signed by the signing key that only the home KEK
unwraps. Each test tries to get the gate to accept what the boundary did not sign, or to run
an action off the record, and asserts the precise refusal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pets.cli import main
from tests.security._cli_env import AUDIT, policy_text, setup_boundary

SAFE = "user_id,email,birth_date,country,signup_ts"
BOUNDARY = Path(".pets/keyring/boundary")


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    setup_boundary(tmp_path, monkeypatch)
    assert main(["datasets", "generate", "--users", "400", "--out", "users.parquet"]) == 0
    (tmp_path / "policy.yaml").write_text(policy_text().replace("min_k: 5", "min_k: 1"))
    assert main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "prot"]) == 0
    capsys.readouterr()
    return tmp_path


def _kinds(env) -> list[str]:
    from pets.boundary import read_entries

    return [e["kind"] for e in read_entries(env / AUDIT)]


def _forged(env) -> Path:
    """Raw users protected under an attacker's own keyring and signing key (same KEK names):
    the attacker knows every root, so its 'tokens' are reversible anywhere."""
    from pets import Context
    from pets.boundary import BoundaryKeys, load_policy, protect
    from pets.keys import KeyServices, LocalKeyring, Secret

    ring = LocalKeyring.init(env / "evil-ring", name="eu", master_key=Secret(b"\x09" * 32))
    for name in ("boundary", "pseudonyms", "columns"):
        ring.create(f"local://eu/{name}", jurisdiction="EU")
    eu = Context("EU", principal="mallory")
    keys = BoundaryKeys.create(env / "evil-boundary", KeyServices([ring]), context=eu,
                               signing_kek="local://eu/boundary",
                               audit_log=env / "evil.jsonl", ledger=env / "evil.sqlite")
    (env / "evil.pem").write_bytes(keys.signer.public_pem())
    pf = protect(pd.read_parquet(env / "users.parquet"), load_policy(env / "policy.yaml"),
                 keys, eu)
    return pf.write(env / "forged" / "users.parquet")


class TestTheGateTrustsOnlyPinnedKeys:
    def test_a_manifest_signed_by_another_key_is_refused_and_recorded(self, env, capsys):
        forged = _forged(env)
        code = main(["export", str(forged), "--to", "US", "--out", "us/u.parquet",
                     "--policy", "policy.yaml", "--columns", SAFE])
        assert code == 5
        assert "manifest signature is not valid" in capsys.readouterr().err
        assert not (env / "us").exists()
        assert _kinds(env)[-1] == "boundary.refused"

    def test_the_callers_public_key_cannot_vouch_for_it(self, env, capsys):
        forged = _forged(env)
        before = (env / AUDIT).read_bytes()
        code = main(["export", str(forged), "--to", "US", "--out", "us/u.parquet",
                     "--policy", "policy.yaml", "--columns", SAFE, "--public-key", "evil.pem"])
        assert code == 2
        assert "the gate verifies manifests only against the boundary's pinned signing keys" \
            in capsys.readouterr().err
        assert not (env / "us").exists() and (env / AUDIT).read_bytes() == before

    def test_another_boundary_directory_is_not_a_way_in(self, env, capsys):
        """The attacker's own boundary directory: its signing key does not open under the home
        keyring's master key, so nothing it signed is accepted."""
        forged = _forged(env)
        code = main(["export", str(forged), "--to", "US", "--out", "us/u.parquet",
                     "--policy", "policy.yaml", "--columns", SAFE, "--boundary",
                     "evil-boundary"])
        assert code == 1  # the home keyring serves its own boundary only
        assert "serves the boundary at" in capsys.readouterr().err
        assert not (env / "us").exists()

    def test_the_honest_export_still_works(self, env, capsys):
        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet", "--columns",
                     SAFE]) == 0
        assert _kinds(env)[-1] == "boundary.export"


class TestNothingIsCreatedImplicitly:
    def test_a_missing_boundary_directory_is_an_error_not_a_second_key(self, env, capsys):
        code = main(["protect", "users.parquet", "--policy", "policy.yaml", "--out", "p2",
                     "--boundary", "nowhere"])
        assert code == 1
        assert "no boundary at nowhere: set it up once with `pets boundary init`" in \
            capsys.readouterr().err
        assert not (env / "nowhere").exists() and not (env / "p2").exists()

    def test_boundary_init_twice_changes_nothing(self, env, capsys):
        before = (env / BOUNDARY / "boundary.json").read_bytes()
        assert main(["boundary", "init", "--signing-kek", "local://eu/other"]) == 1
        assert "already set up" in capsys.readouterr().err
        assert (env / BOUNDARY / "boundary.json").read_bytes() == before

    def test_a_policy_naming_another_signing_kek_is_refused(self, env, capsys):
        (env / "p2.yaml").write_text(policy_text().replace(
            "signing: local://eu/boundary", "signing: local://eu/other"))
        assert main(["protect", "users.parquet", "--policy", "p2.yaml", "--out", "p2"]) == 3
        assert "is not the KEK of the boundary's pinned signing key" in capsys.readouterr().err
        assert not (env / "p2").exists()


class TestTheLogIsPinned:
    @pytest.mark.parametrize("how", ["option", "environment"])
    def test_a_caller_chosen_audit_log_is_refused(self, env, capsys, monkeypatch, how):
        before = (env / AUDIT).read_bytes()
        args = ["export", "prot", "--to", "US", "--out", "us/u.parquet", "--columns", SAFE]
        if how == "option":
            args += ["--audit-log", "/dev/null"]
        else:
            monkeypatch.setenv("PETS_AUDIT_LOG", str(env / "quiet.jsonl"))
        assert main(args) == 2
        assert "the audit log is pinned when the boundary is set up" in capsys.readouterr().err
        assert not (env / "us").exists() and (env / AUDIT).read_bytes() == before
        assert not (env / "quiet.jsonl").exists()

    @pytest.mark.parametrize("field, value", [("audit_log", "/dev/null"),
                                              ("ledger", "/tmp/other.sqlite")])
    def test_an_edited_anchors_file_is_refused(self, env, capsys, field, value):
        path = env / BOUNDARY / "boundary.json"
        doc = json.loads(path.read_text())
        doc[field] = value
        path.write_text(json.dumps(doc))
        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet", "--columns",
                     SAFE]) == 5
        assert "anchors do not verify under its signing key" in capsys.readouterr().err
        assert not (env / "us").exists()

    def test_key_operations_and_key_use_are_in_the_pinned_log(self, env, capsys):
        assert main(["keys", "rotate", "local://eu/users"]) == 0
        (env / "plain.txt").write_text("x\n")
        assert main(["encrypt", "plain.txt", "c.pets", "--key", "local://eu/users"]) == 0
        kinds = _kinds(env)
        assert "key.rotate" in kinds and "envelope.encrypt" in kinds
        assert main(["audit", "verify", AUDIT, "--public-key",
                     str(BOUNDARY / "signing-key.pub.pem")]) == 0


class TestRotationIsExplicitAndAudited:
    def test_rotation_pins_a_new_key_and_old_outputs_still_leave(self, env, capsys):
        old = json.loads((env / BOUNDARY / "boundary.json").read_text())["pinned"]
        assert main(["boundary", "rotate-signing-key", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["pinned"][:-1] == old and shown["signer"] == shown["pinned"][-1]
        # protected before the rotation, signed by the old (still pinned) key
        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet", "--columns",
                     SAFE]) == 0
        assert "boundary.signing_key.rotate" in _kinds(env)


class TestThePythonApiRecordsToThePinnedLog:
    """The same rule from Python: a set-up boundary records to its pinned log, whatever log
    (or no-op hook) the caller passes."""

    @pytest.fixture
    def opened(self, env):
        from pets import Context
        from pets.boundary import BoundaryKeys, load_policy
        from pets.keys import key_services

        eu = Context("EU", principal="nb")
        keys = BoundaryKeys.open(env / BOUNDARY, key_services(), context=eu)
        return keys, load_policy(env / "policy.yaml"), eu

    def test_protect_without_a_log_records_to_the_pinned_one(self, env, opened):
        from pets.boundary import protect

        keys, policy, eu = opened
        n = len(_kinds(env))
        protect(pd.read_parquet(env / "users.parquet"), policy, keys, eu)
        assert _kinds(env)[n:][-1] == "boundary.protect"

    @pytest.mark.parametrize("other", ["log", "hook"])
    def test_another_log_or_a_silent_hook_is_refused(self, env, opened, other):
        from pets.boundary import AuditLog, export, protect, read_protected

        keys, policy, eu = opened
        quiet = (AuditLog(env / "quiet.jsonl", signer=keys.signer, actor=eu) if other == "log"
                 else (lambda event: None))
        with pytest.raises(Exception, match="pinned") as info:
            protect(pd.read_parquet(env / "users.parquet"), policy, keys, eu, audit=quiet)
        assert type(info.value).__name__ == "InputError"
        pf = read_protected(env / "prot" / "users.parquet", keys.pinned_public_keys)
        with pytest.raises(Exception, match="pinned"):
            export(pf, "US", env / "us.parquet", policy=policy, keys=keys, context=eu,
                   audit=quiet, columns=SAFE.split(","))
        assert not (env / "us.parquet").exists() and not (env / "quiet.jsonl").exists()


class TestOneKeyringOneBoundary:
    """The review set up a second boundary on the same keyring and ran key rotation and
    destruction, re-identification and spends there: all signed, into a log nobody watches."""

    def test_a_second_boundary_on_the_keyring_is_refused(self, env, capsys):
        code = main(["boundary", "init", "--boundary", "b2", "--signing-kek",
                     "local://eu/boundary", "--log", "b2/audit.jsonl", "--ledger",
                     "b2/ledger.sqlite"])
        assert code == 1
        assert "serves the boundary at" in capsys.readouterr().err
        assert not (env / "b2" / "boundary.json").exists()

    def test_a_copied_boundary_directory_is_not_served(self, env, capsys):
        import shutil

        shutil.copytree(env / BOUNDARY, env / "b3")
        before = (env / AUDIT).read_bytes()
        assert main(["keys", "rotate", "local://eu/users", "--boundary", "b3"]) == 1
        assert "serves the boundary at" in capsys.readouterr().err
        assert (env / AUDIT).read_bytes() == before


class TestTheExportRecordIsSigned:
    """The review pasted an export record ('to US, columns: country') into the EU-only
    protected file (encrypted phone column inside): read_protected returned it as an export."""

    def test_a_pasted_export_record_is_refused_by_the_receiver(self, env):
        import pyarrow.parquet as pq

        from pets import IntegrityError
        from pets.boundary import read_protected
        from pets.boundary._manifest import EXPORT_KEY

        src = env / "prot" / "users.parquet"
        table = pq.read_table(src)
        fake = {"destination": "US", "columns": ["country"]}
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, EXPORT_KEY: json.dumps(fake).encode()}),
            env / "pasted.parquet")
        pem = env / BOUNDARY / "signing-key.pub.pem"
        with pytest.raises(IntegrityError, match="export record is not signed"):
            read_protected(env / "pasted.parquet", pem)

    def test_a_real_export_verifies_at_the_receiver(self, env):
        from pets.boundary import read_protected

        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet", "--columns",
                     SAFE]) == 0
        _pf, record = read_protected(env / "us" / "u.parquet",
                                     env / BOUNDARY / "signing-key.pub.pem")
        assert record["destination"] == "US" and record["columns"] == SAFE.split(",")

"""Attack class: raw values carried out inside an honest DP release.

The ledger proves a release is unchanged since it was made, not that what its caller chose —
group keys, column names, the dataset id — is public. The review got 4,997 raw e-mails out as
the group keys of a "DP release" (grouped by e-mail, every address given as a public key), and
more inside ``--dataset-id``. Each test makes such a release honestly (recorded in the pinned
ledger) and asserts the gate's precise refusal, with nothing written and the refusal logged.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pets.cli import main
from tests.security._cli_env import AUDIT, setup_boundary


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    setup_boundary(tmp_path, monkeypatch)
    assert main(["datasets", "generate", "--users", "400", "--events", "4000", "--out",
                 "users.parquet"]) == 0
    assert main(["policy", "example", "users", "--out", "users-policy.yaml"]) == 0
    assert main(["policy", "example", "events", "--out", "events-policy.yaml"]) == 0
    capsys.readouterr()
    return tmp_path


def _release(*args: str) -> None:
    assert main(["release", *args, "--agg", "count", "--epsilon", "0.1",
                 "--budget-epsilon", "5", "--out", "r.parquet"]) == 0


def _refused(env, capsys, policy: str, message: str) -> None:
    code = main(["export", "r.parquet", "--to", "US", "--out", "us/r.parquet", "--policy",
                 policy])
    err = capsys.readouterr().err
    assert code == 3, err
    assert message in err
    assert not (env / "us").exists()
    kinds = [json.loads(line)["kind"] for line in (env / AUDIT).read_text().splitlines()]
    assert kinds[-1] == "boundary.refused"


class TestCallerChosenKeysAndNames:
    def test_grouped_by_email_with_every_address_as_a_public_key(self, env, capsys):
        users = pd.read_parquet(env / "users.parquet")
        users[["email"]].drop_duplicates().to_parquet(env / "keys.parquet")
        _release("users.parquet", "--unit", "user_id", "--group-by", "email", "--keys-file",
                 "keys.parquet")
        _refused(env, capsys, "users-policy.yaml", "an identifier in policy")
        assert not any(e in (env / AUDIT).read_text() for e in users["email"].head(50))

    def test_emails_renamed_to_a_public_column(self, env, capsys):
        """The caller controls the input file: e-mails in a column called 'country'."""
        users = pd.read_parquet(env / "users.parquet")
        users.assign(country=users["email"]).to_parquet(env / "renamed.parquet")
        users[["email"]].rename(columns={"email": "country"}).drop_duplicates().to_parquet(
            env / "keys.parquet")
        _release("renamed.parquet", "--unit", "user_id", "--group-by", "country",
                 "--keys-file", "keys.parquet")
        _refused(env, capsys, "users-policy.yaml",
                 "group key(s) of 'country' are not among its public_values")

    def test_a_column_the_policy_does_not_have(self, env, capsys):
        users = pd.read_parquet(env / "users.parquet")
        users.assign(note=users["email"]).to_parquet(env / "noted.parquet")
        _release("noted.parquet", "--unit", "user_id", "--group-by", "note", "--keys",
                 ",".join(users["email"].head(3)))
        _refused(env, capsys, "users-policy.yaml", "the release names column 'note'")

    def test_public_keys_on_a_column_without_public_values(self, env, capsys):
        _release("users-events.parquet", "--unit", "user_id", "--group-by", "event", "--keys",
                 "play,pause")
        _refused(env, capsys, "events-policy.yaml", "declares no public_values for 'event'")

    def test_the_dataset_id_does_not_leave(self, env, capsys):
        raw = ";".join(pd.read_parquet(env / "users.parquet")["email"].head(20))
        _release("users-events.parquet", "--unit", "user_id", "--dataset-id", raw,
                 "--group-by", "country", "--keys", "DE,FR,IT")
        assert main(["export", "r.parquet", "--to", "US", "--out", "us/r.parquet",
                     "--policy", "events-policy.yaml"]) == 0
        out = (env / "us" / "r.parquet").read_bytes()
        assert raw.split(";")[0].encode() not in out
        meta = json.loads(pq.read_schema(env / "us" / "r.parquet").metadata[b"pets.release"])
        assert meta["dataset_id"] == "events"

    def test_the_honest_release_leaves(self, env, capsys):
        _release("users-events.parquet", "--unit", "user_id", "--group-by", "country",
                 "--keys", "DE,FR,IT")
        assert main(["export", "r.parquet", "--to", "US", "--out", "us/r.parquet",
                     "--policy", "events-policy.yaml"]) == 0
        assert sorted(pd.read_parquet(env / "us" / "r.parquet")["country"].unique()) == \
            ["DE", "FR", "IT"]


class TestPolicyField:
    def test_public_values_on_an_identifier_is_refused(self, env, capsys):
        text = (env / "users-policy.yaml").read_text().replace(
            "    domain: eu.user", "    domain: eu.user\n    public_values: [u1]", 1)
        (env / "p.yaml").write_text(text)
        assert main(["policy", "check", "p.yaml"]) == 3
        assert "an identifier has no public values" in capsys.readouterr().err

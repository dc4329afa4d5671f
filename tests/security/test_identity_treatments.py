"""Attack: a policy whose "protection" is the identity, so raw identifiers leave labelled
"generalized" (issue #12, item 5).

Each test writes the hostile policy and asserts the precise refusal (PolicyError, exit 3,
naming the file, line, column and treatment) and that nothing was produced: statically at
policy load when the parameters are the identity for any data, and against the data when
they are the identity for the data at hand (``pets policy check --data``, ``protect`` on
pandas and on Dask).
"""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pets import Context, JurisdictionError, PolicyError
from pets.boundary import Policy, protect
from pets.cli import main
from pets.pseudo import Mask, PostcodePrefix

AUDIT = "logs/audit.jsonl"


@pytest.fixture
def eu():
    return Context("EU", principal="etl@eu")


@pytest.fixture
def services():
    from pets.keys import KeyServices, MemoryKeyring

    ring = MemoryKeyring()
    for name in ("pseudonyms", "columns"):
        ring.create(f"memory://eu/{name}", jurisdiction="EU")
        ring.create(f"memory://us/{name}", jurisdiction="US")
    return KeyServices([ring])


@pytest.fixture
def signer():
    from pets.boundary import SigningKey

    return SigningKey.generate()


@pytest.fixture
def keys(services, signer):
    from pets.boundary import BoundaryKeys

    return BoundaryKeys(services, signer)


@pytest.fixture
def log(tmp_path, signer):
    from pets.boundary import AuditLog

    return AuditLog(tmp_path / "audit.jsonl", signer=signer, actor=Context("EU", principal="etl"))


def setup_cli(root, monkeypatch) -> None:
    """A keyring, the boundary and the EU KEKs in ``root``, as tests/boundary/test_cli.py
    sets them up (the audit log pinned at ``AUDIT``)."""
    from pets.cli import cli

    monkeypatch.chdir(root)
    monkeypatch.setenv("PETS_MASTER_KEY", "11" * 32)
    monkeypatch.setenv("PETS_PRINCIPAL", "etl")
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    for var in ("PETS_KEYRING", "PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS", "PETS_BOUNDARY",
                "PETS_PKCS11_TOKEN", "PETS_PKCS11_LIBRARY", "PETS_DASK_SCHEDULER"):
        monkeypatch.delenv(var, raising=False)
    assert main(["keys", "init", "--name", "eu"]) == 0
    if "boundary" in cli.commands:
        assert main(["boundary", "init", "--signing-kek", "local://eu/boundary",
                     "--log", AUDIT]) == 0
        kinds = ("pseudonyms", "columns")
    else:  # before `pets boundary init`
        monkeypatch.setenv("PETS_AUDIT_LOG", AUDIT)
        kinds = ("boundary", "pseudonyms", "columns")
    for k in kinds:
        assert main(["keys", "create", f"local://eu/{k}", "--jurisdiction", "EU"]) == 0


@pytest.fixture
def cli_env(tmp_path, monkeypatch, capsys):
    setup_cli(tmp_path, monkeypatch)
    assert main(["datasets", "generate", "--users", "300", "--out", "users.parquet"]) == 0
    capsys.readouterr()
    return tmp_path


def users_frame(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": pd.array([f"u{i:03d}" for i in range(n)], dtype="string"),
        "born": pd.to_datetime([f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}" for i in range(n)]),
    })

HEAD = textwrap.dedent("""\
    dataset: users
    home: EU
    keys: {pseudonyms: "memory://eu/pseudonyms"}
    destinations: {generalized: [US], pseudonymized: [US]}
    columns:
      user_id: {role: identifier, treatment: keyed-hash}
""")  # the hostile rule goes on line 7


def _policy(rule: str, *, head: str = HEAD) -> Policy:
    return Policy.from_yaml(head + "  " + rule + "\n", source="hostile.yaml")


def _refused_at_load(rule: str) -> str:
    with pytest.raises(PolicyError) as info:
        _policy(rule)
    return str(info.value)


class TestIdentityForAnyData:
    """Parameters that are the identity whatever the data: refused when the policy loads."""

    @pytest.mark.parametrize("rule, column, reason", [
        ("ip: {role: quasi-identifier, treatment: ip-prefix, params: {v4: 32}}", "ip",
         "v4=32 keeps every bit of an IPv4 address"),
        ("ip: {role: quasi-identifier, treatment: ip-prefix, params: {v4: 16, v6: 128}}", "ip",
         "v6=128 keeps every bit of an IPv6 address"),
        ("email: {role: identifier, treatment: mask, params: {keep_last: 65536}}", "email",
         "keeps every character"),
        ("zip: {role: quasi-identifier, treatment: postcode-prefix, params: {keep: 1000000}}",
         "zip", "keeps every character"),
        ("age: {role: quasi-identifier, treatment: top-bottom-code, "
         "params: {lower: -.inf, upper: .inf}}", "age", "no finite lower or upper bound"),
    ])
    def test_refused_with_line_column_and_treatment(self, rule, column, reason):
        msg = _refused_at_load(rule)
        assert msg.startswith(f"hostile.yaml line 7, column {column!r}: ")
        assert "leaves values unchanged" in msg and reason in msg

    def test_bad_generalizer_params_are_caught_at_load(self):
        msg = _refused_at_load("ts: {role: quasi-identifier, treatment: truncate-date, "
                               "params: {unit: second}}")
        assert msg.startswith("hostile.yaml line 7, column 'ts': treatment 'truncate-date'")
        assert "unit must be one of" in msg

    def test_nearly_identity_parameters_load(self):
        # /31 and a long mask change values of some data: only the data can tell (below)
        _policy("ip: {role: quasi-identifier, treatment: ip-prefix, params: {v4: 31}}")
        _policy("email: {role: identifier, treatment: mask, params: {keep_last: 64}}")

    def test_policy_check_cli_exits_3(self, tmp_path, capsys):
        f = tmp_path / "hostile.yaml"
        f.write_text(HEAD + "  ip: {role: quasi-identifier, treatment: ip-prefix, "
                            "params: {v4: 32, v6: 128}}\n")
        assert main(["policy", "check", str(f)]) == 3
        err = capsys.readouterr().err
        assert "hostile.yaml line 7, column 'ip': ip-prefix (v4=32, v6=128) leaves values " \
               "unchanged" in err


# -- the identity on the data at hand ------------------------------------------------------------

DATA_CASES = [
    # (rule on line 7, column values, what makes it the identity)
    ("email: {role: identifier, treatment: mask, params: {keep_last: 64}}",
     pd.array(["ann@mail.eu", "bob@mail.eu", None], dtype="string")),
    ("zip: {role: quasi-identifier, treatment: postcode-prefix, params: {keep: 5}}",
     pd.array(["75011", "13001", "1010"], dtype="string")),
    ("ip: {role: quasi-identifier, treatment: ip-prefix, params: {v4: 24}}",
     pd.array(["10.1.2.0", "192.168.7.0", None], dtype="string")),
    ("ip: {role: quasi-identifier, treatment: ip-prefix, params: {v4: 24, v6: 64}}",
     pd.array(["2001:DB8:0:1::", "10.9.9.0"], dtype="string")),
    ("born: {role: quasi-identifier, treatment: truncate-date, params: {unit: day}}",
     pd.to_datetime(["1990-05-01", "1971-02-03", None])),
    ("age: {role: quasi-identifier, treatment: bucket, params: {width: 1}}",
     pd.array([31, 45, None], dtype="Int64")),
    ("age: {role: sensitive, treatment: bucket, params: {edges: [30, 31, 45, 46]}}",
     pd.array([30, 45, 30], dtype="Int64")),
    ("age: {role: metric, treatment: bucket, params: {width: 0.01}}",
     [12.34, 0.5, 99.99]),  # prices in cents: the grid is the data's own
    ("age: {role: quasi-identifier, treatment: top-bottom-code, "
     "params: {lower: 0, upper: 1000}}", pd.array([31, 45, 7], dtype="Int64")),
]


def _frame(rule: str, values) -> pd.DataFrame:
    column = rule.split(":", 1)[0]
    return pd.DataFrame({"user_id": pd.array(["a", "b", "c"][:len(values)], dtype="string"),
                         column: values})


class TestIdentityOnTheData:
    @pytest.mark.parametrize("rule, values", DATA_CASES)
    def test_check_frame_refuses(self, rule, values):
        policy, column = _policy(rule), rule.split(":", 1)[0]
        with pytest.raises(PolicyError) as info:
            policy.check_frame(_frame(rule, values))
        msg = str(info.value)
        assert msg.startswith(f"hostile.yaml line 7, column {column!r}: ")
        assert "leaves every value unchanged" in msg
        assert policy.column(column).treatment in msg

    @pytest.mark.parametrize("rule, values", DATA_CASES)
    def test_protect_refuses_and_records(self, rule, values, keys, eu, log):
        with pytest.raises(PolicyError, match=r"hostile\.yaml line 7, column .*leaves every "
                                              r"value unchanged"):
            protect(_frame(rule, values), _policy(rule), keys, eu, audit=log)
        (entry,) = log.entries()  # the refusal, and no boundary.protect
        assert entry["kind"] == "boundary.refused"
        assert "leaves every value unchanged" in entry["fields"]["reason"]

    @pytest.mark.parametrize("rule, values", [
        # quasi-identifiers: changes at least one value (k-anonymity covers the linking)
        ("zip: {role: quasi-identifier, treatment: postcode-prefix, params: {keep: 4}}",
         pd.array(["75011", "13001"], dtype="string")),
        ("ip: {role: quasi-identifier, treatment: ip-prefix, params: {v4: 31}}",
         pd.array(["10.1.2.3", "10.1.2.5"], dtype="string")),
        ("born: {role: quasi-identifier, treatment: truncate-date, params: {unit: day}}",
         pd.to_datetime(["1990-05-01 00:00", "1971-02-03 10:00"])),
        ("age: {role: quasi-identifier, treatment: bucket, params: {width: 2}}",
         pd.array([31, 45], dtype="Int64")),
        ("age: {role: quasi-identifier, treatment: bucket, params: {width: 1}}",
         [31.5, 45.0]),
        ("email: {role: identifier, treatment: mask, params: {keep_last: 64}}",
         pd.array([None, None], dtype="string")),  # nothing shown at all
        # identifiers: every value changed, and values merged (no longer one-to-one)
        ("phone: {role: identifier, treatment: mask, params: {keep_last: 2}}",
         pd.array(["+491701234512", "+491709999912", "+33612345612"], dtype="string")),
    ])
    def test_a_treatment_that_changes_a_value_passes(self, rule, values, keys, eu):
        policy = _policy(rule)
        policy.check_frame(_frame(rule, values))
        protect(_frame(rule, values), policy, keys, eu)

    @pytest.mark.parametrize("rule, values, message", [
        # the review's policy: most values left raw, labelled "generalized"
        ("email: {role: identifier, treatment: mask, params: {keep_last: 11}}",
         pd.array(["ann@mail.eu", "bobby@mail.eu"], dtype="string"),
         "leaves 1 of 2 values of this identifier unchanged"),
        ("account: {role: identifier, treatment: mask, params: {keep_last: 8}}",
         pd.array(["u00000001", "u00000002", "u00000003"], dtype="string"),
         r"keeps this identifier one-to-one \(3 distinct values in, 3 out\)"),
        ("note: {role: sensitive, treatment: mask, params: {keep_last: 3}}",
         pd.array(["diagnosis-a12", "diagnosis-b34"], dtype="string"),
         "keeps this sensitive one-to-one"),
    ])
    def test_an_identifier_must_be_hidden_not_relabelled(self, rule, values, message, keys,
                                                          eu):
        with pytest.raises(PolicyError, match=message):
            protect(_frame(rule, values), _policy(rule), keys, eu)

    def test_the_example_policies_pass_on_their_tables(self):
        from importlib.resources import files

        from pets.datasets import synthetic_events, synthetic_users

        for name, frame in (("users", synthetic_users(300, seed=2)),
                            ("events", synthetic_events(600, n_users=300, seed=2))):
            text = (files("pets") / "examples" / f"{name}-policy.yaml").read_text()
            Policy.from_yaml(text).check_frame(frame)


class TestProperty:
    """The refusal happens iff the treatment's output equals its input on every value."""

    @settings(max_examples=150, deadline=None)
    @given(values=st.lists(st.text(alphabet="ab12-é", min_size=0, max_size=9), min_size=1,
                           max_size=6),
           keep=st.integers(0, 12), prefix=st.booleans())
    def test_refused_iff_unchanged(self, values, keep, prefix):
        if prefix:
            rule = f"zip: {{role: quasi-identifier, treatment: postcode-prefix, " \
                   f"params: {{keep: {keep}}}}}"
            out = PostcodePrefix(keep).apply(pd.Series(values, dtype="string"))
            before = [v.strip() for v in values]
        else:  # a quasi-identifier: the identity rule alone (identifiers: stricter, above)
            rule = f"zip: {{role: quasi-identifier, treatment: mask, params: {{keep_last: {keep}}}}}"
            out = Mask(keep_last=keep).apply(pd.Series(values, dtype="string"))
            before = values
        unchanged = out.tolist() == before
        policy = _policy(rule)
        frame = pd.DataFrame({"user_id": pd.array([f"u{i}" for i in range(len(values))],
                                                  dtype="string"),
                              "zip": pd.array(values, dtype="string")})
        if unchanged:
            with pytest.raises(PolicyError, match=r"line 7, column 'zip'.*leaves every value"):
                policy.check_frame(frame)
        else:
            policy.check_frame(frame)


# -- Dask: the whole column decides, before anything is signed or written -------------------------

class TestDask:
    @pytest.fixture(autouse=True)
    def _dask(self):
        pytest.importorskip("dask.dataframe")

    def _ddf(self, frame, parts=3):
        import dask.dataframe as dd

        return dd.from_pandas(frame, npartitions=parts)

    def test_identity_over_the_whole_dataset_is_refused(self, keys, eu, log):
        import dask

        rule = "born: {role: quasi-identifier, treatment: truncate-date, params: {unit: day}}"
        frame = users_frame(60)[["user_id", "born"]]
        with dask.config.set(scheduler="synchronous"), \
                pytest.raises(PolicyError, match=r"hostile\.yaml line 7, column 'born': "
                                                 r"truncate-date \(unit=day\) leaves every"):
            protect(self._ddf(frame), _policy(rule), keys, eu, audit=log)
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]

    def test_a_sample_that_looks_unchanged_is_not_refused(self, keys, eu):
        # the first partition (the engine's 16-row sample) is all midnight dates; later rows
        # have times: the treatment changes values, as the pandas path sees it
        import dask

        rule = "born: {role: quasi-identifier, treatment: truncate-date, params: {unit: day}}"
        frame = users_frame(60)[["user_id", "born"]]
        frame.loc[40:, "born"] = frame.loc[40:, "born"] + pd.Timedelta(hours=5)
        with dask.config.set(scheduler="synchronous"):
            lazy = protect(self._ddf(frame), _policy(rule), keys, eu)
            pf = lazy.compute(progress=False)
        pandas = protect(frame, _policy(rule), keys, eu)
        assert pf.data["born"].tolist() == pandas.data["born"].tolist()

    def test_engine_protect_refuses_a_foreign_kek(self, keys, services, eu):
        import dask

        from pets.engines._dispatch import in_process_keys
        from pets.engines._protect import protect as dask_protect

        head = HEAD.replace("memory://eu/pseudonyms", "memory://us/pseudonyms")
        policy = Policy.from_yaml(head, source="hostile.yaml")
        workers = in_process_keys(eu, services)
        with dask.config.set(scheduler="synchronous"), \
                pytest.raises(JurisdictionError, match="key 'pseudonyms'"):
            dask_protect(self._ddf(users_frame(12)[["user_id"]]), policy, keys, eu,
                         workers=workers)


# -- the CLI: policy check --data and protect exit 3 and write nothing ----------------------------

CLI_POLICY = textwrap.dedent("""\
    version: 1
    dataset: users
    home: EU
    keys:
      signing: local://eu/boundary
      pseudonyms: local://eu/pseudonyms
      columns: local://eu/columns
    min_k: 1
    destinations: {pseudonymized: [US], generalized: [US], kept: [US]}
    columns:
      user_id: {role: identifier, treatment: keyed-hash}
      email: {role: identifier, treatment: token}
      phone: {role: identifier, treatment: encrypt}
      birth_date: {role: quasi-identifier, treatment: truncate-date, params: {unit: day}}
      postcode: {role: drop}
      country: {role: quasi-identifier, treatment: keep}
      ip: {role: drop}
      signup_ts: {role: metric, treatment: truncate-date, params: {unit: month}}
""")  # birth_date (line 14) holds dates only: truncating it to the day changes nothing


class TestCli:
    def test_policy_check_with_data_exits_3(self, cli_env, capsys):
        (cli_env / "hostile.yaml").write_text(CLI_POLICY)
        assert main(["policy", "check", "hostile.yaml"]) == 0  # fine without the data
        capsys.readouterr()
        assert main(["policy", "check", "hostile.yaml", "--data", "users.parquet"]) == 3
        err = capsys.readouterr().err
        assert "hostile.yaml line 14, column 'birth_date': truncate-date (unit=day) leaves " \
               "every value unchanged" in err

    @pytest.mark.parametrize("engine", ["pandas", "dask"])
    def test_protect_exits_3_and_writes_nothing(self, cli_env, capsys, engine):
        if engine == "dask":
            pytest.importorskip("distributed")
        (cli_env / "hostile.yaml").write_text(CLI_POLICY)
        code = main(["protect", "users.parquet", "--policy", "hostile.yaml", "--out", "prot",
                     "--engine", engine, *(["--workers", "1"] if engine == "dask" else [])])
        err = capsys.readouterr().err
        assert code == 3, err
        assert "hostile.yaml line 14, column 'birth_date'" in err
        assert "leaves every value unchanged" in err
        assert not (cli_env / "prot").exists()
        assert main(["export", "prot", "--to", "US", "--out", "us/u.parquet"]) != 0
        assert not (cli_env / "us").exists()
        log = (cli_env / AUDIT).read_text()
        assert "boundary.refused" in log and "boundary.protect\"" not in log

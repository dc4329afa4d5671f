"""Policies: YAML and Python give the same object; every mistake names its line and column."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pets import InputError, PolicyError
from pets.boundary import TREATMENTS, ColumnRule, Policy, load_policy

GOOD = textwrap.dedent("""\
    dataset: users
    home: EU
    keys:
      pseudonyms: memory://eu/pseudonyms
      columns: memory://eu/columns
    min_k: 3
    destinations:
      dp_release: ["*"]
      pseudonymized: [US, sg]
      generalized: [US]
      encrypted: []
    columns:
      user_id: {role: identifier, treatment: keyed-hash}
      email:
        role: identifier
        treatment: encrypt
        mode: deterministic
      age: {role: quasi-identifier, treatment: bucket, params: {width: 10}}
      minutes: {role: metric, treatment: keep}
      note: {role: drop}
""")


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": pd.array(["u1", "u2"], dtype="string"),
        "email": pd.array(["a@x", "b@x"], dtype="string"),
        "age": [31, 45], "minutes": [1.5, 2.0], "note": ["x", "y"],
    })


def _bad(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        Policy.from_yaml(text, source="p.yaml")
    return info.value


class TestParse:
    def test_good_policy(self):
        p = Policy.from_yaml(GOOD, source="p.yaml")
        assert [r.name for r in p.columns] == ["user_id", "email", "age", "minutes", "note"]
        assert p.column("user_id").domain == "users.user_id"
        assert p.column("user_id").key == "pseudonyms"
        assert p.column("email").key == "columns" and p.column("email").mode == "deterministic"
        assert p.column("note").treatment == "drop" and p.column("note").output is None
        assert p.destinations["pseudonymized"] == ("SG", "US")
        assert p.column("age").line == 18
        assert p.quasi_identifiers == ["age"]

    def test_allows(self):
        p = Policy.from_yaml(GOOD)
        assert p.allows("dp_release", "BR") and p.allows("pseudonymized", "sg")
        assert not p.allows("encrypted", "US") and not p.allows("kept", "US")
        assert p.allows("encrypted", "EU")  # home is always allowed

    def test_python_and_yaml_give_the_same_policy_and_digest(self):
        from_yaml = Policy.from_yaml(GOOD)
        built = Policy(
            dataset="users", home="EU", min_k=3,
            keys={"pseudonyms": "memory://eu/pseudonyms", "columns": "memory://eu/columns"},
            destinations={"dp_release": ("*",), "pseudonymized": ("US", "SG"),
                          "generalized": ("US",), "encrypted": ()},
            columns=(ColumnRule("user_id", "identifier", "keyed-hash"),
                     ColumnRule("email", "identifier", "encrypt", mode="deterministic"),
                     ColumnRule("age", "quasi-identifier", "bucket", params={"width": 10}),
                     ColumnRule("minutes", "metric", "keep"),
                     ColumnRule("note", "drop")))
        assert built == from_yaml
        assert built.digest() == from_yaml.digest()

    def test_digest_changes_with_any_rule(self):
        a = Policy.from_yaml(GOOD)
        b = Policy.from_yaml(GOOD.replace("width: 10", "width: 5"))
        c = Policy.from_yaml(GOOD.replace("[US, sg]", "[US]"))
        assert len({a.digest(), b.digest(), c.digest()}) == 3

    def test_from_dict(self):
        p = Policy.from_dict({"dataset": "d", "columns": {"x": {"role": "metric",
                                                                 "treatment": "keep"}}})
        assert p.column("x").output == "kept" and p.column("x").line is None

    def test_load_policy_names_the_file(self, tmp_path):
        f = tmp_path / "pol.yaml"
        f.write_text(GOOD.replace("role: drop", "role: dorp"))
        with pytest.raises(PolicyError, match=r"pol\.yaml line 20, column 'note': unknown role"):
            load_policy(f)
        with pytest.raises(InputError, match="cannot read policy"):
            load_policy(tmp_path / "missing.yaml")


class TestMalformed:
    def test_unknown_top_level_key(self):
        err = _bad(GOOD.replace("min_k: 3", "min_k: 3\nmin_l: 2"))
        assert str(err).startswith("p.yaml line 7: unknown key 'min_l'")

    def test_unknown_column_key(self):
        err = _bad(GOOD.replace("mode: deterministic", "mode: deterministic\n    salt: 1"))
        assert str(err).startswith("p.yaml line 18, column 'email': unknown key 'salt'")

    def test_unknown_treatment(self):
        err = _bad(GOOD.replace("treatment: keyed-hash", "treatment: sha1"))
        assert "line 13, column 'user_id': unknown treatment 'sha1'" in str(err)

    def test_treatment_not_allowed_for_role(self):
        err = _bad(GOOD.replace("{role: identifier, treatment: keyed-hash}",
                                "{role: identifier, treatment: keep}"))
        assert "line 13, column 'user_id': treatment 'keep' is not allowed for role" in str(err)

    def test_missing_role(self):
        err = _bad(GOOD.replace("{role: metric, treatment: keep}", "{treatment: keep}"))
        assert "line 19, column 'minutes': missing 'role'" in str(err)

    def test_keyed_treatment_needs_a_named_key(self):
        err = _bad(GOOD.replace("  pseudonyms: memory://eu/pseudonyms\n", ""))
        assert "column 'user_id': treatment 'keyed-hash' needs key 'pseudonyms'" in str(err)

    def test_params_on_keep_are_refused(self):
        err = _bad(GOOD.replace("{role: metric, treatment: keep}",
                                "{role: metric, treatment: keep, params: {x: 1}}"))
        assert "column 'minutes': treatment 'keep' takes no params" in str(err)

    def test_mode_only_for_encrypt(self):
        err = _bad(GOOD.replace("treatment: keyed-hash}", "treatment: keyed-hash, mode: x}"))
        assert "'mode' applies only to treatment 'encrypt'" in str(err)

    def test_bad_destination_kind_and_jurisdiction(self):
        assert "line 8: unknown output kind 'raw'" in str(_bad(GOOD.replace(
            "dp_release:", "raw:")))
        assert "invalid jurisdiction 'U S!'" in str(_bad(GOOD.replace(
            "generalized: [US]", "generalized: ['U S!']")))

    def test_duplicate_column(self):
        err = _bad(GOOD + "  minutes: {role: metric, treatment: keep}\n")
        assert "line 21: duplicate key 'minutes'" in str(err)

    @pytest.mark.parametrize("text, where", [
        ("dataset: x\ncolumns: [a, b]\n", "line 2"),
        ("dataset: x\n", "missing required key 'columns'"),
        ("", "the policy is empty"),
        ("dataset: x\ncolumns: {a: {role: metric\n", "not valid YAML"),
        ("dataset: x\nmin_k: 0\ncolumns: {a: {role: metric, treatment: keep}}\n",
         "line 2: 'min_k' must be an integer >= 1"),
        ("version: 2\ndataset: x\ncolumns: {a: {role: metric, treatment: keep}}\n",
         "line 1: unsupported policy version 2"),
    ])
    def test_shape_errors(self, text, where):
        assert where in str(_bad(text))


class TestCheckFrame:
    def test_matching_frame_passes(self):
        Policy.from_yaml(GOOD).check_frame(_frame())

    def test_forgotten_column_is_refused(self):
        with pytest.raises(PolicyError, match=r"line 12, column 'phone': the policy has no "
                                              r"rule for this column"):
            Policy.from_yaml(GOOD, source="p.yaml").check_frame(_frame().assign(phone="1"))

    def test_unknown_column_is_refused(self):
        with pytest.raises(PolicyError, match=r"p\.yaml line 20, column 'note': no such "
                                              r"column in the data"):
            Policy.from_yaml(GOOD, source="p.yaml").check_frame(_frame().drop(columns="note"))

    def test_treatment_must_fit_the_dtype(self):
        frame = _frame().assign(age=["thirty", "forty"])
        with pytest.raises(PolicyError, match=r"line 18, column 'age': treatment 'bucket' "
                                              r"does not fit a string column"):
            Policy.from_yaml(GOOD, source="p.yaml").check_frame(frame)

    def test_object_columns_are_inferred(self):
        frame = _frame().astype({"user_id": object})
        Policy.from_yaml(GOOD).check_frame(frame)
        with pytest.raises(PolicyError, match="does not fit a float column"):
            Policy.from_yaml(GOOD).check_frame(_frame().assign(user_id=[1.5, 2.5]))


class TestExamplePolicy:
    def test_shipped_example_parses_and_fits_the_synthetic_users(self):
        from importlib.resources import files

        from pets.datasets import synthetic_users

        text = (files("pets") / "examples" / "users-policy.yaml").read_text()
        policy = Policy.from_yaml(text, source="users-policy.yaml")
        policy.check_frame(synthetic_users(50, seed=1))
        assert policy.allows("dp_release", "US") and not policy.allows("encrypted", "US")


class TestHostileYaml:
    def test_aliases_are_refused(self):
        text = GOOD.replace("  minutes: {role: metric, treatment: keep}",
                            "  minutes: &m {role: metric, treatment: keep}\n  other: *m")
        assert "line 19: YAML aliases are not supported" in str(_bad(text))

    def test_billion_laughs_is_refused_quickly(self):
        lol = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join('*' + chr(97 + i) for _ in range(9))}]\n"
            for i in range(8))
        assert "aliases are not supported" in str(_bad(lol))

    def test_huge_policy_is_refused(self):
        assert "larger than" in str(_bad("#" * (1 << 21)))


_ROLE_TREATMENTS = {
    role: sorted(t for t, spec in TREATMENTS.items() if role in spec.roles)
    for role in ("identifier", "quasi-identifier", "sensitive", "metric", "drop")
}


# generalizer parameters are bound when the policy loads: those without defaults need some
_REQUIRED_PARAMS = {"top-bottom-code": {"lower": 0}, "age-band": {"reference": "2026-01-01"}}


@st.composite
def policies(draw):
    n = draw(st.integers(1, 6))
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), min_size=n,
                          max_size=n, unique=True))
    rules = []
    for name in names:
        role = draw(st.sampled_from(sorted(_ROLE_TREATMENTS)))
        treatment = draw(st.sampled_from(_ROLE_TREATMENTS[role]))
        mode = draw(st.sampled_from([None, "randomized", "deterministic"])) \
            if treatment == "encrypt" else None
        params = {"width": draw(st.integers(1, 50))} if treatment == "bucket" else \
            _REQUIRED_PARAMS.get(treatment, {})
        rules.append(ColumnRule(name, role, treatment, params=params, mode=mode))
    kinds = draw(st.lists(st.sampled_from(["pseudonymized", "generalized", "encrypted", "kept",
                                           "dp_release"]), unique=True))
    dests = {k: tuple(draw(st.lists(st.sampled_from(["US", "SG", "UK", "*"]), unique=True)))
             for k in kinds}
    return Policy(dataset=draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
                  columns=tuple(rules), destinations=dests,
                  keys={"pseudonyms": "local://eu/p", "columns": "local://eu/c"},
                  min_k=draw(st.integers(1, 20)), enforce_k=draw(st.booleans()),
                  max_suppression=draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])))


class TestRoundTrip:
    @settings(max_examples=60, deadline=None)
    @given(policies())
    def test_yaml_roundtrip_gives_an_equal_policy_and_digest(self, policy):
        back = Policy.from_yaml(policy.to_yaml())
        assert back == policy and back.digest() == policy.digest()


class TestBoundAtLoad:
    """Generalizer parameters are bound when the policy loads (``pets policy check``)."""

    def test_bad_params_name_line_and_column(self):
        err = _bad(GOOD.replace("params: {width: 10}", "params: {widht: 10}"))
        assert str(err).startswith("p.yaml line 18, column 'age': treatment 'bucket' with "
                                   "params {'widht': 10}: ")

    @pytest.mark.parametrize("params, reason", [
        ("{width: 10, edges: [1, 2]}", "exactly one of"),
        ("{width: -1}", "width must be > 0"),
    ])
    def test_refused_values(self, params, reason):
        assert reason in str(_bad(GOOD.replace("{width: 10}", params)))

    def test_identity_for_any_data_is_refused(self):
        text = GOOD.replace("age: {role: quasi-identifier, treatment: bucket, params: "
                            "{width: 10}}", "age: {role: quasi-identifier, treatment: "
                            "ip-prefix, params: {v6: 128}}")
        assert "line 18, column 'age': ip-prefix (v4=24, v6=128) leaves values unchanged " \
               "(v6=128 keeps every bit of an IPv6 address)" in str(_bad(text))


class TestCheckFrameValues:
    def test_identity_on_the_data_is_refused(self):
        frame = _frame().assign(age=[31, 45])
        policy = Policy.from_yaml(GOOD.replace("width: 10", "width: 1"), source="p.yaml")
        with pytest.raises(PolicyError, match=r"p\.yaml line 18, column 'age': bucket "
                                              r"\(width=1, origin=0.0\) leaves every value "
                                              r"unchanged \(2 non-null values, 2 distinct"):
            policy.check_frame(frame)
        policy.check_frame(frame, values=False)  # structure only (protect checks values)
        policy.check_frame(frame.assign(age=[31.5, 45.0]))  # 31.5 is not shown as it was

    def test_a_failing_generalizer_names_line_and_column(self):
        text = GOOD.replace("age: {role: quasi-identifier, treatment: bucket, params: "
                            "{width: 10}}", "age: {role: quasi-identifier, treatment: "
                            "ip-prefix}")
        with pytest.raises(PolicyError, match=r"line 18, column 'age': ip-prefix failed: .*not "
                                              r"an IP address"):
            Policy.from_yaml(text).check_frame(_frame().assign(
                age=pd.array(["1.2.3.4", "nope"], dtype="string")))


class TestDatasetName:
    @pytest.mark.parametrize("name", ["../users", "users/x", ".users", "/abs", "..", "u\\x00"])
    def test_path_like_names_are_refused_with_the_line(self, name):
        err = _bad(GOOD.replace("dataset: users", f"dataset: \"{name}\""))
        assert str(err).startswith(f"p.yaml line 1: 'dataset' {name!r}".replace("\\\\", "\\"))

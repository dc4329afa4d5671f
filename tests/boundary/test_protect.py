"""protect() and reidentify(): treatments applied, manifest signed, refusals recorded."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from pets import Context, JurisdictionError, PolicyError
from pets.boundary import BoundaryKeys, Policy, protect, reidentify, verify_log


def _kinds(log) -> list[str]:
    return [e["kind"] for e in log.entries()]


class TestProtect:
    def test_treatments_manifest_and_audit(self, raw, policy, keys, eu_ctx, log, signer):
        pf = protect(raw, policy, keys, eu_ctx, audit=log)
        assert list(pf.data.columns) == ["user_id", "email", "phone", "country", "minutes"]
        assert len(pf) == len(raw)
        assert not set(pf.data["user_id"]) & set(raw["user_id"])
        assert not set(pf.data["email"]) & set(raw["email"])
        assert pf.data["phone"].map(type).eq(bytes).all()
        assert pf.data["country"].tolist() == raw["country"].tolist()
        m = pf.manifest.verify(signer.public_key).verify_data(pf.data)
        assert m.policy_digest == policy.digest()
        uid = m.column("user_id")
        assert (uid.treatment, uid.output, uid.key_uri, uid.key_version, uid.domain) == (
            "keyed-hash", "pseudonymized", "memory://eu/pseudonyms", 1, "users.user_id")
        assert "link" in uid.links and not uid.reversible
        assert m.column("email").reversible
        phone = m.column("phone")
        assert phone.output == "encrypted" and phone.key_uri == "memory://eu/columns"
        assert phone.header is not None and phone.header["columns"][0]["column"] == "phone"
        assert _kinds(log)[-1] == "boundary.protect"
        entry = log.entries()[-1]
        assert entry["fields"]["dropped"] == ["ip"] and entry["fields"]["rows"] == 12
        assert verify_log(log.path, signer.public_key).ok

    def test_no_key_bytes_in_manifest(self, raw, policy, keys, eu_ctx):
        pf = protect(raw, policy, keys, eu_ctx)
        text = pf.manifest.to_json()
        for name in ("secret", "dek\"", "private"):
            assert name not in text

    def test_pseudonyms_are_stable_across_runs(self, tmp_path, raw, policy, services, eu_ctx):
        BoundaryKeys.create(tmp_path / "b", services, context=eu_ctx,
                            signing_kek="memory://eu/kek", audit_log=tmp_path / "audit.jsonl",
                            ledger=tmp_path / "ledger.sqlite")

        def run():
            keys = BoundaryKeys.open(tmp_path / "b", services, context=eu_ctx)
            return protect(raw, policy, keys, eu_ctx).data

        a, b = run(), run()
        assert a["user_id"].equals(b["user_id"]) and a["email"].equals(b["email"])
        assert not a["phone"].equals(b["phone"])  # randomized encryption

    def test_outside_home_is_refused_and_recorded(self, raw, policy, keys, us_ctx, log):
        with pytest.raises(JurisdictionError, match="protect runs in the policy's home EU"):
            protect(raw, policy, keys, us_ctx, audit=log)
        (entry,) = log.entries()
        assert entry["kind"] == "boundary.refused" and entry["actor"] == "analyst@US"

    def test_forgotten_column_is_refused_and_recorded(self, raw, policy, keys, eu_ctx, log):
        with pytest.raises(PolicyError, match="column 'birth'"):
            protect(raw.assign(birth="1990"), policy, keys, eu_ctx, audit=log)
        assert _kinds(log) == ["boundary.refused"]
        assert "birth" in log.entries()[0]["fields"]["reason"]

    def test_k_not_met_is_refused(self, raw, keys, eu_ctx, log):
        from tests.boundary.conftest import POLICY

        strict = Policy.from_yaml(POLICY.replace("min_k: 1", "min_k: 5"))
        with pytest.raises(PolicyError, match=r"k-anonymity of \(country\) is 4 < min_k 5"):
            protect(raw, strict, keys, eu_ctx, audit=log)
        assert _kinds(log) == ["boundary.refused"]

    def test_enforce_k_suppresses_small_classes(self, raw, keys, eu_ctx):
        from tests.boundary.conftest import POLICY

        p = Policy.from_yaml(POLICY.replace(
            "min_k: 1", "min_k: 5\nenforce_k: true\nmax_suppression: 0.2"))
        skewed = raw.assign(country=pd.array(["DE"] * 10 + ["MT", "LU"], dtype="string"))
        pf = protect(skewed, p, keys, eu_ctx)
        assert len(pf) == 10 and set(pf.data["country"]) == {"DE"}
        assert pf.manifest.k_anonymity["suppressed_rows"] == 2
        assert pf.manifest.k_anonymity["k"] == 10
        assert pf.manifest.verify_data(pf.data).rows == 10

    def test_enforce_k_refuses_beyond_max_suppression(self, raw, keys, eu_ctx, log):
        from tests.boundary.conftest import POLICY

        p = Policy.from_yaml(POLICY.replace(
            "min_k: 1", "min_k: 5\nenforce_k: true\nmax_suppression: 0.1"))
        skewed = raw.assign(country=pd.array(["DE"] * 10 + ["MT", "LU"], dtype="string"))
        with pytest.raises(PolicyError, match="k=5 cannot be met"):
            protect(skewed, p, keys, eu_ctx, audit=log)
        assert _kinds(log) == ["boundary.refused"]

    def test_generalizers_and_date_shift(self, keys, eu_ctx):
        p = Policy.from_yaml("""
dataset: visits
keys: {pseudonyms: "memory://eu/pseudonyms"}
columns:
  user: {role: identifier, treatment: keyed-hash}
  born: {role: quasi-identifier, treatment: age-band, params: {reference: 2026-01-01, width: 10}}
  zip: {role: quasi-identifier, treatment: postcode-prefix, params: {keep: 2}}
  seen: {role: sensitive, treatment: date-shift, params: {by: user, max_days: 10}}
  spend: {role: metric, treatment: bucket, params: {width: 100}}
""")
        df = pd.DataFrame({
            "user": ["a", "a", "b"],
            "born": pd.to_datetime(["1990-05-01", "1990-05-01", "1971-02-03"]),
            "zip": ["75011", "75011", "13001"],
            "seen": pd.to_datetime(["2026-01-10", "2026-01-20", "2026-02-01"]),
            "spend": [12.5, 230.0, 99.0],
        })
        pf = protect(df, p, keys, eu_ctx)
        assert pf.data["born"].tolist() == ["30-39", "30-39", "50-59"]
        assert pf.data["zip"].tolist() == ["75", "75", "13"]
        assert pf.data["spend"].tolist() == ["[0, 100)", "[200, 300)", "[0, 100)"]
        assert (pf.data["seen"][1] - pf.data["seen"][0]).days == 10
        assert pf.manifest.column("born").params["width"] == 10
        assert pf.manifest.column("seen").key_uri == "memory://eu/pseudonyms"

    def test_bad_treatment_params_name_line_and_column(self, raw, keys, eu_ctx):
        from tests.boundary.conftest import POLICY

        p = Policy.from_yaml(POLICY.replace(
            "{role: identifier, treatment: keyed-hash}",
            "{role: identifier, treatment: keyed-hash, params: {encoding: rot13}}"),
            source="p.yaml")
        with pytest.raises(PolicyError, match=r"p\.yaml line 12, column 'user_id'"):
            protect(raw, p, keys, eu_ctx)


class TestReidentify:
    def test_token_reverses_in_the_eu(self, raw, policy, keys, eu_ctx, log):
        pf = protect(raw, policy, keys, eu_ctx, audit=log)
        back = reidentify(pf, "email", pf.data["email"][:3], keys, eu_ctx, audit=log,
                          reason="ticket-1")
        assert back.tolist() == raw["email"][:3].tolist()
        entry = log.entries()[-1]
        assert entry["kind"] == "boundary.reidentify"
        assert entry["fields"] == {"dataset": "users", "column": "email", "treatment": "token",
                                   "rows": 3, "reason": "ticket-1"}

    def test_encrypted_column_reverses_in_the_eu(self, raw, policy, keys, eu_ctx):
        pf = protect(raw, policy, keys, eu_ctx)
        assert reidentify(pf, "phone", pf.data["phone"], keys, eu_ctx).tolist() == \
            raw["phone"].tolist()

    @pytest.mark.parametrize("column", ["email", "phone"])
    def test_us_context_is_refused_and_recorded(self, raw, policy, keys, services, eu_ctx,
                                                us_ctx, log, column):
        for svc in services:
            svc.audit = log.hook  # the key service reports its own refusal
        pf = protect(raw, policy, keys, eu_ctx)
        with pytest.raises(JurisdictionError):
            reidentify(pf, column, pf.data[column][:2], keys, us_ctx, audit=log)
        kinds = _kinds(log)
        assert kinds[-1] == "boundary.refused"
        assert "key.refused" in kinds[:-1]
        assert log.entries()[-1]["actor"] == "analyst@US"

    def test_keyed_hash_does_not_reverse(self, raw, policy, keys, eu_ctx):
        pf = protect(raw, policy, keys, eu_ctx)
        with pytest.raises(PolicyError, match="cannot be re-identified"):
            reidentify(pf, "user_id", pf.data["user_id"][:1], keys, eu_ctx)

    def test_unknown_root_is_not_created_on_reidentify(self, raw, policy, keys, services,
                                                       signer, eu_ctx):
        pf = protect(raw, policy, keys, eu_ctx)
        fresh = BoundaryKeys(services, signer)
        with pytest.raises(Exception, match="no root secret"):
            reidentify(pf, "email", pf.data["email"][:1], fresh, Context("EU"))


class TestExamplePolicies:
    def test_users_and_events_pseudonyms_join_on_the_shared_domain(self, services, signer,
                                                                   eu_ctx):
        from importlib.resources import files

        from pets.datasets import synthetic_events, synthetic_users
        from pets.keys import KeyServices, MemoryKeyring

        def load(name):
            text = (files("pets") / "examples" / name).read_text()
            return Policy.from_yaml(text.replace("local://", "memory://"), source=name)

        ring = MemoryKeyring()
        for k in ("boundary", "pseudonyms", "columns"):
            ring.create(f"memory://eu/{k}", jurisdiction="EU")
        keys = BoundaryKeys(KeyServices([ring]), signer)
        users, events = synthetic_users(5000, seed=3), synthetic_events(20000, n_users=5000,
                                                                        seed=3)
        users_policy = Policy.from_yaml(
            (files("pets") / "examples" / "users-policy.yaml").read_text()
            .replace("local://", "memory://").replace("min_k: 5", "min_k: 1"))
        pu = protect(users, users_policy, keys, eu_ctx)  # min_k 1: rows stay aligned
        pe = protect(events, load("events-policy.yaml"), keys, eu_ctx)
        assert pe.data["ts"].dt.hour.eq(0).all()
        pseudonym = dict(zip(users["user_id"], pu.data["user_id"], strict=True))
        expected = events["user_id"].map(pseudonym)
        assert pe.data["user_id"].tolist() == expected.tolist()
        assert not set(pe.data["user_id"]) & set(events["user_id"])


class TestForeignKeks:
    """A KEK wraps anywhere but unwraps only in its jurisdiction: a policy at home in the EU
    whose keys belong to the US would make its pseudonym roots and column keys readable
    there. protect refuses before any work, on every engine (issue #12)."""

    @pytest.fixture
    def us_services(self, services):
        for svc in services:
            for name in ("pseudonyms", "columns"):
                svc.create(f"memory://us/{name}", jurisdiction="US")
        return services

    @pytest.mark.parametrize("key, column", [("pseudonyms", "'user_id', 'email'"),
                                             ("columns", "'phone'")])
    def test_refused_naming_key_and_columns(self, raw, us_services, signer, eu_ctx, log, key,
                                            column):
        from tests.boundary.conftest import POLICY

        text = POLICY.replace(f"memory://eu/{key}", f"memory://us/{key}")
        p = Policy.from_yaml(text, source="p.yaml")
        for svc in us_services:
            svc.audit = log.hook  # a wrap under any KEK would be recorded as key.wrap
        keys = BoundaryKeys(us_services, signer)
        line = 3 if key == "pseudonyms" else 4
        with pytest.raises(JurisdictionError, match=(
                rf"p\.yaml line {line}: key '{key}' \(memory://us/{key}\) belongs to US, not "
                rf"to the policy's home EU: columns {column} would be keyed there")):
            protect(raw, p, keys, eu_ctx, audit=log)
        (entry,) = log.entries()  # no key.wrap: no root secret or data key was made
        assert entry["kind"] == "boundary.refused"
        assert "JurisdictionError" in entry["fields"]["reason"]

    def test_an_unused_foreign_key_is_refused_too(self, raw, policy, us_services, signer,
                                                  eu_ctx):
        p = dataclasses.replace(policy, keys={**policy.keys, "spare": "memory://us/columns"})
        with pytest.raises(JurisdictionError, match=r"key 'spare' .* what it wraps would be "
                                                    r"readable there"):
            protect(raw, p, BoundaryKeys(us_services, signer), eu_ctx)

    def test_dask_frames_are_refused_before_any_work(self, raw, us_services, signer, eu_ctx,
                                                     log):
        dd = pytest.importorskip("dask.dataframe")
        from tests.boundary.conftest import POLICY

        p = Policy.from_yaml(POLICY.replace("memory://eu/columns", "memory://us/columns"))
        with pytest.raises(JurisdictionError, match="key 'columns'"):
            protect(dd.from_pandas(raw, npartitions=2), p, BoundaryKeys(us_services, signer),
                    eu_ctx, audit=log)
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]


class TestIdentityTreatments:
    def test_identity_generalizer_is_refused_before_the_manifest(self, raw, policy, keys,
                                                                 eu_ctx, log):
        p = Policy.from_yaml(policy.to_yaml().replace(
            "ip:\n    role: drop\n    treatment: drop",
            "ip:\n    role: quasi-identifier\n    treatment: ip-prefix\n"
            "    params: {v4: 31}"), source="p.yaml")
        ok = raw.assign(ip=[f"10.0.0.{2 * i + 1}" for i in range(len(raw))])
        protect(ok, p, keys, eu_ctx)  # /31 clears the last bit of odd addresses
        even = raw.assign(ip=[f"10.0.0.{2 * i}" for i in range(len(raw))])
        with pytest.raises(PolicyError, match=r"p\.yaml line \d+, column 'ip': ip-prefix "
                                              r"\(v4=31, v6=48\) leaves every value unchanged"):
            protect(even, p, keys, eu_ctx, audit=log)
        assert [e["kind"] for e in log.entries()] == ["boundary.refused"]

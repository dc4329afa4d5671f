"""Attack: a process outside the EU *claims* to be in the EU to unwrap an EU key.

With a transit key server the claim (``Context("EU")``) is only a hint: the server decides from
the identity it authenticated. Each test tries the attack against real OpenBao dev servers
(tests/openbao.py) with the US AppRole's own credentials and asserts the precise refusal, that
no data key came back, and that the refusal is recorded (pets audit hook and the server's audit
device).
"""

from __future__ import annotations

import base64
import uuid

import pytest

from pets import Context, JurisdictionError
from pets.keys import KeyServices, TransitKeyService

EU = Context("EU", principal="etl@eu")
LIAR = Context("EU", principal="mallory")  # runs with US credentials, claims EU


class Hook(list):  # type: ignore[type-arg]
    def __call__(self, event):
        self.append(event)


@pytest.fixture
def eu_wrapped(openbao):
    """An EU key on eu-ireland and a data key wrapped under it by the EU AppRole."""
    server, env = openbao.approle("eu-ireland", "pets-eu")
    owner = TransitKeyService(server, environ=env)
    uri = f"vault://eu-ireland/secret-{uuid.uuid4().hex[:8]}"
    owner.create(uri, jurisdiction="EU")
    dek = b"S" * 32
    return uri, owner.wrap(uri, dek, context=EU, enc_context={"table": "patients"}), dek


class TestKeyServerIdentity:
    def test_us_approle_claiming_eu_gets_the_servers_403(self, openbao, eu_wrapped):
        uri, wrapped, dek = eu_wrapped
        name = uri.rsplit("/", 1)[1]
        # US credentials whose secret-id carries no jurisdiction tag: no client-side identity
        # check can fire, so only the server's policy stands between the attacker and the key
        server, env = openbao.approle("eu-ireland", "pets-us", tagged=False)
        hook = Hook()
        services = KeyServices([TransitKeyService(server, environ=env, audit=hook)],
                               audit=hook)
        got = None
        with pytest.raises(JurisdictionError) as exc:
            got = services.unwrap(wrapped, context=LIAR, enc_context={"table": "patients"})
        assert got is None
        msg = str(exc.value)
        assert msg.startswith("transit server 'eu-ireland' (http://127.0.0.1:")
        assert f"denied unwrap of {uri} (a EU key) to identity 'pets-us'" in msg
        assert msg.endswith("permission denied by the server's policy")
        assert dek.decode() not in msg and exc.value.exit_code == 4
        refused = [e for e in hook if e.kind == "key.refused"]
        assert len(refused) == 1  # reported once (the registry does not repeat it)
        assert refused[0].fields["identity"] == "pets-us"
        assert refused[0].fields["principal"] == "mallory"
        assert refused[0].fields["reason"] == "server permission denied"
        assert "key.unwrap" not in [e.kind for e in hook]
        audit = openbao["eu-ireland"].audit_entries()
        denied = [e for e in audit if e.get("type") == "response"
                  and e["request"].get("path") == f"transit/keys/{name}"
                  and "permission denied" in str(e.get("error", ""))]
        assert denied, "the server's audit device records the denied request"
        decrypted = [e for e in audit if e.get("type") == "response"
                     and e["request"].get("path") == f"transit/decrypt/{name}"
                     and not e.get("error")]
        assert decrypted == []  # no decrypt of this key ever succeeded

    def test_tagged_us_identity_is_refused_even_when_claiming_eu(self, openbao, eu_wrapped):
        uri, wrapped, _ = eu_wrapped
        server, env = openbao.approle("eu-ireland", "pets-us")  # secret-id says US
        hook = Hook()
        svc = TransitKeyService(server, environ=env, audit=hook)
        with pytest.raises(JurisdictionError,
                           match=rf"^key {uri} belongs to EU; unwrap refused: transit server "
                                 r"'eu-ireland' .* authenticated this process as 'pets-us' of "
                                 r"US \(the claimed EU is only a hint\)$"):
            svc.unwrap(wrapped, context=LIAR, enc_context={"table": "patients"})
        assert [e.kind for e in hook][-1] == "key.refused"
        assert hook[-1].fields["identity_jurisdiction"] == "US"

    def test_us_token_claiming_eu_is_refused(self, openbao, eu_wrapped):
        _, wrapped, _ = eu_wrapped
        token = openbao.token("eu-ireland", "pets-us", tagged=False)
        server, env = openbao.token_server("eu-ireland", token)
        with pytest.raises(JurisdictionError, match="permission denied by the server's policy"):
            TransitKeyService(server, environ=env).unwrap(
                wrapped, context=LIAR, enc_context={"table": "patients"})

    def test_a_client_that_skips_pets_is_refused_by_the_server(self, openbao, eu_wrapped):
        import hvac

        uri, wrapped, _ = eu_wrapped
        srv = openbao["eu-ireland"]
        client = hvac.Client(url=srv.url, timeout=10)
        client.auth.approle.login(role_id=srv.role_ids["pets-us"],
                                  secret_id=openbao.secret_id("eu-ireland", "pets-us"))
        aad = base64.b64encode(b'{"table":"patients"}').decode()
        with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
            client.secrets.transit.decrypt_data(uri.rsplit("/", 1)[1],
                                                ciphertext=wrapped.blob.decode(),
                                                associated_data=aad)
        with pytest.raises(hvac.exceptions.Forbidden):  # nor can it read or loosen the key
            client.secrets.transit.update_key_configuration(uri.rsplit("/", 1)[1],
                                                            exportable=True)

    def test_the_eu_identity_does_unwrap(self, openbao, eu_wrapped):
        """The control: the same call with the EU AppRole succeeds (the refusals above are
        about identity, not a broken setup)."""
        _, wrapped, dek = eu_wrapped
        server, env = openbao.approle("eu-ireland", "pets-eu")
        svc = TransitKeyService(server, environ=env)
        assert svc.unwrap(wrapped, context=EU, enc_context={"table": "patients"}) == dek

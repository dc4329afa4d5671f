"""`pets keys ...` end to end through pets.cli.main (exit codes from the PetsError tree)."""

import json
import os

import pytest

from pets import Context
from pets.cli import main
from pets.keys import LocalKeyring, Secret, WrappedKey

KEY = os.urandom(32)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PETS_MASTER_KEY", KEY.hex())
    monkeypatch.setenv("PETS_JURISDICTION", "EU")
    monkeypatch.setenv("PETS_PRINCIPAL", "ops@eu")
    for var in ("PETS_KEYRING", "PETS_KEYRING_PASSPHRASE", "PETS_PKCS11_LIBRARY",
                "PETS_PKCS11_TOKEN", "PETS_PKCS11_PIN", "PETS_AUDIT_LOG", "PETS_BOUNDARY_KEYS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def ring() -> LocalKeyring:
    return LocalKeyring(".pets/keyring", master_key=Secret(KEY))


def boundary(capsys, *extra):
    """`pets boundary init`: no key operation runs before the boundary (and its log) exist."""
    code, _, err = run(capsys, "boundary", "init", "--signing-kek", "local://eu/boundary",
                       *extra)
    assert code == 0, err


class TestKeysCli:
    @pytest.mark.parametrize("sub", ["init", "create", "list", "describe", "rotate", "retire",
                                     "destroy", "migrate"])
    def test_help(self, capsys, sub):
        code, out, _ = run(capsys, "keys", sub, "--help")
        assert code == 0 and "--keyring" in out and "--json" in out

    def test_lifecycle_with_json(self, env, capsys):
        assert run(capsys, "keys", "init", "--name", "eu")[0] == 0
        boundary(capsys)
        code, out, _ = run(capsys, "keys", "create", "local://eu/users", "--json")
        assert code == 0 and json.loads(out)["jurisdiction"] == "EU"
        code, out, _ = run(capsys, "keys", "rotate", "local://eu/users", "--json")
        assert json.loads(out)["primary_version"] == 2
        code, out, _ = run(capsys, "keys", "retire", "local://eu/users", "--min-version", "2",
                           "--json")
        assert [v["state"] for v in json.loads(out)["versions"]] == ["retired", "active"]
        code, out, _ = run(capsys, "keys", "destroy", "local://eu/users", "--version", "1",
                           "--yes", "--json")
        assert [v["state"] for v in json.loads(out)["versions"]] == ["destroyed", "active"]
        code, out, _ = run(capsys, "keys", "list", "--json")
        assert [k["uri"] for k in json.loads(out)] == ["local://eu/boundary", "local://eu/users"]
        code, out, _ = run(capsys, "keys", "describe", "local://eu/users")
        assert code == 0 and "v1 destroyed, v2 active" in out
        assert KEY.hex() not in out

    def test_passphrase_keyring(self, env, capsys, monkeypatch):
        monkeypatch.delenv("PETS_MASTER_KEY")
        monkeypatch.setenv("PETS_KEYRING_PASSPHRASE", "a long passphrase")
        assert run(capsys, "keys", "init", "--name", "eu", "--keyring", "pp")[0] == 0
        boundary(capsys, "--keyring", "pp")
        assert run(capsys, "keys", "create", "local://eu/k", "--keyring", "pp")[0] == 0
        monkeypatch.setenv("PETS_KEYRING_PASSPHRASE", "wrong")
        code, _, err = run(capsys, "keys", "list", "--keyring", "pp")
        assert code == 7 and "wrong master key or passphrase" in err and "wrong\n" not in err

    def test_exit_codes(self, env, capsys, monkeypatch):
        code, _, err = run(capsys, "keys", "list")
        assert code == 7 and "no keyring at .pets/keyring" in err
        monkeypatch.delenv("PETS_MASTER_KEY")
        code, _, err = run(capsys, "keys", "init", "--name", "eu")
        assert code == 1 and "set PETS_MASTER_KEY" in err
        monkeypatch.setenv("PETS_MASTER_KEY", KEY.hex())
        run(capsys, "keys", "init", "--name", "eu")
        boundary(capsys)
        assert run(capsys, "keys", "describe", "local://eu/nope")[0] == 7
        assert run(capsys, "keys", "describe", "not-a-uri")[0] == 1
        run(capsys, "keys", "create", "local://eu/k")
        code, _, err = run(capsys, "keys", "destroy", "local://eu/k")  # no tty, no --yes
        assert code == 1 and "without --yes" in err
        assert ring().describe("local://eu/k").versions[0].state == "active"
        monkeypatch.setenv("PETS_MASTER_KEY", "22" * 32)
        code, _, err = run(capsys, "keys", "list")
        assert code == 7 and "wrong master key" in err and "22" * 32 not in err
        monkeypatch.setenv("PETS_MASTER_KEY", KEY.hex())
        body = json.loads((env / ".pets/keyring/keys/k.json").read_text())
        body["jurisdiction"] = "US"
        (env / ".pets/keyring/keys/k.json").write_text(json.dumps(body))
        code, _, err = run(capsys, "keys", "describe", "local://eu/k")
        assert code == 5 and "IntegrityError" in err

    def test_migrate(self, env, capsys):
        run(capsys, "keys", "init", "--name", "eu")
        boundary(capsys)
        r = ring()
        r.create("local://eu/a", jurisdiction="EU")
        r.create("local://eu/b", jurisdiction="EU")
        r.create("local://eu/us", jurisdiction="US")
        w = r.wrap("local://eu/a", b"m" * 32, context=Context("EU"), enc_context={"t": "users"})
        (env / "w.json").write_text(w.to_json())
        code, out, err = run(capsys, "keys", "migrate", "w.json", "w2.json", "--to",
                             "local://eu/b", "--context", "t=users", "--json")
        assert code == 0, err
        assert json.loads(out)["to"] == "local://eu/b"
        new = WrappedKey.from_json((env / "w2.json").read_text())
        assert r.unwrap(new, context=Context("EU"), enc_context={"t": "users"}) == b"m" * 32
        assert oct((env / "w2.json").stat().st_mode & 0o777) == "0o600"
        # refusals write nothing
        for args, want in [(("--context", "t=events"), 5), ((), 5),
                           (("--context", "t=users", "--jurisdiction", "US"), 4),
                           (("--context", "t=users", "--to", "local://eu/us"), 4)]:
            argv = ["keys", "migrate", "w.json", "w3.json", "--to", "local://eu/b", *args]
            assert run(capsys, *argv)[0] == want, args
            assert not (env / "w3.json").exists()
        (env / "bad.json").write_text("{nope")
        code, _, err = run(capsys, "keys", "migrate", "bad.json", "w3.json", "--to",
                           "local://eu/b")
        assert code == 1 and "bad.json" in err
        before = (env / "w.json").read_bytes()
        code, _, err = run(capsys, "keys", "migrate", "w.json", "w.json", "--to",
                           "local://eu/us", "--context", "t=users", "--allow-jurisdiction-change")
        assert code == 1 and "is the input" in err  # DEST may not be SRC (tests/security)
        assert (env / "w.json").read_bytes() == before
        code, _, _ = run(capsys, "keys", "migrate", "w.json", "w2.json", "--to", "local://eu/us",
                         "--context", "t=users", "--allow-jurisdiction-change", "--overwrite")
        assert code == 0
        assert WrappedKey.from_json((env / "w2.json").read_text()).jurisdiction == "US"

    def test_pkcs11_options(self, env, capsys, monkeypatch, softhsm, hsm_eu):
        from tests.keys.conftest import HSM_LIB, HSM_PIN

        monkeypatch.setenv("PETS_PKCS11_PIN", HSM_PIN)
        code, _, err = run(capsys, "boundary", "init", "--signing-kek",
                           "pkcs11://EU/cli-boundary-" + os.urandom(4).hex(),
                           "--pkcs11-library", HSM_LIB, "--pkcs11-token", "EU=EU")
        assert code == 0, err
        code, out, err = run(capsys, "keys", "create", "pkcs11://EU/cli-kek-" + os.urandom(4).hex(),
                             "--pkcs11-library", HSM_LIB, "--pkcs11-token", "EU=EU", "--json")
        assert code == 0, err
        assert json.loads(out)["backend"] == "pkcs11" and HSM_PIN not in out
        code, out, _ = run(capsys, "keys", "list", "--pkcs11-library", HSM_LIB,
                           "--pkcs11-token", "EU=EU", "--json")
        assert code == 0 and any(k["uri"].startswith("pkcs11://EU/cli-kek-")
                                 for k in json.loads(out))


class TestKeyringOptions:
    """The decorator other command modules (envelope, boundary) build on."""

    def test_command_receives_one_key_config(self, env, monkeypatch):
        import click
        from click.testing import CliRunner

        from pets.cli._keyopts import keyring_options, services_from_options
        from pets.keys import KeyConfig, Pkcs11TokenConfig

        seen = {}

        @click.command()
        @click.option("--flag", is_flag=True)
        @keyring_options
        def cmd(flag, key_config):
            seen["cfg"] = key_config
            seen["services"] = [type(s).__name__ for s in services_from_options(key_config)]

        LocalKeyring.init(env / "r", name="eu", master_key=Secret(KEY))
        res = CliRunner().invoke(cmd, ["--keyring", "r", "--flag"])
        assert res.exit_code == 0, res.output
        assert isinstance(seen["cfg"], KeyConfig) and str(seen["cfg"].keyring) == "r"
        assert seen["services"] == ["LocalKeyring"]
        monkeypatch.setenv("PETS_KEYRING", "r")
        monkeypatch.setenv("PETS_PKCS11_LIBRARY", "/x.so")
        res = CliRunner().invoke(cmd, ["--pkcs11-token", "A=eu", "--pkcs11-token", "B",
                                       "--pkcs11-jurisdiction", "SG"], catch_exceptions=True)
        assert seen["cfg"].pkcs11_tokens == (Pkcs11TokenConfig("A", "EU"),
                                             Pkcs11TokenConfig("B", "SG"))
        assert seen["cfg"].keyring_explicit
        assert "set PETS_PKCS11_PIN" in str(res.exception)  # secrets only from the environment


def _forms(secret: bytes) -> list[str]:
    import base64

    return [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode().rstrip("="), repr(secret)]


class TestNoSecretInCliOutput:
    def test_no_command_prints_master_key_kek_data_key_or_passphrase(self, env, capsys,
                                                                     monkeypatch):
        """Every keys command, text and --json, successes and failures: stdout and stderr."""
        outputs = []

        def go(*args):
            code, out, err = run(capsys, *args)
            outputs.append(out + err)
            return code

        assert go("keys", "init", "--name", "eu") == 0
        assert go("keys", "init", "--name", "eu", "--json") == 7  # already exists
        assert go("boundary", "init", "--signing-kek", "local://eu/boundary") == 0
        for fmt in ((), ("--json",)):
            uri = f"local://eu/k{len(fmt)}"
            assert go("keys", "create", uri, *fmt) == 0
            assert go("keys", "rotate", uri, *fmt) == 0
            assert go("keys", "retire", uri, "--min-version", "2", *fmt) == 0
            assert go("keys", "describe", uri, *fmt) == 0
            assert go("keys", "list", *fmt) == 0
        r = ring()
        dek = os.urandom(32)
        w = r.wrap("local://eu/k0", dek, context=Context("EU"), enc_context={"t": "u"})
        (env / "w.json").write_text(w.to_json())
        for fmt in ((), ("--json",)):
            assert go("keys", "migrate", "w.json", f"m{len(fmt)}.json", "--to", "local://eu/k1",
                      "--context", "t=u", *fmt) == 0
            assert go("keys", "migrate", "w.json", "x.json", "--to", "local://eu/k1",
                      "--context", "t=wrong", *fmt) == 5
            assert go("keys", "migrate", "w.json", "x.json", "--to", "local://eu/k1",
                      "--context", "t=u", "--jurisdiction", "US", *fmt) == 4
        keks = [r._open_kek(f"local://eu/k{i}", r._load(f"local://eu/k{i}"), v)
                for i in (0, 1) for v in (1, 2)]
        assert go("keys", "destroy", "local://eu/k0", "--yes", "--json") == 0
        assert go("keys", "migrate", "w.json", "x.json", "--to", "local://eu/k1",
                  "--context", "t=u") == 7  # destroyed
        body = json.loads((env / ".pets/keyring/keys/k1.json").read_text())
        body["jurisdiction"] = "US"
        (env / ".pets/keyring/keys/k1.json").write_text(json.dumps(body))
        assert go("keys", "describe", "local://eu/k1", "--json") == 5
        wrong = os.urandom(32)
        monkeypatch.setenv("PETS_MASTER_KEY", wrong.hex())
        assert go("keys", "list", "--json") == 7
        monkeypatch.setenv("PETS_MASTER_KEY", "not-a-key-" + KEY.hex()[:20])
        assert go("keys", "list") == 1
        monkeypatch.delenv("PETS_MASTER_KEY")
        phrase = "correct horse battery staple"
        monkeypatch.setenv("PETS_KEYRING_PASSPHRASE", phrase)
        assert go("keys", "init", "--name", "pp", "--keyring", "pp", "--json") == 0
        monkeypatch.setenv("PETS_KEYRING_PASSPHRASE", phrase + "!")
        assert go("keys", "list", "--keyring", "pp") == 7

        text = "\n".join(outputs)
        secrets = [KEY, wrong, dek, *keks]
        leaked = [f for s in secrets for f in _forms(s) if f in text]
        assert leaked == []
        assert phrase not in text
        assert "not-a-key-" not in text

    def test_migrate_from_another_jurisdiction_decrypts_no_kek(self, env, capsys, monkeypatch):
        run(capsys, "keys", "init", "--name", "eu")
        boundary(capsys)
        r = ring()
        r.create("local://eu/a", jurisdiction="EU")
        r.create("local://eu/b", jurisdiction="EU")
        (env / "w.json").write_text(r.wrap("local://eu/a", b"m" * 32,
                                           context=Context("EU")).to_json())
        opened = []
        real = LocalKeyring._open_kek
        monkeypatch.setattr(LocalKeyring, "_open_kek",
                            lambda self, *a: opened.append(a) or real(self, *a))
        code, _, err = run(capsys, "keys", "migrate", "w.json", "out.json", "--to",
                           "local://eu/b", "--jurisdiction", "US", "--principal", "spy")
        assert code == 4 and "unwrap refused for spy@US" in err
        assert opened == [] and not (env / "out.json").exists()


    def test_migrate_refuses_a_huge_input_without_reading_it_all(self, env, capsys):
        run(capsys, "keys", "init", "--name", "eu")
        boundary(capsys)
        ring().create("local://eu/b", jurisdiction="EU")
        (env / "huge.json").write_bytes(b" " * (1 << 20))
        code, _, err = run(capsys, "keys", "migrate", "huge.json", "out.json", "--to",
                           "local://eu/b")
        assert code == 1 and "huge.json: not a wrapped key (over 65536 bytes)" in err
        assert not (env / "out.json").exists()


LOG = ".pets/audit.jsonl"
PEM = ".pets/keyring/boundary/signing-key.pub.pem"


def _ops(entries):
    """Entries about keys other than the boundary's own set-up and signing key."""
    return [e for e in entries if not e["kind"].startswith("boundary.")
            and e["fields"].get("key") != "local://eu/boundary"]


class TestKeyEventsInAuditLog:
    def test_no_key_operation_runs_before_the_boundary_exists(self, env, capsys):
        """There is no bootstrap state: `keys create` used to run unlogged until the first
        `pets protect` made the signing key."""
        assert run(capsys, "keys", "init", "--name", "eu")[0] == 0
        code, _, err = run(capsys, "keys", "create", "local://eu/users")
        assert code == 1 and "no boundary at .pets/keyring/boundary: set it up once with " \
            "`pets boundary init`" in err
        assert ring().list() == [] and not (env / LOG).exists()

    def test_boundary_init_records_the_signing_kek_and_key(self, env, capsys):
        from pets.boundary import read_entries, verify_log

        assert run(capsys, "keys", "init", "--name", "eu")[0] == 0
        boundary(capsys)
        assert verify_log(env / LOG, env / PEM).ok
        kinds = [(e["kind"], e["fields"].get("key")) for e in read_entries(env / LOG)]
        assert kinds == [("key.create", "local://eu/boundary"),
                         ("key.wrap", "local://eu/boundary"),
                         ("boundary.signing_key.create", None), ("boundary.init", None)]

    def test_create_rotate_retire_destroy_migrate_land_in_the_signed_log(self, env, capsys):
        from pets.boundary import read_entries, verify_log

        run(capsys, "keys", "init", "--name", "eu")
        boundary(capsys)
        steps = [("create", "local://eu/users"), ("create", "local://eu/target"),
                 ("rotate", "local://eu/users"),
                 ("retire", "local://eu/users", "--min-version", "2"),
                 ("destroy", "local://eu/users", "--version", "1", "--yes")]
        for step in steps:
            code, _, err = run(capsys, "keys", *step)
            assert code == 0, err
        dek = os.urandom(32)
        w = ring().wrap("local://eu/users", dek, context=Context("EU"), enc_context={"t": "u"})
        (env / "w.json").write_text(w.to_json())
        code, _, err = run(capsys, "keys", "migrate", "w.json", "w2.json", "--to",
                           "local://eu/target", "--context", "t=u")
        assert code == 0, err

        report = verify_log(env / LOG, env / PEM)
        assert report.ok and report.entries >= 6
        every = _ops(read_entries(env / LOG))
        uses = [(e["kind"], e["fields"]["key"], e["fields"]["version"], e["fields"]["purpose"])
                for e in every if e["kind"] in ("key.unwrap", "key.wrap")]
        assert uses == [("key.unwrap", "local://eu/users", 2, "rewrap"),
                        ("key.wrap", "local://eu/target", 1, "rewrap")]
        entries = [e for e in every if e["kind"] not in ("key.unwrap", "key.wrap")]
        assert [(e["kind"], e["fields"]["key"]) for e in entries] == [
            ("key.create", "local://eu/users"), ("key.create", "local://eu/target"),
            ("key.rotate", "local://eu/users"), ("key.retire", "local://eu/users"),
            ("key.destroy", "local://eu/users"), ("key.rewrap", "local://eu/users")]
        fields = [e["fields"] for e in entries]
        assert fields[0]["version"] == 1 and fields[0]["jurisdiction"] == "EU"
        assert fields[2]["version"] == 2
        assert fields[3]["min_decryption_version"] == 2
        assert fields[4]["versions"] == [1]
        assert (fields[5]["version"], fields[5]["target"], fields[5]["target_version"]) == (
            2, "local://eu/target", 1)
        assert all(e["actor"].startswith("ops@eu") for e in entries)
        r = ring()
        kek = r._open_kek("local://eu/target", r._load("local://eu/target"), 1)
        text = (env / LOG).read_text()
        assert [f for s in (KEY, dek, kek) for f in _forms(s) if f in text] == []

    def test_a_refused_migrate_is_logged_and_writes_nothing(self, env, capsys):
        from pets.boundary import read_entries, verify_log

        run(capsys, "keys", "init", "--name", "eu")
        boundary(capsys)
        r = ring()
        r.create("local://eu/a", jurisdiction="EU")
        r.create("local://eu/us", jurisdiction="US")
        w = r.wrap("local://eu/a", b"m" * 32, context=Context("EU"), enc_context={})
        (env / "w.json").write_text(w.to_json())
        assert run(capsys, "keys", "migrate", "w.json", "x.json", "--to", "local://eu/us")[0] == 4
        assert not (env / "x.json").exists()
        assert verify_log(env / LOG, env / PEM).ok
        assert [e["kind"] for e in _ops(read_entries(env / LOG))] == ["key.rewrap_refused"]

    def test_a_log_whose_signing_key_cannot_be_opened_stops_the_operation(self, env, capsys,
                                                                          monkeypatch):
        run(capsys, "keys", "init", "--name", "eu")
        boundary(capsys)
        monkeypatch.setenv("PETS_JURISDICTION", "US")  # cannot unwrap the EU signing key
        assert run(capsys, "keys", "create", "local://eu/x", "--jurisdiction", "EU")[0] == 4
        assert "local://eu/x" not in [i.uri for i in ring().list()]


class TestDestroyReachesCachesInThisProcess:
    def test_pets_keys_destroy_drops_a_warm_parquet_cache(self, env, capsys):
        """The CLI opens its own LocalKeyring; a ParquetCrypto elsewhere in the process hears."""
        import pandas as pd

        from pets import KeyDestroyedError
        from pets.envelope import ParquetCrypto

        run(capsys, "keys", "init", "--name", "eu")
        boundary(capsys)
        for uri in ("local://eu/footer", "local://eu/pii"):
            assert run(capsys, "keys", "create", uri)[0] == 0
        pc = ParquetCrypto(ring())
        eu = Context("EU", principal="nb")
        df = pd.DataFrame({"id": [1, 2], "email": ["a@x.eu", "b@x.eu"]})
        pc.write(df, "u.parquet", context=eu, footer_key="local://eu/footer",
                 column_keys={"local://eu/pii": ["email"]})
        assert pc.read("u.parquet", context=eu)["email"].tolist() == ["a@x.eu", "b@x.eu"]
        assert run(capsys, "keys", "destroy", "local://eu/pii", "--yes")[0] == 0
        with pytest.raises(KeyDestroyedError, match=r"^local://eu/pii v1 is destroyed$"):
            pc.read("u.parquet", context=eu, columns=["email"])
        assert pc.read("u.parquet", context=eu, columns=["id"])["id"].tolist() == [1, 2]

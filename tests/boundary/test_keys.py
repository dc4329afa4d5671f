"""BoundaryKeys: one signing key and one root per KEK, stored wrapped, shared by processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pets import Context, InputError, JurisdictionError
from pets.boundary import BoundaryKeys


def _open(d, services, ctx=Context("EU")):
    return BoundaryKeys.open(d, services, context=ctx, signing_kek="memory://eu/kek")


class TestBoundaryKeys:
    def test_signing_key_is_created_once(self, tmp_path, services):
        a = _open(tmp_path, services)
        b = BoundaryKeys.open(tmp_path, services, context=Context("EU"))
        assert a.signer.key_id == b.signer.key_id
        pem = BoundaryKeys.public_key_path(tmp_path).read_bytes()
        assert pem == a.signer.public_pem()

    def test_roots_are_stable_and_stored_wrapped(self, tmp_path, services):
        a = _open(tmp_path, services)
        root = a.root_for("memory://eu/pseudonyms", context=Context("EU"))
        b = _open(tmp_path, services)
        assert b.root_for("memory://eu/pseudonyms", context=Context("EU")) == root
        doc = json.loads((tmp_path / "roots.json").read_text())
        assert list(doc["roots"]) == ["memory://eu/pseudonyms"]
        assert oct((tmp_path / "roots.json").stat().st_mode & 0o777) == "0o600"

    def test_no_signing_key_and_no_kek_is_an_input_error(self, tmp_path, services):
        with pytest.raises(InputError, match="no signing key yet"):
            BoundaryKeys.open(tmp_path, services, context=Context("EU"))

    def test_us_context_cannot_open_eu_keys(self, tmp_path, services):
        _open(tmp_path, services)
        with pytest.raises(JurisdictionError):
            BoundaryKeys.open(tmp_path, services, context=Context("US", principal="a"))

    def test_missing_root_is_not_created_when_asked_not_to(self, tmp_path, services):
        keys = _open(tmp_path, services)
        with pytest.raises(InputError, match="no root secret"):
            keys.root_for("memory://eu/tokens", context=Context("EU"), create=False)

    def test_corrupt_roots_file(self, tmp_path, services):
        keys = _open(tmp_path, services)
        (tmp_path / "roots.json").write_text("[]")
        with pytest.raises(InputError, match="not a pets roots file"):
            keys.root_for("memory://eu/x", context=Context("EU"))

    def test_concurrent_first_runs_agree_on_one_root(self, tmp_path):
        from pets.keys import LocalKeyring, Secret

        ring_dir = tmp_path / "ring"
        ring = LocalKeyring.init(ring_dir, name="eu", master_key=Secret(b"\x07" * 32))
        for name in ("kek", "p"):
            ring.create(f"local://eu/{name}", jurisdiction="EU")
        script = textwrap.dedent("""
            import sys
            from pets import Context
            from pets.boundary import BoundaryKeys
            from pets.keys import KeyServices, LocalKeyring, Secret
            ring = LocalKeyring(sys.argv[1], master_key=Secret(b"\\x07" * 32))
            keys = BoundaryKeys.open(sys.argv[2], KeyServices([ring]), context=Context("EU"),
                                     signing_kek="local://eu/kek")
            print(keys.signer.key_id, keys.root_for("local://eu/p", context=Context("EU")).blob.hex())
        """)
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        procs = [subprocess.Popen([sys.executable, "-c", script, str(ring_dir),
                                   str(tmp_path / "b")], stdout=subprocess.PIPE, env=env,
                                  text=True) for _ in range(3)]
        outs = {p.communicate(timeout=120)[0].strip() for p in procs}
        assert all(p.returncode == 0 for p in procs)
        assert len(outs) == 1

"""Attack: a policy at home in the EU whose KEKs belong to another jurisdiction (issue #12).

A KEK wraps anywhere but unwraps only in its own jurisdiction, so pseudonym roots or column
keys wrapped under a US KEK are readable in the US. ``pets protect`` refuses such a policy
before any work, on every engine (JurisdictionError, exit 4, naming the key and the columns),
and writes nothing.
"""

from __future__ import annotations

import pytest

from pets.cli import main
from tests.security.test_identity_treatments import AUDIT, cli_env, setup_cli  # noqa: F401


def _policy(key: str, uri: str) -> str:
    from importlib.resources import files

    text = (files("pets") / "examples" / "users-policy.yaml").read_text()
    return text.replace(f"local://eu/{key}", uri)


@pytest.mark.parametrize("engine", ["pandas", "dask"])
@pytest.mark.parametrize("key, columns", [("pseudonyms", "'user_id', 'email'"),
                                          ("columns", "'phone'")])
def test_protect_exits_4_and_writes_nothing(cli_env, capsys, engine, key,  # noqa: F811
                                            columns):
    if engine == "dask":
        pytest.importorskip("distributed")
    assert main(["keys", "create", "local://eu/us-kek", "--jurisdiction", "US"]) == 0
    (cli_env / "hostile.yaml").write_text(_policy(key, "local://eu/us-kek"))
    capsys.readouterr()
    code = main(["protect", "users.parquet", "--policy", "hostile.yaml", "--out", "prot",
                 "--engine", engine, *(["--workers", "1"] if engine == "dask" else [])])
    err = capsys.readouterr().err
    assert code == 4, err
    assert f"key {key!r} (local://eu/us-kek) belongs to US, not to the policy's home EU: " \
           f"columns {columns} would be keyed there" in err
    assert not (cli_env / "prot").exists()
    log = (cli_env / AUDIT).read_text()
    assert "boundary.refused" in log and '"boundary.protect"' not in log

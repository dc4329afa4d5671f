"""Attack: a policy name that becomes a path (issue #12, item 4).

``dataset`` names the output files (``<out>/<dataset>.parquet``, the Dask engine's
``<out>/<dataset>/``): a hostile policy saying ``dataset: ../../etc/cron.d/x`` would write
outside ``--out``. Names are refused when the policy loads (PolicyError, exit 3, naming the
line), so ``pets policy check`` catches them and ``pets protect`` writes nothing.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from pets import PolicyError
from pets.boundary import ColumnRule, Policy
from pets.cli import main
from tests.security.test_identity_treatments import cli_env, setup_cli  # noqa: F401

HOSTILE = [
    ("../escape", "holds a path separator"),
    ("..", "is a directory name"),
    ("a..b", "holds '..'"),
    ("/tmp/escape", "holds a path separator"),
    ("sub/users", "holds a path separator"),
    ("..\\\\escape", "holds a path separator"),
    (".hidden", "starts with a dot"),
    (".", "is a directory name"),
    ("C:escape", "absolute"),
    ("~root", "home-relative"),
    ("users\\0.parquet", "control or format character"),
    ("users\\n", "control or format character"),
    ("users\\u202egpj", "control or format character"),  # right-to-left override
    ("x" * 201, "longer than 200"),
]


def _text(name: str) -> str:
    # a double-quoted YAML scalar: "\\0", "\\n" and "\\u202e" are escapes YAML decodes
    return textwrap.dedent(f"""\
        dataset: "{name}"
        keys: {{pseudonyms: "memory://eu/pseudonyms"}}
        columns:
          user_id: {{role: identifier, treatment: keyed-hash}}
    """)


class TestDatasetName:
    @pytest.mark.parametrize("name, why", HOSTILE)
    def test_refused_at_load_naming_the_line(self, name, why):
        with pytest.raises(PolicyError) as info:
            Policy.from_yaml(_text(name), source="hostile.yaml")
        msg = str(info.value)
        assert msg.startswith("hostile.yaml line 1: 'dataset' ")
        assert why in msg and "must be a plain name" in msg

    def test_python_policies_are_refused_too(self):
        with pytest.raises(PolicyError, match=r"'dataset' '\.\./x' holds a path separator"):
            Policy("../x", (ColumnRule("m", "metric", "keep"),))
        with pytest.raises(PolicyError, match="holds a path separator"):
            Policy.from_dict({"dataset": "a/b", "columns": {"m": {"role": "metric",
                                                                   "treatment": "keep"}}})

    @pytest.mark.parametrize("name", ["users", "users-2026_v1.2", "événements", "a.b"])
    def test_plain_names_load(self, name):
        assert Policy.from_yaml(_text(name)).dataset == name


def _users_policy(dataset: str) -> str:
    from importlib.resources import files

    text = (files("pets") / "examples" / "users-policy.yaml").read_text()
    return text.replace("dataset: users", f"dataset: {json.dumps(dataset)}")


class TestCli:
    def test_policy_check_exits_3(self, tmp_path, capsys):
        (tmp_path / "hostile.yaml").write_text(_users_policy("../escape"))
        assert main(["policy", "check", str(tmp_path / "hostile.yaml")]) == 3
        assert "hostile.yaml line 6: 'dataset' '../escape' holds a path separator" in \
            capsys.readouterr().err

    @pytest.mark.parametrize("engine", ["pandas", "dask"])
    def test_protect_exits_3_and_writes_nothing(self, cli_env, capsys, engine):  # noqa: F811
        if engine == "dask":
            pytest.importorskip("distributed")
        work = cli_env / "work"
        work.mkdir()
        (work / "hostile.yaml").write_text(_users_policy("../escape"))
        before = sorted(p.relative_to(cli_env) for p in cli_env.rglob("*"))
        code = main(["protect", "users.parquet", "--policy", "work/hostile.yaml",
                     "--out", "work/prot", "--engine", engine,
                     *(["--workers", "1"] if engine == "dask" else [])])
        err = capsys.readouterr().err
        assert code == 3, err
        assert "line 6: 'dataset' '../escape' holds a path separator" in err
        assert not (cli_env / "work" / "escape.parquet").exists()
        assert not (cli_env / "work" / "escape").exists()
        assert not (cli_env / "work" / "prot").exists()
        after = sorted(p.relative_to(cli_env) for p in cli_env.rglob("*"))
        assert [p for p in after if p not in before and "audit" not in str(p)] == []

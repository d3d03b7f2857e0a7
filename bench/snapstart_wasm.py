#!/usr/bin/env python3
"""SnapStart for WebAssembly modules: the same module (`tests/fixtures/wasm/src/bin/preinit.rs`,
whose initialisation fills a table of the first 20,000 primes) invoked as `$LATEST`, where every
invocation's fresh instance runs the initialisation itself, and as a published SnapStart
version, whose instances start from the snapshot taken at publish. Client-measured latency of a
synchronous Invoke at c=1, in alternating rounds (latest, version, latest, …), and how long the
publish (which makes the snapshot) took.

usage: bench/snapstart_wasm.py NIMBUS_BIN FIXTURE_WASM [INVOCATIONS] [ROUNDS]
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import statistics
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, __import__("os").path.dirname(__file__))
import bench_role  # noqa: E402
from coldstart import start_node, stop_node  # noqa: E402


def call(conn, method, path, body=None):
    conn.request(method, path, body=body, headers={"content-type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def main() -> None:
    binary, fixture = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("preinit.wasm", open(fixture, "rb").read())
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_node(binary, tmp + "/data")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            status, body = call(conn, "POST", "/2015-03-31/functions", json.dumps({
                "FunctionName": "snap", "Runtime": "wasm32-wasip1", "Handler": "preinit.wasm",
                "Role": bench_role.ensure(port), "SnapStart": {"ApplyOn": "PublishedVersions"},
                "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()}}).encode())
            assert status == 201, body
            started = time.perf_counter()
            status, body = call(conn, "POST", "/2015-03-31/functions/snap/versions", b"{}")
            publish_ms = (time.perf_counter() - started) * 1000
            assert status == 201, body
            version = json.loads(body)["Version"]
            results: dict[str, list[float]] = {"$LATEST": [], version: []}
            for r in range(rounds):
                for qualifier in ["$LATEST", version]:
                    path = f"/2015-03-31/functions/snap/invocations?Qualifier={qualifier}"
                    call(conn, "POST", path, b"{}")  # warm the sandbox
                    times = []
                    for _ in range(n):
                        t = time.perf_counter()
                        status, out = call(conn, "POST", path, b"{}")
                        times.append((time.perf_counter() - t) * 1e6)
                        assert status == 200, out
                    assert json.loads(out)["preinitialized"] is (qualifier != "$LATEST"), out
                    p50 = statistics.median(times)
                    results[qualifier].append(p50)
                    print(f"round {r + 1} {qualifier}: p50 {p50:,.0f} µs", flush=True)
            print(f"publish (snapshot made): {publish_ms:,.0f} ms")
            for qualifier, p50s in results.items():
                print(f"{qualifier}: median of round p50s {statistics.median(p50s):,.0f} µs "
                      f"({', '.join(f'{v:,.0f}' for v in p50s)})")
        finally:
            stop_node(proc)


if __name__ == "__main__":
    main()

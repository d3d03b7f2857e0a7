#!/usr/bin/env python3
"""Cold-start measurements for nimbus, driven over its HTTP API like any client.

  create   N  : CreateFunction then the first Invoke, N times (a new function each time)
  restart  N  : stop the node, start it on the same data dir, first Invoke, N times

Reports client-observed latency of the first invoke (p50/p90/max) and the Init Duration the
node reports in the REPORT line. Used by bench/run.sh.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile

import sys as _sys
_sys.path.insert(0, __import__("os").path.dirname(__file__))
import bench_role  # noqa: E402

PAYLOAD = b'{"hello":"world"}'


def zip_of(wasm: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("echo.wasm", wasm)
    return buf.getvalue()


class Client:
    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def call(self, method: str, path: str, body: bytes | None = None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def create(self, name: str, zip_bytes: bytes):
        body = json.dumps({
            "FunctionName": name, "Runtime": "wasm32-wasip1", "Handler": "echo.wasm",
            "Role": bench_role.ensure(self.port),
            "Code": {"ZipFile": base64.b64encode(zip_bytes).decode()},
        }).encode()
        status, _, data = self.call("POST", "/2015-03-31/functions", body, {"content-type": "application/json"})
        assert status == 201, (status, data)

    def invoke(self, name: str):
        t0 = time.perf_counter_ns()
        status, headers, data = self.call(
            "POST", f"/2015-03-31/functions/{name}/invocations", PAYLOAD, {"x-amz-log-type": "Tail"})
        elapsed = (time.perf_counter_ns() - t0) / 1e6
        assert status == 200 and data == PAYLOAD, (status, data)
        log = base64.b64decode(headers.get("x-amz-log-result", "")).decode()
        m = re.search(r"Init Duration: ([0-9.]+) ms", log)
        return elapsed, float(m.group(1)) if m else None


def start_node(binary: str, data_dir: str, config: str | None = None):
    """Starts a node on a free port with the benchmarks' configuration (or CONFIG's path)."""
    config = config or os.path.join(os.path.dirname(os.path.abspath(__file__)), "nimbus-bench.toml")
    proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                             "--config", config],
                            stdout=subprocess.PIPE, text=True,
                            # NIMBUS_BENCH_LOG=FILE keeps the node's log (set NIMBUS_LOG for detail).
                            stderr=open(os.environ["NIMBUS_BENCH_LOG"], "w")
                            if os.environ.get("NIMBUS_BENCH_LOG") else subprocess.DEVNULL)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"node did not start: {line!r}")
    return proc, int(m.group(1))


def stop_node(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def summary(label: str, client_ms: list[float], init_ms: list[float]):
    q = statistics.quantiles(client_ms, n=10)
    print(f"{label}: n={len(client_ms)} first-invoke p50={statistics.median(client_ms):.2f} ms "
          f"p90={q[8]:.2f} ms max={max(client_ms):.2f} ms; "
          f"Init Duration p50={statistics.median(init_ms):.2f} ms")


def main():
    mode, n, binary, wasm_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    wasm = open(wasm_path, "rb").read()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_node(binary, os.path.join(tmp, "data"))
        try:
            client = Client(port)
            client_ms, init_ms = [], []
            if mode == "create":
                for i in range(n):
                    name = f"cold-{i}-{uuid.uuid4().hex[:8]}"
                    client.create(name, zip_of(wasm))
                    ms, init = client.invoke(name)
                    client_ms.append(ms)
                    init_ms.append(init)
                summary("cold start after CreateFunction", client_ms, init_ms)
            elif mode == "restart":
                client.create("cold-restart", zip_of(wasm))
                client.invoke("cold-restart")
                for _ in range(n):
                    stop_node(proc)
                    proc, port = start_node(binary, os.path.join(tmp, "data"))
                    client = Client(port)
                    ms, init = client.invoke("cold-restart")
                    client_ms.append(ms)
                    init_ms.append(init)
                summary("cold start after node restart", client_ms, init_ms)
            else:
                raise SystemExit(f"unknown mode {mode}")
        finally:
            stop_node(proc)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Process-function benchmark: nimbus against AWS's Runtime Interface Emulator (RIE), same
runtime, same payload, same machine, same run.

  warm:  the custom runtime in tests/fixtures/process/provided-python (a plain Runtime API loop
         that echoes the event), invoked with wrk at c=1: latency p50/p99 and the throughput of
         one sandbox, through nimbus's Invoke API and through the RIE's.
  cold:  first invoke after CreateFunction of a Python hello function (nimbus's python runtime)
         and of an awslambdaric function, with the Init Duration and the sandbox set-up time
         nimbus reports; for reference, the RIE's first invoke after it starts.
  memory: memory charged to each warm Python sandbox's cgroup.

usage: bench/process.py NIMBUS_BIN RIE_BIN [DURATION]
"""

from __future__ import annotations

import base64
import glob
import http.client
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import sys as _sys
_sys.path.insert(0, __import__("os").path.dirname(__file__))
import bench_role  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "process"
PAYLOAD = b'{"hello":"world"}'


def zip_dir(folder: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(str(path.relative_to(folder)))
                info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
                z.writestr(info, path.read_bytes())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.025)
    raise SystemExit(f"nothing listens on {port}")


def wrk(url: str, duration: str) -> tuple[float, float, float]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text('wrk.method = "POST"\nwrk.body = \'{"hello":"world"}\'\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{duration}", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    script.unlink()
    if "Non-2xx" in out:
        raise SystemExit(f"errors from {url}:\n{out}")

    def us(label: str) -> float:
        value = re.search(rf"^\s+{label}\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        number, unit = float(value.group(1)), value.group(2)
        return number * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]

    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    return us("50%"), us("99%"), rps


class Nimbus:
    def __init__(self, binary: str, data: str):
        self.proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", data, "--config",
                                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "nimbus-bench.toml")],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.port = int(re.search(r":(\d+)$", line.strip()).group(1))
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port)
        time.sleep(1)  # let the pool of prepared sandboxes fill, as on a running node

    def call(self, method, path, body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def create(self, name, runtime, handler, zip_bytes, memory=128):
        body = json.dumps({"FunctionName": name, "Runtime": runtime, "Handler": handler, "Role": bench_role.ensure(self.port),
                           "MemorySize": memory,
                           "Code": {"ZipFile": base64.b64encode(zip_bytes).decode()}}).encode()
        status, _, data = self.call("POST", "/2015-03-31/functions", body)
        assert status == 201, data

    def invoke(self, name):
        t0 = time.perf_counter()
        status, headers, data = self.call("POST", f"/2015-03-31/functions/{name}/invocations", PAYLOAD,
                                          {"x-amz-log-type": "Tail"})
        ms = (time.perf_counter() - t0) * 1000
        assert status == 200 and "x-amz-function-error" not in headers, data
        log = base64.b64decode(headers.get("x-amz-log-result", "")).decode()
        init = re.search(r"Init Duration: ([0-9.]+) ms", log)
        setup = re.search(r"Sandbox Setup: ([0-9.]+) ms", log)
        return ms, float(init.group(1)) if init else None, float(setup.group(1)) if setup else None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def cold(node: Nimbus, label: str, runtime: str, handler: str, zip_bytes: bytes, n: int) -> str:
    client, init, setup = [], [], []
    for i in range(n):
        name = f"cold-{i}-{uuid.uuid4().hex[:8]}"
        node.create(name, runtime, handler, zip_bytes)
        time.sleep(0.3)  # the pool refills between cold starts, as it would between requests
        ms, init_ms, setup_ms = node.invoke(name)
        client.append(ms)
        init.append(init_ms)
        setup.append(setup_ms)
    q = statistics.quantiles(client, n=10)
    return (f"| cold start, {label} (n={n}) | first invoke p50 {statistics.median(client):.1f} ms "
            f"(p90 {q[8]:.1f}); Init Duration p50 {statistics.median(init):.1f} ms; "
            f"sandbox set-up p50 {statistics.median(setup):.2f} ms (max {max(setup):.2f}) |")


def ric_zip() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--only-binary=:all:", "--target", tmp, "awslambdaric"], check=True)
        extra = {f"deps/{p.relative_to(tmp)}": p.read_bytes() for p in Path(tmp).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    return zip_dir(FIXTURES / "python-ric", extra)


def rie_cold(rie: str, n: int) -> str:
    times = []
    folder = FIXTURES / "python-hello"
    bootstrap = ROOT / "crates" / "worker" / "runtimes" / "python" / "bootstrap.py"
    for _ in range(n):
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([rie, "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                                 "/usr/bin/python3", "-u", str(bootstrap)], cwd=folder,
                                env={"PATH": "/usr/bin:/bin", "_HANDLER": "app.handler",
                                     "LAMBDA_TASK_ROOT": str(folder)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/2015-03-31/functions/function/invocations", body=PAYLOAD)
        conn.getresponse().read()
        times.append((time.perf_counter() - t0) * 1000)
        proc.terminate()
        proc.wait()
    return (f"| cold start, RIE: emulator start + first invoke of the Python hello (n={n}) | "
            f"p50 {statistics.median(times):.1f} ms |")


def main():
    binary, rie = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    duration = sys.argv[3] if len(sys.argv) > 3 else "10s"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        node = Nimbus(binary, os.path.join(tmp, "data"))
        try:
            node.create("echo", "provided.al2023", "any", zip_dir(FIXTURES / "provided-python"))
            node.invoke("echo")
            n50, n99, nrps = wrk(f"http://127.0.0.1:{node.port}/2015-03-31/functions/echo/invocations", duration)

            python = os.path.basename(os.path.realpath("/usr/bin/python3"))
            hello = zip_dir(FIXTURES / "python-hello")
            rows.append(cold(node, f"Python hello ({python})", python, "app.handler", hello, 20))
            rows.append(cold(node, "awslambdaric", "provided.al2023", "app.handler", ric_zip(), 10))

        finally:
            node.stop()
        # Memory: a fresh node with five warm Python sandboxes; the two prepared (empty)
        # sandboxes of its pool are the two smallest cgroups and are left out.
        node = Nimbus(binary, os.path.join(tmp, "data-memory"))
        try:
            for i in range(5):
                node.create(f"warm-{i}", python, "app.handler", hello)
                node.invoke(f"warm-{i}")
            prefix = f"{node.proc.pid}-"
            files = [f for f in glob.glob("/sys/fs/cgroup/memory/nimbus/*/memory.usage_in_bytes")
                     + glob.glob("/sys/fs/cgroup/nimbus/*/memory.current")
                     if os.path.basename(os.path.dirname(f)).startswith(prefix)]
            usage = sorted((int(open(f).read()) for f in files), reverse=True)[:5]
        finally:
            node.stop()

    port = free_port()
    folder = FIXTURES / "provided-python"
    proc = subprocess.Popen([rie, "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                             str(folder / "bootstrap")], cwd=folder,
                            env={"PATH": "/usr/bin:/bin", "_HANDLER": "any", "LAMBDA_TASK_ROOT": str(folder)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        r50, r99, rrps = wrk(f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations", duration)
    finally:
        proc.terminate()
        proc.wait()
    rows.append(rie_cold(rie, 10))

    print("| measurement | nimbus | AWS RIE |")
    print("|---|---|---|")
    print(f"| warm invoke latency, c=1, p50 | {n50:.0f} µs | {r50:.0f} µs |")
    print(f"| warm invoke latency, c=1, p99 | {n99:.0f} µs | {r99:.0f} µs |")
    print(f"| throughput of one sandbox (c=1) | {nrps:.0f} req/s | {rrps:.0f} req/s |")
    print(f"| nimbus p50 / RIE p50 | {n50 / r50:.2f} | |")
    print()
    for row in rows:
        print(row)
    if usage:
        print(f"| memory charged per warm Python sandbox (cgroup, n={len(usage)}) | "
              f"mean {statistics.mean(usage) / 2**20:.1f} MiB, max {max(usage) / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()

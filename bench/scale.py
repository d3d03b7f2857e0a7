#!/usr/bin/env python3
"""Scaling benchmarks: a burst from zero, fan-out over many functions, a fleet of worker
processes, and provisioned concurrency. Each scenario starts its own node on a fresh data dir.

  burst:  200 concurrent requests to one Python function with no sandbox yet: time until all are
          answered, cold starts (from /metrics), errors. Peer: 200 `python3` processes started
          at once that import the same handler (the floor of any process-per-sandbox design).
  fanout: 1,000 wasm functions invoked round-robin by 32 clients: throughput; the node's RSS
          after deploying, at the end of the run, and after the keep-alive has reaped the
          sandboxes.
  fleet:  a CPU-bound Python function (a fixed loop, ~25 ms of one core) driven by 4 clients through a node
          without a built-in worker, with one worker process and with two; the platform's
          overhead per invocation = client latency - the Duration the worker measured.
  provisioned: p50/p99 of the first 100 invocations (10 clients) of a Python function version,
          without and with provisioned concurrency 10.

usage: bench/scale.py NIMBUS_BIN [burst|fanout|fleet|provisioned|all]
"""

from __future__ import annotations

import base64
import concurrent.futures
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
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import sys as _sys
_sys.path.insert(0, __import__("os").path.dirname(__file__))
import bench_role  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "process"
WASM = ROOT / "target" / "fixtures"


def zip_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                z.writestr(str(path.relative_to(folder)), path.read_bytes())
    return buf.getvalue()


def zip_file(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_runtime() -> str:
    return os.path.basename(os.path.realpath("/usr/bin/python3"))


class Node:
    def __init__(self, binary: str, config: str, no_worker: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="nimbus-scale-")
        self.port = free_port()
        cfg = Path(self.dir) / "nimbus.toml"
        cfg.write_text(config + "\n[auth]\nmode = \"none\"\n")
        args = [binary, "up", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
                f"{self.dir}/data", "--config", str(cfg)]
        if no_worker:
            args.append("--no-worker")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(f"{self.dir}/node.err", "wb"), text=True)
        line = self.proc.stdout.readline()
        assert "listening" in line, line
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.binary = binary
        self.workers: list[subprocess.Popen] = []

    def worker(self, name: str, capacity_mb: int) -> None:
        p = subprocess.Popen(
            [self.binary, "worker", "--join", self.endpoint, "--name", name, "--capacity-mb",
             str(capacity_mb), "--data-dir", f"{self.dir}/{name}", "--secret-file",
             f"{self.dir}/data/cluster.secret"],
            stdout=subprocess.PIPE, stderr=open(f"{self.dir}/{name}.err", "wb"), text=True)
        line = p.stdout.readline()
        assert "joined" in line, line
        self.workers.append(p)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, dict]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        c.request(method, path, body=body, headers={"content-type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data, dict(r.getheaders())

    def create(self, name: str, runtime: str, handler: str, zip_bytes: bytes, memory: int = 128, timeout: int = 30) -> None:
        body = json.dumps({
            "FunctionName": name, "Runtime": runtime, "Handler": handler,
            "Role": bench_role.ensure(self.port), "MemorySize": memory, "Timeout": timeout,
            "Code": {"ZipFile": base64.b64encode(zip_bytes).decode()},
        }).encode()
        status, data, _ = self.request("POST", "/2015-03-31/functions", body)
        assert status == 201, data

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.endpoint}/metrics") as r:
            out = {}
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    k, _, v = line.rpartition(" ")
                    out[k] = float(v)
            return out

    def close(self) -> None:
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            w.wait(timeout=30)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


class Invoker(threading.local):
    """One keep-alive connection per thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = None

    def __call__(self, path: str, payload: bytes, tail: bool = False) -> tuple[int, bytes, float, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        headers = {"content-type": "application/json"}
        if tail:
            headers["X-Amz-Log-Type"] = "Tail"
        start = time.perf_counter()
        self.conn.request("POST", path, body=payload, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        elapsed = time.perf_counter() - start
        return r.status, data, elapsed, dict(r.getheaders())


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def report_duration_ms(headers: dict) -> float:
    value = next((v for k, v in headers.items() if k.lower() == "x-amz-log-result"), "")
    log = base64.b64decode(value).decode(errors="replace")
    m = re.search(r"\tDuration: ([\d.]+) ms", log)
    return float(m.group(1)) if m else float("nan")


# ---------------------------------------------------------------------------------------------

def burst(binary: str) -> list[str]:
    node = Node(binary, "[worker]\ncapacity_mb = 32768\n[limits]\nconcurrency = 1000\n")
    try:
        node.create("burst", python_runtime(), "app.handler", zip_dir(FIXTURES / "python-fleet"))
        invoke = Invoker(node.port)
        path = "/2015-03-31/functions/burst/invocations"
        barrier = threading.Barrier(200)

        def one(_):
            barrier.wait()
            return invoke(path, b"{}")

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            results = list(pool.map(one, range(200)))
        total = time.perf_counter() - start
        statuses = [r[0] for r in results]
        latencies = [r[2] for r in results]
        m = node.metrics()
        cold = m.get('nimbus_cold_starts_total{function="burst"}', 0)
        throttled = statuses.count(429)
        errors = len([s for s in statuses if s not in (200, 429)])
    finally:
        node.close()

    # Peer: 200 python3 processes importing the same handler at once.
    app = FIXTURES / "python-fleet"
    start = time.perf_counter()
    procs = [subprocess.Popen(["python3", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import app; app.handler({}, type('C', (), {'aws_request_id': 'x'})())", str(app)]) for _ in range(200)]
    for p in procs:
        p.wait()
    peer = time.perf_counter() - start
    return [
        f"| burst: 200 concurrent requests, Python, from zero sandboxes | all answered in {total * 1000:.0f} ms "
        f"(p50 {pct(latencies, 50) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms); "
        f"{int(cold)} cold starts, {throttled} throttled, {errors} errors "
        f"| 200 `python3` processes importing the handler at once: {peer * 1000:.0f} ms |"
    ]


def fanout(binary: str) -> list[str]:
    keep_alive = 10
    node = Node(binary, f"[worker]\ncapacity_mb = 262144\n[sandboxes]\nkeep_alive_s = {keep_alive}\n")
    try:
        code = zip_file("echo.wasm", (WASM / "echo.wasm").read_bytes())
        names = [f"fan-{i:04d}" for i in range(1000)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: node.create(n, "wasm32-wasip1", "echo.wasm", code), names))
        time.sleep(2)
        deployed = node.rss_mb()
        invoke = Invoker(node.port)
        # One pass over every function, then the keep-alive: the node's idle state after it has
        # served traffic (caches, connection buffers) is the baseline sandboxes must return to.
        for n in names:
            invoke(f"/2015-03-31/functions/{n}/invocations", b'{"k":1}')
        time.sleep(keep_alive + 5)
        baseline = node.rss_mb()
        counter = iter(range(10**9))
        lock = threading.Lock()
        stop = time.perf_counter() + 20
        done = []

        def client(_):
            n = 0
            while time.perf_counter() < stop:
                with lock:
                    i = next(counter)
                status, _, _, _ = invoke(f"/2015-03-31/functions/{names[i % 1000]}/invocations", b'{"k":1}')
                assert status == 200
                n += 1
            done.append(n)

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(client, range(32)))
        rate = sum(done) / (time.perf_counter() - start)
        busy = node.rss_mb()
        sandboxes = sum(v for k, v in node.metrics().items() if k.startswith("nimbus_sandboxes{"))
        time.sleep(keep_alive + 5)
        after = node.rss_mb()
        left = sum(v for k, v in node.metrics().items() if k.startswith("nimbus_sandboxes{"))
    finally:
        node.close()
    return [
        f"| fan-out: 1,000 wasm functions round-robin, c=32, 20 s | {rate:,.0f} invocations/s; "
        f"{int(sandboxes)} sandboxes warm; node RSS {deployed:.0f} MB after deploy, idle baseline "
        f"{baseline:.0f} MB, {busy:.0f} MB warm, {after:.0f} MB after the keep-alive "
        f"({int(left)} sandboxes left) | - |"
    ]


WORK = b'{"work": 400000}'


def fleet(binary: str) -> list[str]:
    rows = []
    for workers in (1, 2):
        node = Node(binary, "[cluster]\nheartbeat_ms = 500\n", no_worker=True)
        try:
            for i in range(workers):
                node.worker(f"w{i + 1}", 4096)
            node.create("cpu", python_runtime(), "app.handler", zip_dir(FIXTURES / "python-fleet"))
            invoke = Invoker(node.port)
            path = "/2015-03-31/functions/cpu/invocations"
            for _ in range(8):
                invoke(path, WORK)
            stop = time.perf_counter() + 15
            latencies, overheads = [], []
            lock = threading.Lock()

            def client(_):
                while time.perf_counter() < stop:
                    status, _, elapsed, headers = invoke(path, WORK, tail=True)
                    assert status == 200
                    with lock:
                        latencies.append(elapsed)
                        overheads.append(elapsed * 1000 - report_duration_ms(headers))

            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                list(pool.map(client, range(4)))
            rate = len(latencies) / (time.perf_counter() - start)
            per_worker = {k: v for k, v in node.metrics().items() if k.startswith("nimbus_worker_invocations_total")}
        finally:
            node.close()
        rows.append(
            f"| fleet: CPU-bound Python (fixed loop), c=4, {workers} worker process{'es' if workers > 1 else ''} "
            f"| {rate:.1f} invocations/s; overhead per invocation p50 {statistics.median(overheads):.2f} ms, "
            f"p99 {pct(overheads, 99):.2f} ms; invocations per worker {sorted(int(v) for v in per_worker.values())} | - |"
        )
    return rows


def provisioned(binary: str) -> list[str]:
    rows = {}
    for pc in (0, 10):
        node = Node(binary, "[worker]\ncapacity_mb = 8192\n")
        try:
            node.create("pc", python_runtime(), "app.handler", zip_dir(FIXTURES / "python-fleet"))
            status, data, _ = node.request("POST", "/2015-03-31/functions/pc/versions", b"{}")
            assert status == 201, data
            if pc:
                status, data, _ = node.request(
                    "PUT", "/2019-09-30/functions/pc/provisioned-concurrency?Qualifier=1",
                    json.dumps({"ProvisionedConcurrentExecutions": pc}).encode())
                assert status == 202, data
                while True:
                    _, data, _ = node.request("GET", "/2019-09-30/functions/pc/provisioned-concurrency?Qualifier=1")
                    if json.loads(data)["Status"] == "READY":
                        break
                    time.sleep(0.1)
            invoke = Invoker(node.port)
            path = "/2015-03-31/functions/pc/invocations?Qualifier=1"
            latencies = []
            lock = threading.Lock()
            todo = iter(range(100))

            def client(_):
                while True:
                    with lock:
                        if next(todo, None) is None:
                            return
                    status, _, elapsed, _ = invoke(path, b"{}")
                    assert status == 200
                    with lock:
                        latencies.append(elapsed * 1000)

            with concurrent.futures.ThreadPoolExecutor(10) as pool:
                list(pool.map(client, range(10)))
            cold = node.metrics().get('nimbus_cold_starts_total{function="pc"}', 0)
        finally:
            node.close()
        rows[pc] = (pct(latencies, 50), pct(latencies, 99), max(latencies), int(cold))
    (a50, a99, amax, acold), (b50, b99, bmax, bcold) = rows[0], rows[10]
    return [
        f"| provisioned concurrency: first 100 invocations of a Python version, c=10 | with 10 provisioned: "
        f"p50 {b50:.2f} ms, p99 {b99:.2f} ms, max {bmax:.2f} ms, {bcold} cold starts "
        f"| without: p50 {a50:.2f} ms, p99 {a99:.2f} ms, max {amax:.2f} ms, {acold} cold starts |"
    ]


def main() -> None:
    binary = sys.argv[1]
    which = sys.argv[2] if len(sys.argv) > 2 else "all"
    scenarios = {"burst": burst, "fanout": fanout, "fleet": fleet, "provisioned": provisioned}
    rows = []
    for name, fn in scenarios.items():
        if which in (name, "all"):
            rows += fn(binary)
            print(rows[-1], flush=True)
    print("\n| scenario | nimbus | peer / baseline |\n|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()

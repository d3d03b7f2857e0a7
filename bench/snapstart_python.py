#!/usr/bin/env python3
"""SnapStart for Python: cold starts of a published SnapStart version (restored from its
template) against the same code published without SnapStart (a normal init), in alternating
rounds on one node.

- hello: a handler with nothing to initialise; boto3: a handler that imports boto3 and makes an
  S3 and an SQS client at init. Each cold start is the first invoke of a new environment,
  client-measured: a function is created and published (SnapStart makes its snapshot then),
  0.3 s pass (as between requests: the worker prepares ahead of need, here a jail, with
  SnapStart an environment restored into it), its version is invoked once, and the function is
  deleted. Restore Duration / Init Duration come from the REPORT line.
- burst: 200 concurrent first invokes of the boto3 function from zero environments, with and
  without SnapStart: time until all have answered.
- memory: PSS of 20 warm environments of the boto3 function, restored or initialised.
- the peers on the same machine: `python3 -c "import boto3"` and `python3 -c 0`.

usage: bench/snapstart_python.py NIMBUS_BIN [COLD_STARTS_PER_ROUND] [ROUNDS]
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
import bench_role  # noqa: E402
from coldstart import start_node, stop_node  # noqa: E402

HELLO = b'''
def handler(event, context):
    if event.get("sleep"):
        import time; time.sleep(event["sleep"])
    return {"ok": True}
'''
BOTO3 = b'''
import boto3
S3 = boto3.client("s3")
SQS = boto3.client("sqs")
def handler(event, context):
    if event.get("sleep"):
        import time; time.sleep(event["sleep"])
    return {"ok": True, "s3": S3.meta.region_name}
'''


def zipped(source: bytes, file: str = "app.py") -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(file, source)
    return base64.b64encode(buf.getvalue()).decode()


class Node:
    def __init__(self, port: int):
        self.port = port
        self.local = threading.local()

    def conn(self):
        if not hasattr(self.local, "conn"):
            self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        return self.local.conn

    def call(self, method, path, body=b"", headers=None):
        conn = self.conn()
        conn.request(method, path, body=body, headers=headers or {"content-type": "application/json"})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()

    def create(self, name, source, role, snap):
        """`source` is a handler's code, Python's; or (runtime, handler, file name, code)."""
        runtime, handler, file, code = (
            source if isinstance(source, tuple) else (python_runtime(), "app.handler", "app.py", source))
        spec = {"FunctionName": name, "Runtime": runtime, "Handler": handler,
                "Role": role, "Timeout": 60, "MemorySize": 256, "Code": {"ZipFile": zipped(code, file)}}
        if snap:
            spec["SnapStart"] = {"ApplyOn": "PublishedVersions"}
        status, _, body = self.call("POST", "/2015-03-31/functions", json.dumps(spec).encode())
        assert status == 201, body
        started = time.perf_counter()
        status, _, body = self.call("POST", f"/2015-03-31/functions/{name}/versions", b"{}")
        assert status == 201, body
        return json.loads(body)["Version"], (time.perf_counter() - started) * 1000

    def invoke(self, name, version, payload, tail=False):
        headers = {"content-type": "application/json"}
        if tail:
            headers["X-Amz-Log-Type"] = "Tail"
        started = time.perf_counter()
        status, got, body = self.call(
            "POST", f"/2015-03-31/functions/{name}/invocations?Qualifier={version}",
            json.dumps(payload).encode(), headers)
        elapsed = (time.perf_counter() - started) * 1000
        assert status == 200 and b"errorType" not in body, body
        result = next((v for k, v in got.items() if k.lower() == "x-amz-log-result"), "")
        log = base64.b64decode(result).decode() if tail else ""
        return elapsed, log


def python_runtime() -> str:
    name = os.path.basename(os.path.realpath("/usr/bin/python3"))
    return name.replace("python3.", "python3.")


def report_ms(log: str, field: str) -> float | None:
    for part in log.split("REPORT")[-1].split("\t"):
        if part.strip().startswith(field + ":"):
            return float(part.split(":")[1].split()[0])
    return None


def cold_round(node, kind, source, role, snap, n, field):
    client, phase = [], []
    for i in range(n):
        name = f"cold-{kind}-{'snap' if snap else 'plain'}-{i}-{time.monotonic_ns()}"
        version, _ = node.create(name, source, role, snap)
        time.sleep(0.3)
        elapsed, log = node.invoke(name, version, {}, tail=True)
        value = report_ms(log, field)
        assert value is not None, (name, log)
        client.append(elapsed)
        phase.append(value)
        status, _, body = node.call("DELETE", f"/2015-03-31/functions/{name}")
        assert status == 204, body
    return client, phase


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def burst(node, name, version, n=200):
    """N concurrent first invokes: the time until all have answered, their p50, and how many
    failed (by error type)."""
    def one(_):
        try:
            return node.invoke(name, version, {"sleep": 0.05})[0], None
        except AssertionError as e:
            text = str(e)
            kind = text.split('errorType":"')[1].split('"')[0] if 'errorType":"' in text else text[:60]
            return None, kind

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    times = [t for t, _ in results if t is not None]
    errors: dict[str, int] = {}
    for _, kind in results:
        if kind:
            errors[kind] = errors.get(kind, 0) + 1
    return (time.perf_counter() - started) * 1000, statistics.median(times) if times else 0, errors


def pss_of(name, exclude_template=True):
    total, count = 0, 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            if f"AWS_LAMBDA_FUNCTION_NAME={name}".encode() not in env:
                continue
            status = open(f"/proc/{pid}/status").read()
            depth = next(len(l.split()) - 1 for l in status.splitlines() if l.startswith("NSpid:"))
            if exclude_template and b"_NIMBUS_SNAPSHOT=template" in env and depth == 2:
                continue
            rollup = open(f"/proc/{pid}/smaps_rollup").read()
        except (OSError, StopIteration):
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                count += 1
    return total, count


def warm_pss(node, name, version, n=20):
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: node.invoke(name, version, {"sleep": 1.0}), range(n)))
    kib, procs = pss_of(name)
    return kib / 1024 / max(1, procs), procs


def host_run(command, n=10):
    """Median wall time of `command` on the host, with the SDKs nimbus gives functions on its
    paths."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run(command, check=True,
                       env={"PYTHONPATH": boto3_path(), "NODE_PATH": node_sdk_path(), "PATH": "/usr/bin"})
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def node_sdk_path():
    cache = os.path.expanduser("~/.cache/nimbus/node-sdk")
    dirs = sorted(d for d in os.listdir(cache) if d.startswith("aws-sdk-js-")) if os.path.isdir(cache) else []
    return os.path.join(cache, dirs[-1], "node_modules") if dirs else ""


def boto3_path():
    cache = os.path.expanduser("~/.cache/nimbus/python-sdk")
    dirs = sorted(d for d in os.listdir(cache) if d.startswith("boto3-")) if os.path.isdir(cache) else []
    return os.path.join(cache, dirs[-1]) if dirs else ""


def main(kinds=None, peers=None):
    """`kinds`: (name, source) of the two functions, the second one measured in the burst and
    for memory too; `peers`: (label, command) run on the host."""
    kinds = kinds or [("hello", HELLO), ("boto3", BOTO3)]
    peers = peers or [("python3 -c 0", ["/usr/bin/python3", "-c", "0"]),
                      ("python3 -c 'import boto3'", ["/usr/bin/python3", "-c", "import boto3"])]
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5  # 0: only the burst and the memory
    with tempfile.TemporaryDirectory() as tmp:
        # Room for the burst's 200 environments of 256 MB at once.
        config = os.path.join(tmp, "nimbus.toml")
        base = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "nimbus-bench.toml")).read()
        with open(config, "w") as f:
            f.write(base + "\n[worker]\ncapacity_mb = 65536\n[limits]\nconcurrency = 1000\n")
        proc, port = start_node(binary, os.path.join(tmp, "data"), config)
        try:
            node = Node(port)
            role = bench_role.ensure(port)
            functions = {}
            for kind, source in kinds:
                for snap in (True, False):
                    name = f"{kind}-{'snap' if snap else 'plain'}"
                    version, publish_ms = node.create(name, source, role, snap)
                    functions[(kind, snap)] = (name, version)
                    print(f"{name}: published version {version} in {publish_ms:.0f} ms", flush=True)
            results = {key: ([], []) for key in functions}
            for r in range(rounds):
                for kind, source in kinds:
                    for snap in (True, False):
                        name, version = functions[(kind, snap)]
                        field = "Restore Duration" if snap else "Init Duration"
                        client, phase = cold_round(node, kind, source, role, snap, n, field)
                        results[(kind, snap)][0].extend(client)
                        results[(kind, snap)][1].extend(phase)
                        print(f"round {r + 1} {name}: first invoke p50 {statistics.median(client):.1f} ms, "
                              f"{field} p50 {statistics.median(phase):.1f} ms", flush=True)
            print()
            for (kind, snap), (client, phase) in results.items() if rounds else []:
                field = "Restore Duration" if snap else "Init Duration"
                print(f"| {kind}, {'SnapStart' if snap else 'no SnapStart'} (n={len(client)}) | "
                      f"first invoke p50 {statistics.median(client):.1f} ms, p99 {pct(client, 99):.1f} ms | "
                      f"{field} p50 {statistics.median(phase):.1f} ms, p99 {pct(phase, 99):.1f} ms |")
            for label, command in peers if rounds else []:
                print(f"| host: {label} | {host_run(command):.1f} ms |")
            heavy = kinds[1][0]
            for snap in (True, False):
                name, version = functions[(heavy, snap)]
                time.sleep(1)
                total, p50, errors = burst(node, name, version)
                print(f"| burst of 200, {heavy}, {'SnapStart' if snap else 'no SnapStart'} | all answered in "
                      f"{total:,.0f} ms (p50 of the successes {p50:,.0f} ms); errors: {errors or 'none'} |",
                      flush=True)
            for snap in (True, False):
                name, version = functions[(heavy, snap)]
                mib, procs = warm_pss(node, name, version)
                print(f"| PSS per warm environment, {heavy}, {'restored' if snap else 'initialised'} | "
                      f"{mib:.1f} MiB ({procs} processes) |", flush=True)
        finally:
            stop_node(proc)


if __name__ == "__main__":
    main()

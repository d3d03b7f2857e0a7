#!/usr/bin/env python3
"""From an acknowledged upload to the handler of the function its bucket notifies: one node
(authentication off), a Python function whose handler logs the wall-clock time it starts and
the key its event names, a bucket whose `s3:ObjectCreated:*` events go to that function. The
client PUTs 1 KiB objects one at a time (a pause between them, so each event finds the warm
sandbox idle) and notes when each PUT was acknowledged; the latency of a key is the handler's
start minus that acknowledgement (the same machine's clock). Reports p50, p90 and max.

usage: bench/s3_notify.py NIMBUS_BIN [COUNT]
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_role  # noqa: E402

HANDLER = '''import time
from urllib.parse import unquote_plus


def handler(event, context):
    started = time.time_ns()
    for record in event.get("Records", []):
        print("STARTED", started, unquote_plus(record["s3"]["object"]["key"]), flush=True)
    return {}
'''
HOST = "s3.localhost"


def call(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def runtime() -> str:
    version = subprocess.run(["/usr/bin/python3", "--version"], capture_output=True, text=True).stdout
    return "python" + ".".join(version.split()[1].split(".")[:2])


def start_node(binary: str, tmp: str) -> tuple[subprocess.Popen, int]:
    """A node (authentication off) on a free port, its data under TMP."""
    proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/data",
                             "--config", str(ROOT / "bench" / "nimbus-bench.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))


def deploy_warm(port: int, name: str, handler: str) -> None:
    """Creates function NAME with HANDLER as app.py and starts its sandbox with one invocation."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", handler)
    status, body = call(port, "POST", "/2015-03-31/functions", json.dumps({
        "FunctionName": name, "Runtime": runtime(), "Handler": "app.handler",
        "Role": bench_role.ensure(port),
        "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()}}).encode(),
        {"content-type": "application/json"})
    assert status == 201, body
    assert call(port, "POST", f"/2015-03-31/functions/{name}/invocations", b"{}")[0] == 200


def handler_starts(port: int, name: str, count: int) -> dict[str, int]:
    """The `STARTED <ns> <key>` lines function NAME logged, by key (waits up to a minute for
    COUNT of them)."""
    started: dict[str, int] = {}
    deadline = time.time() + 60
    while len(started) < count and time.time() < deadline:
        status, body = call(port, "GET", f"/nimbus/v1/functions/{name}/logs?limit=10000")
        for entry in json.loads(body)["entries"]:
            for m in re.finditer(r"STARTED (\d+) (\S+)", entry["text"]):
                started.setdefault(m.group(2), int(m.group(1)))
        time.sleep(0.5)
    return started


def report(what: str, acked: dict[str, int], started: dict[str, int]) -> None:
    latencies = sorted((started[k] - acked[k]) / 1e6 for k in acked if k in started)
    if len(latencies) < len(acked):
        print(f"only {len(latencies)} of {len(acked)} were found in the logs")
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"{what}, {len(latencies)}: p50 {statistics.median(latencies):.2f} ms, "
          f"p90 {p(0.9):.2f} ms, max {latencies[-1]:.2f} ms")


def main() -> None:
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    with tempfile.TemporaryDirectory(prefix="s3notify-", dir="/var/tmp") as tmp:
        proc, port = start_node(binary, tmp)
        try:
            deploy_warm(port, "on-upload", HANDLER)
            assert call(port, "PUT", "/bench", headers={"Host": HOST})[0] == 200
            config = ("<NotificationConfiguration><CloudFunctionConfiguration><Id>bench</Id>"
                      "<CloudFunction>arn:aws:lambda:us-east-1:000000000000:function:on-upload</CloudFunction>"
                      "<Event>s3:ObjectCreated:*</Event></CloudFunctionConfiguration></NotificationConfiguration>")
            status, body = call(port, "PUT", "/bench?notification", config.encode(), {"Host": HOST})
            assert status == 200, body
            acked: dict[str, int] = {}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for i in range(count):
                key = f"k{i}"
                conn.request("PUT", f"/bench/{key}", body=b"x" * 1024, headers={"Host": HOST})
                r = conn.getresponse()
                r.read()
                acked[key] = time.time_ns()
                assert r.status == 200
                time.sleep(0.05)
            started = handler_starts(port, "on-upload", count)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report("upload acknowledged → handler started, uploads", acked, started)


if __name__ == "__main__":
    main()

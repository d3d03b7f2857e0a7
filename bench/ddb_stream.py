#!/usr/bin/env python3
"""From an acknowledged write to the handler of the function a table's stream feeds: one node
(authentication off), a Python function whose handler logs the wall-clock time it starts and
the keys its records name, a table with a NEW_IMAGE stream and an event source mapping from it
(batch size 1, no batching window). The client puts items one at a time (a pause between them,
so each record finds the warm sandbox idle) and notes when each PutItem was acknowledged; the
latency of a key is the handler's start minus that acknowledgement (the same machine's clock).
Reports p50, p90 and max.

usage: bench/ddb_stream.py NIMBUS_BIN [COUNT]
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
from s3_notify import call, runtime  # noqa: E402

HANDLER = '''import time


def handler(event, context):
    started = time.time_ns()
    for record in event.get("Records", []):
        print("STARTED", started, record["dynamodb"]["Keys"]["pk"]["S"], flush=True)
    return {}
'''


def dynamo(port: int, operation: str, body: dict) -> dict:
    status, out = call(port, "POST", "/", json.dumps(body).encode(), {
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": f"DynamoDB_20120810.{operation}",
    })
    assert status == 200, out
    return json.loads(out)


def main() -> None:
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    with tempfile.TemporaryDirectory(prefix="ddbstream-", dir="/var/tmp") as tmp:
        proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/data",
                                 "--config", str(ROOT / "bench" / "nimbus-bench.toml")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("app.py", HANDLER)
            status, body = call(port, "POST", "/2015-03-31/functions", json.dumps({
                "FunctionName": "on-change", "Runtime": runtime(), "Handler": "app.handler",
                "Role": bench_role.ensure(port),
                "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()}}).encode(),
                {"content-type": "application/json"})
            assert status == 201, body
            assert call(port, "POST", "/2015-03-31/functions/on-change/invocations", b"{}")[0] == 200
            table = dynamo(port, "CreateTable", {
                "TableName": "bench", "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
            })["TableDescription"]
            status, body = call(port, "POST", "/2015-03-31/event-source-mappings", json.dumps({
                "EventSourceArn": table["LatestStreamArn"], "FunctionName": "on-change",
                "StartingPosition": "LATEST", "BatchSize": 1}).encode(),
                {"content-type": "application/json"})
            assert status == 202, body
            acked: dict[str, int] = {}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for i in range(count):
                key = f"k{i}"
                conn.request("POST", "/", body=json.dumps({
                    "TableName": "bench", "Item": {"pk": {"S": key}, "v": {"S": "x" * 100}}}).encode(),
                    headers={"content-type": "application/x-amz-json-1.0",
                             "x-amz-target": "DynamoDB_20120810.PutItem"})
                r = conn.getresponse()
                r.read()
                acked[key] = time.time_ns()
                assert r.status == 200
                time.sleep(0.05)
            started: dict[str, int] = {}
            deadline = time.time() + 60
            while len(started) < count and time.time() < deadline:
                status, body = call(port, "GET", "/nimbus/v1/functions/on-change/logs?limit=10000")
                for entry in json.loads(body)["entries"]:
                    for m in re.finditer(r"STARTED (\d+) (\S+)", entry["text"]):
                        started.setdefault(m.group(2), int(m.group(1)))
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    latencies = sorted((started[k] - acked[k]) / 1e6 for k in acked if k in started)
    if len(latencies) < count:
        print(f"only {len(latencies)} of {count} records were found in the logs")
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"PutItem acknowledged → stream handler started, {len(latencies)} writes: "
          f"p50 {statistics.median(latencies):.2f} ms, p90 {p(0.9):.2f} ms, max {latencies[-1]:.2f} ms")


if __name__ == "__main__":
    main()

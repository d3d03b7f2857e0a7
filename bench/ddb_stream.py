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

import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from s3_notify import call, deploy_warm, handler_starts, report, start_node  # noqa: E402

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
        proc, port = start_node(binary, tmp)
        try:
            deploy_warm(port, "on-change", HANDLER)
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
            started = handler_starts(port, "on-change", count)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report("PutItem acknowledged → stream handler started, writes", acked, started)


if __name__ == "__main__":
    main()

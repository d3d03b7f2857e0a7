#!/usr/bin/env python3
"""SQS SendMessage from inside a Python function (boto3 as nimbus ships it, to AWS_ENDPOINT_URL
with the role's session credentials) against the same call from the host (boto3 with the
administrator key to the node's port), on one node with SigV4 on. Rounds alternate: sandbox,
host, sandbox, host, …; each round times CALLS sequential calls on a warm client and reports
their p50 and p90; the table gives the medians over the rounds.

usage: bench/sandbox_sqs.py NIMBUS_BIN [CALLS] [ROUNDS]
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = "NKIABENCHADMIN000001", "bench-secret/0123456789abcdefghijklmnopq"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NIMBUS_ADMIN_ACCESS_KEY_ID=KEY, NIMBUS_ADMIN_SECRET_ACCESS_KEY=SECRET)
        proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/data"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
            endpoint = f"http://127.0.0.1:{port}"
            session = boto3.session.Session(aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                                            region_name="us-east-1")
            iam, sqs, lam = (session.client(s, endpoint_url=endpoint) for s in ("iam", "sqs", "lambda"))
            queue_url = sqs.create_queue(QueueName="bench")["QueueUrl"]
            role = iam.create_role(RoleName="sender", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
            iam.put_role_policy(RoleName="sender", PolicyName="send", PolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.write(ROOT / "tests/fixtures/process/python-aws/sdk.py", "sdk.py")
            lam.create_function(FunctionName="sender", Runtime="python3.11", Role=role,
                                Handler="sdk.handler", Timeout=300, MemorySize=512,
                                Code={"ZipFile": buf.getvalue()})
            event = json.dumps({"queue_url": queue_url, "repeat": calls}).encode()
            lam.invoke(FunctionName="sender", Payload=json.dumps({"queue_url": queue_url}).encode())
            for _ in range(20):  # warm the host client's connection
                sqs.send_message(QueueUrl=queue_url, MessageBody="hi")
            results = {"sandbox": [], "host": []}
            for _ in range(rounds):
                out = json.loads(lam.invoke(FunctionName="sender", Payload=event)["Payload"].read())
                results["sandbox"].append(out["timings_us"])
                host = []
                for _ in range(calls):
                    started = time.perf_counter()
                    sqs.send_message(QueueUrl=queue_url, MessageBody="hi")
                    host.append((time.perf_counter() - started) * 1e6)
                results["host"].append(host)
                sqs.purge_queue(QueueUrl=queue_url)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"SendMessage, {calls} sequential calls per round, {rounds} alternating rounds "
          f"(sandbox, host, …); medians over rounds of each round's percentile, µs")
    print(f"{'from':<10}{'p50':>8}{'p90':>8}   per-round p50")
    for who, per_round in results.items():
        p50s = [percentile(r, 0.5) for r in per_round]
        p90s = [percentile(r, 0.9) for r in per_round]
        print(f"{who:<10}{statistics.median(p50s):>8.0f}{statistics.median(p90s):>8.0f}   "
              + " ".join(f"{v:.0f}" for v in p50s))


if __name__ == "__main__":
    main()

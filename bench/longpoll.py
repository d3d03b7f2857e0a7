#!/usr/bin/env python3
"""SendMessage-to-ReceiveMessage latency through a long poll, at c=1.

  usage: bench/longpoll.py NIMBUS_BINARY [ROUNDS=3] [N=300]

Starts a node, creates a queue, and N times: a consumer is already waiting in ReceiveMessage
(WaitTimeSeconds=20); the producer sends one message; the latency is from just before the send
to the moment the consumer has the message. Prints p50/p90/p99 per round and their medians.
Runs ROUNDS rounds, each on a fresh node.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PORT = 19131


def call(conn: http.client.HTTPConnection, operation: str, body: dict) -> dict:
    conn.request("POST", "/", json.dumps(body), {
        "X-Amz-Target": f"AmazonSQS.{operation}",
        "Content-Type": "application/x-amz-json-1.0",
    })
    reply = conn.getresponse()
    data = reply.read()
    if reply.status != 200:
        raise RuntimeError(f"{operation}: {reply.status} {data!r}")
    return json.loads(data or b"{}")


def one_round(binary: str, n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        node = subprocess.Popen([binary, "up", "--listen", f"127.0.0.1:{PORT}", "--data-dir",
                                 os.path.join(tmp, "data"), "--config",
                                 os.path.join(os.path.dirname(os.path.abspath(__file__)), "nimbus-bench.toml")], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            assert "listening" in node.stdout.readline()
            producer = http.client.HTTPConnection("127.0.0.1", PORT)
            url = call(producer, "CreateQueue", {"QueueName": "latency"})["QueueUrl"]
            consumer = http.client.HTTPConnection("127.0.0.1", PORT)
            latencies: list[float] = []
            for _ in range(n):
                got: list[float] = []
                ready = threading.Event()

                def consume() -> None:
                    ready.set()
                    while True:
                        out = call(consumer, "ReceiveMessage", {
                            "QueueUrl": url, "WaitTimeSeconds": 20, "MaxNumberOfMessages": 1})
                        messages = out.get("Messages", [])
                        if messages:
                            got.append(time.perf_counter())
                            call(consumer, "DeleteMessage", {
                                "QueueUrl": url, "ReceiptHandle": messages[0]["ReceiptHandle"]})
                            return

                t = threading.Thread(target=consume)
                t.start()
                ready.wait()
                time.sleep(0.02)  # the consumer is inside its long poll
                start = time.perf_counter()
                call(producer, "SendMessage", {"QueueUrl": url, "MessageBody": "x"})
                t.join()
                latencies.append((got[0] - start) * 1000)
            return latencies
        finally:
            node.terminate()
            node.wait()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    p50s, p99s = [], []
    for r in range(rounds):
        lat = one_round(binary, n)
        p50s.append(pct(lat, 50))
        p99s.append(pct(lat, 99))
        print(f"round {r + 1}: p50 {pct(lat, 50):.2f} ms  p90 {pct(lat, 90):.2f} ms  "
              f"p99 {pct(lat, 99):.2f} ms  (n={n})", flush=True)
    print(f"median of {rounds} rounds: p50 {statistics.median(p50s):.2f} ms  "
          f"p99 {statistics.median(p99s):.2f} ms")


if __name__ == "__main__":
    main()

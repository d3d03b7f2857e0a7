#!/usr/bin/env python3
"""Durable enqueue benchmark: nimbus's asynchronous Invoke (202 only after the event is on disk)
against PostgreSQL inserting the same rows, one transaction per row, synchronous_commit on, at
the same concurrency, on the same disk, in the same run. Then the drain rate of an async echo
function: how fast queued events are run.

usage: bench/durable_queue.py NIMBUS_BIN [DURATION] [ROUNDS]   (needs wrk and Debian's postgresql; root)

Each round runs nimbus, then PostgreSQL; the table reports the medians over the rounds (3 by
default) and the c=32 ratio of each round.
"""

from __future__ import annotations

import base64
import glob
import http.client
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import sys as _sys
_sys.path.insert(0, __import__("os").path.dirname(__file__))
import bench_role  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BODY = '{"hello":"world"}'


def wrk(url: str, conns: int, duration: str, headers: dict[str, str], body: str = BODY) -> tuple[float, float]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = '{body}'"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    threads = 1 if conns == 1 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    script.unlink()
    if "Non-2xx" in out:
        raise SystemExit(f"errors:\n{out}")
    m = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
    p99_ms = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    return rps, p99_ms


def postgres(duration_s: int) -> dict[int, tuple[float, float]]:
    pg_bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    work = Path(tempfile.mkdtemp(prefix="pgbench-", dir=str(ROOT / "target")))
    shutil.chown(work, "postgres")
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    shutil.chown(sock, "postgres")
    port = "25432"

    def as_pg(*cmd, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, text=True, **kw)

    as_pg(f"{pg_bin}/initdb", "-D", str(data), "--auth=trust", "-U", "postgres")
    as_pg(f"{pg_bin}/pg_ctl", "-D", str(data), "-l", str(work / "log"), "-w", "start",
          "-o", f"-p {port} -k {sock} -c listen_addresses='' -c synchronous_commit=on -c fsync=on")
    results = {}
    try:
        psql = ["psql", "-h", str(sock), "-p", port, "-U", "postgres", "-q", "-c"]
        as_pg(*psql, "CREATE TABLE events (id bigserial PRIMARY KEY, body jsonb NOT NULL)")
        script = work / "insert.sql"
        script.write_text(f"INSERT INTO events (body) VALUES ('{BODY}');\n")
        shutil.chown(script, "postgres")
        for conns in (1, 32):
            logdir = work / f"log{conns}"
            logdir.mkdir()
            shutil.chown(logdir, "postgres")
            out = as_pg("pgbench", "-h", str(sock), "-p", port, "-U", "postgres", "-n", "-f", str(script),
                        "-c", str(conns), "-j", str(min(conns, 2)), "-T", str(duration_s), "-l",
                        "postgres", cwd=logdir).stdout
            tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
            latencies = []
            for f in logdir.glob("pgbench_log.*"):
                for line in f.read_text().splitlines():
                    latencies.append(int(line.split()[2]) / 1000.0)
            latencies.sort()
            results[conns] = (tps, latencies[int(len(latencies) * 0.99)])
    finally:
        as_pg(f"{pg_bin}/pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(work, ignore_errors=True)
    return results


def one_round(binary: str, duration: str):
    with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
        config = Path(tmp) / "nimbus.toml"
        config.write_text("[async]\nconcurrency = 64\n[auth]\nmode = \"none\"\n")
        proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/data",
                                 "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port)
        wasm = (ROOT / "target" / "fixtures" / "echo.wasm").read_bytes()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("echo.wasm", wasm)
        conn.request("POST", "/2015-03-31/functions", json.dumps({
            "FunctionName": "echo", "Runtime": "wasm32-wasip1", "Handler": "echo.wasm", "Role": bench_role.ensure(port),
            "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()}}))
        assert conn.getresponse().read()
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/echo/invocations"

        def pending():
            conn.request("GET", "/nimbus/v1/functions/echo/events")
            r = json.loads(conn.getresponse().read())
            return r["queued"] + r["in_flight"]

        ours = {}
        for c in (1, 32):
            while pending():
                time.sleep(0.2)
            start = time.perf_counter()
            ours[c] = wrk(url, c, duration, {"X-Amz-Invocation-Type": "Event"})
            load_s = time.perf_counter() - start
            # Drain: every event of the run executed, from the first enqueue to the last run.
            while pending():
                time.sleep(0.05)
            total_s = time.perf_counter() - start
            enqueued = ours[c][0] * load_s
            drain = (enqueued / total_s, total_s - load_s)
        # SendMessage to a queue nobody consumes: the enqueue alone.
        conn.request("POST", "/", body=json.dumps({"QueueName": "bench"}),
                     headers={"X-Amz-Target": "AmazonSQS.CreateQueue", "Content-Type": "application/x-amz-json-1.0"})
        queue_url = json.loads(conn.getresponse().read())["QueueUrl"]
        # Inside a single-quoted Lua string, backslashes need escaping; double quotes do not.
        send_body = json.dumps({"QueueUrl": queue_url, "MessageBody": BODY}).replace("\\", "\\\\")
        sqs_headers = {"X-Amz-Target": "AmazonSQS.SendMessage", "Content-Type": "application/x-amz-json-1.0"}
        sends = {c: wrk(f"http://127.0.0.1:{port}/", c, duration, sqs_headers, send_body) for c in (1, 32)}
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    theirs = postgres(int(duration.rstrip("s")))
    return ours, sends, drain, theirs


def median_of(rounds, pick):
    return statistics.median(pick(r) for r in rounds)


def main():
    binary = os.path.abspath(sys.argv[1])
    duration = sys.argv[2] if len(sys.argv) > 2 else "10s"
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    # nimbus and PostgreSQL alternate, round after round; the table shows medians, since one run
    # of either moves by ±10% on this machine.
    rounds = [one_round(binary, duration) for _ in range(count)]
    ours = {c: (median_of(rounds, lambda r: r[0][c][0]), median_of(rounds, lambda r: r[0][c][1])) for c in (1, 32)}
    sends = {c: (median_of(rounds, lambda r: r[1][c][0]), median_of(rounds, lambda r: r[1][c][1])) for c in (1, 32)}
    theirs = {c: (median_of(rounds, lambda r: r[3][c][0]), median_of(rounds, lambda r: r[3][c][1])) for c in (1, 32)}
    drain = (median_of(rounds, lambda r: r[2][0]), median_of(rounds, lambda r: r[2][1]))
    ratios = ", ".join(f"{r[0][32][0] / r[3][32][0]:.2f}x" for r in rounds)
    print(f"rounds: {count}; async Invoke / PostgreSQL at c=32, per round: {ratios}")
    print("| measurement | nimbus (async Invoke, 202 after fsync) | PostgreSQL (INSERT, synchronous_commit) |")
    print("|---|---|---|")
    for c in (1, 32):
        print(f"| durable enqueues/s, c={c} | {ours[c][0]:,.0f} | {theirs[c][0]:,.0f} |")
        print(f"| enqueue latency p99, c={c} | {ours[c][1]:.2f} ms | {theirs[c][1]:.2f} ms |")
    for c in (1, 32):
        print(f"| SendMessage/s (SQS API, nobody consuming), c={c} | {sends[c][0]:,.0f} | |")
        print(f"| SendMessage latency p99, c={c} | {sends[c][1]:.2f} ms | |")
    print(f"| drain: events of the c=32 run executed by the async echo function, per second from "
          f"first enqueue to last run | {drain[0]:,.0f} events/s ({drain[1]:.1f} s backlog after the load) | |")


if __name__ == "__main__":
    main()

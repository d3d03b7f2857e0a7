#!/usr/bin/env python3
"""The cost of SigV4 verification on the warm invoke path: the same build with `[auth] mode =
"sigv4"` and with `mode = "none"`, alternating rounds, wrk at c=1 and c=32 against the wasm echo
function. wrk sends one pre-signed request over and over (a signature stays valid for five
minutes), so the node verifies a full signature on every request.

Throughput on a shared 2-core machine drifts by more than the difference measured, so the c=32
run also measures the CPU time the node spends (`perf stat -e task-clock -p`, user and kernel;
these virtual machines expose no hardware counters, so instructions cannot be counted) and
divides it by the requests wrk completed: the CPU each request costs the node, which does not
depend on how much of the machine wrk and the neighbours take. With the node's CPU the
bottleneck at c=32, the throughput ratio follows the inverse of that ratio.

usage: bench/auth_cost.py NIMBUS_BIN [DURATION] [ROUNDS]
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
import zipfile
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import sys as _sys
_sys.path.insert(0, __import__("os").path.dirname(__file__))
import bench_role  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = "NKIABENCHADMIN000001", "bench-secret/0123456789abcdefghijklmnop"
BODY = '{"hello":"world"}'
# With NIMBUS_BENCH_PIN=1 the node runs on CPU 1 and wrk on CPU 0, so that the load generator
# and the node do not take turns on the same core.
PIN = os.environ.get("NIMBUS_BENCH_PIN") == "1"
NODE_CPUS = ["taskset", "-c", "1"] if PIN else []
LOAD_CPUS = ["taskset", "-c", "0"] if PIN else []


def signed(method: str, url: str, body: str, headers: dict[str, str], service: str = "lambda") -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body.encode(), headers=headers)
    SigV4Auth(Credentials(KEY, SECRET), service, "us-east-1").add_auth(request)
    return dict(request.headers.items())


def start(binary: str, tmp: str, mode: str) -> tuple[subprocess.Popen, int]:
    config = Path(tmp) / f"{mode}.toml"
    config.write_text(f'[auth]\nmode = "{mode}"\n')
    env = dict(os.environ, NIMBUS_ADMIN_ACCESS_KEY_ID=KEY, NIMBUS_ADMIN_SECRET_ACCESS_KEY=SECRET)
    proc = subprocess.Popen(NODE_CPUS + [binary, "up", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/{mode}",
                             "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
    return proc, port


def deploy(port: int) -> None:
    import http.client
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("echo.wasm", (ROOT / "target" / "fixtures" / "echo.wasm").read_bytes())
    body = json.dumps({"FunctionName": "echo", "Runtime": "wasm32-wasip1", "Handler": "echo.wasm",
                       "Role": bench_role.ensure(port, lambda m, u, b, h: signed(m, u, b, h, "iam")), "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()}})
    url = f"http://127.0.0.1:{port}/2015-03-31/functions"
    headers = signed("POST", url, body, {"Content-Type": "application/json"})
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("POST", "/2015-03-31/functions", body=body, headers=headers)
    response = conn.getresponse()
    assert response.status == 201, response.read()


def wrk(port: int, conns: int, duration: str, pid: int | None = None) -> tuple[float, float, float]:
    """(p50 µs, requests/s, node CPU µs per request or 0 without `pid`)."""
    path = "/2015-03-31/functions/echo/invocations"
    headers = signed("POST", f"http://127.0.0.1:{port}{path}", BODY, {})
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = '{BODY}'"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items() if k.lower() != "host"]
    script.write_text("\n".join(lines) + "\n")
    perf = None
    if pid is not None:
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "task-clock", "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = subprocess.run(LOAD_CPUS + ["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{duration}", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    script.unlink()
    per_request = 0.0
    if perf is not None:
        perf.send_signal(2)
        counted = perf.communicate(timeout=30)[1]
        cpu_ms = next(float(l.split(",")[0]) for l in counted.splitlines() if ",task-clock" in l)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        per_request = cpu_ms * 1000 / requests
    if "Non-2xx" in out:
        raise SystemExit(f"errors:\n{out}")
    m = re.search(r"^\s+50%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
    p50_us = float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    return p50_us, rps, per_request


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    duration = sys.argv[2] if len(sys.argv) > 2 else "5s"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    results: dict[str, list] = {"sigv4": [], "none": []}
    for _ in range(rounds):
        for mode in ("sigv4", "none"):
            with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
                proc, port = start(binary, tmp, mode)
                try:
                    deploy(port)
                    wrk(port, 1, "1s")  # warm the sandbox
                    p50, _, _ = wrk(port, 1, duration)
                    _, rps, cpu_us = wrk(port, 32, duration, proc.pid)
                    results[mode].append((p50, rps, cpu_us))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
    med = {m: tuple(statistics.median(r[i] for r in v) for i in range(3)) for m, v in results.items()}
    print(f"rounds: {rounds} alternating (sigv4, none), {duration} per measurement")
    print("| measurement | SigV4 on | authentication off | difference |")
    print("|---|---|---|---|")
    print(f"| warm invoke p50, c=1 | {med['sigv4'][0]:.0f} µs | {med['none'][0]:.0f} µs | "
          f"{med['sigv4'][0] - med['none'][0]:+.0f} µs |")
    print(f"| throughput, c=32 | {med['sigv4'][1]:,.0f}/s | {med['none'][1]:,.0f}/s | "
          f"{100 * (med['sigv4'][1] / med['none'][1] - 1):+.1f} % |")
    ratios = sorted(a[1] / b[1] for a, b in zip(results["sigv4"], results["none"]))
    print(f"| throughput, c=32, median of per-round ratios | {100 * (statistics.median(ratios) - 1):+.1f} % "
          f"(rounds: {', '.join(f'{100 * (r - 1):+.1f} %' for r in ratios)}) | | |")
    print(f"| node CPU per request, c=32 | {med['sigv4'][2]:.1f} µs | {med['none'][2]:.1f} µs | "
          f"{100 * (med['sigv4'][2] / med['none'][2] - 1):+.1f} % |")
    cpu = sorted(a[2] / b[2] for a, b in zip(results["sigv4"], results["none"]))
    print(f"| node CPU per request, median of per-round ratios | {100 * (statistics.median(cpu) - 1):+.1f} % "
          f"(rounds: {', '.join(f'{100 * (r - 1):+.1f} %' for r in cpu)}) | | |")
    print("per round (p50 µs, req/s, CPU µs/request):", json.dumps(results))


if __name__ == "__main__":
    main()

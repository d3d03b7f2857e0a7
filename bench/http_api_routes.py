#!/usr/bin/env python3
"""What 1,000 routes in one HTTP API cost a request against an API of one route: one node
(authentication off, `bench/nimbus-bench.toml`), the wasm echo function behind both APIs,
wrk at c=1 on the same route of each (`GET /service999/items/{id}/parts/{part}`, reached
through the path-based form `/execute-api/{api-id}/…`), alternating rounds (one route, 1,000
routes, …). Prints the p50 of each round and the medians.

usage: bench/http_api_routes.py NIMBUS_BIN [DURATION] [ROUNDS]
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUTE = "GET /service999/items/{id}/parts/{part}"
PATH = "/service999/items/42/parts/7"


def request(port: int, method: str, path: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    assert response.status in (200, 201), (response.status, data)
    return json.loads(data) if data else {}


def make_api(port: int, function_arn: str, routes: list[str]) -> str:
    api = request(port, "POST", "/v2/apis", {"name": f"routes-{len(routes)}", "protocolType": "HTTP"})
    api_id = api["apiId"]
    integration = request(port, "POST", f"/v2/apis/{api_id}/integrations", {
        "integrationType": "AWS_PROXY", "integrationUri": function_arn, "payloadFormatVersion": "2.0"})
    target = f"integrations/{integration['integrationId']}"
    for key in routes:
        request(port, "POST", f"/v2/apis/{api_id}/routes", {"routeKey": key, "target": target})
    request(port, "POST", f"/v2/apis/{api_id}/stages", {"stageName": "$default", "autoDeploy": True})
    return api_id


def thousand_routes() -> list[str]:
    routes = []
    for i in range(1000):
        routes.append([
            f"GET /service{i}/items",
            f"POST /service{i}/items/{{id}}",
            f"ANY /service{i}/{{proxy+}}",
            f"GET /service{i}/items/{{id}}/parts/{{part}}",
        ][i % 4])
    assert ROUTE in routes
    return routes


def p50_us(port: int, api_id: str, duration: str) -> float:
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{duration}", "--latency",
                          f"http://127.0.0.1:{port}/execute-api/{api_id}{PATH}"],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"errors:\n{out}")
    m = re.search(r"^\s+50%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
    return float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    duration = sys.argv[2] if len(sys.argv) > 2 else "5s"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    sys.path.insert(0, str(ROOT / "bench"))
    with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
        proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/data",
                                 "--config", str(ROOT / "bench" / "nimbus-bench.toml")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
            subprocess.run([sys.executable, str(ROOT / "bench" / "deploy_echo.py"), str(port),
                            str(ROOT / "target" / "fixtures" / "echo.wasm")], check=True)
            arn = "arn:aws:lambda:us-east-1:000000000000:function:echo"
            one = make_api(port, arn, [ROUTE])
            many = make_api(port, arn, thousand_routes())
            for api in (one, many):
                p50_us(port, api, "1s")  # warm the sandbox pool
            results: dict[str, list[float]] = {"1 route": [], "1,000 routes": []}
            for _ in range(rounds):
                results["1 route"].append(p50_us(port, one, duration))
                results["1,000 routes"].append(p50_us(port, many, duration))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"rounds: {rounds} alternating, {duration} each, wrk -c1")
    for name, values in results.items():
        print(f"{name}: p50 median {statistics.median(values):.0f} µs (rounds: "
              f"{', '.join(f'{v:.0f}' for v in values)})")
    diffs = sorted(b - a for a, b in zip(results["1 route"], results["1,000 routes"]))
    print(f"overhead of 1,000 routes: median of per-round differences {statistics.median(diffs):+.0f} µs "
          f"(rounds: {', '.join(f'{d:+.0f}' for d in diffs)})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The same hello handler (Node.js, or Python with LANGUAGE=python) behind an HTTP API route on nimbus and under
serverless-offline (Serverless Framework v3 with the serverless-offline plugin, from npm):
p50 at c=1 and throughput at c=32 with wrk, alternating rounds (nimbus, peer, …).

nimbus: one node (authentication off, `bench/nimbus-bench.toml`), the handler as a `nodejs`
(or `python3`) function, an HTTP API quick-created with it as the target, requests to `GET /hello` through the
path-based form `/execute-api/{api-id}/hello`.
peer: `serverless offline` with the same handler under an `httpApi` event `GET /hello`.

usage: bench/http_api_peer.py NIMBUS_BIN [DURATION] [ROUNDS]
  (PEER_DIR: where serverless and serverless-offline are installed; installed there if missing)
"""

from __future__ import annotations

import base64
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
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from http_api_routes import request  # noqa: E402
HANDLERS = {
    "node": ("handler.js", """exports.handler = async (event) => ({
  statusCode: 200,
  headers: { "content-type": "text/plain" },
  body: "hello from " + event.rawPath,
});
"""),
    "python": ("handler.py", """def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "text/plain"},
        "body": "hello from " + event["rawPath"],
    }
"""),
}
LANGUAGE = os.environ.get("LANGUAGE", "node")
HANDLER_FILE, HANDLER = HANDLERS[LANGUAGE]


def runtime() -> str:
    """The host's Node.js (or Python) as a Lambda runtime name."""
    if LANGUAGE == "python":
        version = subprocess.run(["/usr/bin/python3", "--version"], capture_output=True, text=True).stdout
        return "python" + ".".join(version.split()[1].split(".")[:2])
    version = subprocess.run(["/usr/bin/node", "--version"], capture_output=True, text=True).stdout
    return f"nodejs{version.strip().lstrip('v').split('.')[0]}.x"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, path: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"nothing answered on port {port} at {path}")


def wrk(url: str, conns: int, duration: str, script: Path | None = None,
        headers: list[str] | None = None) -> tuple[float, float]:
    """(p50 in µs, requests per second) of wrk against URL, with a Lua script and extra
    arguments (`-H 'Name: value'`) if given."""
    extra = (["-s", str(script)] if script else []) + list(headers or [])
    out = subprocess.run(["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{duration}", "--latency",
                          *extra, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"errors:\n{out}")
    m = re.search(r"^\s+50%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
    p50 = float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    return p50, rps


def launch_with_function(binary: str, tmp: str, function: dict, files: dict[str, bytes | str]
                         ) -> tuple[subprocess.Popen, int]:
    """Starts a node (authentication off) on a free port and creates FUNCTION (CreateFunction's
    body without Role and Code) with FILES zipped as its code. Returns (process, port)."""
    proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/data",
                             "--config", str(ROOT / "bench" / "nimbus-bench.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
    import bench_role
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    request(port, "POST", "/2015-03-31/functions", {
        **function, "Role": bench_role.ensure(port),
        "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()}})
    return proc, port


def start_nimbus(binary: str, tmp: str) -> tuple[subprocess.Popen, str]:
    proc, port = launch_with_function(
        binary, tmp, {"FunctionName": "hello", "Runtime": runtime(), "Handler": "handler.handler"},
        {HANDLER_FILE: HANDLER})
    api = request(port, "POST", "/v2/apis", {
        "name": "hello", "protocolType": "HTTP", "routeKey": "GET /hello",
        "target": "arn:aws:lambda:us-east-1:000000000000:function:hello"})
    url = f"http://127.0.0.1:{port}/execute-api/{api['apiId']}/hello"
    wait_for(port, f"/execute-api/{api['apiId']}/hello")
    return proc, url


def start_peer(peer_dir: Path, tmp: str) -> tuple[subprocess.Popen, str]:
    service = Path(tmp) / "service"
    service.mkdir()
    (service / HANDLER_FILE).write_text(HANDLER)
    (service / "serverless.yml").write_text(f"""service: hello
frameworkVersion: '3'
provider:
  name: aws
  runtime: {runtime()}
plugins:
  - serverless-offline
functions:
  hello:
    handler: handler.handler
    events:
      - httpApi:
          path: /hello
          method: get
""")
    (service / "node_modules").symlink_to(peer_dir / "node_modules")
    port = free_port()
    proc = subprocess.Popen([str(peer_dir / "node_modules" / ".bin" / "serverless"), "offline", "start",
                             "--httpPort", str(port), "--lambdaPort", str(free_port()), "--noTimeout"],
                            cwd=service, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, SLS_TELEMETRY_DISABLED="1", SLS_NOTIFICATIONS_MODE="off",
                                     AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"),
                            start_new_session=True)
    wait_for(port, "/hello")
    return proc, f"http://127.0.0.1:{port}/hello"


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    duration = sys.argv[2] if len(sys.argv) > 2 else "5s"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    peer_dir = Path(os.environ.get("PEER_DIR", ROOT / ".cache" / "serverless-offline"))
    if not (peer_dir / "node_modules" / ".bin" / "serverless").exists():
        peer_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "serverless@3",
                        "serverless-offline@13"], cwd=peer_dir, check=True)
    results: dict[str, list[tuple[float, float]]] = {"nimbus": [], "serverless-offline": []}
    for _ in range(rounds):
        for name in results:
            with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
                proc, url = start_nimbus(binary, tmp) if name == "nimbus" else start_peer(peer_dir, tmp)
                try:
                    # Warm at c=32 first: nimbus runs one request per sandbox, as Lambda does,
                    # so c=32 needs 32 sandboxes started before it is measured.
                    wrk(url, 32, "5s")
                    p50, _ = wrk(url, 1, duration)
                    _, rps = wrk(url, 32, duration)
                    results[name].append((p50, rps))
                finally:
                    os.killpg(proc.pid, signal.SIGTERM) if name != "nimbus" else proc.terminate()
                    proc.wait(timeout=60)
    report(results, duration, digits=1)


def report(results: dict[str, list[tuple[float, float]]], duration: str, digits: int) -> None:
    """Prints each side's medians and rounds, and the median of the per-round throughput ratios
    of the first side over the second."""
    names = list(results)
    rounds = len(results[names[0]])
    print(f"rounds: {rounds} alternating ({', '.join(names)}), {duration} per measurement")
    for name, values in results.items():
        print(f"{name}: p50 c=1 median {statistics.median(v[0] for v in values):.0f} µs "
              f"(rounds {', '.join(f'{v[0]:.0f}' for v in values)}); throughput c=32 median "
              f"{statistics.median(v[1] for v in values):,.0f}/s (rounds {', '.join(f'{v[1]:,.0f}' for v in values)})")
    ratios = sorted(a[1] / b[1] for a, b in zip(results[names[0]], results[names[1]]))
    print(f"throughput ratio {names[0]} / {names[1]}, median of rounds: {statistics.median(ratios):.{digits}f}x "
          f"(rounds {', '.join(f'{r:.{digits}f}' for r in ratios)})")


if __name__ == "__main__":
    main()

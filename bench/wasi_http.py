#!/usr/bin/env python3
"""The same wasi:http echo component (bench/peer-echo) through a nimbus function URL and under
`wasmtime serve -S cli=y -O pooling-allocator=y`: p50 at c=1 and throughput at c=32 with wrk,
POSTing the same 17-byte JSON body, in alternating rounds (nimbus, peer, …).

nimbus: one node (authentication off, `bench/nimbus-bench.toml`), the component as a `wasi-http`
function with a public (`NONE`) URL, requests through the URL's path-based form
`/lambda-url/{url-id}/`: the whole front door (URL lookup, resource policy, Worker Manager,
a fresh instance per request, log and usage records).
peer: `wasmtime serve` from wasmtime-cli 48.0.8 (PEER_WASMTIME, or `.cache/peer/bin/wasmtime`,
installed there if missing: a long build).

usage: bench/wasi_http.py NIMBUS_BIN [DURATION] [ROUNDS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from http_api_peer import free_port, launch_with_function, report, wait_for, wrk  # noqa: E402
from http_api_routes import request  # noqa: E402

POST = ROOT / "bench" / "post.lua"
COMPONENT = ROOT / "bench" / "peer-echo" / "target" / "wasm32-wasip2" / "release" / "peer_echo.wasm"


def start_nimbus(binary: str, tmp: str) -> tuple[subprocess.Popen, str]:
    proc, port = launch_with_function(
        binary, tmp,
        {"FunctionName": "echo", "Runtime": "wasi-http", "Handler": "echo.wasm", "MemorySize": 128},
        {"echo.wasm": COMPONENT.read_bytes()})
    url = request(port, "POST", "/2021-10-31/functions/echo/url", {"AuthType": "NONE"})["FunctionUrl"]
    request(port, "POST", "/2015-03-31/functions/echo/policy", {
        "StatementId": "public", "Action": "lambda:InvokeFunctionUrl", "Principal": "*",
        "FunctionUrlAuthType": "NONE"})
    url_id = url.split("//", 1)[1].split(".", 1)[0]
    path = f"/lambda-url/{url_id}/"
    wait_for(port, path)
    return proc, f"http://127.0.0.1:{port}{path}"


def start_peer(wasmtime: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(wasmtime), "serve", "-S", "cli=y", "-O", "pooling-allocator=y",
                             "--addr", f"127.0.0.1:{port}", str(COMPONENT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port, "/")
    return proc, f"http://127.0.0.1:{port}/"


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    duration = sys.argv[2] if len(sys.argv) > 2 else "5s"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    peer_root = ROOT / ".cache" / "peer"
    wasmtime = Path(os.environ.get("PEER_WASMTIME", peer_root / "bin" / "wasmtime"))
    if not wasmtime.exists():
        subprocess.run(["cargo", "install", "wasmtime-cli", "--version", "48.0.8", "--locked",
                        "--root", str(peer_root)], check=True)
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2"],
                   cwd=ROOT / "bench" / "peer-echo", check=True, capture_output=True)
    results: dict[str, list[tuple[float, float]]] = {"nimbus": [], "wasmtime serve": []}
    for _ in range(rounds):
        for name in results:
            with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
                proc, url = start_nimbus(binary, tmp) if name == "nimbus" else start_peer(wasmtime)
                try:
                    wrk(url, 32, "2s", POST)
                    p50, _ = wrk(url, 1, duration, POST)
                    _, rps = wrk(url, 32, duration, POST)
                    results[name].append((p50, rps))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
    report(results, duration, digits=2)


if __name__ == "__main__":
    main()

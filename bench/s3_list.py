#!/usr/bin/env python3
"""Listing a large bucket: ListObjectsV2 pages of 1,000 keys from a bucket of 1,000,000, on
nimbus and on SeaweedFS's S3 gateway (as in bench/s3.py: same disk, unsigned requests). Each
system is filled once through its own S3 API (32 connections, 16-byte objects), then alternating
rounds (nimbus, SeaweedFS, …) of wrk at c=1 ask for pages starting after random keys; the p50
latency of a page is reported.

usage: bench/s3_list.py NIMBUS_BIN [KEYS] [DURATION] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from http_api_peer import wrk  # noqa: E402
from s3 import start_nimbus, start_peer, wait_ready  # noqa: E402

LIST = """
request = function()
  local after = string.format("data/%%07d", math.random(0, %d))
  return wrk.format("GET", "/bench?list-type=2&max-keys=1000&start-after=" .. after)
end
"""


async def fill(port: int, host: str | None, keys: int, conns: int = 32) -> float:
    """PUTs KEYS small objects over CONNS kept-alive connections; returns objects per second."""
    next_key = 0
    header_host = host or f"127.0.0.1:{port}"

    async def worker() -> None:
        nonlocal next_key
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while next_key < keys:
            n = next_key
            next_key += 1
            body = b"%016d" % n
            writer.write(f"PUT /bench/data/{n:07d} HTTP/1.1\r\nHost: {header_host}\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status = await reader.readline()
            if b" 200 " not in status:
                raise SystemExit(f"PUT failed: {status!r}")
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return keys / (time.perf_counter() - start)


def key_count(port: int, host: str | None, keys: int) -> int:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", f"/bench?list-type=2&max-keys=1000&start-after=data/{keys // 2:07d}",
                 headers={"Host": host} if host else {})
    body = conn.getresponse().read().decode()
    return len(re.findall(r"<Key>", body))


def main() -> None:
    binary = sys.argv[1]
    keys = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    duration = sys.argv[3] if len(sys.argv) > 3 else "10s"
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    base = Path(os.environ.get("BENCH_DIR", "/var/tmp"))
    tmp = tempfile.mkdtemp(prefix="s3list-", dir=base)
    procs = []
    try:
        systems = {}
        for who in ("nimbus", "seaweedfs"):
            proc, port, host = (start_nimbus(binary, f"{tmp}/{who}") if who == "nimbus"
                                else start_peer(f"{tmp}/{who}"))
            procs.append(proc)
            wait_ready(port, host)
            rate = asyncio.run(fill(port, host, keys))
            listed = key_count(port, host, keys)
            assert listed == 1000, f"{who} listed {listed} keys"
            print(f"{who}: {keys:,} objects written at {rate:,.0f}/s", flush=True)
            systems[who] = (port, host)
        lua = Path(tmp) / "list.lua"
        lua.write_text(LIST % (keys - 1001))
        results: dict[str, list[float]] = {"nimbus": [], "seaweedfs": []}
        for r in range(rounds):
            for who, (port, host) in systems.items():
                p50, rps = wrk(f"http://127.0.0.1:{port}", 1, duration, lua,
                               ["-H", f"Host: {host}"] if host else [])
                results[who].append(p50)
                print(f"round {r + 1} {who}: p50 {p50 / 1000:.2f} ms, {rps:,.0f} pages/s", flush=True)
        n, s = (statistics.median(results[w]) for w in ("nimbus", "seaweedfs"))
        print(f"\nmedians of {rounds} alternating rounds, {duration} each, c=1:")
        print("| measurement | nimbus | SeaweedFS | ratio |")
        print("|---|---|---|---|")
        print(f"| ListObjectsV2, 1,000 of {keys:,} keys, p50 | {n / 1000:.2f} ms | {s / 1000:.2f} ms | "
              f"{s / n:.1f}× faster |")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Memory of a large object: one PUT of a SIZE-byte object (5 GiB by default, S3's largest single
PUT) to a node, then one GET of it, while the node's resident set size is sampled every 50 ms
from /proc. The body is streamed from a 1 MiB buffer on the client side; its MD5 is checked
against the ETag and against the bytes read back.

usage: bench/s3_rss.py NIMBUS_BIN [SIZE_MIB]
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from s3 import start_nimbus, wait_ready  # noqa: E402

CHUNK = 1 << 20


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples, self.running = pid, 0, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid))
            self.samples += 1
            time.sleep(0.05)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def main() -> None:
    binary = sys.argv[1]
    size = (int(sys.argv[2]) if len(sys.argv) > 2 else 5 * 1024) * CHUNK
    base = Path(os.environ.get("BENCH_DIR", "/var/tmp"))
    tmp = tempfile.mkdtemp(prefix="s3rss-", dir=base)
    proc, port, host = start_nimbus(binary, f"{tmp}/data")
    try:
        wait_ready(port, host)
        time.sleep(1)
        idle = rss_kib(proc.pid)
        block = os.urandom(CHUNK)
        md5 = hashlib.md5()
        sampler = Sampler(proc.pid)
        sampler.start()
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.putrequest("PUT", "/bench/big.bin", skip_host=True)
        conn.putheader("Host", host)
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        sent = 0
        while sent < size:
            piece = block[: min(CHUNK, size - sent)]
            conn.send(piece)
            md5.update(piece)
            sent += len(piece)
        r = conn.getresponse()
        r.read()
        put_s = time.perf_counter() - start
        put_peak = sampler.stop()
        etag = r.getheader("ETag", "").strip('"')
        assert r.status == 200 and etag == md5.hexdigest(), (r.status, etag)

        sampler = Sampler(proc.pid)
        sampler.start()
        start = time.perf_counter()
        conn.request("GET", "/bench/big.bin", headers={"Host": host})
        r = conn.getresponse()
        back = hashlib.md5()
        got = 0
        while chunk := r.read(CHUNK):
            back.update(chunk)
            got += len(chunk)
        get_s = time.perf_counter() - start
        get_peak = sampler.stop()
        assert got == size and back.hexdigest() == etag
        after = rss_kib(proc.pid)
        mib = size / CHUNK
        print(f"object: {mib:,.0f} MiB; RSS idle {idle / 1024:.1f} MiB")
        print(f"PUT: {put_s:.1f} s ({mib / put_s:,.0f} MiB/s), peak RSS {put_peak / 1024:.1f} MiB "
              f"(+{(put_peak - idle) / 1024:.1f} MiB over idle)")
        print(f"GET: {get_s:.1f} s ({mib / get_s:,.0f} MiB/s), peak RSS {get_peak / 1024:.1f} MiB "
              f"(+{(get_peak - idle) / 1024:.1f} MiB over idle); after: {after / 1024:.1f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

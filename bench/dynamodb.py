#!/usr/bin/env python3
"""Tables: nimbus's DynamoDB API against dynalite (the npm package: DynamoDB's API in one Node.js
process over LevelDB, persisting to `--path`), and PutItem against PostgreSQL single-row upserts,
all on the same disk, in alternating rounds (nimbus, dynalite, PostgreSQL, nimbus, …), each round
on fresh data directories. What an acknowledged write means differs: nimbus answers a PutItem
once its commit is synced to disk, PostgreSQL once its WAL record is (synchronous_commit); dynalite
writes to LevelDB without `sync`, so its log reaches the disk whenever the kernel writes it back.

nimbus runs with authentication off (`bench/nimbus-bench.toml`). dynalite checks only that a
request carries something shaped like a SigV4 Authorization header, never the signature, so both
get the same requests with the same fixed, unsigned Authorization and X-Amz-Date headers. Tables
are created with CreateTable (PAY_PER_REQUEST) and preloaded with BatchWriteItem of 25 over one
kept-alive connection; wrk drives the load with Lua scripts.

Measured per round:
- PutItem at c=32: each request writes a new item of about 100 bytes (a string partition key
  unique per wrk thread and request, one 70-character string attribute); throughput and p99.
  PostgreSQL 15 (Debian's package, started here on a Unix socket, `synchronous_commit=on`,
  `fsync=on`): pgbench at c=32 running `INSERT … ON CONFLICT (pk) DO UPDATE` of the same item as
  jsonb under a random key among 10^9; its p99 from pgbench's per-transaction log (`-l`).
- GetItem of random keys among 10,000 preloaded items: p50 at c=1 and throughput at c=32.
- Query of one whole partition of 100 items (hash and range key, 5 partitions preloaded): p50
  at c=1.

usage: bench/dynamodb.py NIMBUS_BIN [DURATION] [ROUNDS]   (needs wrk, npm, Debian's postgresql; root)
  (PEER_DIR: where dynalite is installed with npm; installed there if missing)
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_DIR = Path(os.environ.get("PEER_DIR", ROOT / ".cache" / "dynalite"))
ITEMS = 10_000
PARTITIONS = 5
PER_PARTITION = 100
PUT_CONNS = 32

# dynalite refuses a request without a SigV4-shaped Authorization header and a date, but does
# not verify the signature; nimbus with authentication off ignores both.
HEADERS = {
    "Content-Type": "application/x-amz-json-1.0",
    "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20250101/us-east-1/dynamodb/aws4_request, "
                     "SignedHeaders=host;x-amz-date;x-amz-target, Signature=0",
    "X-Amz-Date": "20250101T000000Z",
}

# Lua for wrk. Each script is preceded by the headers of its operation (see `lua`). The JSON
# bodies are assembled in Lua strings, so the Python side does no escaping.
PUT = """
-- Each wrk thread gets its own number, so that keys are unique across threads without relying
-- on math.random's seed.
local counter = 1
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
local n = 0
local payload = string.rep("p", 70)
request = function()
  n = n + 1
  local key = string.format("put-%s-%d-%08d", run, id, n)
  return wrk.format(nil, nil, nil, '{"TableName":"bench_put","Item":{"pk":{"S":"' .. key ..
    '"},"payload":{"S":"' .. payload .. '"}}}')
end
"""
GET = """
request = function()
  return wrk.format(nil, nil, nil, '{"TableName":"bench_items","Key":{"pk":{"S":"' ..
    string.format("item-%05d", math.random(0, items - 1)) .. '"}}}')
end
"""
QUERY = """
request = function()
  return wrk.format(nil, nil, nil, '{"TableName":"bench_query","KeyConditionExpression":"pk = :p",' ..
    '"ExpressionAttributeValues":{":p":{"S":"' .. string.format("part-%d", math.random(0, partitions - 1)) ..
    '"}}}')
end
"""
PG_UPSERT = """\\set k random(1, 1000000000)
INSERT INTO items (pk, item) VALUES ('put-' || :k, ('{"pk":{"S":"put-' || :k || '"},"payload":{"S":"' || repeat('p', 70) || '"}}')::jsonb) ON CONFLICT (pk) DO UPDATE SET item = EXCLUDED.item;
"""


def lua(operation: str, body: str, **constants: object) -> str:
    head = ['wrk.method = "POST"', 'wrk.path = "/"']
    head += [f'wrk.headers["{k}"] = "{v}"' for k, v in HEADERS.items()]
    head.append(f'wrk.headers["X-Amz-Target"] = "DynamoDB_20120810.{operation}"')
    head += [f"{k} = {json.dumps(v)}" for k, v in constants.items()]
    return "\n".join(head) + "\n" + body


def wrk(url: str, conns: int, duration: str, script: Path) -> dict[str, float]:
    """wrk's requests per second (2xx only), p50 and p99 in µs, requests sent and errors."""
    out = subprocess.run(["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{duration}", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    unit = {"us": 1, "ms": 1000, "s": 1e6}

    def percentile(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * unit[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in m.groups()) if m else 0
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    if total:
        rps *= (total - non2xx) / total
    return {"rps": rps, "p50": percentile("50"), "p99": percentile("99"), "requests": total,
            "errors": non2xx + socket_errors}


def call(conn: http.client.HTTPConnection, operation: str, body: dict) -> dict:
    conn.request("POST", "/", body=json.dumps(body),
                 headers={**HEADERS, "X-Amz-Target": f"DynamoDB_20120810.{operation}"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"{operation}: {r.status} {data[:500]!r}")
    return json.loads(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            call(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "ListTables", {})
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"no DynamoDB API on port {port}")


def create_tables(conn: http.client.HTTPConnection) -> None:
    def table(name: str, keys: list[tuple[str, str]]) -> dict:
        return {"TableName": name, "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                "KeySchema": [{"AttributeName": k, "KeyType": t} for k, t in keys]}

    names = ["bench_put", "bench_items", "bench_query"]
    call(conn, "CreateTable", table("bench_put", [("pk", "HASH")]))
    call(conn, "CreateTable", table("bench_items", [("pk", "HASH")]))
    call(conn, "CreateTable", table("bench_query", [("pk", "HASH"), ("sk", "RANGE")]))
    # dynalite keeps a new table CREATING for half a second.
    deadline = time.time() + 30
    while any(call(conn, "DescribeTable", {"TableName": n})["Table"]["TableStatus"] != "ACTIVE" for n in names):
        if time.time() > deadline:
            raise SystemExit("tables not ACTIVE after 30 s")
        time.sleep(0.1)


def batch_write(conn: http.client.HTTPConnection, table: str, items: list[dict]) -> None:
    for i in range(0, len(items), 25):
        pending = {table: [{"PutRequest": {"Item": item}} for item in items[i:i + 25]]}
        while pending:
            pending = call(conn, "BatchWriteItem", {"RequestItems": pending}).get("UnprocessedItems") or {}


def preload(port: int) -> float:
    """Creates the tables and writes the items read later; returns the seconds it took."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    create_tables(conn)
    # About 100 bytes an item, as DynamoDB counts them: names and values.
    batch_write(conn, "bench_items", [{"pk": {"S": f"item-{i:05d}"}, "payload": {"S": "g" * 81}}
                                      for i in range(ITEMS)])
    batch_write(conn, "bench_query", [{"pk": {"S": f"part-{p}"}, "sk": {"S": f"{s:03d}"},
                                       "payload": {"S": "q" * 83}}
                                      for p in range(PARTITIONS) for s in range(PER_PARTITION)])
    got = call(conn, "GetItem", {"TableName": "bench_items", "Key": {"pk": {"S": f"item-{ITEMS - 1:05d}"}}})
    assert got.get("Item", {}).get("payload") == {"S": "g" * 81}, got
    got = call(conn, "Query", {"TableName": "bench_query", "KeyConditionExpression": "pk = :p",
                               "ExpressionAttributeValues": {":p": {"S": "part-0"}}})
    assert got["Count"] == PER_PARTITION and "LastEvaluatedKey" not in got, {k: got[k] for k in got if k != "Items"}
    return time.perf_counter() - start


def count_items(port: int, table: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    count, start = 0, None
    while True:
        body = {"TableName": table, "Select": "COUNT", **({"ExclusiveStartKey": start} if start else {})}
        page = call(conn, "Scan", body)
        count += page["Count"]
        if not (start := page.get("LastEvaluatedKey")):
            return count


def start_nimbus(binary: str, data: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", data,
                             "--config", str(ROOT / "bench" / "nimbus-bench.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    m = re.search(r":(\d+)$", line)
    if not m:
        proc.terminate()
        raise SystemExit(f"nimbus printed {line!r} instead of its address")
    return proc, int(m.group(1))


def dynalite() -> Path:
    cli = PEER_DIR / "node_modules" / "dynalite" / "cli.js"
    if not cli.exists():
        PEER_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "dynalite@4"],
                       cwd=PEER_DIR, check=True)
    return cli


def start_dynalite(data: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(["node", str(dynalite()), "--host", "127.0.0.1", "--port", str(port), "--path", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


def measure(who: str, port: int, duration: str, tmp: str) -> dict[str, dict[str, float]]:
    url = f"http://127.0.0.1:{port}/"
    out = {}
    for name, operation, body, conns, constants in [
            ("put", "PutItem", PUT, PUT_CONNS, {"run": secrets.token_hex(3)}),
            ("get_c1", "GetItem", GET, 1, {"items": ITEMS}),
            ("get_c32", "GetItem", GET, 32, {"items": ITEMS}),
            ("query_c1", "Query", QUERY, 1, {"partitions": PARTITIONS})]:
        script = Path(tmp) / f"{name}.lua"
        script.write_text(lua(operation, body, **constants))
        out[name] = wrk(url, conns, duration, script)
        if out[name]["errors"]:
            print(f"  {who} {name}: {out[name]['errors']:.0f} of {out[name]['requests']:.0f} requests failed",
                  flush=True)
        if name == "put":
            # Every answered PutItem must have left an item behind (requests still in flight
            # when wrk stops may add a few more).
            stored = count_items(port, "bench_put")
            out[name]["stored"] = stored
            if stored < out[name]["requests"] - out[name]["errors"]:
                print(f"  {who}: {stored:,} items stored after {out[name]['requests']:,.0f} PutItem requests",
                      flush=True)
    return out


def seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)([sm]?)", duration)
    if not m:
        raise SystemExit(f"duration {duration!r}: use seconds (5s) or minutes (1m)")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def postgres(base: Path, duration: str) -> dict[str, dict[str, float]]:
    """One pgbench run of upserts at c=32 on a fresh cluster: transactions per second, p50 and
    p99 in µs (from the per-transaction log)."""
    pg_bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    work = Path(tempfile.mkdtemp(prefix="dynamodb-pg-", dir=base))
    shutil.chown(work, "postgres")
    data, sock, logs = work / "data", work / "sock", work / "logs"
    for d in (sock, logs):
        d.mkdir()
        shutil.chown(d, "postgres")
    port = "25433"  # only names the socket: TCP is off

    def as_pg(*cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True,
                              text=True, **kw)

    started = False
    try:
        as_pg(f"{pg_bin}/initdb", "-D", str(data), "--auth=trust", "-U", "postgres")
        as_pg(f"{pg_bin}/pg_ctl", "-D", str(data), "-l", str(work / "log"), "-w", "start",
              "-o", f"-p {port} -k {sock} -c listen_addresses='' -c synchronous_commit=on -c fsync=on")
        started = True
        as_pg("psql", "-h", str(sock), "-p", port, "-U", "postgres", "-q", "-c",
              "CREATE TABLE items (pk text PRIMARY KEY, item jsonb NOT NULL)")
        script = work / "upsert.sql"
        script.write_text(PG_UPSERT)
        shutil.chown(script, "postgres")
        out = as_pg("pgbench", "-h", str(sock), "-p", port, "-U", "postgres", "-n", "-f", str(script),
                    "-c", str(PUT_CONNS), "-j", "2", "-T", str(seconds(duration)), "-l", "postgres",
                    cwd=logs).stdout
        tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
        failed = int(m.group(1)) if (m := re.search(r"number of failed transactions: (\d+)", out)) else 0
        latencies = sorted(int(line.split()[2]) for f in logs.glob("pgbench_log.*")
                           for line in f.read_text().splitlines())
        return {"put": {"rps": tps, "p50": float(latencies[len(latencies) // 2]),
                        "p99": float(latencies[int(len(latencies) * 0.99)]), "requests": len(latencies),
                        "errors": failed}}
    finally:
        if started:
            as_pg(f"{pg_bin}/pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(work, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_round(binary: str, who: str, base: Path, duration: str) -> dict[str, dict[str, float]]:
    if who == "postgresql":
        return postgres(base, duration)
    tmp = tempfile.mkdtemp(prefix=f"dynamodb-{who}-", dir=base)
    try:
        proc, port = start_nimbus(binary, f"{tmp}/data") if who == "nimbus" else start_dynalite(f"{tmp}/data")
        try:
            wait_ready(port)
            took = preload(port)
            print(f"  {who}: {ITEMS + PARTITIONS * PER_PARTITION:,} items preloaded in {took:.1f} s", flush=True)
            return measure(who, port, duration, tmp)
        finally:
            stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}/s"


def fmt_time(us: float) -> str:
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: bench/dynamodb.py NIMBUS_BIN [DURATION] [ROUNDS]")
    binary = os.path.abspath(sys.argv[1])
    duration = sys.argv[2] if len(sys.argv) > 2 else "5s"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    base = Path(os.environ.get("BENCH_DIR", "/var/tmp"))
    seconds(duration)
    dynalite()
    systems = ("nimbus", "dynalite", "postgresql")
    results: dict[str, list[dict[str, dict[str, float]]]] = {who: [] for who in systems}
    for r in range(rounds):
        for who in systems:
            got = one_round(binary, who, base, duration)
            results[who].append(got)
            print(f"round {r + 1} {who}: " + "; ".join(
                f"{name} {fmt_rate(m['rps'])} p50 {fmt_time(m['p50'])} p99 {fmt_time(m['p99'])}"
                for name, m in got.items()), flush=True)

    def values(who: str, name: str, field: str) -> list[float]:
        return [r[name][field] for r in results[who]]

    def cell(who: str, name: str, field: str, fmt) -> str:
        v = values(who, name, field)
        return f"{fmt(statistics.median(v))} ({', '.join(fmt(x) for x in v)})"

    def ratio(name: str, field: str, peer: str, inverse: bool = False) -> tuple[float, str]:
        per_round = [(b / a if inverse else a / b) for a, b in zip(values("nimbus", name, field),
                                                                 values(peer, name, field))]
        med = statistics.median(per_round)
        return med, f"{med:.2f}× ({', '.join(f'{x:.2f}' for x in per_round)})"

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    put_pg, put_pg_text = ratio("put", "rps", "postgresql")
    put_dl, put_dl_text = ratio("put", "rps", "dynalite")
    get_dl, get_dl_text = ratio("get_c32", "rps", "dynalite")
    put_p99 = statistics.median(values("nimbus", "put", "p99"))
    get_p50 = statistics.median(values("nimbus", "get_c1", "p50"))
    rows = [
        ("PutItem, c=32, throughput", "put", "rps", fmt_rate, True,
         f"vs dynalite {put_dl_text}; vs PostgreSQL {put_pg_text}",
         f"≥ 1× PostgreSQL: {verdict(put_pg >= 1)}; ≥ 5× dynalite: {verdict(put_dl >= 5)}"),
        ("PutItem, c=32, p99", "put", "p99", fmt_time, True, "", f"≤ 10 ms: {verdict(put_p99 <= 10_000)}"),
        ("PutItem, c=32, p50", "put", "p50", fmt_time, True, "", ""),
        ("GetItem, c=1, p50", "get_c1", "p50", fmt_time, False, "faster: " + ratio("get_c1", "p50", "dynalite", True)[1],
         f"≤ 150 µs: {verdict(get_p50 <= 150)}"),
        ("GetItem, c=1, p99", "get_c1", "p99", fmt_time, False, "", ""),
        ("GetItem, c=32, throughput", "get_c32", "rps", fmt_rate, False, get_dl_text,
         f"≥ 5× dynalite: {verdict(get_dl >= 5)}"),
        ("GetItem, c=32, p99", "get_c32", "p99", fmt_time, False, "", ""),
        ("Query, 100 items, c=1, p50", "query_c1", "p50", fmt_time, False,
         "faster: " + ratio("query_c1", "p50", "dynalite", True)[1], ""),
        ("Query, 100 items, c=1, p99", "query_c1", "p99", fmt_time, False, "", ""),
    ]
    print(f"\nmedians of {rounds} alternating rounds (nimbus, dynalite, PostgreSQL), {duration} each; "
          "per-round values in parentheses:")
    print("| measurement | nimbus | dynalite | PostgreSQL (pgbench upsert) | nimbus / peer, median of rounds | target |")
    print("|---|---|---|---|---|---|")
    for label, name, field, fmt, with_pg, ratios, target in rows:
        pg = cell("postgresql", name, field, fmt) if with_pg else ""
        print(f"| {label} | {cell('nimbus', name, field, fmt)} | {cell('dynalite', name, field, fmt)} | {pg} | "
              f"{ratios} | {target} |")
    errors = {who: sum(m["errors"] for r in rs for m in r.values()) for who, rs in results.items()}
    stored = "; ".join(who + " " + ", ".join(f"{r['put']['stored']:,.0f}" for r in results[who])
                       for who in ("nimbus", "dynalite"))
    print(f"\nfailed requests (non-2xx, socket errors, pgbench failures), all rounds: "
          + ", ".join(f"{who} {n:,.0f}" for who, n in errors.items()))
    print(f"items in bench_put after each PutItem run: {stored}")


if __name__ == "__main__":
    main()

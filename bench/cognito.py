#!/usr/bin/env python3
"""User pools: sign-in (InitiateAuth with USER_PASSWORD_AUTH) on nimbus against moto's server
(the peer: Cognito's API in one Python process, which keeps passwords in plain text and signs
its tokens with one fixed key), in alternating rounds (nimbus, moto, nimbus, …); and what a JWT
authorizer costs a request at nimbus's HTTP front door.

Sign-in: each system gets a pool, a client allowing USER_PASSWORD_AUTH, and 100 users with a
permanent password (AdminCreateUser, AdminSetUserPassword); wrk sends InitiateAuth for a random
one of them at c=8 (throughput, p50) and at c=1 (p50). nimbus hashes with Argon2id (m=19 MiB,
t=2, p=1) and answers with RS256 tokens signed by the pool's key; moto compares the password as
stored and signs with its key. nimbus runs with authentication off and no per-source limit
(`bench/nimbus-bench.toml`); sign-in calls are unsigned on both.

JWT authorizer: one HTTP API in front of a wasm function that answers the same whatever the
event (the `env` fixture: its environment as JSON; an echo would send the claims back and
measure their second trip too) with two routes, one without authorization and one with a JWT
authorizer whose issuer is the pool's; wrk at c=1 sends the same request to each with a valid
ID token in `Authorization`, in alternating rounds, after a warm-up that fills the key cache.
The authorizer's cost is the verification and the claims it adds to the function's event. The overhead is the median of the per-round differences of
the p50s.

usage: bench/cognito.py NIMBUS_BIN [DURATION] [ROUNDS] [jwt]   (needs wrk, moto[server]; `jwt`: the
authorizer's part alone)
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from dynamodb import free_port, wrk  # noqa: E402
from http_api_routes import request as rest  # noqa: E402

USERS = 100
PASSWORD = "Bench-Pass-1!"
TARGET = "AWSCognitoIdentityProviderService"
HEADERS = {"Content-Type": "application/x-amz-json-1.1"}


def call(port: int, operation: str, body: dict, signed: bool = True) -> dict:
    headers = {**HEADERS, "X-Amz-Target": f"{TARGET}.{operation}"}
    if signed:
        # moto wants an Authorization header to find the account; nimbus (auth off) ignores it.
        headers["Authorization"] = ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/"
                                    "cognito-idp/aws4_request, SignedHeaders=host, Signature=0")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/", body=json.dumps(body), headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"{operation}: {r.status} {data[:400]!r}")
    return json.loads(data)


def setup(port: int) -> tuple[str, str]:
    pool = call(port, "CreateUserPool", {"PoolName": "bench"})["UserPool"]["Id"]
    client = call(port, "CreateUserPoolClient", {
        "UserPoolId": pool, "ClientName": "bench",
        "ExplicitAuthFlows": ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]})["UserPoolClient"]["ClientId"]
    for i in range(USERS):
        name = f"user{i:03d}"
        call(port, "AdminCreateUser", {"UserPoolId": pool, "Username": name, "MessageAction": "SUPPRESS",
                                       "TemporaryPassword": "Temp-Pass-1!"})
        call(port, "AdminSetUserPassword", {"UserPoolId": pool, "Username": name, "Password": PASSWORD,
                                            "Permanent": True})
    return pool, client


def sign_in_script(tmp: str, client: str) -> Path:
    script = Path(tmp) / "signin.lua"
    script.write_text(f"""
wrk.method = "POST"
wrk.path = "/"
wrk.headers["Content-Type"] = "application/x-amz-json-1.1"
wrk.headers["X-Amz-Target"] = "{TARGET}.InitiateAuth"
request = function()
  local user = string.format("user%03d", math.random(0, {USERS - 1}))
  return wrk.format(nil, nil, nil, '{{"ClientId":"{client}","AuthFlow":"USER_PASSWORD_AUTH",' ..
    '"AuthParameters":{{"USERNAME":"' .. user .. '","PASSWORD":"{PASSWORD}"}}}}')
end
""")
    return script


def start_nimbus(binary: str, tmp: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/data",
                             "--config", str(ROOT / "bench" / "nimbus-bench.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
    return proc, port


def start_moto() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/moto-api/")
            conn.getresponse().read()
            return proc, port
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto did not start")


def jwt_overhead(port: int, pool: str, client: str, duration: str, rounds: int, tmp: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "deploy_echo.py"), str(port),
                    str(ROOT / "target" / "fixtures" / "env.wasm")], check=True, stdout=subprocess.DEVNULL)
    arn = "arn:aws:lambda:us-east-1:000000000000:function:echo"
    api = rest(port, "POST", "/v2/apis", {"name": "jwt", "protocolType": "HTTP"})["apiId"]
    integration = rest(port, "POST", f"/v2/apis/{api}/integrations", {
        "integrationType": "AWS_PROXY", "integrationUri": arn, "payloadFormatVersion": "2.0"})["integrationId"]
    authorizer = rest(port, "POST", f"/v2/apis/{api}/authorizers", {
        "name": "users", "authorizerType": "JWT", "identitySource": ["$request.header.Authorization"],
        "jwtConfiguration": {"issuer": f"http://127.0.0.1:{port}/{pool}", "audience": [client]}})["authorizerId"]
    rest(port, "POST", f"/v2/apis/{api}/routes", {"routeKey": "GET /open/{id}", "target": f"integrations/{integration}"})
    rest(port, "POST", f"/v2/apis/{api}/routes", {"routeKey": "GET /secure/{id}", "target": f"integrations/{integration}",
                                                  "authorizationType": "JWT", "authorizerId": authorizer})
    rest(port, "POST", f"/v2/apis/{api}/stages", {"stageName": "$default", "autoDeploy": True})
    token = call(port, "InitiateAuth", {"ClientId": client, "AuthFlow": "USER_PASSWORD_AUTH",
                                        "AuthParameters": {"USERNAME": "user000", "PASSWORD": PASSWORD}},
                 signed=False)["AuthenticationResult"]["IdToken"]
    script = Path(tmp) / "bearer.lua"
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    url = f"http://127.0.0.1:{port}/execute-api/{api}"
    for path in ("/open/1", "/secure/1"):
        out = wrk(url + path, 1, "1s", script)
        if out["errors"]:
            raise SystemExit(f"{path}: {out}")
    results: dict[str, list[float]] = {"open": [], "secure": []}
    for _ in range(rounds):
        for name in ("open", "secure"):
            out = wrk(f"{url}/{name}/1", 1, duration, script)
            if out["errors"]:
                raise SystemExit(f"{name}: {out}")
            results[name].append(out["p50"])
    print(f"\nJWT authorizer at the front door: {rounds} alternating rounds, {duration} each, wrk -c1")
    for name, values in results.items():
        print(f"  {name} route: p50 median {statistics.median(values):.0f} µs (rounds: "
              f"{', '.join(f'{v:.0f}' for v in values)})")
    diffs = sorted(b - a for a, b in zip(results["open"], results["secure"]))
    print(f"  overhead: median of per-round differences {statistics.median(diffs):+.1f} µs "
          f"(rounds: {', '.join(f'{d:+.0f}' for d in diffs)})")


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    duration = sys.argv[2] if len(sys.argv) > 2 else "10s"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    random.seed(1)
    if len(sys.argv) > 4 and sys.argv[4] == "jwt":
        with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
            proc, port = start_nimbus(binary, tmp)
            try:
                pool, client = setup(port)
                jwt_overhead(port, pool, client, duration, rounds, tmp)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        return
    results: dict[str, dict[str, list[float]]] = {
        s: {"rps8": [], "p50_8": [], "p50_1": []} for s in ("nimbus", "moto")}
    with tempfile.TemporaryDirectory(dir=str(ROOT / "target")) as tmp:
        for r in range(rounds):
            for system in ("nimbus", "moto"):
                proc, port = start_nimbus(binary, f"{tmp}/{r}") if system == "nimbus" else start_moto()
                try:
                    pool, client = setup(port)
                    script = sign_in_script(tmp, client)
                    warm = wrk(f"http://127.0.0.1:{port}/", 2, "2s", script)
                    if warm["errors"]:
                        raise SystemExit(f"{system}: sign-in errors {warm}")
                    c8 = wrk(f"http://127.0.0.1:{port}/", 8, duration, script)
                    c1 = wrk(f"http://127.0.0.1:{port}/", 1, duration, script)
                    if c8["errors"] or c1["errors"]:
                        raise SystemExit(f"{system}: errors {c8} {c1}")
                    results[system]["rps8"].append(c8["rps"])
                    results[system]["p50_8"].append(c8["p50"])
                    results[system]["p50_1"].append(c1["p50"])
                    print(f"round {r} {system}: c=8 {c8['rps']:.0f}/s p50 {c8['p50'] / 1000:.1f} ms; "
                          f"c=1 p50 {c1['p50'] / 1000:.1f} ms", flush=True)
                    if system == "nimbus" and r == rounds - 1:
                        jwt_overhead(port, pool, client, duration, 5, tmp)
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
    print(f"\nsign-in (InitiateAuth USER_PASSWORD_AUTH): medians of {rounds} alternating rounds, {duration} each")
    for system, r in results.items():
        print(f"  {system}: c=8 {statistics.median(r['rps8']):.0f}/s, p50 {statistics.median(r['p50_8']) / 1000:.1f} ms; "
              f"c=1 p50 {statistics.median(r['p50_1']) / 1000:.1f} ms")


if __name__ == "__main__":
    main()

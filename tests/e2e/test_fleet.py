"""A node and worker processes forming a fleet: joining with the cluster secret, placement across
workers, code pushed ahead, workers that die, freeze or join twice, capacity exhaustion."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import http.client
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import e2e_support as s
import fleet_support as fs
import process_support as ps

# The tests hold the cluster secret but not its certificate; they do not check it.
ANY_CERT = ssl.create_default_context()
ANY_CERT.check_hostname = False
ANY_CERT.verify_mode = ssl.CERT_NONE


def tls_url(endpoint: str) -> str:
    """The node's URL for the cluster's routes, which it serves over TLS only."""
    return endpoint.replace("http://", "https://", 1)


FLEET_CONFIG = """
[cluster]
heartbeat_ms = 200
heartbeat_timeout_ms = 1500

[sandboxes]
keep_alive_s = 600
"""


@pytest.fixture
def fleet(node_factory, nimbus_bin, tmp_path):
    """fleet(workers=[(name, capacity_mb)], built_in=False) -> (node, {name: Worker})."""
    started: list[fs.Worker] = []

    def make(workers, built_in: bool = False, config: str = FLEET_CONFIG):
        path = tmp_path / "fleet.toml"
        path.write_text(config)
        node = node_factory(
            config=path, name="fleet", extra_args=() if built_in else ("--no-worker",)
        )
        out = {}
        for name, capacity in workers:
            w = fs.Worker(nimbus_bin, node, name, capacity, tmp_path / "workers")
            started.append(w)
            out[name] = w.start()
        return node, out

    make.started = started
    yield make
    for w in started:
        w.close()


def new_worker(fleet, nimbus_bin, node, name, capacity, tmp_path, **kw) -> fs.Worker:
    w = fs.Worker(nimbus_bin, node, name, capacity, tmp_path / "workers", **kw)
    fleet.started.append(w)
    return w


def deploy_python(client, memory: int = 128, timeout: int = 30) -> str:
    return ps.deploy(
        client,
        "python-fleet",
        ps.host_python_runtime(),
        "app.handler",
        MemorySize=memory,
        Timeout=timeout,
    )


def records(node, function: str) -> list[dict]:
    out = s.NimbusCli(node.binary, node).ok("usage", "--json", "--function", function).stdout
    return json.loads(out)["records"]


def wait_records(node, function: str, check, timeout: float = 60.0) -> list[dict]:
    def attempt():
        recs = records(node, function)
        assert check(recs), recs
        return recs

    return s.eventually(attempt, timeout=timeout)


def call(client, name, payload, **kw):
    r = client.invoke(FunctionName=name, Payload=json.dumps(payload).encode(), **kw)
    return r, r["Payload"].read()


def test_workers_join_and_share_the_load(fleet, make_zip):
    node, workers = fleet([("w1", 256), ("w2", 256)])
    assert fs.worker_names(node) == ["w1", "w2"]
    client = s.lambda_client(node.endpoint)
    name = deploy_python(client)
    sha = client.get_function(FunctionName=name)["Configuration"]["CodeSha256"]
    digest = base64.b64decode(sha).hex()
    # Deploying pushes the package to both workers before any invocation.
    fs.wait_for(lambda: all(digest in w.cached_code() for w in workers.values()))

    # Four concurrent invocations need four sandboxes: two fit on each worker (256 MB each).
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: call(client, name, {"sleep": 1.0}), range(4)))
    for r, body in results:
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    per_worker = {w["name"]: w["sandboxes"] for w in fs.cluster_status(node)["workers"]}
    assert per_worker == {"w1": 2, "w2": 2}
    status = s.NimbusCli(node.binary, node).ok("status").stdout
    assert "w1" in status and "w2" in status and f"{name}:$LATEST" in status
    m = fs.metrics(node)
    assert m['nimbus_worker_sandboxes{worker="w1"}'] == 2
    assert m['nimbus_worker_used_mb{worker="w2"}'] == 256
    assert m[f'nimbus_cold_starts_total{{function="{name}"}}'] == 4


def test_capacity_exhausted_everywhere_is_a_clear_throttle(fleet):
    node, _ = fleet([("w1", 128), ("w2", 128)])
    client = s.lambda_client(node.endpoint)
    name = deploy_python(client)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(call, client, name, {"sleep": 3}) for _ in range(2)]
        time.sleep(1.0)
        started = time.monotonic()
        err = s.assert_client_error(
            lambda: call(client, name, {}), "TooManyRequestsException", 429
        )
        # Refused at once, not queued behind the running ones.
        assert time.monotonic() - started < 2.5
        assert err.response["Reason"] == "CapacityExhausted"
        assert "No worker has room" in err.response["Error"]["Message"]
        for f in busy:
            assert f.result()[0]["StatusCode"] == 200
    assert (
        fs.metric(node, f'nimbus_throttles_total{{function="{name}",reason="CapacityExhausted"}}')
        >= 1
    )


def test_a_worker_needs_the_cluster_secret(fleet, nimbus_bin, tmp_path):
    node, workers = fleet([("good", 256)])
    wrong = new_worker(fleet, nimbus_bin, node, "wrong", 256, tmp_path, secret="not-the-secret-at-all")
    wrong.spawn()
    assert wrong.wait_exit() != 0
    assert "refused this worker" in wrong.stderr() and "wrong cluster secret" in wrong.stderr()
    missing = new_worker(fleet, nimbus_bin, node, "missing", 256, tmp_path, use_secret_file=False)
    missing.spawn()
    assert missing.wait_exit() != 0
    assert "no cluster secret" in missing.stderr()
    assert fs.worker_names(node) == ["good"]

    # In plaintext the node refuses the cluster's routes and the worker closes the connection.
    body = json.dumps(
        {"name": "x", "incarnation": "i", "address": "127.0.0.1:1", "capacity_mb": 512}
    ).encode()
    req = urllib.request.Request(f"{node.endpoint}/nimbus/cluster/v1/workers", data=body,
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403 and b"over TLS only" in e.value.read()
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://{workers['good'].address}/v1/status", timeout=10)
    # Over TLS without the secret's credentials both refuse.
    for url, data in [
        (f"{tls_url(node.endpoint)}/nimbus/cluster/v1/workers", body),
        (f"https://{workers['good'].address}/v1/prepare", b"{}"),
    ]:
        req = urllib.request.Request(url, data=data, method="POST")
        req.add_header("x-nimbus-cluster-auth", "v1 0 " + "0" * 64)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10, context=ANY_CERT)
        assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{tls_url(node.endpoint)}/nimbus/cluster/v1/code/{'0' * 64}",
                               timeout=10, context=ANY_CERT)
    assert e.value.code == 401


def test_the_fleet_speaks_tls_with_the_secrets_certificate(fleet, tmp_path):
    node, workers = fleet([("w1", 256)])
    other, _ = fleet([("w2", 256)])

    def certificate(address: str) -> tuple[bytes, str]:
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with ANY_CERT.wrap_socket(raw, server_hostname="nimbus-cluster") as tls:
                return tls.getpeercert(binary_form=True), tls.version()

    node_cert, version = certificate(node.endpoint.removeprefix("http://"))
    worker_cert, _ = certificate(workers["w1"].address)
    assert version == "TLSv1.3"
    # The node and its worker present the same certificate: the one their secret derives.
    assert node_cert == worker_cert
    # Another cluster (another secret) has another.
    assert certificate(other.endpoint.removeprefix("http://"))[0] != node_cert
    # And the worker really works over it.
    client = s.lambda_client(node.endpoint)
    name = deploy_python(client)
    assert call(client, name, {})[0]["StatusCode"] == 200


def test_a_worker_killed_mid_invocation(fleet, nimbus_bin, tmp_path):
    node, workers = fleet([("doomed", 256)])
    client = s.lambda_client(node.endpoint)
    name = deploy_python(client)
    call(client, name, {})  # warm
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            lambda: s.assert_client_error(
                lambda: call(client, name, {"sleep": 20}), "ServiceException", 502
            )
        )
        time.sleep(1.0)
        workers["doomed"].signal(signal.SIGKILL)
        err = running.result(timeout=15)
    assert "was lost" in err.response["Error"]["Message"]
    fs.wait_for(lambda: fs.worker_names(node) == [])

    # An asynchronous invocation while no worker is there waits, then runs on a new worker.
    r = client.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 1}')
    assert r["StatusCode"] == 202
    new_worker(fleet, nimbus_bin, node, "fresh", 256, tmp_path).start()
    recs = wait_records(node, name, lambda rs: any(u.get("async_attempt") for u in rs))
    assert [u["outcome"] for u in recs if u.get("async_attempt")] == ["success"]
    assert call(client, name, {})[0]["StatusCode"] == 200


def test_an_async_event_on_a_lost_worker_is_retried_elsewhere(fleet, nimbus_bin, tmp_path):
    node, workers = fleet([("first", 128)])
    client = s.lambda_client(node.endpoint)
    name = deploy_python(client)
    r = client.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"sleep": 20}')
    request_id = r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    fs.wait_for(lambda: fs.cluster_status(node)["workers"][0]["sandboxes"] == 1)
    time.sleep(1.0)
    new_worker(fleet, nimbus_bin, node, "second", 256, tmp_path).start()
    workers["first"].signal(signal.SIGKILL)
    recs = wait_records(
        node, name, lambda rs: any(u["request_id"] == request_id for u in rs), timeout=90
    )
    recs = [u for u in recs if u["request_id"] == request_id]
    # It ran to the end once, on the second worker; the cut-short run was not an attempt.
    assert [u["outcome"] for u in recs] == ["success"]
    assert recs[0]["async_attempt"] == 1
    assert fs.worker_names(node) == ["second"]


def test_a_worker_that_stops_heartbeating_is_declared_lost(fleet):
    node, workers = fleet([("frozen", 256), ("steady", 256)])
    client = s.lambda_client(node.endpoint)
    name = deploy_python(client)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            lambda: s.assert_client_error(
                lambda: call(client, name, {"sleep": 30}), "ServiceException", 502
            )
        )
        fs.wait_for(lambda: sum(w["sandboxes"] for w in fs.cluster_status(node)["workers"]) == 1)
        holder = next(w["name"] for w in fs.cluster_status(node)["workers"] if w["sandboxes"])
        other = "steady" if holder == "frozen" else "frozen"
        # The worker keeps its connections open but stops answering and heartbeating.
        workers[holder].signal(signal.SIGSTOP)
        err = running.result(timeout=20)
        assert "lost" in err.response["Error"]["Message"]
    assert fs.worker_names(node) == [other]
    assert call(client, name, {})[0]["StatusCode"] == 200
    # Thawed, it finds itself forgotten and joins again with no sandboxes.
    workers[holder].signal(signal.SIGCONT)
    fs.wait_for(lambda: fs.worker_names(node) == sorted([holder, other]), timeout=20)
    thawed = next(w for w in fs.cluster_status(node)["workers"] if w["name"] == holder)
    assert thawed["sandboxes"] == 0 and thawed["used_mb"] == 0


def test_a_worker_that_joins_twice(fleet, nimbus_bin, tmp_path):
    node, workers = fleet([("twin", 256)])
    twin = new_worker(fleet, nimbus_bin, node, "twin", 256, tmp_path / "second")
    twin.spawn()
    assert twin.wait_exit() != 0
    assert "already registered" in twin.stderr()
    assert fs.worker_names(node) == ["twin"]
    # After the first one dies, a new process under the same name takes its place.
    workers["twin"].signal(signal.SIGKILL)
    again = new_worker(fleet, nimbus_bin, node, "twin", 512, tmp_path / "third")
    again.start(timeout=30)
    fs.wait_for(
        lambda: [(w["name"], w["capacity_mb"]) for w in fs.cluster_status(node)["workers"]]
        == [("twin", 512)]
    )
    client = s.lambda_client(node.endpoint)
    name = deploy_python(client)
    assert call(client, name, {})[0]["StatusCode"] == 200


def test_a_worker_that_leaves_is_removed_at_once(fleet):
    node, workers = fleet([("leaving", 256), ("staying", 256)])
    workers["leaving"].signal(signal.SIGTERM)
    assert workers["leaving"].wait_exit() == 0
    assert fs.worker_names(node) == ["staying"]


def test_built_in_worker_and_joined_workers_together(fleet, make_zip):
    node, _ = fleet([("extra", 512)], built_in=True)
    assert fs.worker_names(node) == ["extra", "local"]
    client = s.lambda_client(node.endpoint)
    name = s.unique_name("echo")
    s.create_function(client, name, make_zip("echo"), "echo.wasm")
    assert s.invoke(client, name, {"k": 1}).json() == {"k": 1}


def test_a_remote_workers_snapshots_are_reported_and_deleted(fleet, make_zip):
    """A SnapStart version's pre-initialised module is made on the worker that prepares it;
    the worker's heartbeats carry what it keeps, and deleting the function deletes it there."""
    node, _ = fleet([("w1", 512)])
    client = s.lambda_client(node.endpoint)
    name = s.create_preinit_function(client, make_zip, "snapfleet")
    version = client.publish_version(FunctionName=name)["Version"]
    assert json.loads(client.invoke(FunctionName=name, Qualifier=version)["Payload"].read())["preinitialized"]
    key = 'nimbus_worker_snapshot_disk_bytes{worker="w1"}'
    fs.wait_for(lambda: fs.metric(node, key) > 0)
    client.delete_function(FunctionName=name)
    fs.wait_for(lambda: fs.metric(node, key) == 0)


def signed(node, method: str, path: str, body: bytes | None = None, worker: str | None = None):
    """A request to the node signed with its cluster secret, as a worker signs one; or, to the
    worker at the address `worker`, as the node signs one."""
    import hashlib
    import hmac

    secret = (node.data_dir / "cluster.secret").read_text().strip().encode()
    now = int(time.time())
    mac = hmac.new(secret, f"{now}\n{method}\n{path}".encode(), hashlib.sha256).hexdigest()
    base = f"https://{worker}" if worker else tls_url(node.endpoint)
    req = urllib.request.Request(f"{base}{path}", data=body, method=method)
    req.add_header("x-nimbus-cluster-auth", f"v1 {now} {mac}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=ANY_CERT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_worker_refuses_malformed_requests_from_the_node(fleet, make_zip):
    """Even signed with the secret, what the node would never send gets a 400 with the reason,
    and nothing on the worker changes: a SnapStart version keeps its snapshot."""
    node, workers = fleet([("w1", 512)])
    client = s.lambda_client(node.endpoint)
    name = s.create_preinit_function(client, make_zip, "fleetforget")
    version = client.publish_version(FunctionName=name)["Version"]
    key = 'nimbus_worker_snapshot_disk_bytes{worker="w1"}'
    fs.wait_for(lambda: fs.metric(node, key) > 0)
    kept = fs.metric(node, key)
    address = workers["w1"].address
    for path, body, reason in [
        ("/v1/forget", b"", "1 to 512 bytes"),
        ("/v1/forget", b"\xff\xfe", "1 to 512 bytes"),
        ("/v1/forget", b"f" * 513, "1 to 512 bytes"),
        ("/v1/prepare", b"{not json", "malformed request from the node"),
        ("/v1/sandboxes", b"[]", "malformed request from the node"),
        ("/v1/sandboxes/1/invoke", b"{}", "x-nimbus-request-id"),
    ]:
        status, answer = signed(node, "POST", path, body, worker=address)
        assert status == 400, (path, body, status, answer)
        assert reason in json.loads(answer)["message"], (path, answer)
    # A name that is no version of anything there forgets nothing.
    status, _ = signed(node, "POST", "/v1/forget", b"no-such-function:1", worker=address)
    assert status == 204
    time.sleep(1.5)
    assert fs.metric(node, key) == kept
    out = json.loads(client.invoke(FunctionName=name, Qualifier=version)["Payload"].read())
    assert out["preinitialized"] is True and out["init_runs"] == 1, out


def test_bad_registrations_and_heartbeats_are_refused(fleet, nimbus_bin, tmp_path):
    node, workers = fleet([("ok", 256)])
    good = {"name": "x", "incarnation": "i", "address": "127.0.0.1:1", "capacity_mb": 512}
    cases = [
        (b"{not json", "malformed registration"),
        (json.dumps({**good, "name": "a/b"}).encode(), "invalid worker name"),
        (json.dumps({**good, "address": "not-an-address"}).encode(), "invalid worker address"),
        (json.dumps({**good, "capacity_mb": 0}).encode(), "capacity must be"),
        (json.dumps({**good, "incarnation": "i" * 65}).encode(), "capacity must be"),
    ]
    for body, message in cases:
        status, answer = signed(node, "POST", "/nimbus/cluster/v1/workers", body)
        assert status == 400, (body, answer)
        assert message in json.loads(answer)["message"]
    # Properly signed, but nothing answers at the address: refused, nothing registered.
    status, answer = signed(node, "POST", "/nimbus/cluster/v1/workers", json.dumps(good).encode())
    assert status == 502 and "could not reach the worker" in json.loads(answer)["message"]
    status, answer = signed(
        node, "POST", "/nimbus/cluster/v1/workers/ok/heartbeat", b'{"incarnation": "someone-else", "capacity_mb": 512, "sandboxes": 0}'
    )
    assert status == 410
    status, _ = signed(node, "POST", "/nimbus/cluster/v1/workers/ok/heartbeat", b"[]")
    assert status == 400
    status, _ = signed(node, "GET", "/nimbus/cluster/v1/code/not-a-digest")
    assert status == 400
    status, _ = signed(node, "GET", f"/nimbus/cluster/v1/code/{'ab' * 32}")
    assert status == 404
    assert fs.worker_names(node) == ["ok"]
    assert [w["capacity_mb"] for w in fs.cluster_status(node)["workers"]] == [256]

    # The worker command checks its own arguments before joining.
    for name, capacity, message in [("args", 64, "at least 128"), ("bad/name", 256, "invalid worker name")]:
        cmd, env = new_worker(fleet, nimbus_bin, node, name, capacity, tmp_path).command()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    cmd, env = new_worker(fleet, nimbus_bin, node, "args", 256, tmp_path).command()
    cmd[cmd.index("--join") + 1] = "ftp://127.0.0.1:1"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "https:// URL" in proc.stderr


def test_a_workers_sandbox_reaches_the_nodes_apis_with_its_roles_credentials(fleet):
    """On a joined worker, as on the node: the role's credentials in the environment, the node's
    APIs at AWS_ENDPOINT_URL (forwarded by the worker over its TLS link) and at the node's own
    port, allowed what the role allows, and no cluster route."""
    node, workers = fleet([("w1", 512)])
    key = (s.ACCESS_KEY, s.SECRET_KEY)
    import boto3

    def admin(service):
        return boto3.client(service, endpoint_url=node.endpoint, region_name=s.REGION,
                            aws_access_key_id=key[0], aws_secret_access_key=key[1])

    iam, sqs, lam = admin("iam"), admin("sqs"), s.lambda_client(node.endpoint)
    _, queue_url, _, role_arn = ps.queue_and_sender_role(iam, sqs)
    raw = ps.deploy(lam, "python-aws", ps.host_python_runtime(), "app.handler", Role=role_arn,
                    Timeout=20)
    out = s.invoke(lam, raw, {"queue_url": queue_url, "body": "from a worker",
                              "try_create": True, "node_port": node.port}).json()
    assert out["key_id"].startswith("ASIA") and out["has_token"], out
    assert out["send"]["status"] == 200, out
    assert out["create"]["status"] == 403, out
    assert out["node_port"] == "connected", out
    assert out["cluster_route"] == 404 and out["services_cluster_route"] == 404, out
    with_sdk = ps.deploy(lam, "python-aws", ps.host_python_runtime(), "sdk.handler",
                         Role=role_arn, Timeout=20)
    sdk = s.invoke(lam, with_sdk, {"queue_url": queue_url, "body": "boto3 on a worker"})
    assert sdk.function_error is None, sdk.body
    got = sorted(m["Body"] for m in sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5)["Messages"])
    assert got == ["boto3 on a worker", "from a worker"], got
    # Both ran on the worker: the node has no worker of its own here.
    assert fs.worker_names(node) == ["w1"]

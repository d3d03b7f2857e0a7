"""Concurrency controls with Lambda's semantics (account limit, reserved and provisioned
concurrency), published versions, scaling to zero, and the Prometheus metrics."""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.request

import pytest

import e2e_support as s
import fleet_support as fs
import process_support as ps

CONFIG = """
[limits]
concurrency = 20
min_unreserved = 5

[sandboxes]
keep_alive_s = 1

[worker]
capacity_mb = 1024
"""


@pytest.fixture(scope="module")
def limited(nimbus_bin, wasm_fixtures, tmp_path_factory):
    base = tmp_path_factory.mktemp("limited")
    config = base / "nimbus.toml"
    config.write_text(CONFIG)
    n = s.Node(nimbus_bin, data_dir=base / "data", log_dir=base / "logs", config=config)
    n.start()
    yield n
    n.close()


@pytest.fixture(scope="module")
def client(limited):
    return s.lambda_client(limited.endpoint)


@pytest.fixture(scope="module")
def raw(limited):
    return s.lambda_client(limited.endpoint, parameter_validation=False)


def echo(client, make_zip, fixture="echo", **kw) -> str:
    name = s.unique_name(fixture)
    s.create_function(client, name, make_zip(fixture), f"{fixture}.wasm", **kw)
    return name


def python(client, memory=128) -> str:
    return ps.deploy(
        client, "python-fleet", ps.host_python_runtime(), "app.handler", MemorySize=memory, Timeout=30
    )


def call(client, name, payload=None, **kw):
    r = client.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode(), **kw)
    return r, r["Payload"].read()


def throttle_reason(fn) -> str:
    err = s.assert_client_error(fn, "TooManyRequestsException", 429)
    assert err.response["Error"]["Message"] == "Rate Exceeded."
    return err.response["Reason"]


def test_reserved_concurrency_api(client, raw, make_zip, limited, tmp_path):
    name = echo(client, make_zip)
    assert client.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    out = client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert out["ReservedConcurrentExecutions"] == 5
    assert client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert client.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    limit = client.get_account_settings()["AccountLimit"]
    assert (limit["ConcurrentExecutions"], limit["UnreservedConcurrentExecutions"]) == (20, 15)
    # The aws CLI speaks the same API.
    aws = s.AwsCli(limited, tmp_path / "aws")
    assert aws("lambda", "get-function-concurrency", "--function-name", name) == {
        "ReservedConcurrentExecutions": 5
    }
    client.delete_function_concurrency(FunctionName=name)
    assert client.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    assert client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 20


def test_invalid_concurrency_values(client, raw, make_zip):
    name = echo(client, make_zip)
    other = echo(client, make_zip)
    s.assert_client_error(
        lambda: raw.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=-1),
        "ValidationException",
        400,
    )
    s.assert_client_error(
        lambda: raw.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions="ten"),
        "InvalidParameterValueException",
        400,
    )
    # More than the account has, and more than what leaves the minimum unreserved (5 of 20).
    for value in (21, 16):
        err = s.assert_client_error(
            lambda: client.put_function_concurrency(
                FunctionName=name, ReservedConcurrentExecutions=value
            ),
            "InvalidParameterValueException",
            400,
        )
        assert "below its minimum value of [5]" in err.response["Error"]["Message"]
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=10)
    # Reserved beyond what is still unreserved: 10 + 6 would leave 4.
    s.assert_client_error(
        lambda: client.put_function_concurrency(FunctionName=other, ReservedConcurrentExecutions=6),
        "InvalidParameterValueException",
        400,
    )
    client.put_function_concurrency(FunctionName=other, ReservedConcurrentExecutions=5)
    client.delete_function_concurrency(FunctionName=other)
    client.delete_function_concurrency(FunctionName=name)
    s.assert_client_error(
        lambda: client.put_function_concurrency(
            FunctionName="does-not-exist", ReservedConcurrentExecutions=1
        ),
        "ResourceNotFoundException",
        404,
    )


def test_reserved_zero_throttles_sync_and_holds_async(client, make_zip, limited):
    name = echo(client, make_zip)
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    reason = throttle_reason(lambda: call(client, name))
    assert reason == "ReservedFunctionConcurrentInvocationLimitExceeded"
    r = client.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"held": true}')
    assert r["StatusCode"] == 202
    nimbus = s.NimbusCli(limited.binary, limited)
    time.sleep(2)
    assert json.loads(nimbus.ok("usage", "--json", "--function", name).stdout)["records"] == []
    events = json.loads(nimbus.ok("events", name, "--json").stdout)
    assert events["queued"] + events["in_flight"] == 1
    client.delete_function_concurrency(FunctionName=name)

    def ran():
        recs = json.loads(nimbus.ok("usage", "--json", "--function", name).stdout)["records"]
        assert len(recs) == 1 and recs[0]["async_attempt"] == 1
        return recs

    s.eventually(ran, timeout=30)
    m = fs.metrics(limited)
    assert (
        m[
            f'nimbus_throttles_total{{function="{name}",reason="ReservedFunctionConcurrentInvocationLimitExceeded"}}'
        ]
        >= 2
    )


def test_reserved_concurrency_caps_and_the_account_limit_is_shared(client, make_zip):
    capped = echo(client, make_zip, "slow")
    client.put_function_concurrency(FunctionName=capped, ReservedConcurrentExecutions=1)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, client, capped)
        time.sleep(0.5)
        assert throttle_reason(lambda: call(client, capped)) == (
            "ReservedFunctionConcurrentInvocationLimitExceeded"
        )
        assert first.result()[0]["StatusCode"] == 200

    # Reserving 15 of 20 leaves 5 for every other function together.
    big = echo(client, make_zip)
    client.put_function_concurrency(FunctionName=capped, ReservedConcurrentExecutions=15)
    try:
        shared = echo(client, make_zip, "slow")
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            running = [pool.submit(call, client, shared) for _ in range(5)]
            time.sleep(0.7)
            assert throttle_reason(lambda: call(client, big)) == "ConcurrentInvocationLimitExceeded"
            for f in running:
                assert f.result()[0]["StatusCode"] == 200
    finally:
        client.delete_function_concurrency(FunctionName=capped)


def test_versions_publish_list_invoke_delete(client, make_zip):
    name = echo(client, make_zip)
    v1 = client.publish_version(FunctionName=name, Description="first")
    assert v1["Version"] == "1" and v1["FunctionArn"].endswith(f":{name}:1")
    assert v1["Description"] == "first"
    # Nothing changed: the same version comes back.
    assert client.publish_version(FunctionName=name)["Version"] == "1"
    client.update_function_code(FunctionName=name, ZipFile=make_zip("env", "echo.wasm"))
    s.wait_updated(client, name)
    v2 = client.publish_version(FunctionName=name)
    assert v2["Version"] == "2"
    versions = [v["Version"] for v in client.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2"]
    r, body = call(client, name, {"x": 1}, Qualifier="1")
    assert r["ExecutedVersion"] == "1" and json.loads(body) == {"x": 1}
    r, body = call(client, f"{name}:2")
    assert r["ExecutedVersion"] == "2" and json.loads(body)["AWS_LAMBDA_FUNCTION_VERSION"] == "2"
    assert client.get_function(FunctionName=name, Qualifier="1")["Configuration"]["Version"] == "1"
    client.delete_function(FunctionName=name, Qualifier="1")
    s.assert_client_error(lambda: call(client, name, Qualifier="1"), "ResourceNotFoundException", 404)
    s.assert_client_error(lambda: call(client, name, Qualifier="99"), "ResourceNotFoundException", 404)
    # Numbers are never reused.
    client.update_function_configuration(FunctionName=name, MemorySize=256)
    s.wait_updated(client, name)
    assert client.publish_version(FunctionName=name)["Version"] == "3"
    published = client.create_function(
        FunctionName=s.unique_name("pub"),
        Runtime=s.RUNTIME,
        Role=s.ROLE,
        Handler="echo.wasm",
        Code={"ZipFile": make_zip("echo")},
        Publish=True,
    )
    assert published["Version"] == "1"
    s.assert_client_error(
        lambda: client.publish_version(FunctionName=name, CodeSha256="AAAA"),
        "InvalidParameterValueException",
        400,
    )


def test_provisioned_concurrency_is_ready_before_invocations(client, limited):
    name = python(client)
    s.assert_client_error(
        lambda: client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1"),
        "ResourceNotFoundException",
        404,
    )
    client.publish_version(FunctionName=name)
    out = client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2
    )
    assert out["RequestedProvisionedConcurrentExecutions"] == 2
    assert out["Status"] in ("IN_PROGRESS", "READY")

    def ready():
        c = client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        assert c["Status"] == "READY", c
        return c

    c = s.eventually(ready, timeout=30)
    assert c["AvailableProvisionedConcurrentExecutions"] == 2
    listed = client.list_provisioned_concurrency_configs(FunctionName=name)[
        "ProvisionedConcurrencyConfigs"
    ]
    assert [x["FunctionArn"].rsplit(":", 1)[1] for x in listed] == ["1"]
    key = f'function="{name}",version="1",worker="local",state="provisioned_idle"'
    assert fs.metric(limited, f"nimbus_sandboxes{{{key}}}") == 2

    # Served by a provisioned sandbox: no cold start, and the runtime knows how it was started.
    r, body = call(client, name, Qualifier="1", LogType="Tail")
    assert json.loads(body)["init_type"] == "provisioned-concurrency"
    log = s.decode_log_result(r["LogResult"])
    assert "REPORT" in log and "Init Duration" not in log
    r, body = call(client, name, LogType="Tail")
    assert json.loads(body)["init_type"] == "on-demand"
    assert "Init Duration" in s.decode_log_result(r["LogResult"])

    # A provisioned sandbox that dies is re-created.
    r, _ = call(client, name, {"crash": True}, Qualifier="1")
    assert r.get("FunctionError") == "Unhandled"
    fs.wait_for(lambda: fs.metric(limited, f"nimbus_sandboxes{{{key}}}") == 2, timeout=30)
    assert client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")[
        "AllocatedProvisionedConcurrentExecutions"
    ] == 2

    client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    s.assert_client_error(
        lambda: client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1"),
        "ProvisionedConcurrencyConfigNotFoundException",
        404,
    )
    fs.wait_for(lambda: fs.metric(limited, f"nimbus_sandboxes{{{key}}}") == 0)


def test_provisioned_concurrency_bad_input(client, raw, make_zip):
    name = echo(client, make_zip)
    client.publish_version(FunctionName=name)
    s.assert_client_error(
        lambda: client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        ),
        "InvalidParameterValueException",
        400,
    )
    s.assert_client_error(
        lambda: raw.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=0
        ),
        "ValidationException",
        400,
    )
    s.assert_client_error(
        lambda: client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="7", ProvisionedConcurrentExecutions=1
        ),
        "ResourceNotFoundException",
        404,
    )
    # More than the unreserved concurrency minus its minimum (20 - 5).
    s.assert_client_error(
        lambda: client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=16
        ),
        "InvalidParameterValueException",
        400,
    )
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    s.assert_client_error(
        lambda: client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=3
        ),
        "InvalidParameterValueException",
        400,
    )
    client.delete_function_concurrency(FunctionName=name)


def test_provisioned_concurrency_beyond_capacity_is_reported(client, make_zip):
    # Three sandboxes of 512 MB do not fit in the worker's 1024 MB.
    name = echo(client, make_zip, memory=512)
    client.publish_version(FunctionName=name)
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=3
    )

    def failed():
        c = client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        assert c["Status"] == "FAILED", c
        return c

    c = s.eventually(failed, timeout=30)
    assert c["AllocatedProvisionedConcurrentExecutions"] == 2
    assert "Insufficient capacity" in c["StatusReason"]
    client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


def test_idle_sandboxes_scale_to_zero(client, make_zip, limited):
    name = echo(client, make_zip)
    key = f'nimbus_sandboxes{{function="{name}",version="$LATEST",worker="local",state="idle"}}'
    r = client.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    assert "Init Duration" in s.decode_log_result(r["LogResult"])
    assert fs.metric(limited, key) == 1

    def gone():
        m = fs.metrics(limited)
        assert key not in m, "sandbox still there"
        assert not any(name in k and k.startswith("nimbus_sandboxes") for k in m)

    s.eventually(gone, timeout=15)
    r = client.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    assert "Init Duration" in s.decode_log_result(r["LogResult"])


def test_metrics(client, make_zip, limited):
    ok = echo(client, make_zip)
    bad = echo(client, make_zip, "fail")
    for _ in range(3):
        call(client, ok)
    call(client, bad)
    with urllib.request.urlopen(f"{limited.endpoint}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    for family in (
        "nimbus_invocations_total counter",
        "nimbus_errors_total counter",
        "nimbus_throttles_total counter",
        "nimbus_cold_starts_total counter",
        "nimbus_duration_seconds histogram",
        "nimbus_init_duration_seconds histogram",
        "nimbus_concurrent_executions gauge",
        "nimbus_sandboxes gauge",
        "nimbus_worker_capacity_mb gauge",
        "nimbus_worker_free_mb gauge",
    ):
        assert f"# TYPE {family}\n" in text
    m = fs.metrics(limited)
    assert m[f'nimbus_invocations_total{{function="{ok}"}}'] == 3
    assert m[f'nimbus_errors_total{{function="{ok}"}}'] == 0
    assert m[f'nimbus_errors_total{{function="{bad}"}}'] == 1
    assert m[f'nimbus_cold_starts_total{{function="{ok}"}}'] == 1
    assert m[f'nimbus_duration_seconds_count{{function="{ok}"}}'] == 3
    assert m[f'nimbus_duration_seconds_bucket{{function="{ok}",le="+Inf"}}'] == 3
    assert m[f'nimbus_init_duration_seconds_count{{function="{ok}"}}'] == 1
    assert m['nimbus_worker_capacity_mb{worker="local"}'] == 1024
    slow = echo(client, make_zip, "slow")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(call, client, slow) for _ in range(2)]
        fs.wait_for(
            lambda: fs.metric(limited, f'nimbus_concurrent_executions{{function="{slow}"}}') == 2
        )
        for f in running:
            f.result()


def test_settings_and_versions_survive_a_restart(node_factory, make_zip):
    node = node_factory()
    client = s.lambda_client(node.endpoint)
    name = echo(client, make_zip)
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    client.publish_version(FunctionName=name)
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2
    )
    assert node.stop() == 0
    node.start()
    client = s.lambda_client(node.endpoint)
    assert client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 3
    versions = [v["Version"] for v in client.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1"]

    def ready():
        c = client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        assert c["Status"] == "READY" and c["AllocatedProvisionedConcurrentExecutions"] == 2, c

    s.eventually(ready, timeout=30)
    r, body = call(client, name, {"after": "restart"}, Qualifier="1")
    assert r["ExecutedVersion"] == "1" and json.loads(body) == {"after": "restart"}


def test_throttled_events_expire_after_the_maximum_event_age(client, make_zip, limited):
    """Lambda keeps throttled events for MaximumEventAgeInSeconds (at least 60), then sends them
    to the failure destination or dead-letter queue with condition EventAgeExceeded."""
    name = echo(client, make_zip)
    client.put_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=60, MaximumRetryAttempts=0
    )
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    sent = time.monotonic()
    r = client.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"old": true}')
    assert r["StatusCode"] == 202
    nimbus = s.NimbusCli(limited.binary, limited)

    def expired():
        events = json.loads(nimbus.ok("events", name, "--json").stdout)
        assert events["dead_lettered"] == 1, events
        return events

    events = s.eventually(expired, timeout=120, interval=2)
    assert time.monotonic() - sent >= 60
    letter = events["dead_letters"][0]
    assert letter["condition"] == "EventAgeExceeded"
    assert letter["attempts"] == 0
    assert json.loads(letter["payload"]) == {"old": True}
    # It never ran.
    assert json.loads(nimbus.ok("usage", "--json", "--function", name).stdout)["records"] == []
    client.delete_function_concurrency(FunctionName=name)

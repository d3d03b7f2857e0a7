"""Asynchronous invocation: a durable queue, pollers, retries, destinations, dead letters."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import threading
import time

import pytest

import e2e_support as s

FAST_RETRIES = "[async]\nretry_base_ms = 100\n"


@pytest.fixture
def async_node(node_factory, tmp_path):
    config = tmp_path / "async.toml"
    config.write_text(FAST_RETRIES)
    return node_factory(config=config, name="async")


def log_entries(endpoint: str, name: str) -> list[dict]:
    host, port = endpoint.removeprefix("http://").split(":")
    entries, after = [], 0
    while True:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", f"/nimbus/v1/functions/{name}/logs?after={after}&limit=10000")
        page = json.loads(conn.getresponse().read())
        conn.close()
        entries += page["entries"]
        if len(page["entries"]) < 10000:
            return entries
        after = page["next"]


def events(endpoint: str, name: str) -> dict:
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", f"/nimbus/v1/functions/{name}/events")
    return json.loads(conn.getresponse().read())


def until(check, timeout: float = 30.0, interval: float = 0.2):
    """Calls CHECK until it returns something truthy (returned), failing after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)


def invoke_async(client, name, payload) -> str:
    resp = client.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(payload).encode())
    assert resp["StatusCode"] == 202
    return resp["ResponseMetadata"]["RequestId"]


def test_event_invoke_runs_the_function(lambda_client, make_zip, node):
    name = s.unique_name("async-echo")
    s.create_function(lambda_client, name, make_zip("record"), handler="record.wasm")
    rid = invoke_async(lambda_client, name, {"async": True})
    log = until(lambda: next((e["text"] for e in log_entries(node.endpoint, name) if e["request_id"] == rid), None))
    assert 'EVENT {"async": true}' in log
    assert f"REPORT RequestId: {rid}" in log


def test_event_payload_limits(raw_lambda_client, make_zip):
    name = s.unique_name("async-limits")
    s.create_function(raw_lambda_client, name, make_zip("echo"), handler="echo.wasm")
    big = b'"' + b"x" * (1024 * 1024) + b'"'
    s.assert_client_error(
        lambda: raw_lambda_client.invoke(FunctionName=name, InvocationType="Event", Payload=big),
        "RequestTooLargeException", 413,
    )
    s.assert_client_error(
        lambda: raw_lambda_client.invoke(FunctionName=name, InvocationType="Event", Payload=b"{nope"),
        "InvalidRequestContentException", 400,
    )
    s.assert_client_error(
        lambda: raw_lambda_client.invoke(FunctionName=s.unique_name("missing"), InvocationType="Event", Payload=b"{}"),
        "ResourceNotFoundException", 404,
    )
    ok = raw_lambda_client.invoke(FunctionName=name, InvocationType="Event", Payload=b'"' + b"x" * 1000 + b'"')
    assert ok["StatusCode"] == 202


def test_event_invoke_config_api(raw_lambda_client, make_zip):
    client = raw_lambda_client
    name = s.unique_name("eic")
    sink = s.unique_name("sink")
    s.create_function(client, name, make_zip("echo"), handler="echo.wasm")
    s.create_function(client, sink, make_zip("echo"), handler="echo.wasm")
    s.assert_client_error(lambda: client.get_function_event_invoke_config(FunctionName=name),
                          "ResourceNotFoundException", 404)
    sink_arn = client.get_function(FunctionName=sink)["Configuration"]["FunctionArn"]
    put = client.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": sink_arn}},
    )
    assert put["MaximumRetryAttempts"] == 1 and put["MaximumEventAgeInSeconds"] == 120
    assert put["DestinationConfig"]["OnFailure"]["Destination"] == sink_arn
    assert put["FunctionArn"].endswith(f"function:{name}:$LATEST")
    updated = client.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert updated["MaximumRetryAttempts"] == 0 and updated["MaximumEventAgeInSeconds"] == 120
    listed = client.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert len(listed) == 1 and listed[0]["MaximumRetryAttempts"] == 0
    assert client.get_function_event_invoke_config(FunctionName=name)["MaximumEventAgeInSeconds"] == 120
    for bad, code in [
        ({"MaximumRetryAttempts": 3}, "ValidationException"),
        ({"MaximumEventAgeInSeconds": 59}, "ValidationException"),
        ({"MaximumEventAgeInSeconds": 21601}, "ValidationException"),
        ({"DestinationConfig": {"OnSuccess": {"Destination": sink_arn + "-nope"}}}, "InvalidParameterValueException"),
        ({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:q"}}},
         "InvalidParameterValueException"),
        ({"DestinationConfig": {"OnFailure": {"Destination": "not-an-arn"}}}, "InvalidParameterValueException"),
    ]:
        s.assert_client_error(lambda: client.put_function_event_invoke_config(FunctionName=name, **bad), code, 400)
    s.assert_client_error(
        lambda: client.put_function_event_invoke_config(FunctionName=s.unique_name("nofn"), MaximumRetryAttempts=1),
        "ResourceNotFoundException", 404,
    )
    client.delete_function_event_invoke_config(FunctionName=name)
    s.assert_client_error(lambda: client.get_function_event_invoke_config(FunctionName=name),
                          "ResourceNotFoundException", 404)


def test_failing_function_is_tried_exactly_as_configured_then_dead_lettered(async_node, nimbus_bin, make_zip):
    client = s.lambda_client(async_node.endpoint)
    name = s.unique_name("always-fails")
    s.create_function(client, name, make_zip("fail"), handler="fail.wasm")
    client.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=2)
    rid = invoke_async(client, name, {"doomed": True})
    report = until(lambda: (r := events(async_node.endpoint, name))["dead_lettered"] == 1 and r)
    letter = report["dead_letters"][0]
    assert letter["request_id"] == rid
    assert letter["attempts"] == 3
    assert letter["condition"] == "RetriesExhausted"
    assert letter["error"]["errorType"] == "Runtime.ExitError"
    attempts = [e for e in log_entries(async_node.endpoint, name) if e["request_id"] == rid]
    assert len(attempts) == 3, "one initial attempt and two retries"

    cli = s.NimbusCli(nimbus_bin, async_node)
    shown = cli.ok("events", name).stdout
    assert "1 dead-lettered" in shown and rid in shown
    cli.ok("events", name, "--replay", letter["id"])
    until(lambda: len([e for e in log_entries(async_node.endpoint, name) if e["request_id"] == rid]) == 6)
    final = until(lambda: (r := events(async_node.endpoint, name))["dead_lettered"] == 1
                  and r["queued"] == 0 and r["in_flight"] == 0 and r)
    assert final["dead_letters"][0]["attempts"] == 3


def test_destinations_receive_lambdas_record(async_node, make_zip):
    client = s.lambda_client(async_node.endpoint)
    sink = s.unique_name("sink")
    s.create_function(client, sink, make_zip("record"), handler="record.wasm")
    sink_arn = client.get_function(FunctionName=sink)["Configuration"]["FunctionArn"]
    ok = s.unique_name("ok")
    bad = s.unique_name("bad")
    s.create_function(client, ok, make_zip("echo"), handler="echo.wasm")
    s.create_function(client, bad, make_zip("fail"), handler="fail.wasm")
    client.put_function_event_invoke_config(FunctionName=ok, DestinationConfig={"OnSuccess": {"Destination": sink_arn}})
    client.put_function_event_invoke_config(FunctionName=bad, MaximumRetryAttempts=1,
                                            DestinationConfig={"OnFailure": {"Destination": sink_arn}})
    ok_id = invoke_async(client, ok, {"which": "ok"})
    bad_id = invoke_async(client, bad, {"which": "bad"})

    def records():
        out = {}
        for entry in log_entries(async_node.endpoint, sink):
            for line in entry["text"].splitlines():
                if line.startswith("EVENT "):
                    record = json.loads(line[len("EVENT "):])
                    out[record["requestContext"]["requestId"]] = record
        assert ok_id in out and bad_id in out
        return out

    got = s.eventually(records, timeout=30)
    success, failure = got[ok_id], got[bad_id]
    assert success["version"] == "1.0" and success["timestamp"]
    assert success["requestContext"]["condition"] == "Success"
    assert success["requestContext"]["approximateInvokeCount"] == 1
    assert success["requestContext"]["functionArn"].endswith(f"function:{ok}:$LATEST")
    assert success["requestPayload"] == {"which": "ok"}
    assert success["responsePayload"] == {"which": "ok"}
    assert success["responseContext"]["statusCode"] == 200
    assert failure["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 2
    assert failure["responseContext"]["functionError"] == "Unhandled"
    assert failure["responsePayload"]["errorType"] == "Runtime.ExitError"
    assert events(async_node.endpoint, bad)["dead_lettered"] == 0, "a failure with a destination is not dead-lettered"


def test_throttled_events_wait_and_are_not_dropped(node_factory, tmp_path, make_zip):
    config = tmp_path / "throttle.toml"
    config.write_text(FAST_RETRIES + "[limits]\nconcurrency = 1\n")
    node = node_factory(config=config, name="throttle")
    client = s.lambda_client(node.endpoint)
    name = s.unique_name("slow")
    s.create_function(client, name, make_zip("slow"), handler="slow.wasm", timeout=10)
    client.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    ids = [invoke_async(client, name, {"n": i}) for i in range(4)]
    until(lambda: {e["request_id"] for e in log_entries(node.endpoint, name)} >= set(ids), timeout=60)
    report = events(node.endpoint, name)
    assert report["dead_lettered"] == 0 and report["queued"] == 0


def test_no_acknowledged_event_is_lost_when_the_node_is_killed(node_factory, tmp_path, make_zip):
    """Thousands of async invokes while the node is killed with SIGKILL and restarted three
    times: every invoke that got its 202 runs at least once afterwards. Duplicates are allowed
    (at-least-once) and reported."""
    config = tmp_path / "crash.toml"
    config.write_text(FAST_RETRIES)
    node = node_factory(config=config, name="crash")
    client = s.lambda_client(node.endpoint)
    name = s.unique_name("crash-echo")
    s.create_function(client, name, make_zip("echo"), handler="echo.wasm")

    acked: set[str] = set()
    endpoint = {"url": node.endpoint}
    stop = threading.Event()
    total = 3000

    from test_sqs import sqs_client

    queue_url = sqs_client(node.endpoint).create_queue(QueueName="crash")["QueueUrl"]
    queue_path = "/" + queue_url.split("/", 3)[3]
    sent_messages: set[str] = set()

    def produce():
        sent = 0
        conn = None
        while sent < total and not stop.is_set():
            try:
                if conn is None:
                    host, port = endpoint["url"].removeprefix("http://").split(":")
                    conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("POST", f"/2015-03-31/functions/{name}/invocations",
                             body=json.dumps({"n": sent}).encode(),
                             headers={"X-Amz-Invocation-Type": "Event"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 202:
                    acked.add(resp.getheader("x-amzn-RequestId"))
                # And a queue message, acknowledged by its MessageId.
                body = f"message-{sent}"
                conn.request("POST", "/", body=json.dumps({"QueueUrl": endpoint["url"] + queue_path, "MessageBody": body}),
                             headers={"X-Amz-Target": "AmazonSQS.SendMessage", "Content-Type": "application/x-amz-json-1.0"})
                resp = conn.getresponse()
                answer = resp.read()
                if resp.status == 200 and json.loads(answer).get("MessageId"):
                    sent_messages.add(body)
                sent += 1
            except (OSError, http.client.HTTPException):
                conn = None
                time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(7)
    for _ in range(3):
        time.sleep(rng.uniform(0.3, 0.8))
        assert node.stop(signal.SIGKILL) is not None
        node.start()
        endpoint["url"] = node.endpoint
    producer.join(timeout=300)
    stop.set()
    assert len(acked) > 1000, f"only {len(acked)} invokes were acknowledged"

    def drained():
        report = events(node.endpoint, name)
        assert report["queued"] == 0 and report["in_flight"] == 0, report
        return report

    s.eventually(drained, timeout=120, interval=1)
    seen: dict[str, int] = {}
    for entry in log_entries(node.endpoint, name):
        seen[entry["request_id"]] = seen.get(entry["request_id"], 0) + 1
    lost = acked - set(seen)
    duplicates = sum(count - 1 for rid, count in seen.items() if rid in acked and count > 1)
    print(f"acknowledged {len(acked)}, ran {len(seen)}, duplicates {duplicates}, lost {len(lost)}")
    assert not lost, f"{len(lost)} acknowledged events never ran"

    sqs = sqs_client(node.endpoint)
    received: dict[str, int] = {}
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600)
        if "Messages" not in got:
            break
        for m in got["Messages"]:
            received[m["Body"]] = received.get(m["Body"], 0) + 1
    lost_messages = sent_messages - set(received)
    print(f"messages acknowledged {len(sent_messages)}, received {len(received)}, lost {len(lost_messages)}")
    assert len(sent_messages) > 1000
    assert not lost_messages, f"{len(lost_messages)} acknowledged messages are gone"


def test_queue_destination_receives_the_failure_record(async_node, make_zip):
    from test_sqs import sqs_client

    client = s.lambda_client(async_node.endpoint)
    sqs = sqs_client(async_node.endpoint)
    queue_url = sqs.create_queue(QueueName=s.unique_name("failures"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = s.unique_name("fails-to-queue")
    s.create_function(client, name, make_zip("fail"), handler="fail.wasm")
    client.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": queue_arn}}
    )
    rid = invoke_async(client, name, {"to": "queue"})
    message = until(lambda: sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages"))[0]
    record = json.loads(message["Body"])
    assert record["requestContext"]["requestId"] == rid
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestPayload"] == {"to": "queue"}


def test_async_usage_records_are_marked_with_their_attempt(async_node, nimbus_bin, make_zip):
    client = s.lambda_client(async_node.endpoint)
    name = s.unique_name("marked")
    s.create_function(client, name, make_zip("fail"), handler="fail.wasm")
    client.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    sync_id = s.invoke(client, name, {"sync": True}).request_id
    async_id = invoke_async(client, name, {"async": True})
    cli = s.NimbusCli(nimbus_bin, async_node)

    def records():
        out = json.loads(cli.ok("usage", "--function", name, "--json").stdout)["records"]
        return len(out) == 3 and out

    got = until(records)
    sync = [r for r in got if r["request_id"] == sync_id]
    attempts = sorted(r["async_attempt"] for r in got if r["request_id"] == async_id)
    assert len(sync) == 1 and "async_attempt" not in sync[0]
    assert attempts == [1, 2]
    table = cli.ok("usage", "--function", name).stdout
    assert "async, attempt 2" in table and "sync" in table

"""Event source mappings from queues to functions."""

from __future__ import annotations

import json
import time

import pytest

import e2e_support as s
import process_support as p
from test_async import log_entries, until
from test_sqs import sqs_client

PYTHON = p.host_python_runtime()


def bodies_seen(endpoint: str, name: str) -> list[str]:
    seen = []
    for entry in log_entries(endpoint, name):
        for line in entry["text"].splitlines():
            if line.startswith("BODY "):
                seen.append(line.split(" ")[1])
    return seen


def queue_pair(sqs, max_receive: int = 2):
    dlq = sqs.create_queue(QueueName=s.unique_name("esm-dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = sqs.create_queue(QueueName=s.unique_name("esm-src"), Attributes={
        "VisibilityTimeout": "2",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}),
    })["QueueUrl"]
    src_arn = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return src, src_arn, dlq


@pytest.mark.parametrize("handler,report", [("app.partial", True), ("app.all_or_nothing", False)])
def test_queue_messages_reach_the_function_and_failures_dead_letter(lambda_client, node, handler, report):
    sqs = sqs_client(node.endpoint)
    src, src_arn, dlq = queue_pair(sqs)
    name = p.deploy(lambda_client, "python-batch", PYTHON, handler, Timeout=2)
    extra = {"FunctionResponseTypes": ["ReportBatchItemFailures"]} if report else {}
    mapping = lambda_client.create_event_source_mapping(
        EventSourceArn=src_arn, FunctionName=name, BatchSize=10, **extra)
    assert mapping["State"] in ("Enabled", "Creating")
    # One batch send: the four become visible together and travel in one batch.
    bodies = ["good-1", "good-2", "bad-1", "good-3"]
    sqs.send_message_batch(QueueUrl=src, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)])
    expected_dead = ["bad-1"] if report else sorted(bodies)
    dead: list[str] = []

    def all_dead():
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        dead.extend(m["Body"] for m in got)
        return sorted(dead) == expected_dead

    until(all_dead, timeout=40)
    seen = bodies_seen(node.endpoint, name)
    if report:
        # Only the failed record came back; the good ones ran once.
        assert all(seen.count(g) == 1 for g in ["good-1", "good-2", "good-3"]), seen
    else:
        # Without ReportBatchItemFailures a failed batch comes back whole, good records too.
        assert all(seen.count(g) == 2 for g in ["good-1", "good-2", "good-3"]), seen
    assert seen.count("bad-1") == 2, "maxReceiveCount is 2"
    until(lambda: sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["All"])["Attributes"]
          ["ApproximateNumberOfMessagesNotVisible"] == "0", timeout=10)
    lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])


def test_event_source_mapping_api(raw_lambda_client, node):
    client = raw_lambda_client
    sqs = sqs_client(node.endpoint)
    _, src_arn, _ = queue_pair(sqs)
    name = p.deploy(client, "python-batch", PYTHON, "app.partial", Timeout=2)
    created = client.create_event_source_mapping(EventSourceArn=src_arn, FunctionName=name, BatchSize=5,
                                                 Enabled=False)
    uuid = created["UUID"]
    got = client.get_event_source_mapping(UUID=uuid)
    assert got["BatchSize"] == 5 and got["State"] == "Disabled"
    assert got["FunctionArn"].endswith(f":function:{name}")
    updated = client.update_event_source_mapping(UUID=uuid, Enabled=True, BatchSize=20,
                                                 MaximumBatchingWindowInSeconds=1)
    assert updated["BatchSize"] == 20 and updated["MaximumBatchingWindowInSeconds"] == 1
    listed = client.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [uuid]
    for bad, code in [
        ({"EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:nope", "FunctionName": name}, "InvalidParameterValueException"),
        ({"EventSourceArn": src_arn, "FunctionName": s.unique_name("nofn")}, "ResourceNotFoundException"),
        ({"EventSourceArn": src_arn, "FunctionName": name, "BatchSize": 0}, "ValidationException"),
        ({"EventSourceArn": src_arn, "FunctionName": name, "BatchSize": 20}, "InvalidParameterValueException"),
        ({"EventSourceArn": src_arn, "FunctionName": name, "FunctionResponseTypes": ["Nope"]}, "ValidationException"),
    ]:
        with pytest.raises(Exception) as e:
            client.create_event_source_mapping(**bad)
        assert s.client_error(e)[0] == code, (bad, e.value)
    slow = p.deploy(client, "python-batch", PYTHON, "app.partial", Timeout=30)
    with pytest.raises(Exception) as e:
        client.create_event_source_mapping(EventSourceArn=src_arn, FunctionName=slow)
    assert "visibility timeout" in str(e.value)
    client.delete_event_source_mapping(UUID=uuid)
    with pytest.raises(Exception) as e:
        client.get_event_source_mapping(UUID=uuid)
    assert s.client_error(e)[0] == "ResourceNotFoundException"

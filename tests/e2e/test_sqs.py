"""The queue service through the SQS API, with boto3 and the aws CLI."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import e2e_support as s


def sqs_client(endpoint: str):
    return boto3.session.Session(
        aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY, region_name=s.REGION
    ).client("sqs", endpoint_url=endpoint, config=Config(retries={"total_max_attempts": 1}, read_timeout=60))


@pytest.fixture
def sqs(node):
    return sqs_client(node.endpoint)


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_queue_lifecycle_and_messages(sqs):
    name = s.unique_name("q")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    assert url.endswith(f"/000000000000/{name}")
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert url in sqs.list_queues(QueueNamePrefix=name)["QueueUrls"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello")
    assert sent["MD5OfMessageBody"] == "5d41402abc4b2a76b9719d911017c592"
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)])
    assert len(batch["Successful"]) == 3 and not batch.get("Failed")
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "4"
    assert attrs["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"

    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert sorted(m["Body"] for m in got) == ["hello", "m0", "m1", "m2"]
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in got)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attrs == {"ApproximateNumberOfMessagesNotVisible": "4"}
    # Delete two; the other two come back after the visibility timeout.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "a", "ReceiptHandle": got[1]["ReceiptHandle"]}])
    assert deleted["Successful"] == [{"Id": "a"}]
    time.sleep(1.5)
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert sorted(m["Body"] for m in again) == sorted(m["Body"] for m in got[2:])
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "2" for m in again)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"], VisibilityTimeout=0)
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == again[0]["Body"]
    sqs.purge_queue(QueueUrl=url)
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["ApproximateNumberOfMessages"] == "0"
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(ClientError) as e:
        sqs.get_queue_url(QueueName=name)
    assert error_code(e) == "AWS.SimpleQueueService.NonExistentQueue"


def test_long_polling_waits_for_a_message(sqs):
    url = sqs.create_queue(QueueName=s.unique_name("poll"))["QueueUrl"]
    start = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert time.monotonic() - start >= 0.9
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)
    assert got["Messages"][0]["Body"] == "later"


def test_redrive_to_dead_letter_queue_and_back(sqs):
    dlq = sqs.create_queue(QueueName=s.unique_name("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    src = sqs.create_queue(QueueName=s.unique_name("src"),
                           Attributes={"VisibilityTimeout": "1", "RedrivePolicy": policy})["QueueUrl"]
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=src, WaitTimeSeconds=3)["Messages"][0]["Body"] == "poison"
        time.sleep(1.2)
    # The third receive finds it over maxReceiveCount: it moves to the dead-letter queue.
    assert "Messages" not in sqs.receive_message(QueueUrl=src, WaitTimeSeconds=1)
    moved = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=2)["Messages"]
    assert moved[0]["Body"] == "poison"
    sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=moved[0]["ReceiptHandle"], VisibilityTimeout=0)
    sqs.start_message_move_task(SourceArn=dlq_arn)
    assert sqs.receive_message(QueueUrl=src, WaitTimeSeconds=2)["Messages"][0]["Body"] == "poison"


def test_bad_input_gets_sqs_errors(sqs, node):
    url = sqs.create_queue(QueueName=s.unique_name("bad"))["QueueUrl"]
    cases = [
        (lambda: sqs.send_message(QueueUrl=url + "-missing", MessageBody="x"), "AWS.SimpleQueueService.NonExistentQueue"),
        (lambda: sqs.send_message(QueueUrl=url, MessageBody="x" * (262144 + 1)), "InvalidParameterValue"),
        (lambda: sqs.create_queue(QueueName="bad name!"), "InvalidParameterValue"),
        (lambda: sqs.create_queue(QueueName="f.fifo"), "InvalidParameterValue"),
        (lambda: sqs.create_queue(QueueName=s.unique_name("v"), Attributes={"VisibilityTimeout": "50000"}), "InvalidAttributeValue"),
        (lambda: sqs.create_queue(QueueName=s.unique_name("r"), Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:nope", "maxReceiveCount": 1})}), "InvalidAttributeValue"),
        (lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11), "InvalidParameterValue"),
        (lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage"), "ReceiptHandleIsInvalid"),
        (lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "a"}] * 2),
         "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        (lambda: sqs.create_queue(QueueName=url.rsplit("/", 1)[1], Attributes={"DelaySeconds": "5"}), "QueueAlreadyExists"),
    ]
    for call, code in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == code, (code, e.value.response)
    # A body that is not JSON at all.
    import http.client
    host, port = node.endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("POST", "/", body=b"{not json", headers={"X-Amz-Target": "AmazonSQS.SendMessage",
                                                          "Content-Type": "application/x-amz-json-1.0"})
    resp = conn.getresponse()
    assert resp.status == 400 and b"__type" in resp.read()
    assert sqs.send_message(QueueUrl=url, MessageBody="still fine")["MessageId"]


def test_aws_cli_sqs(node, tmp_path):
    aws = s.AwsCli(node, tmp_path / "aws")
    name = s.unique_name("cli")
    url = aws("sqs", "create-queue", "--queue-name", name)["QueueUrl"]
    aws("sqs", "send-message", "--queue-url", url, "--message-body", "from the cli")
    got = aws("sqs", "receive-message", "--queue-url", url)
    assert got["Messages"][0]["Body"] == "from the cli"
    aws("sqs", "delete-message", "--queue-url", url, "--receipt-handle", got["Messages"][0]["ReceiptHandle"])
    attrs = aws("sqs", "get-queue-attributes", "--queue-url", url, "--attribute-names", "All")["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"


def test_messages_survive_a_restart(node_factory):
    node = node_factory(name="sqs-restart")
    sqs = sqs_client(node.endpoint)
    url = sqs.create_queue(QueueName="durable")["QueueUrl"]
    for i in range(20):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    assert node.stop(__import__("signal").SIGKILL) is not None
    node.start()
    sqs = sqs_client(node.endpoint)
    url = sqs.get_queue_url(QueueName="durable")["QueueUrl"]
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        if "Messages" not in got:
            break
        bodies += [m["Body"] for m in got["Messages"]]
    assert sorted(bodies) == sorted(f"m{i}" for i in range(20))


def test_nimbus_queues_shows_depths(node, nimbus_bin, sqs):
    name = s.unique_name("depth")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.receive_message(QueueUrl=url)
    cli = s.NimbusCli(nimbus_bin, node)
    report = json.loads(cli.ok("queues", "--json").stdout)
    entry = next(q for q in report["queues"] if q["queue"] == name)
    assert (entry["visible"], entry["in_flight"], entry["delayed"]) == (2, 1, 0)
    assert name in cli.ok("queues").stdout


def attributes_md5(attributes: dict) -> str:
    """SQS's documented digest of message attributes, computed independently of the node."""
    import base64
    import hashlib
    import struct

    out = b""
    for name in sorted(attributes):
        a = attributes[name]
        for part in (name.encode(), a["DataType"].encode()):
            out += struct.pack(">I", len(part)) + part
        if "BinaryValue" in a:
            raw = a["BinaryValue"] if isinstance(a["BinaryValue"], bytes) else base64.b64decode(a["BinaryValue"])
            out += b"\x02" + struct.pack(">I", len(raw)) + raw
        else:
            value = a["StringValue"].encode()
            out += b"\x01" + struct.pack(">I", len(value)) + value
    return hashlib.md5(out).hexdigest()


def test_message_attributes_round_trip(sqs):
    url = sqs.create_queue(QueueName=s.unique_name("attrs"))["QueueUrl"]
    attributes = {
        "kind": {"DataType": "String", "StringValue": "order"},
        "count": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="with attributes", MessageAttributes=attributes)
    assert sent["MD5OfMessageAttributes"] == attributes_md5(attributes)
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"][0]
    assert got["MessageAttributes"]["kind"] == {"DataType": "String", "StringValue": "order"}
    assert got["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01\x02"
    assert got["MD5OfMessageAttributes"] == attributes_md5(attributes)
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes={"n": {"DataType": "Number", "StringValue": "nan?"}})
    assert error_code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes={"t": {"DataType": "Date", "StringValue": "x"}})
    assert error_code(e) == "InvalidParameterValue"

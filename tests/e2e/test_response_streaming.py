"""Response streaming: Node.js handlers wrapped by `awslambda.streamifyResponse`, read through
boto3's InvokeWithResponseStream (AWS's event stream) and through RESPONSE_STREAM function URLs
(chunked HTTP), with errors part-way, handlers that do not stream, and the log tail."""

from __future__ import annotations

import base64
import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

import e2e_support as s
import process_support as p
from conftest import UNSIGNED

NODE = p.host_node_runtime()


@pytest.fixture(scope="module")
def functions(lambda_client):
    """One function per handler of the node-stream fixture, by handler name."""
    names = {}
    for handler in ["paced", "http", "broken", "early", "piped", "plain", "burst", "big"]:
        names[handler] = p.deploy(lambda_client, "node-stream", NODE, f"index.{handler}", Timeout=20)
    for name in names.values():
        lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=s.WAITER_CONFIG)
    return names


def read_stream(response):
    """The chunks of an InvokeWithResponseStream answer with the time each arrived, and the
    InvokeComplete event."""
    chunks, complete = [], None
    for event in response["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append((time.monotonic(), event["PayloadChunk"]["Payload"]))
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    return chunks, complete


def test_chunks_arrive_as_the_function_writes_them(lambda_client, functions):
    name = functions["paced"]
    response = lambda_client.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"pauseMs": 2000}).encode(), LogType="Tail")
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert response["ResponseStreamContentType"] == "text/plain"
    chunks, complete = read_stream(response)
    assert b"".join(c for _, c in chunks) == b"first piece;second piece"
    assert len(chunks) >= 2, chunks
    # The first piece came while the function was still pausing before the second.
    first_at = chunks[0][0]
    last_at = chunks[-1][0]
    assert last_at - first_at >= 1.0, "the first piece was held back until the end"
    assert "ErrorCode" not in complete
    log = base64.b64decode(complete["LogResult"]).decode()
    assert "STREAM paced start" in log and "REPORT RequestId" in log


def test_many_small_writes_and_a_pipeline(lambda_client, functions):
    response = lambda_client.invoke_with_response_stream(
        FunctionName=functions["piped"], Payload=json.dumps({"count": 500}).encode())
    assert response["ResponseStreamContentType"] == "application/octet-stream"
    chunks, complete = read_stream(response)
    assert b"".join(c for _, c in chunks) == "".join(f"{i}," for i in range(500)).encode()
    assert "ErrorCode" not in complete


def test_errors_before_and_after_the_first_byte(lambda_client, functions):
    chunks, complete = read_stream(lambda_client.invoke_with_response_stream(FunctionName=functions["broken"]))
    assert b"".join(c for _, c in chunks) == b"partial"
    assert complete["ErrorCode"] == "TypeError"
    assert "broke part-way" in complete["ErrorDetails"]
    chunks, complete = read_stream(lambda_client.invoke_with_response_stream(FunctionName=functions["early"]))
    assert chunks == []
    assert complete["ErrorCode"] == "RangeError"
    error = json.loads(complete["ErrorDetails"])
    assert (error["errorType"], error["errorMessage"]) == ("RangeError", "nothing written")
    # The sandbox that failed part-way serves the next invocation.
    chunks, complete = read_stream(lambda_client.invoke_with_response_stream(FunctionName=functions["broken"]))
    assert b"".join(c for _, c in chunks) == b"partial"


def test_a_failure_with_writes_in_flight_leaves_the_sandbox_clean(lambda_client, functions):
    name = functions["burst"]
    for _ in range(2):
        chunks, complete = read_stream(lambda_client.invoke_with_response_stream(
            FunctionName=name, Payload=json.dumps({"fail": True}).encode()))
        assert b"abc".startswith(b"".join(c for _, c in chunks))
        assert complete["ErrorCode"] == "Error" and "burst then fail" in complete["ErrorDetails"]
        chunks, complete = read_stream(lambda_client.invoke_with_response_stream(
            FunctionName=name, Payload=json.dumps({"fail": False}).encode()))
        assert b"".join(c for _, c in chunks) == b"ok"
        assert "ErrorCode" not in complete


def test_streamed_and_buffered_size_limits(lambda_client, functions):
    name = functions["big"]
    # 7 MB: over a buffered response's 6 MB, under a streamed one's 20 MiB.
    chunks, complete = read_stream(lambda_client.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"mb": 7}).encode()))
    assert sum(len(c) for _, c in chunks) == 7 * 16 * 64 * 1024
    assert "ErrorCode" not in complete
    r = lambda_client.invoke(FunctionName=name, Payload=json.dumps({"mb": 7}).encode())
    assert r["FunctionError"] == "Unhandled"
    assert json.loads(r["Payload"].read())["errorType"] == "Function.ResponseSizeTooLarge"
    chunks, complete = read_stream(lambda_client.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"mb": 21}).encode()))
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge"
    assert sum(len(c) for _, c in chunks) <= 20 * 1024 * 1024
    # And the sandbox goes on serving.
    chunks, complete = read_stream(lambda_client.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"mb": 0.0625}).encode()))
    assert sum(len(c) for _, c in chunks) == 64 * 1024 and "ErrorCode" not in complete


def test_a_handler_that_does_not_stream_answers_in_one_chunk(lambda_client, functions):
    response = lambda_client.invoke_with_response_stream(
        FunctionName=functions["plain"], Payload=json.dumps({"k": "v"}).encode())
    chunks, complete = read_stream(response)
    assert len(chunks) == 1
    assert json.loads(chunks[0][1])["event"] == {"k": "v"}
    assert "ErrorCode" not in complete


def test_plain_invoke_of_a_streaming_function_gets_the_whole_response(lambda_client, functions):
    r = lambda_client.invoke(FunctionName=functions["paced"], Payload=json.dumps({"pauseMs": 10}).encode())
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    assert r["Payload"].read() == b"first piece;second piece"


def test_bad_streaming_requests(raw_lambda_client, functions):
    name = functions["paced"]
    s.assert_client_error(lambda: raw_lambda_client.invoke_with_response_stream(
        FunctionName=name, InvocationType="Event"), "ValidationException", 400)
    s.assert_client_error(lambda: raw_lambda_client.invoke_with_response_stream(
        FunctionName=name, Payload=b"{not json"), "InvalidRequestContentException", 400)
    s.assert_client_error(lambda: raw_lambda_client.invoke_with_response_stream(
        FunctionName=s.unique_name("missing")), "ResourceNotFoundException", 404)
    dry = raw_lambda_client.invoke_with_response_stream(FunctionName=name, InvocationType="DryRun")
    assert dry["StatusCode"] == 204


def stream_url(lambda_client, name: str) -> str:
    url = lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    assert url["InvokeMode"] == "RESPONSE_STREAM"
    lambda_client.add_permission(FunctionName=name, StatementId="public", Action="lambda:InvokeFunctionUrl",
                                 Principal="*", FunctionUrlAuthType="NONE")
    return urlsplit(url["FunctionUrl"]).netloc


def open_url(node, host: str, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    conn.request("GET", path, headers={"Host": host, UNSIGNED: "1"})
    return conn, conn.getresponse()


def test_a_streaming_url_sends_the_prelude_then_the_body_as_written(lambda_client, node, functions):
    host = stream_url(lambda_client, functions["http"])
    conn, response = open_url(node, host, "/slow")
    try:
        assert response.status == 201
        assert response.getheader("x-streamed") == "yes"
        assert response.getheader("content-type") == "text/plain"
        assert response.getheader("set-cookie") == "flavour=oat"
        assert response.getheader("transfer-encoding") == "chunked"
        assert response.getheader("x-amzn-requestid")
        first = response.read1()
        first_at = time.monotonic()
        rest = response.read()
        done_at = time.monotonic()
        assert first + rest == b"path /slow;done"
        assert first.startswith(b"path /slow;")
        assert done_at - first_at >= 1.0, "the first piece was held back until the end"
    finally:
        conn.close()


def test_a_streaming_url_cut_off_by_an_error_and_a_url_over_a_plain_handler(lambda_client, node, functions):
    host = stream_url(lambda_client, functions["broken"])
    conn, response = open_url(node, host, "/")
    try:
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert cut.value.partial == b"partial"
    finally:
        conn.close()
    # Nothing written yet: the URL answers as for any failed function.
    host = stream_url(lambda_client, functions["early"])
    conn, response = open_url(node, host, "/")
    try:
        assert response.status == 502
        assert json.loads(response.read()) == {"Message": "Internal Server Error"}
    finally:
        conn.close()
    # A handler that returns a result is answered from it, as on a BUFFERED URL.
    host = stream_url(lambda_client, functions["plain"])
    conn, response = open_url(node, host, "/")
    try:
        assert response.status == 200
        assert response.read() == b"plain answer"
    finally:
        conn.close()

"""wasi:http components (runtime `wasi-http`): a component built for `wasmtime serve`
(tests/fixtures/wasi-http) deployed through CreateFunction, served directly as HTTP from a
function URL and an HTTP API route, invoked through Lambda's Invoke API with a 2.0 event,
with its timeout, memory limit and egress setting enforced, and bad components refused."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import urlsplit

import botocore.exceptions
import pytest

import e2e_support as s
import fleet_support as fs
from test_auth import client
from test_egress import HOST_SIDE, PORT, PUBLIC, outside  # noqa: F401 (fixture)
from test_fleet import fleet  # noqa: F401 (fixture)
from test_function_urls import call, header, make_public


def deploy_component(lam, name=None, **extra) -> str:
    name = name or s.unique_name("http")
    lam.create_function(
        FunctionName=name, Runtime="wasi-http", Handler="http.wasm",
        Role=s.ROLE,
        Code={"ZipFile": s.make_fixture_zip("http")}, **extra)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=s.WAITER_CONFIG)
    return name


def public_host(lam, name: str) -> str:
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    return urlsplit(url).netloc


@pytest.fixture(scope="module")
def component(lambda_client):
    """A component behind a public function URL: (name, host with port)."""
    name = deploy_component(lambda_client, Timeout=2, MemorySize=128)
    return name, public_host(lambda_client, name)


def test_the_request_reaches_the_component_as_http(lambda_client, node, component):
    name, host = component
    assert lambda_client.get_function(FunctionName=name)["Configuration"]["Runtime"] == "wasi-http"
    body = bytes(range(256)) * 4
    status, headers, got = call(node, "POST", host, "/echo/a%20b?x=1&x=2&y",
                                body=body, headers={"X-Echo": "kept", "Content-Type": "image/png"})
    assert status == 200, got
    assert got == body, "the body is passed through byte for byte, never as base64"
    assert header(headers, "x-method") == "POST"
    assert header(headers, "x-path") == "/echo/a%20b?x=1&x=2&y"
    assert header(headers, "x-authority") == host
    assert header(headers, "x-echo") == "kept"
    assert header(headers, "content-type") == "image/png"
    assert header(headers, "x-amzn-requestid")
    status, _, got = call(node, "GET", host, "/status/418")
    assert status == 418 and got == b""
    status, _, got = call(node, "GET", host, "/env/AWS_LAMBDA_FUNCTION_NAME")
    assert (status, got) == (200, name.encode())
    status, _, got = call(node, "GET", host, "/big/100000")
    assert status == 200 and got == b"x" * 100000
    status, _, got = call(node, "GET", host, "/socket")
    assert status == 200 and got.startswith(b"refused"), "no sockets besides wasi:http"
    # The path-based form reaches the same component.
    url_id = host.split(".")[0]
    status, headers, _ = call(node, "GET", f"127.0.0.1:{node.port}", f"/lambda-url/{url_id}/p/q")
    assert status == 200 and header(headers, "x-path") == "/p/q"


def test_the_invoke_api_maps_a_2_0_event_to_a_request(lambda_client, component):
    name, _ = component
    event = {
        "version": "2.0", "rawPath": "/echo/z", "rawQueryString": "k=v",
        "headers": {"host": "example.test", "x-echo": "from-event", "content-type": "text/plain"},
        "cookies": ["a=1"],
        "requestContext": {"http": {"method": "PUT"}},
        "body": base64.b64encode(b"\xff\x00 raw").decode(), "isBase64Encoded": True,
    }
    out = s.invoke(lambda_client, name, event)
    assert out.function_error is None, out.body
    result = out.json()
    assert result["statusCode"] == 200
    assert result["headers"]["x-method"] == "PUT"
    assert result["headers"]["x-path"] == "/echo/z?k=v"
    assert result["headers"]["x-authority"] == "example.test"
    assert result["headers"]["x-echo"] == "from-event"
    assert result["isBase64Encoded"] is True
    assert base64.b64decode(result["body"]) == b"\xff\x00 raw"
    # The component's own output lands in the invocation's log.
    out = s.invoke(lambda_client, name, {**event, "rawPath": "/log", "body": None}, tail=True)
    assert out.json()["body"] == "logged"
    log = base64.b64decode(out.log_result).decode()
    assert "a line on stdout" in log and "a line on stderr" in log and "REPORT RequestId" in log
    # An event that is no HTTP request is the function's error, in Lambda's shape.
    out = s.invoke(lambda_client, name, {"orders": [1, 2]})
    assert out.function_error == "Unhandled"
    assert out.json()["errorType"] == "Runtime.InvalidEvent"


def test_a_failing_component_answers_502_and_the_node_keeps_serving(node, component):
    _, host = component
    for path in ["/trap", "/silent", "/memory/200", f"/big/{7 << 20}"]:
        status, _, got = call(node, "GET", host, path)
        assert status == 502, (path, got)
        assert json.loads(got) == {"Message": "Internal Server Error"}, path
        status, _, _ = call(node, "GET", host, "/status/204")
        assert status == 204, f"serving after {path}"
    status, _, got = call(node, "GET", host, "/memory/16")
    assert (status, got) == (200, b"ok"), "within MemorySize"


def test_the_timeout_stops_a_component_that_never_returns(lambda_client, node, component):
    name, host = component
    started = time.monotonic()
    status, _, _ = call(node, "GET", host, "/spin")
    assert status == 502
    assert time.monotonic() - started < 10, "stopped at its 2 s timeout"
    out = s.invoke(lambda_client, name, {"version": "2.0", "rawPath": "/spin",
                                         "requestContext": {"http": {"method": "GET"}}})
    assert out.function_error == "Unhandled"
    assert out.json()["errorType"] == "Sandbox.Timedout"
    status, _, _ = call(node, "GET", host, "/status/200")
    assert status == 200


def test_an_http_api_route_serves_the_component(lambda_client, node, component):
    name, _ = component
    apigw = client(node, "apigatewayv2", s.ACCESS_KEY, s.SECRET_KEY)
    arn = lambda_client.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    api = apigw.create_api(Name=s.unique_name("api"), ProtocolType="HTTP", Target=arn)
    try:
        host = f"{api['ApiId']}.execute-api.{s.REGION}.localhost:{node.port}"
        status, headers, got = call(node, "PATCH", host, "/items/7?full=1", body=b"patch",
                                    headers={"X-Echo": "api"})
        assert status == 200, got
        assert got == b"patch"
        assert header(headers, "x-method") == "PATCH"
        assert header(headers, "x-path") == "/items/7?full=1"
        assert header(headers, "x-echo") == "api"
        assert header(headers, "apigw-requestid")
        status, _, got = call(node, "GET", host, "/trap")
        assert status == 500 and json.loads(got) == {"message": "Internal Server Error"}
    finally:
        apigw.delete_api(ApiId=api["ApiId"])


def test_outgoing_requests_follow_the_functions_egress(lambda_client, node, outside):  # noqa: F811
    closed = deploy_component(lambda_client, Timeout=5)
    host = public_host(lambda_client, closed)
    status, _, got = call(node, "GET", host, "/fetch",
                          headers={"X-Fetch-Url": f"http://{PUBLIC}:{PORT}/hello.txt"})
    assert status == 502 and b"HttpRequestDenied" in got, got

    open_ = deploy_component(lambda_client, Timeout=5, Tags={"nimbus:egress": "internet"})
    host = public_host(lambda_client, open_)
    status, _, got = call(node, "GET", host, "/fetch",
                          headers={"X-Fetch-Url": f"http://{PUBLIC}:{PORT}/hello.txt"})
    assert (status, got) == (200, b"hello from outside")
    for private in [f"http://127.0.0.1:{node.port}/", f"http://{HOST_SIDE}:{node.port}/",
                    "http://10.77.0.1:18080/hello.txt", "http://localhost:9/"]:
        status, _, got = call(node, "GET", host, "/fetch", headers={"X-Fetch-Url": private})
        assert status == 502 and b"DestinationIpProhibited" in got, (private, got)


@pytest.mark.parametrize("entry, data, why", [
    ("http.wasm", None, "a wasm32-wasip1 module is not a component"),
    ("http.wasm", b"\0asm\x0d\x00\x01\x00garbage", "a malformed component"),
    ("http.wasm", b"not wasm at all", "not wasm"),
])
def test_what_is_not_a_wasi_http_component_is_refused(raw_lambda_client, assert_serving, entry, data, why):
    data = data if data is not None else s.fixture_bytes("echo")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        raw_lambda_client.create_function(
            FunctionName=s.unique_name("bad-http"), Runtime="wasi-http", Handler=entry,
            Role=s.ROLE,
            Code={"ZipFile": s.zip_bytes({entry: data})})
    assert s.client_error(e) == ("InvalidParameterValueException", 400), why
    assert_serving()


def test_a_component_on_a_joined_worker(fleet):  # noqa: F811
    """The request and the answer cross the node–worker link as HTTP, body bytes untouched."""
    node, _ = fleet([("w1", 512)])
    lam = s.lambda_client(node.endpoint)
    name = deploy_component(lam)
    host = public_host(lam, name)
    body = bytes(range(256)) * 64
    status, headers, got = call(node, "PUT", host, "/far/away?q=1", body=body,
                                headers={"X-Echo": "via w1"})
    assert status == 200 and got == body
    assert header(headers, "x-path") == "/far/away?q=1"
    assert header(headers, "x-echo") == "via w1"
    assert [w["sandboxes"] for w in fs.cluster_status(node)["workers"]] == [1]
    out = s.invoke(lam, name, {"version": "2.0", "rawPath": "/status/201",
                               "requestContext": {"http": {"method": "GET"}}})
    assert out.json()["statusCode"] == 201
    status, _, got = call(node, "GET", host, "/trap")
    assert status == 502 and json.loads(got) == {"Message": "Internal Server Error"}

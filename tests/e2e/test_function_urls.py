"""Function URLs through the real aws CLI and boto3: their configuration, the resource-based
policy a public URL needs, the payload-format-2.0 event a function gets, how its result becomes
the HTTP response, AWS_IAM URLs signed with SigV4, CORS, and bad input."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import e2e_support as s
import process_support as p
from conftest import UNSIGNED
from test_auth import client

PYTHON = p.host_python_runtime()


def call(node, method: str, host: str, path: str, body: bytes = b"", headers=None,
         sign_with: tuple[str, str] | None = None):
    """Sends one request to the node with the given Host; unsigned unless `sign_with` names
    a key. Returns (status, headers as a list of pairs, body)."""
    headers = {"Host": host, **(headers or {})}
    if sign_with is None:
        headers[UNSIGNED] = "1"
    else:
        request = AWSRequest(method=method, url=f"http://{host}{path}", data=body, headers=headers)
        SigV4Auth(Credentials(*sign_with), "lambda", s.REGION).add_auth(request)
        headers = dict(request.headers.items())
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def header(headers, name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)


@pytest.fixture(scope="module")
def http_function(lambda_client):
    return deploy_http(lambda_client)


def make_public(lambda_client, name: str) -> None:
    lambda_client.add_permission(
        FunctionName=name, StatementId="public-url", Action="lambda:InvokeFunctionUrl",
        Principal="*", FunctionUrlAuthType="NONE")


def test_url_configuration_through_the_aws_cli(aws, node, http_function):
    name = http_function
    created = aws("lambda", "create-function-url-config", "--function-name", name, "--auth-type", "NONE")
    url = created["FunctionUrl"]
    assert re.fullmatch(rf"http://[a-z0-9]{{32}}\.lambda-url\.{s.REGION}\.localhost:{node.port}/", url), url
    assert created["AuthType"] == "NONE"
    assert created["FunctionArn"].endswith(f":function:{name}")
    assert created["InvokeMode"] == "BUFFERED"
    got = aws("lambda", "get-function-url-config", "--function-name", name)
    assert got["FunctionUrl"] == url and "LastModifiedTime" in got
    listed = aws("lambda", "list-function-url-configs", "--function-name", name)
    assert [c["FunctionUrl"] for c in listed["FunctionUrlConfigs"]] == [url]
    updated = aws("lambda", "update-function-url-config", "--function-name", name, "--auth-type", "AWS_IAM",
                  "--cors", json.dumps({"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
                                        "MaxAge": 300}))
    assert updated["AuthType"] == "AWS_IAM"
    assert updated["Cors"]["AllowOrigins"] == ["https://app.example"]
    assert updated["FunctionUrl"] == url, "a URL never changes"
    aws.fails("lambda", "create-function-url-config", "--function-name", name, "--auth-type", "NONE",
              code="ResourceConflictException")
    aws("lambda", "delete-function-url-config", "--function-name", name)
    aws.fails("lambda", "get-function-url-config", "--function-name", name, code="ResourceNotFoundException")
    aws.fails("lambda", "create-function-url-config", "--function-name", name, "--auth-type", "OPEN",
              code="ValidationException")
    aws.fails("lambda", "create-function-url-config", "--function-name", name, "--auth-type", "NONE",
              "--qualifier", "7", code="ResourceNotFoundException")
    aws.fails("lambda", "create-function-url-config", "--function-name", "no-such-function", "--auth-type", "NONE",
              code="ResourceNotFoundException")
    aws.fails("lambda", "create-function-url-config", "--function-name", name, "--auth-type", "NONE",
              "--cors", json.dumps({"AllowMethods": ["FETCH"]}), code="InvalidParameterValueException")


def test_a_public_url_needs_the_permission_for_everyone(lambda_client, aws, node, http_function):
    name = http_function
    url = lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    host = urlsplit(url).netloc
    try:
        status, _, body = call(node, "GET", host, "/plain")
        assert status == 403 and json.loads(body) == {"Message": "Forbidden"}
        # Refused before its body is read: the node answers without waiting for the 5 MB.
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
            sock.sendall(f"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {5 << 20}\r\n\r\n".encode())
            assert sock.recv(65536).decode(errors="replace").startswith("HTTP/1.1 403")
        added = aws("lambda", "add-permission", "--function-name", name, "--statement-id", "public-url",
                    "--action", "lambda:InvokeFunctionUrl", "--principal", "*",
                    "--function-url-auth-type", "NONE")
        statement = json.loads(added["Statement"])
        assert statement["Principal"] == "*"
        assert statement["Condition"] == {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}}
        policy = json.loads(aws("lambda", "get-policy", "--function-name", name)["Policy"])
        assert [st["Sid"] for st in policy["Statement"]] == ["public-url"]
        aws.fails("lambda", "add-permission", "--function-name", name, "--statement-id", "public-url",
                  "--action", "lambda:InvokeFunctionUrl", "--principal", "*", code="ResourceConflictException")
        for bad, code in [
            (["--statement-id", "bad id", "--action", "lambda:InvokeFunctionUrl", "--principal", "*"],
             "ValidationException"),
            (["--statement-id", "x", "--action", "s3:GetObject", "--principal", "*"], "InvalidParameterValueException"),
            (["--statement-id", "x", "--action", "lambda:InvokeFunction", "--principal", "not a principal"],
             "InvalidParameterValueException"),
            (["--statement-id", "x", "--action", "lambda:InvokeFunction", "--principal", "*",
              "--function-url-auth-type", "NONE"], "InvalidParameterValueException"),
            (["--statement-id", "x", "--action", "lambda:InvokeFunction", "--principal", "*",
              "--source-account", "12"], "ValidationException"),
        ]:
            aws.fails("lambda", "add-permission", "--function-name", name, *bad, code=code)
        # None of the refused statements was added.
        policy = json.loads(aws("lambda", "get-policy", "--function-name", name)["Policy"])
        assert [st["Sid"] for st in policy["Statement"]] == ["public-url"]
        status, _, body = call(node, "GET", host, "/plain")
        assert status == 200, body
        assert json.loads(body) == {"message": "hi"}
        aws("lambda", "remove-permission", "--function-name", name, "--statement-id", "public-url")
        status, _, _ = call(node, "GET", host, "/plain")
        assert status == 403
        aws.fails("lambda", "remove-permission", "--function-name", name, "--statement-id", "public-url",
                  code="ResourceNotFoundException")
    finally:
        lambda_client.delete_function_url_config(FunctionName=name)


def deploy_http(lambda_client) -> str:
    name = p.deploy(lambda_client, "python-http", PYTHON, "app.handler", Timeout=10)
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=s.WAITER_CONFIG)
    return name


@pytest.fixture(scope="module")
def public_url(lambda_client):
    """A function behind a public URL: (function name, the URL's host with port)."""
    name = deploy_http(lambda_client)
    url = lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lambda_client, name)
    return name, urlsplit(url).netloc


def test_the_event_is_payload_format_2_0(node, public_url):
    name, host = public_url
    url_id = host.split(".")[0]
    status, headers, body = call(
        node, "POST", host, "/echo/a%20b?b=2&a=1&a=3&empty=",
        body=b'{"hello":"world"}',
        headers={"Content-Type": "application/json", "Cookie": "c1=v1; c2=v2", "X-Multi": "one",
                 "User-Agent": "url-test/1.0"})
    assert status == 200, body
    assert header(headers, "x-handled-by") == name
    assert sorted(v for k, v in headers if k.lower() == "set-cookie") == ["session=abc; Path=/", "theme=dark"]
    assert header(headers, "x-amzn-requestid")
    event = json.loads(body)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/echo/a%20b"
    assert event["rawQueryString"] == "b=2&a=1&a=3&empty="
    assert event["queryStringParameters"] == {"a": "1,3", "b": "2", "empty": ""}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["x-multi"] == "one"
    assert event["headers"]["host"] == host
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert event["body"] == '{"hello":"world"}'
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["accountId"] == "anonymous"
    assert context["apiId"] == url_id and context["domainPrefix"] == url_id
    assert context["domainName"] == host.split(":")[0]
    assert context["http"] == {"method": "POST", "path": "/echo/a%20b", "protocol": "HTTP/1.1",
                               "sourceIp": "127.0.0.1", "userAgent": "url-test/1.0"}
    assert context["routeKey"] == "$default" and context["stage"] == "$default"
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", context["time"])
    assert isinstance(context["timeEpoch"], int)
    assert "authorizer" not in context

    # Binary bodies travel base64-encoded; a GET without a query has no parameters at all.
    status, _, body = call(node, "PUT", host, "/echo", body=bytes(range(256)),
                           headers={"Content-Type": "application/octet-stream"})
    event = json.loads(body)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == bytes(range(256))
    status, _, body = call(node, "GET", host, "/echo")
    event = json.loads(body)
    assert "queryStringParameters" not in event and "body" not in event and "cookies" not in event
    assert event["rawQueryString"] == ""


def test_results_become_responses_as_lambda_interprets_them(node, public_url):
    _, host = public_url
    status, headers, body = call(node, "GET", host, "/plain")
    assert (status, header(headers, "content-type"), json.loads(body)) == (200, "application/json", {"message": "hi"})
    status, headers, body = call(node, "GET", host, "/string")
    assert (status, body) == (200, b"hello there")
    status, headers, body = call(node, "GET", host, "/binary")
    assert status == 200 and body == bytes(range(256))
    assert header(headers, "content-type") == "application/octet-stream"
    status, headers, body = call(node, "GET", host, "/teapot")
    assert (status, body, header(headers, "content-type")) == (418, b"short and stout", "text/plain")
    for broken in ("/malformed", "/error"):
        status, _, body = call(node, "GET", host, broken)
        assert status == 502, (broken, body)
        assert json.loads(body) == {"Message": "Internal Server Error"}


def test_the_path_based_form_reaches_the_same_url(node, public_url):
    _, host = public_url
    url_id = host.split(".")[0]
    status, _, body = call(node, "GET", f"127.0.0.1:{node.port}", f"/lambda-url/{url_id}/echo?x=1")
    assert status == 200, body
    event = json.loads(body)
    assert event["rawPath"] == "/echo" and event["queryStringParameters"] == {"x": "1"}


def test_aws_iam_urls_take_sigv4_and_the_callers_policy(node, lambda_client):
    name = deploy_http(lambda_client)
    host = urlsplit(lambda_client.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]).netloc
    status, _, _ = call(node, "GET", host, "/echo")
    assert status == 403
    status, _, body = call(node, "GET", host, "/echo", sign_with=(s.ACCESS_KEY, s.SECRET_KEY))
    assert status == 200, body
    authorizer = json.loads(body)["requestContext"]["authorizer"]["iam"]
    assert authorizer["accessKey"] == s.ACCESS_KEY
    assert authorizer["accountId"] == "000000000000"
    assert authorizer["userArn"] == "arn:aws:iam::000000000000:root"
    # A wrong secret and a user whose policy does not allow the action are both refused.
    status, _, _ = call(node, "GET", host, "/echo", sign_with=(s.ACCESS_KEY, "not-the-secret"))
    assert status == 403
    iam = client(node, "iam", s.ACCESS_KEY, s.SECRET_KEY)
    user = s.unique_name("url-user")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    credentials = (key["AccessKeyId"], key["SecretAccessKey"])
    status, _, _ = call(node, "GET", host, "/echo", sign_with=credentials)
    assert status == 403
    iam.put_user_policy(UserName=user, PolicyName="url", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunctionUrl",
                                                "Resource": f"arn:aws:lambda:{s.REGION}:000000000000:function:{name}"}]}))
    status, _, body = call(node, "GET", host, "/echo", sign_with=credentials)
    assert status == 200, body
    assert json.loads(body)["requestContext"]["authorizer"]["iam"]["userArn"].endswith(f":user/{user}")
    # A browser's preflight carries no signature and is answered from the URL's CORS.
    lambda_client.update_function_url_config(FunctionName=name, Cors={
        "AllowOrigins": ["https://app.example"], "AllowMethods": ["GET"], "AllowHeaders": ["authorization"]})
    status, headers, _ = call(node, "OPTIONS", host, "/echo", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert status == 200 and header(headers, "access-control-allow-origin") == "https://app.example"
    assert call(node, "OPTIONS", host, "/echo")[0] == 403


def test_cors_is_answered_from_the_urls_configuration(node, lambda_client, public_url):
    name, host = public_url
    lambda_client.update_function_url_config(FunctionName=name, Cors={
        "AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
        "AllowHeaders": ["content-type"], "ExposeHeaders": ["x-handled-by"], "MaxAge": 600})
    try:
        status, headers, body = call(node, "OPTIONS", host, "/echo", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        assert status == 200 and body == b""
        assert header(headers, "access-control-allow-origin") == "https://app.example"
        assert header(headers, "access-control-allow-methods") == "GET,POST"
        assert header(headers, "access-control-allow-headers") == "content-type"
        assert header(headers, "access-control-max-age") == "600"
        status, headers, _ = call(node, "GET", host, "/echo", headers={"Origin": "https://app.example"})
        assert status == 200
        assert header(headers, "access-control-allow-origin") == "https://app.example"
        assert header(headers, "access-control-expose-headers") == "x-handled-by"
        status, headers, _ = call(node, "GET", host, "/echo", headers={"Origin": "https://evil.example"})
        assert status == 200 and header(headers, "access-control-allow-origin") is None
    finally:
        lambda_client.update_function_url_config(FunctionName=name, Cors={})


def test_bad_requests_to_urls(node, public_url, assert_serving):
    _, host = public_url
    # A well-formed id that names no URL, and a URL host of another region.
    status, _, body = call(node, "GET", f"{'a' * 32}.lambda-url.{s.REGION}.localhost:{node.port}", "/")
    assert status == 403 and json.loads(body) == {"Message": "Forbidden"}
    status, _, _ = call(node, "GET", host.replace(s.REGION, "eu-west-9"), "/")
    assert status == 404
    # A body over Lambda's 6 MB synchronous limit is refused from its declared length, unread.
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(f"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n"
                     f"Content-Length: {6 * 1024 * 1024 + 1}\r\n\r\n".encode())
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "Request must be smaller than 6291456 bytes" in answer
    # A body under the limit whose event (body, headers and context) is over it is refused too.
    status, _, body = call(node, "POST", host, "/echo", body=b"x" * (6 * 1024 * 1024 - 100),
                           headers={"Content-Type": "text/plain"})
    assert status == 413, body
    assert_serving()

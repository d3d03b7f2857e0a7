"""HTTP APIs (API Gateway v2) through the real aws CLI and boto3: quick create, routes,
integrations with payload formats 2.0 and 1.0, stages and stage variables, routing as API
Gateway does it, CORS, API Gateway's own error answers, and bad input."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import botocore.exceptions
import pytest

import e2e_support as s
import process_support as p
from conftest import UNSIGNED
from test_auth import client
from test_function_urls import deploy_http, header

PYTHON = p.host_python_runtime()


def call(node, method: str, host: str, path: str, body: bytes = b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Host": host, UNSIGNED: "1", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def apigw(node):
    return client(node, "apigatewayv2", s.ACCESS_KEY, s.SECRET_KEY)


@pytest.fixture(scope="module")
def backend(lambda_client):
    """A function answering in the shapes Lambda interprets, and its ARN."""
    name = deploy_http(lambda_client)
    return name, f"arn:aws:lambda:{s.REGION}:000000000000:function:{name}"


def test_quick_create_serves_every_request_through_the_default_route(aws, node, backend):
    _, arn = backend
    api = aws("apigatewayv2", "create-api", "--name", s.unique_name("quick"), "--protocol-type", "HTTP",
              "--target", arn)
    assert api["ProtocolType"] == "HTTP"
    assert api["ApiEndpoint"] == f"http://{api['ApiId']}.execute-api.{s.REGION}.localhost:{node.port}"
    host = urlsplit(api["ApiEndpoint"]).netloc
    status, headers, body = call(node, "GET", host, "/echo/x?q=1&q=2")
    assert status == 200, body
    assert header(headers, "apigw-requestid")
    event = json.loads(body)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/echo/x"
    assert event["queryStringParameters"] == {"q": "1,2"}
    assert event["requestContext"]["stage"] == "$default"
    assert event["requestContext"]["apiId"] == api["ApiId"]
    assert event["requestContext"]["accountId"] == "000000000000"
    stages = aws("apigatewayv2", "get-stages", "--api-id", api["ApiId"])["Items"]
    assert [(st["StageName"], st["AutoDeploy"]) for st in stages] == [("$default", True)]
    assert [r["RouteKey"] for r in aws("apigatewayv2", "get-routes", "--api-id", api["ApiId"])["Items"]] == ["$default"]
    # The path-based form reaches the same API.
    status, _, body = call(node, "GET", f"127.0.0.1:{node.port}", f"/execute-api/{api['ApiId']}/plain")
    assert (status, json.loads(body)) == (200, {"message": "hi"})
    aws("apigatewayv2", "delete-api", "--api-id", api["ApiId"])
    status, _, body = call(node, "GET", host, "/plain")
    assert (status, json.loads(body)) == (404, {"message": "Not Found"})


def test_routes_stages_and_both_payload_formats(apigw, node, backend):
    _, arn = backend
    api = apigw.create_api(Name=s.unique_name("routes"), ProtocolType="HTTP")
    api_id = api["ApiId"]
    v2 = apigw.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn,
                                  PayloadFormatVersion="2.0")["IntegrationId"]
    v1 = apigw.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn,
                                  PayloadFormatVersion="1.0", TimeoutInMillis=10000)["IntegrationId"]
    for key, target in [("GET /echo/{item}", v2), ("POST /echo/v1/{rest+}", v1), ("ANY /echo/fixed", v2),
                        ("GET /plain", v2)]:
        apigw.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{target}")
    apigw.create_stage(ApiId=api_id, StageName="prod", StageVariables={"color": "blue"})
    host = urlsplit(api["ApiEndpoint"]).netloc
    # No $default stage: a path without a stage is not found.
    assert call(node, "GET", host, "/plain")[0] == 404
    status, _, body = call(node, "GET", host, "/prod/echo/a%20b")
    assert status == 200, body
    event = json.loads(body)
    assert event["routeKey"] == "GET /echo/{item}"
    assert event["pathParameters"] == {"item": "a b"}
    assert event["stageVariables"] == {"color": "blue"}
    assert event["requestContext"]["stage"] == "prod"
    assert event["rawPath"] == "/prod/echo/a%20b"
    # A literal route beats a variable one.
    status, _, body = call(node, "GET", host, "/prod/echo/fixed")
    assert json.loads(body)["routeKey"] == "ANY /echo/fixed"
    # Payload format 1.0: multi-valued headers and parameters, requestContext.identity.
    status, headers, body = call(node, "POST", host, "/prod/echo/v1/a/b?x=1&x=2",
                                 body=b"payload", headers={"Content-Type": "text/plain"})
    assert status == 200, body
    event = json.loads(body)
    assert event["version"] == "1.0"
    assert event["resource"] == "/echo/v1/{rest+}"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"rest": "a/b"}
    assert event["queryStringParameters"] == {"x": "2"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"]}
    assert event["body"] == "payload" and event["isBase64Encoded"] is False
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert event["stageVariables"] == {"color": "blue"}
    # No route for the method and path.
    status, _, body = call(node, "DELETE", host, "/prod/plain")
    assert (status, json.loads(body)) == (404, {"message": "Not Found"})


def test_function_failures_answer_as_api_gateway_does(apigw, node, backend):
    _, arn = backend
    api = apigw.create_api(Name=s.unique_name("errors"), ProtocolType="HTTP", Target=arn)
    host = urlsplit(api["ApiEndpoint"]).netloc
    status, _, body = call(node, "GET", host, "/error")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})
    status, _, body = call(node, "GET", host, "/malformed")
    assert (status, json.loads(body)) == (502, {"message": "Internal Server Error"})
    status, headers, body = call(node, "GET", host, "/teapot")
    assert (status, body) == (418, b"short and stout")


def test_cors_preflight_is_answered_by_the_api(apigw, node, backend):
    _, arn = backend
    api = apigw.create_api(Name=s.unique_name("cors"), ProtocolType="HTTP", Target=arn, CorsConfiguration={
        "AllowOrigins": ["https://app.example"], "AllowMethods": ["GET"], "MaxAge": 60})
    assert api["CorsConfiguration"]["AllowOrigins"] == ["https://app.example"]
    host = urlsplit(api["ApiEndpoint"]).netloc
    status, headers, _ = call(node, "OPTIONS", host, "/plain", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert status == 200
    assert header(headers, "access-control-allow-origin") == "https://app.example"
    assert header(headers, "access-control-max-age") == "60"
    status, headers, _ = call(node, "GET", host, "/plain", headers={"Origin": "https://app.example"})
    assert header(headers, "access-control-allow-origin") == "https://app.example"


def test_bad_input_gets_api_gateways_errors(apigw, aws, node, backend, assert_serving):
    from botocore.exceptions import ClientError
    _, arn = backend

    def code(fn, **kw):
        with pytest.raises(ClientError) as e:
            fn(**kw)
        return e.value.response["Error"]["Code"]

    api_id = apigw.create_api(Name=s.unique_name("bad"), ProtocolType="HTTP")["ApiId"]
    integration = apigw.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn,
                                           PayloadFormatVersion="2.0")["IntegrationId"]
    target = f"integrations/{integration}"
    for key in ["GET", "GET pets", "FETCH /pets", "GET /{proxy+}/x", "GET /a//b", "GET /{a}/{a}"]:
        assert code(apigw.create_route, ApiId=api_id, RouteKey=key, Target=target) == "BadRequestException", key
    apigw.create_route(ApiId=api_id, RouteKey="GET /echo/{id}", Target=target)
    assert code(apigw.create_route, ApiId=api_id, RouteKey="GET /echo/{id}", Target=target) == "ConflictException"
    assert code(apigw.create_route, ApiId=api_id, RouteKey="GET /echo/{name}", Target=target) == "ConflictException"
    assert code(apigw.create_route, ApiId=api_id, RouteKey="GET /x", Target="integrations/nope") == "BadRequestException"
    missing = f"arn:aws:lambda:{s.REGION}:000000000000:function:no-such-function"
    other = f"arn:aws:lambda:{s.REGION}:111122223333:function:theirs"
    for uri in [missing, other, "https://example.com/"]:
        assert code(apigw.create_integration, ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=uri,
                    PayloadFormatVersion="2.0") == "BadRequestException", uri
    assert code(apigw.create_integration, ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn,
                PayloadFormatVersion="3.0") == "BadRequestException"
    assert code(apigw.create_integration, ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationUri=arn,
                PayloadFormatVersion="1.0") == "BadRequestException"
    assert code(apigw.create_stage, ApiId=api_id, StageName="bad name") == "BadRequestException"
    apigw.create_stage(ApiId=api_id, StageName="$default")
    assert code(apigw.create_stage, ApiId=api_id, StageName="$default") == "ConflictException"
    assert code(apigw.get_api, ApiId="zzzzzzzzzz") == "NotFoundException"
    assert code(apigw.create_api, Name="x", ProtocolType="WEBSOCKET") == "BadRequestException"
    # An integration a route targets cannot be deleted.
    assert code(apigw.delete_integration, ApiId=api_id, IntegrationId=integration) == "ConflictException"
    api = apigw.get_api(ApiId=api_id)
    host = urlsplit(api["ApiEndpoint"]).netloc
    # An encoded `..` is a path segment like any other: a value, never a way up the path.
    status, _, body = call(node, "GET", host, "/echo/%2e%2e")
    assert status == 200, body
    event = json.loads(body)
    assert event["pathParameters"] == {"id": ".."} and event["rawPath"] == "/echo/%2e%2e"
    # A Host naming no API.
    status, _, body = call(node, "GET", f"{'q' * 10}.execute-api.{s.REGION}.localhost:{node.port}", "/pets/1")
    assert (status, json.loads(body)) == (404, {"message": "Not Found"})
    # Bodies over 10 MB.
    import socket
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(f"GET /echo/1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: {10 * 1024 * 1024 + 1}\r\n\r\n".encode())
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert_serving()


# ------------------------------------------------------------------------------------------
# JWT authorizers, against an issuer the test serves on loopback
# ------------------------------------------------------------------------------------------

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def as_bytes(n: int, size: int | None = None) -> bytes:
    return n.to_bytes(size or (n.bit_length() + 7) // 8, "big")


class Issuer:
    """An OpenID issuer on loopback: a discovery document, a key set with an RSA and a P-256
    key, and tokens signed with either."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        issuer = self
        self.fetches = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif self.path == "/jwks":
                    issuer.fetches += 1
                    body = {"keys": issuer.jwks()}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> list[dict]:
        n = self.rsa.public_key().public_numbers()
        p = self.ec.public_key().public_numbers()
        return [
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64u(as_bytes(n.n)), "e": b64u(as_bytes(n.e))},
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "alg": "ES256", "x": b64u(as_bytes(p.x, 32)), "y": b64u(as_bytes(p.y, 32))},
        ]

    def token(self, alg: str = "RS256", kid: str | None = None, **claims) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": "my-app", "sub": "user-1", "iat": now, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        header = {"alg": alg, "typ": "JWT", "kid": kid or ("ec-1" if alg == "ES256" else "rsa-1")}
        signing = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(body).encode())}".encode()
        if alg == "RS256":
            signature = self.rsa.sign(signing, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "ES256":
            r, s_ = utils.decode_dss_signature(self.ec.sign(signing, ec.ECDSA(hashes.SHA256())))
            signature = as_bytes(r, 32) + as_bytes(s_, 32)
        else:
            signature = b""
        return f"{signing.decode()}.{b64u(signature)}"


@pytest.fixture(scope="module")
def issuer():
    i = Issuer()
    yield i
    i.server.shutdown()


def test_jwt_authorizers_check_tokens_as_api_gateway_does(apigw, node, backend, issuer):
    _, arn = backend
    api = apigw.create_api(Name=s.unique_name("jwt"), ProtocolType="HTTP")
    api_id = api["ApiId"]
    host = urlsplit(api["ApiEndpoint"]).netloc
    integration = apigw.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn,
                                           PayloadFormatVersion="2.0")["IntegrationId"]
    authorizer = apigw.create_authorizer(
        ApiId=api_id, Name="users", AuthorizerType="JWT", IdentitySource=["$request.header.Authorization"],
        JwtConfiguration={"Issuer": issuer.url, "Audience": ["my-app"]})
    assert authorizer["JwtConfiguration"] == {"Issuer": issuer.url, "Audience": ["my-app"]}
    auth_id = authorizer["AuthorizerId"]
    apigw.create_route(ApiId=api_id, RouteKey="GET /echo/{id}", Target=f"integrations/{integration}",
                       AuthorizationType="JWT", AuthorizerId=auth_id)
    apigw.create_route(ApiId=api_id, RouteKey="GET /echo/admin/{id}", Target=f"integrations/{integration}",
                       AuthorizationType="JWT", AuthorizerId=auth_id, AuthorizationScopes=["admin"])
    apigw.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True)

    def get(path: str, token: str | None = None, scheme: str = "Bearer "):
        headers = {} if token is None else {"Authorization": f"{scheme}{token}"}
        status, _, body = call(node, "GET", host, path, headers=headers)
        return status, (json.loads(body) if body else None)

    assert get("/echo/1") == (401, {"message": "Unauthorized"})
    status, event = get("/echo/1", issuer.token())
    assert status == 200, event
    jwt = event["requestContext"]["authorizer"]["jwt"]
    assert jwt["claims"]["sub"] == "user-1" and jwt["claims"]["iss"] == issuer.url
    assert jwt["scopes"] is None
    assert get("/echo/1", issuer.token(alg="ES256"), scheme="")[0] == 200
    # An access token names its client in client_id instead of aud.
    assert get("/echo/1", issuer.token(aud=None, client_id="my-app", token_use="access"))[0] == 200
    now = int(time.time())
    for bad in [
        issuer.token(exp=now - 10),
        issuer.token(nbf=now + 600),
        issuer.token(aud="someone-else"),
        issuer.token(iss="http://127.0.0.1:1"),
        issuer.token(alg="none"),
        issuer.token(kid="unknown-key"),
        issuer.token()[:-4] + "AAAA",
        "not.a.token",
    ]:
        assert get("/echo/1", bad) == (401, {"message": "Unauthorized"}), bad
    # A payload changed after signing.
    header, payload, signature = issuer.token().split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["sub"] = "admin"
    assert get("/echo/1", f"{header}.{b64u(json.dumps(forged).encode())}.{signature}")[0] == 401
    # Scopes: a valid token without the route's scope is forbidden, not unauthorized.
    assert get("/echo/admin/1", issuer.token()) == (403, {"message": "Forbidden"})
    status, event = get("/echo/admin/1", issuer.token(scope="read admin"))
    assert status == 200 and event["requestContext"]["authorizer"]["jwt"]["scopes"] == ["read", "admin"]
    # Keys were fetched once, and an unknown key id did not send the node back at once.
    assert issuer.fetches == 1
    # Bad authorizer configurations.
    from botocore.exceptions import ClientError
    for kwargs in [dict(AuthorizerType="REQUEST"), dict(JwtConfiguration={"Issuer": "ftp://x", "Audience": ["a"]}),
                   dict(IdentitySource=["$request.querystring.token"])]:
        params = dict(ApiId=api_id, Name="bad", AuthorizerType="JWT", IdentitySource=["$request.header.Authorization"],
                      JwtConfiguration={"Issuer": issuer.url, "Audience": ["my-app"]})
        params.update(kwargs)
        with pytest.raises(ClientError) as e:
            apigw.create_authorizer(**params)
        assert e.value.response["Error"]["Code"] == "BadRequestException", kwargs
    with pytest.raises(ClientError) as e:
        apigw.delete_authorizer(ApiId=api_id, AuthorizerId=auth_id)
    assert e.value.response["Error"]["Code"] == "ConflictException"


def test_accounts_keep_to_their_own_apis_and_functions(apigw, node, nimbus, backend, lambda_client):
    """Another account can neither see nor change this account's APIs, nor integrate this
    account's functions; an AWS_IAM function URL takes another account's caller only when the
    function's policy names that account."""
    from botocore.exceptions import ClientError
    from test_accounts import create_account
    from test_function_urls import call as url_call

    name, arn = backend
    mine = apigw.create_api(Name=s.unique_name("mine"), ProtocolType="HTTP", Target=arn)["ApiId"]
    _, account, key_id, secret = create_account(nimbus)
    theirs = client(node, "apigatewayv2", key_id, secret)

    def code(fn, **kw):
        with pytest.raises(ClientError) as e:
            fn(**kw)
        return e.value.response["Error"]["Code"]

    assert code(theirs.get_api, ApiId=mine) == "NotFoundException"
    assert code(theirs.delete_api, ApiId=mine) == "NotFoundException"
    assert mine not in [a["ApiId"] for a in theirs.get_apis()["Items"]]
    their_api = theirs.create_api(Name=s.unique_name("theirs"), ProtocolType="HTTP")["ApiId"]
    assert code(theirs.create_integration, ApiId=their_api, IntegrationType="AWS_PROXY",
                IntegrationUri=arn, PayloadFormatVersion="2.0") == "BadRequestException"
    assert code(theirs.create_api, Name="quick", ProtocolType="HTTP", Target=arn) == "BadRequestException"

    # Cross-account calls to an AWS_IAM function URL.
    url = lambda_client.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    host = urlsplit(url).netloc
    try:
        assert url_call(node, "GET", host, "/plain", sign_with=(key_id, secret))[0] == 403
        lambda_client.add_permission(FunctionName=name, StatementId="partner", Action="lambda:InvokeFunctionUrl",
                                     Principal=account, FunctionUrlAuthType="AWS_IAM")
        status, _, body = url_call(node, "GET", host, "/plain", sign_with=(key_id, secret))
        assert (status, json.loads(body)) == (200, {"message": "hi"})
    finally:
        lambda_client.delete_function_url_config(FunctionName=name)
        lambda_client.remove_permission(FunctionName=name, StatementId="partner")


def test_lists_page_and_apis_take_tags(apigw, aws, node, backend):
    _, arn = backend
    api = apigw.create_api(Name=s.unique_name("paged"), ProtocolType="HTTP", Tags={"team": "web"})
    api_id = api["ApiId"]
    try:
        integration = apigw.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn,
                                               PayloadFormatVersion="2.0")["IntegrationId"]
        keys = [f"GET /r{i:02d}" for i in range(12)]
        for key in keys:
            apigw.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integration}")
        # One page at a time with boto3, and the aws CLI following nextToken by itself.
        seen, token = [], None
        while True:
            page = apigw.get_routes(ApiId=api_id, MaxResults="5", **({"NextToken": token} if token else {}))
            assert len(page["Items"]) <= 5
            seen += [r["RouteKey"] for r in page["Items"]]
            token = page.get("NextToken")
            if not token:
                break
        assert sorted(seen) == keys and len(seen) == len(set(seen))
        listed = aws("apigatewayv2", "get-routes", "--api-id", api_id, "--page-size", "4")["Items"]
        assert sorted(r["RouteKey"] for r in listed) == keys
        for bad in [{"MaxResults": "0"}, {"MaxResults": "many"}, {"NextToken": "not-a-token"}]:
            with pytest.raises(botocore.exceptions.ClientError) as e:
                apigw.get_routes(ApiId=api_id, **bad)
            assert s.client_error(e) == ("BadRequestException", 400), bad

        # Tags: on creation, added, read, removed, by the API's ARN.
        resource = f"arn:aws:apigateway:{s.REGION}::/apis/{api_id}"
        assert apigw.get_tags(ResourceArn=resource)["Tags"] == {"team": "web"}
        apigw.tag_resource(ResourceArn=resource, Tags={"stage": "prod", "team": "api"})
        assert apigw.get_tags(ResourceArn=resource)["Tags"] == {"team": "api", "stage": "prod"}
        assert apigw.get_api(ApiId=api_id)["Tags"] == {"team": "api", "stage": "prod"}
        apigw.untag_resource(ResourceArn=resource, TagKeys=["team"])
        assert aws("apigatewayv2", "get-tags", "--resource-arn", resource)["Tags"] == {"stage": "prod"}
        for tags in [{"aws:reserved": "x"}, {"k": "v" * 257}, {f"k{i}": "v" for i in range(50)}]:
            with pytest.raises(botocore.exceptions.ClientError) as e:
                apigw.tag_resource(ResourceArn=resource, Tags=tags)
            assert s.client_error(e) == ("BadRequestException", 400)
        assert apigw.get_tags(ResourceArn=resource)["Tags"] == {"stage": "prod"}, "nothing half-applied"
        with pytest.raises(botocore.exceptions.ClientError) as e:
            apigw.get_tags(ResourceArn=f"arn:aws:apigateway:{s.REGION}::/apis/nosuchapi")
        assert s.client_error(e) == ("NotFoundException", 404)
    finally:
        apigw.delete_api(ApiId=api_id)

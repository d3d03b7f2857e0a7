"""Aliases through boto3 and the aws CLI: CRUD with Lambda's errors, invocation by alias
(plain, weighted between two versions), a function URL and an HTTP API route on an alias, an
event source mapping and an asynchronous invocation naming an alias, and the guard against deleting a version
an alias points to."""

from __future__ import annotations

import io
import json
import zipfile
from urllib.parse import urlsplit

import pytest

import e2e_support as s
import process_support as p
from test_function_urls import call as url_call
from test_function_urls import header
from test_async import log_entries, until
from test_sqs import sqs_client

PYTHON = p.host_python_runtime()

HANDLER = """
import json, os

def handler(event, context):
    answer = {{"marker": "{marker}", "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
              "arn": context.invoked_function_arn}}
    version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
    if isinstance(event, dict) and "Records" in event:
        for record in event["Records"]:
            print("RECORDS " + version + " " + record["body"])
    if isinstance(event, dict) and event.get("async"):
        print("ASYNC " + version)
    if isinstance(event, dict) and "rawPath" in event:
        return {{"statusCode": 200, "body": json.dumps(answer)}}
    return answer
"""


def code(marker: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", HANDLER.format(marker=marker))
    return buf.getvalue()


@pytest.fixture(scope="module")
def two_versions(lambda_client):
    """A function with version 1 (marker "one") and version 2 (marker "two")."""
    name = s.unique_name("aliased")
    lambda_client.create_function(FunctionName=name, Runtime=PYTHON, Role=s.ROLE, Handler="app.handler",
                                  Code={"ZipFile": code("one")}, Timeout=10)
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=s.WAITER_CONFIG)
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "1"
    lambda_client.update_function_code(FunctionName=name, ZipFile=code("two"))
    s.wait_updated(lambda_client, name)
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "2"
    return name


def invoke(client, name, **kw):
    r = client.invoke(FunctionName=name, Payload=b"{}", **kw)
    return r["ExecutedVersion"], json.loads(r["Payload"].read())


def test_alias_crud_and_invocation(lambda_client, aws, two_versions):
    name = two_versions
    created = lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1",
                                         Description="production")
    assert created["AliasArn"].endswith(f":function:{name}:live")
    assert (created["Name"], created["FunctionVersion"], created["Description"]) == ("live", "1", "production")
    assert created["RevisionId"]
    got = lambda_client.get_alias(FunctionName=name, Name="live")
    assert got["AliasArn"] == created["AliasArn"] and got["RevisionId"] == created["RevisionId"]

    version, body = invoke(lambda_client, name, Qualifier="live")
    assert (version, body["marker"], body["version"]) == ("1", "one", "1")
    assert body["arn"].endswith(f":function:{name}:live"), "the context names the ARN the caller invoked"
    version, body = invoke(lambda_client, f"{name}:live")
    assert (version, body["marker"]) == ("1", "one")
    # Reading the function by alias gives the version it points to.
    config = lambda_client.get_function_configuration(FunctionName=name, Qualifier="live")
    assert config["Version"] == "1"

    # Moving the alias changes what runs, with nothing redeployed.
    stale = created["RevisionId"]
    moved = lambda_client.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RevisionId=stale)
    assert moved["FunctionVersion"] == "2" and moved["RevisionId"] != stale
    assert moved["Description"] == "production", "what an update leaves out stays"
    version, body = invoke(lambda_client, name, Qualifier="live")
    assert (version, body["marker"]) == ("2", "two")
    s.assert_client_error(
        lambda: lambda_client.update_alias(FunctionName=name, Name="live", FunctionVersion="1", RevisionId=stale),
        "PreconditionFailedException", 412)

    # The aws CLI sees the same aliases; the list filters by version and pages.
    aws("lambda", "create-alias", "--function-name", name, "--name", "beta", "--function-version", "$LATEST")
    aws("lambda", "create-alias", "--function-name", name, "--name", "canary", "--function-version", "1")
    listed = aws("lambda", "list-aliases", "--function-name", name)["Aliases"]
    assert [(a["Name"], a["FunctionVersion"]) for a in listed] == [("beta", "$LATEST"), ("canary", "1"), ("live", "2")]
    only_one = aws("lambda", "list-aliases", "--function-name", name, "--function-version", "1")["Aliases"]
    assert [a["Name"] for a in only_one] == ["canary"]
    page = lambda_client.list_aliases(FunctionName=name, MaxItems=2)
    assert [a["Name"] for a in page["Aliases"]] == ["beta", "canary"]
    rest = lambda_client.list_aliases(FunctionName=name, Marker=page["NextMarker"])
    assert [a["Name"] for a in rest["Aliases"]] == ["live"] and "NextMarker" not in rest
    version, body = invoke(lambda_client, name, Qualifier="beta")
    assert (version, body["marker"]) == ("$LATEST", "two")

    # A version an alias points to cannot go; once the alias has gone, it can.
    s.assert_client_error(lambda: lambda_client.delete_function(FunctionName=name, Qualifier="1"),
                          "ResourceConflictException", 409)
    aws("lambda", "delete-alias", "--function-name", name, "--name", "canary")
    s.assert_client_error(lambda: lambda_client.get_alias(FunctionName=name, Name="canary"),
                          "ResourceNotFoundException", 404)
    s.assert_client_error(lambda: invoke(lambda_client, name, Qualifier="canary"),
                          "ResourceNotFoundException", 404)
    aws("lambda", "delete-alias", "--function-name", name, "--name", "beta")


def test_bad_alias_requests_get_lambdas_errors(lambda_client, raw_lambda_client, two_versions):
    name = two_versions
    lambda_client.create_alias(FunctionName=name, Name="dup", FunctionVersion="1")
    cases = [
        (dict(Name="dup", FunctionVersion="1"), "ResourceConflictException", 409),
        (dict(Name="nope", FunctionVersion="99"), "ResourceNotFoundException", 404),
        (dict(Name="123", FunctionVersion="1"), "ValidationException", 400),
        (dict(Name="bad name", FunctionVersion="1"), "ValidationException", 400),
        (dict(Name="w", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 1.5}}),
         "ValidationException", 400),
        (dict(Name="w", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}}),
         "InvalidParameterValueException", 400),
        (dict(Name="w", FunctionVersion="$LATEST", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}}),
         "InvalidParameterValueException", 400),
        (dict(Name="w", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.1, "3": 0.1}}),
         "ValidationException", 400),
    ]
    for kwargs, code_, status in cases:
        s.assert_client_error(lambda: raw_lambda_client.create_alias(FunctionName=name, **kwargs), code_, status)
    s.assert_client_error(lambda: lambda_client.create_alias(FunctionName=s.unique_name("none"), Name="a",
                                                             FunctionVersion="1"),
                          "ResourceNotFoundException", 404)
    s.assert_client_error(lambda: lambda_client.update_alias(FunctionName=name, Name="missing", FunctionVersion="1"),
                          "ResourceNotFoundException", 404)
    s.assert_client_error(lambda: lambda_client.delete_alias(FunctionName=name, Name="missing"),
                          "ResourceNotFoundException", 404)
    s.assert_client_error(lambda: lambda_client.get_alias(FunctionName=f"{name}:1", Name="dup"),
                          "InvalidParameterValueException", 400)
    lambda_client.delete_alias(FunctionName=name, Name="dup")


def test_weighted_alias_splits_invocations_between_two_versions(lambda_client, two_versions):
    name = two_versions
    lambda_client.create_alias(FunctionName=name, Name="split", FunctionVersion="1",
                               RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    got = lambda_client.get_alias(FunctionName=name, Name="split")
    assert got["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    seen = {"1": 0, "2": 0}
    for _ in range(60):
        version, body = invoke(lambda_client, name, Qualifier="split")
        assert body["marker"] == {"1": "one", "2": "two"}[version]
        seen[version] += 1
    # With a fair coin, either side is missing from 60 tosses once in 2**59.
    assert seen["1"] > 0 and seen["2"] > 0, seen
    # All of the traffic, then none of it, to the additional version.
    lambda_client.update_alias(FunctionName=name, Name="split",
                               RoutingConfig={"AdditionalVersionWeights": {"2": 1.0}})
    assert {invoke(lambda_client, name, Qualifier="split")[0] for _ in range(10)} == {"2"}
    updated = lambda_client.update_alias(FunctionName=name, Name="split", RoutingConfig={})
    assert "RoutingConfig" not in updated or not updated["RoutingConfig"].get("AdditionalVersionWeights")
    assert {invoke(lambda_client, name, Qualifier="split")[0] for _ in range(10)} == {"1"}
    lambda_client.delete_alias(FunctionName=name, Name="split")


def test_a_url_and_an_http_api_route_on_an_alias(lambda_client, node, aws, two_versions):
    name = two_versions
    lambda_client.create_alias(FunctionName=name, Name="web", FunctionVersion="1")
    s.assert_client_error(lambda: lambda_client.create_function_url_config(FunctionName=name, Qualifier="2",
                                                                           AuthType="NONE"),
                          "ResourceNotFoundException", 404)
    url = lambda_client.create_function_url_config(FunctionName=name, Qualifier="web", AuthType="NONE")
    assert url["FunctionArn"].endswith(f":function:{name}:web")
    host = urlsplit(url["FunctionUrl"]).netloc
    # Public only once the alias's policy says so.
    status, _, _ = url_call(node, "GET", host, "/")
    assert status == 403
    lambda_client.add_permission(FunctionName=name, Qualifier="web", StatementId="public",
                                 Action="lambda:InvokeFunctionUrl", Principal="*", FunctionUrlAuthType="NONE")
    status, headers, body = url_call(node, "GET", host, "/")
    assert status == 200, body
    assert json.loads(body)["marker"] == "one"
    lambda_client.update_alias(FunctionName=name, Name="web", FunctionVersion="2")
    status, _, body = url_call(node, "GET", host, "/")
    assert (status, json.loads(body)["marker"]) == (200, "two")

    # An HTTP API whose integration names the alias's ARN.
    arn = f"arn:aws:lambda:{s.REGION}:000000000000:function:{name}:web"
    api = aws("apigatewayv2", "create-api", "--name", s.unique_name("aliased"), "--protocol-type", "HTTP",
              "--target", arn)
    api_host = urlsplit(api["ApiEndpoint"]).netloc
    status, headers, body = url_call(node, "GET", api_host, "/x")
    assert status == 200, body
    assert header(headers, "apigw-requestid")
    assert json.loads(body)["marker"] == "two"
    aws("apigatewayv2", "delete-api", "--api-id", api["ApiId"])

    # Deleting the alias takes its URL and its policy with it.
    lambda_client.delete_alias(FunctionName=name, Name="web")
    status, _, _ = url_call(node, "GET", host, "/")
    assert status == 403
    s.assert_client_error(lambda: lambda_client.get_function_url_config(FunctionName=name, Qualifier="web"),
                          "ResourceNotFoundException", 404)


def lines_with(endpoint: str, name: str, prefix: str) -> list[str]:
    return [line.removeprefix(prefix) for entry in log_entries(endpoint, name)
            for line in entry["text"].splitlines() if line.startswith(prefix)]


def test_a_queue_mapping_and_an_async_invoke_on_an_alias(lambda_client, node, two_versions):
    name = two_versions
    sqs = sqs_client(node.endpoint)
    lambda_client.create_alias(FunctionName=name, Name="worker", FunctionVersion="1")
    queue = sqs.create_queue(QueueName=s.unique_name("aliasq"), Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    mapping = lambda_client.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=f"{name}:worker",
                                                        BatchSize=1)
    try:
        assert mapping["FunctionArn"].endswith(f":function:{name}:worker")
        listed = lambda_client.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
        assert mapping["UUID"] in [m["UUID"] for m in listed]
        sqs.send_message(QueueUrl=queue, MessageBody="first")
        until(lambda: "1 first" in lines_with(node.endpoint, name, "RECORDS "), timeout=40)
        # The mapping follows the alias when it moves.
        lambda_client.update_alias(FunctionName=name, Name="worker", FunctionVersion="2")
        sqs.send_message(QueueUrl=queue, MessageBody="second")
        until(lambda: "2 second" in lines_with(node.endpoint, name, "RECORDS "), timeout=40)
    finally:
        lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])
    lambda_client.invoke(FunctionName=name, Qualifier="worker", InvocationType="Event",
                         Payload=json.dumps({"async": "yes"}).encode())
    until(lambda: "2" in lines_with(node.endpoint, name, "ASYNC "), timeout=40)


def test_a_weighted_alias_follows_its_weights_over_2000_invocations(lambda_client, two_versions):
    name = two_versions
    lambda_client.create_alias(FunctionName=name, Name="tenth", FunctionVersion="1",
                               RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}})
    seen = {"1": 0, "2": 0}
    for _ in range(2000):
        r = lambda_client.invoke(FunctionName=name, Qualifier="tenth", Payload=b"{}")
        seen[r["ExecutedVersion"]] += 1
    # Within 3 points of 10 %: a fair draw strays that far about once in 100,000 runs.
    share = seen["2"] / 2000
    assert 0.07 <= share <= 0.13, seen
    lambda_client.delete_alias(FunctionName=name, Name="tenth")

"""A function calls the node's APIs from inside its sandbox as it would call AWS's: at
AWS_ENDPOINT_URL (or at the node's own address, which the node hands out in queue URLs), signed
with its role's temporary credentials, allowed exactly what the role allows, through boto3 and
the AWS SDK for JavaScript v3 as nimbus ships them; the credentials die with the role; the
cluster's routes stay out of reach."""

from __future__ import annotations

import json

import e2e_support as s
import process_support as p
from test_iam import admin

PYTHON = p.host_python_runtime()
NODE = p.host_node_runtime()


def test_a_function_calls_sqs_with_its_roles_credentials(node, lambda_client):
    iam, sqs = admin(node, "iam"), admin(node, "sqs")
    queue, queue_url, role, role_arn = p.queue_and_sender_role(iam, sqs)
    name = p.deploy(lambda_client, "python-aws", PYTHON, "app.handler", Role=role_arn, Timeout=20)
    with_sdk = p.deploy(lambda_client, "python-aws", PYTHON, "sdk.handler", Role=role_arn, Timeout=20)

    out = s.invoke(lambda_client, name, {
        "queue_url": queue_url, "body": "from the sandbox", "try_create": True,
        "node_port": node.port,
    }).json()
    assert out["endpoint"] == "http://127.0.0.1:9002"
    assert out["key_id"].startswith("ASIA") and out["has_token"]
    assert out["send"]["status"] == 200, out
    assert out["send"]["body"]["MessageId"]
    got = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)["Messages"]
    assert [m["Body"] for m in got] == ["from the sandbox"]
    # Unmodified boto3 code, with the boto3 nimbus ships in the runtime.
    sdk = s.invoke(lambda_client, with_sdk, {"queue_url": queue_url, "body": "from boto3"})
    assert sdk.function_error is None, sdk.body
    sdk = sdk.json()
    assert sdk["boto3_file"].startswith("/var/runtime/python/sdk/"), sdk
    assert sdk["message_id"]
    got = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)["Messages"]
    assert [m["Body"] for m in got] == ["from boto3"]
    # And the AWS SDK for JavaScript v3 from a Node.js function.
    with_js = p.deploy(lambda_client, "node-aws", NODE, "index.handler", Role=role_arn, Timeout=20)
    js = s.invoke(lambda_client, with_js, {"queue_url": queue_url, "body": "from node"})
    assert js.function_error is None, js.body
    assert js.json()["sdk"].startswith("/var/runtime/node_modules/@aws-sdk/client-sqs/"), js.json()
    got = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)["Messages"]
    assert [m["Body"] for m in got] == ["from node"]
    # Not in the role's policy: denied, naming the role's session.
    assert out["create"]["status"] == 403, out
    assert out["create"]["query_error"] == "AccessDenied;Sender"
    assert f"assumed-role/{role}/{name} is not authorized to perform: sqs:CreateQueue" in \
        out["create"]["body"]["message"]
    # The node's port inside the sandbox is its own door to the node's APIs (queue URLs the
    # node hands out work there), without the cluster's routes, which only workers may call.
    assert out["node_port"] == "connected", out
    assert out["cluster_route"] == 404 and out["services_cluster_route"] == 404, out

    # The role deleted, the same warm sandbox's credentials stop working at once.
    iam.delete_role_policy(RoleName=role, PolicyName="send")
    iam.delete_role(RoleName=role)
    after = s.invoke(lambda_client, name, {"queue_url": queue_url}).json()
    assert "send" in after, f"the function failed instead of calling SQS: {after}"
    assert after["send"]["status"] == 403, after
    assert after["send"]["query_error"] == "InvalidClientTokenId;Sender"


def test_function_code_is_authenticated_even_where_clients_are_not(node_factory, tmp_path):
    """With `[auth] mode = "none"` every client is the administrator, but function code is
    never trusted: through its door to the node's APIs it is its role and nothing more."""
    config = tmp_path / "open.toml"
    config.write_text('[auth]\nmode = "none"\n')
    open_node = node_factory(config=config, name="open")
    iam, sqs, lam = (admin(open_node, svc) for svc in ("iam", "sqs", "lambda"))
    queue_url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    role_arn = iam.create_role(RoleName="sender", AssumeRolePolicyDocument=s.LAMBDA_TRUST)["Role"]["Arn"]
    iam.put_role_policy(RoleName="sender", PolicyName="send", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}))
    name = p.deploy(lam, "python-aws", PYTHON, "app.handler", Role=role_arn, Timeout=20)
    out = s.invoke(lam, name, {"queue_url": queue_url, "unsigned": True, "try_create": True}).json()
    assert out["send"]["status"] == 200, out
    assert out["unsigned"] == 403, out
    assert out["create"]["status"] == 403 and out["create"]["query_error"] == "AccessDenied;Sender", out

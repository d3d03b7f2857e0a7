"""Accounts, through the `nimbus` CLI, the aws CLI and boto3: the operator creates an account
with its own administrator key; that account sees and touches only its own functions, queues
and usage, its functions run with its own roles' credentials, and the operator reads its usage."""

from __future__ import annotations

import json
import subprocess

import botocore.exceptions
import pytest

import e2e_support as s
import process_support as p
from test_auth import cli, client
from test_iam import admin

PYTHON = p.host_python_runtime()


def create_account(nimbus) -> tuple[str, str, str, str]:
    """(name, account id, key id, secret) of a new account made with `nimbus accounts create`."""
    name = s.unique_name("team")
    made = nimbus.ok("accounts", "create", name, "--json")
    out = json.loads(made.stdout)
    return name, out["account"]["id"], out["access_key_id"], out["secret_access_key"]


def test_an_account_sees_and_touches_only_its_own(nimbus, node, tmp_path, deploy):
    name, account, key_id, secret = create_account(nimbus)
    assert len(account) == 12 and account.isdigit() and account != "000000000000"

    # Without --json the CLI prints the key as an aws CLI credentials profile.
    other = s.unique_name("team")
    printed = nimbus.ok("accounts", "create", other).stdout
    assert f"[{other}]" in printed and "aws_access_key_id = NKIA" in printed
    assert "aws_secret_access_key = " in printed
    listed = nimbus.ok("accounts", "list").stdout
    assert name in listed and account in listed and other in listed
    dup = nimbus.run("accounts", "create", name)
    assert dup.returncode != 0 and "exists" in dup.stderr, dup.stderr

    ours = deploy("echo")
    ours_arn = f"arn:aws:lambda:{s.REGION}:000000000000:function:{ours}"
    listed = cli(node, tmp_path, key_id, secret, "lambda", "list-functions")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["Functions"] == []
    who = json.loads(cli(node, tmp_path, key_id, secret, "sts", "get-caller-identity").stdout)
    assert who["Account"] == account and who["Arn"] == f"arn:aws:iam::{account}:root", who
    denied = cli(node, tmp_path, key_id, secret, "lambda", "get-function", "--function-name", ours_arn)
    assert "(AccessDeniedException)" in denied.stderr, denied.stderr
    by_name = cli(node, tmp_path, key_id, secret, "lambda", "get-function", "--function-name", ours)
    assert "(ResourceNotFoundException)" in by_name.stderr, by_name.stderr

    # The account's own function, with its own role, under the same name as the operator's.
    iam, lam, sqs = (client(node, svc, key_id, secret) for svc in ("iam", "lambda", "sqs"))
    role = iam.create_role(RoleName="runner", AssumeRolePolicyDocument=s.LAMBDA_TRUST)["Role"]["Arn"]
    assert role == f"arn:aws:iam::{account}:role/runner"
    created = lam.create_function(
        FunctionName=ours, Runtime="wasm32-wasip1", Handler="echo.wasm", Role=role,
        Code={"ZipFile": s.make_fixture_zip("echo")})
    assert created["FunctionArn"] == f"arn:aws:lambda:{s.REGION}:{account}:function:{ours}"
    for fn in (lambda: lam.invoke(FunctionName=ours_arn, Payload=b"{}"),
               lambda: lam.delete_function(FunctionName=ours_arn),
               lambda: lam.update_function_configuration(FunctionName=ours_arn, Description="x")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            fn()
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    mine = lam.invoke(FunctionName=ours, Payload=b'{"who":"b"}')
    assert mine["StatusCode"] == 200 and "FunctionError" not in mine
    operator_lambda = admin(node, "lambda")
    assert operator_lambda.get_function(FunctionName=ours)["Configuration"]["FunctionArn"] == ours_arn
    assert operator_lambda.get_function_configuration(FunctionName=ours)["Description"] == ""

    # A Python function of the account calls SQS with its role's credentials, in its account.
    queue = s.unique_name("inbox")
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    assert queue_url.endswith(f"/{account}/{queue}")
    iam.put_role_policy(RoleName="runner", PolicyName="send", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage",
                       "Resource": f"arn:aws:sqs:{s.REGION}:{account}:{queue}"}]}))
    sender = p.deploy(lam, "python-aws", PYTHON, "sdk.handler", Role=role, Timeout=20)
    sent = s.invoke(lam, sender, {"queue_url": queue_url, "body": "inside b"})
    assert sent.function_error is None, sent.body
    got = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)["Messages"]
    assert [m["Body"] for m in got] == ["inside b"]
    # The operator's queue of the same name is another queue.
    operator_sqs = admin(node, "sqs")
    operator_url = operator_sqs.create_queue(QueueName=queue)["QueueUrl"]
    assert operator_url.endswith(f"/000000000000/{queue}")
    assert operator_sqs.receive_message(QueueUrl=operator_url).get("Messages", []) == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=operator_url, MessageBody="not yours")
    assert e.value.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException")

    # Usage per account: the account's own through its key, any account's for the operator.
    env = {**nimbus.env(), "NIMBUS_ADMIN_ACCESS_KEY_ID": key_id,
           "NIMBUS_ADMIN_SECRET_ACCESS_KEY": secret}

    def usage_of(*args, env=None):
        proc = subprocess.run([str(nimbus.binary), "usage", "--json", *args], capture_output=True,
                              text=True, timeout=60, env=env or nimbus.env(),
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def counted():
        u = usage_of(env=env)
        assert u["total"]["invocations"] >= 2, u
        return u

    theirs = s.eventually(counted, timeout=15)
    assert {f["function"] for f in theirs["functions"]} == {ours, sender}
    assert usage_of("--account", account)["functions"] == theirs["functions"]
    operators = usage_of()
    assert all(f["function"] != sender for f in operators["functions"])
    refused = subprocess.run([str(nimbus.binary), "usage", "--account", "000000000000"],
                             capture_output=True, text=True, timeout=60, env=env,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr, refused.stderr
    not_operator = subprocess.run([str(nimbus.binary), "accounts", "create", "x"],
                                  capture_output=True, text=True, timeout=60, env=env,
                                  stdin=subprocess.DEVNULL)
    assert not_operator.returncode != 0 and "AccessDenied" in not_operator.stderr


def test_a_functions_policy_lets_another_account_invoke_it(nimbus, node, lambda_client, deploy):
    """AddPermission naming another account lets that account invoke the function by ARN (and
    do nothing else with it); RemovePermission takes it back; a user of that account also needs
    its own policy to allow the call."""
    _, account, key_id, secret = create_account(nimbus)
    theirs = client(node, "lambda", key_id, secret)
    name = deploy("echo")
    arn = f"arn:aws:lambda:{s.REGION}:000000000000:function:{name}"

    def invoke_as(lam):
        return lam.invoke(FunctionName=arn, Payload=b'{"from":"elsewhere"}')

    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke_as(theirs)
    assert s.client_error(e) == ("AccessDeniedException", 403)

    lambda_client.add_permission(FunctionName=name, StatementId="partner", Action="lambda:InvokeFunction",
                                 Principal=account)
    out = invoke_as(theirs)
    assert out["StatusCode"] == 200 and json.loads(out["Payload"].read()) == {"from": "elsewhere"}
    # The statement grants invoking, nothing more: reading or changing the function is refused,
    # and a function of the same name in the caller's own account is not what a grant reaches.
    for call in [lambda: theirs.get_function(FunctionName=arn),
                 lambda: theirs.delete_function(FunctionName=arn),
                 lambda: theirs.invoke(FunctionName=f"{arn}:7")]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert s.client_error(e)[0] == "AccessDeniedException"
    assert lambda_client.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name

    # A user of that account needs its own policy to allow the call as well.
    iam = client(node, "iam", key_id, secret)
    iam.create_user(UserName="caller")
    user_key = iam.create_access_key(UserName="caller")["AccessKey"]
    as_user = client(node, "lambda", user_key["AccessKeyId"], user_key["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke_as(as_user)
    assert s.client_error(e)[0] == "AccessDeniedException"
    iam.put_user_policy(UserName="caller", PolicyName="invoke", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn}]}))
    assert invoke_as(as_user)["StatusCode"] == 200

    lambda_client.remove_permission(FunctionName=name, StatementId="partner")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke_as(theirs)
    assert s.client_error(e) == ("AccessDeniedException", 403)

"""IAM through the real aws CLI and boto3: users, keys, roles and their policies, the errors IAM
gives, and what a user's policy lets it do on the other APIs."""

from __future__ import annotations

import json

import botocore.exceptions
import pytest

import e2e_support as s
from test_auth import cli, client


def admin(node, service):
    return client(node, service, s.ACCESS_KEY, s.SECRET_KEY)


def test_roles_and_policies_through_the_aws_cli(node, tmp_path):
    name = s.unique_name("exec")

    def aws(*args):
        return cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "iam", *args)

    created = aws("create-role", "--role-name", name, "--path", "/service-role/",
                  "--assume-role-policy-document", s.LAMBDA_TRUST, "--description", "runs it")
    assert created.returncode == 0, created.stderr
    role = json.loads(created.stdout)["Role"]
    assert role["Arn"] == f"arn:aws:iam::000000000000:role/service-role/{name}"
    # The CLI decodes the URL-encoded document IAM returns.
    got = json.loads(aws("get-role", "--role-name", name).stdout)["Role"]
    assert got["AssumeRolePolicyDocument"] == json.loads(s.LAMBDA_TRUST)
    assert got["Description"] == "runs it"

    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": "arn:aws:sqs:*:*:orders"}]}
    put = aws("put-role-policy", "--role-name", name, "--policy-name", "send",
              "--policy-document", json.dumps(document))
    assert put.returncode == 0, put.stderr
    assert json.loads(aws("list-role-policies", "--role-name", name).stdout)["PolicyNames"] == ["send"]
    fetched = json.loads(aws("get-role-policy", "--role-name", name, "--policy-name", "send").stdout)
    assert fetched["PolicyDocument"] == document
    attach = aws("attach-role-policy", "--role-name", name, "--policy-arn",
                 "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
    assert attach.returncode == 0, attach.stderr

    bad = aws("put-role-policy", "--role-name", name, "--policy-name", "x",
              "--policy-document", '{"Version":"2012-10-17","Statement":[{"Effect":"Perhaps","Action":"*","Resource":"*"}]}')
    assert "(MalformedPolicyDocument)" in bad.stderr, bad.stderr
    dup = aws("create-role", "--role-name", name, "--assume-role-policy-document", s.LAMBDA_TRUST)
    assert "(EntityAlreadyExists)" in dup.stderr, dup.stderr
    bad_name = aws("create-role", "--role-name", "has space", "--assume-role-policy-document", s.LAMBDA_TRUST)
    assert "(ValidationError)" in bad_name.stderr, bad_name.stderr
    missing = aws("get-role", "--role-name", "no-such-role")
    assert "(NoSuchEntity)" in missing.stderr, missing.stderr
    conflict = aws("delete-role", "--role-name", name)
    assert "(DeleteConflict)" in conflict.stderr, conflict.stderr

    who = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "sts", "get-caller-identity")
    assert json.loads(who.stdout)["Arn"] == "arn:aws:iam::000000000000:root"


def test_a_user_allowed_one_invoke_is_denied_the_rest(node, deploy):
    allowed = deploy("echo")
    other = deploy("echo")
    iam = admin(node, "iam")
    user = s.unique_name("user")
    iam.create_user(UserName=user)
    arn = f"arn:aws:lambda:{s.REGION}:000000000000:function:{allowed}"
    iam.put_user_policy(UserName=user, PolicyName="invoke-one", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    assert iam.list_access_keys(UserName=user)["AccessKeyMetadata"][0]["AccessKeyId"] == key["AccessKeyId"]
    lam = client(node, "lambda", key["AccessKeyId"], key["SecretAccessKey"])

    out = lam.invoke(FunctionName=allowed, Payload=b'{"a":1}')
    assert out["StatusCode"] == 200 and "FunctionError" not in out
    for call in (
        lambda: lam.invoke(FunctionName=other, Payload=b"{}"),
        lambda: lam.get_function(FunctionName=allowed),
        lambda: lam.list_functions(),
        lambda: lam.delete_function(FunctionName=allowed),
        lambda: lam.update_function_configuration(FunctionName=allowed, Timeout=9),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert f"user/{user} is not authorized to perform: lambda:" in e.value.response["Error"]["Message"]
    # Untouched.
    assert admin(node, "lambda").get_function(FunctionName=allowed)["Configuration"]["Timeout"] != 9

    sqs = client(node, "sqs", key["AccessKeyId"], key["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=s.unique_name("q"))
    assert e.value.response["Error"]["Code"] == "AccessDenied"

    # A key deleted is refused at once.
    iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName=allowed, Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_create_function_needs_a_role_lambda_may_assume(node, make_zip):
    lam = admin(node, "lambda")
    iam = admin(node, "iam")
    ec2 = s.unique_name("ec2")
    iam.create_role(RoleName=ec2, AssumeRolePolicyDocument=s.LAMBDA_TRUST.replace(
        "lambda.amazonaws.com", "ec2.amazonaws.com"))
    name = s.unique_name("f")
    for role in (f"arn:aws:iam::000000000000:role/{ec2}",
                 "arn:aws:iam::000000000000:role/does-not-exist",
                 "arn:aws:iam::123456789012:role/nimbus"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.create_function(FunctionName=name, Runtime=s.RUNTIME, Role=role,
                                Handler="echo.wasm", Code={"ZipFile": make_zip("echo")})
        assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
        assert e.value.response["Error"]["Message"] == \
            "The role defined for the function cannot be assumed by Lambda."
    with pytest.raises(botocore.exceptions.ClientError):
        lam.get_function(FunctionName=name)

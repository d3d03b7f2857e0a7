"""Applications deployed from their templates: `nimbus deploy` with a SAM template and a
serverless.yml (packaged, planned, applied, updated, removed), the CloudFormation API through
`aws cloudformation deploy` and boto3, rollbacks, and the bad input each must refuse."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import shutil
import signal
import sys
import subprocess
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import pytest

import e2e_support as s
from test_auth import client

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "apps"


def make_greeting_wheel(directory: Path, message: str = "hello world") -> None:
    """A local wheel the hello-world app lists in requirements.txt, so pip installs it offline."""
    wheel = directory / "greeting-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("greeting/__init__.py", f"def text():\n    return {message!r}\n")
        z.writestr("greeting-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: greeting\nVersion: 1.0\n")
        z.writestr("greeting-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("greeting-1.0.dist-info/RECORD", "")


def wait_for(check, timeout: float = 30):
    """Calls CHECK until it returns something true, and returns that."""
    def probe():
        value = check()
        assert value, "not yet"
        return value
    return s.eventually(probe, timeout=timeout)


def copy_app(name: str, tmp_path: Path) -> Path:
    app = tmp_path / name
    shutil.copytree(FIXTURES / name, app)
    return app


def deploy(cli: s.NimbusCli, app: Path, *args: str, ok: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = cli.run("deploy", "-f", str(next(p for p in app.iterdir() if p.name in ("template.yaml", "serverless.yml"))), *args, timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"deploy failed\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def info(cli: s.NimbusCli, app: Path, *args: str) -> dict:
    template = next(p for p in app.iterdir() if p.name in ("template.yaml", "serverless.yml"))
    return json.loads(cli.ok("info", "-f", str(template), "--json", *args).stdout)


def fetch(node: s.Node, method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """A request to a URL under *.localhost, sent to the node with that Host."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers={"Host": parts.netloc, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def route_url(details: dict, method_path: str) -> str:
    """The full URL `nimbus info` lists for a route (`GET /hello`)."""
    method, path = method_path.split(" ", 1)
    for e in details["endpoints"]:
        if e["kind"] == "API route" and e["value"].startswith(method + " ") and e["value"].endswith(path):
            return e["value"].split(" ", 1)[1]
    raise AssertionError(f"no route {method_path} in {details['endpoints']}")


def cfn(node: s.Node):
    return client(node, "cloudformation", s.ACCESS_KEY, s.SECRET_KEY)


def wait_stack(cf, name: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while True:
        stack = cf.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            return stack
        assert time.time() < deadline, f"stack {name} stuck in {stack['StackStatus']}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def alias_node(nimbus_bin, wasm_fixtures, tmp_path_factory):
    """A node that runs python3.13 functions on the host's Python, as an operator may allow."""
    base = tmp_path_factory.mktemp("deploy-node")
    config = base / "nimbus.toml"
    config.write_text('[worker]\nruntime_aliases = { "python3.13" = "python3.11", "python3.12" = "python3.11" }\n')
    n = s.Node(nimbus_bin, data_dir=base / "data", log_dir=base / "logs", config=config)
    n.start()
    yield n
    n.close()


@pytest.fixture
def deployer(nimbus_bin, alias_node):
    return s.NimbusCli(nimbus_bin, alias_node)


def test_the_sam_hello_world_app_deploys_serves_updates_and_is_removed(alias_node, deployer, tmp_path):
    app = copy_app("sam-hello", tmp_path)
    make_greeting_wheel(app)
    name = "sam-hello-dev"
    first = deploy(deployer, app)
    assert "runtime python3.13 runs on python3.11 here" in first.stdout
    assert "Add     HelloWorldFunctionRole" in first.stdout and "AWS::ApiGatewayV2::Route" in first.stdout
    assert "CREATE_COMPLETE" in first.stdout and "[  7/7]" in first.stdout
    details = info(deployer, app)
    assert details["status"] == "CREATE_COMPLETE"
    outputs = details["outputs"]
    assert outputs["HelloWorldApi"].endswith(".execute-api.us-east-1.amazonaws.com/Prod/hello/")
    assert ":function:sam-hello-dev-HelloWorldFunction-" in outputs["HelloWorldFunction"]
    assert ":role/sam-hello-dev-HelloWorldFunctionRole-" in outputs["HelloWorldFunctionIamRole"]
    url = route_url(details, "GET /Prod/hello")
    status, body = fetch(alias_node, "GET", url)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["message"] == "hello world" and answer["path"].endswith("/hello")

    # The function runs as SAM made it: the runtime it asked for, its role, the tag SAM adds.
    lam = s.lambda_client(alias_node.endpoint)
    fn = lam.get_function(FunctionName=outputs["HelloWorldFunction"])
    assert fn["Configuration"]["Runtime"] == "python3.13" and fn["Configuration"]["Timeout"] == 3
    assert fn["Configuration"]["Role"] == outputs["HelloWorldFunctionIamRole"]
    assert fn["Tags"]["lambda:createdBy"] == "SAM"

    # A second deploy of the same code changes nothing, and says so.
    cf = cfn(alias_node)
    events = len(cf.describe_stack_events(StackName=name)["StackEvents"])
    again = deploy(deployer, app)
    assert "No changes" in again.stdout
    assert len(cf.describe_stack_events(StackName=name)["StackEvents"]) == events
    assert cf.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    # New code and a new path: the function's code and the route are updated in place.
    (app / "hello_world" / "app.py").write_text((app / "hello_world" / "app.py").read_text().replace("greeting.text()", "greeting.text().upper()"))
    (app / "template.yaml").write_text((app / "template.yaml").read_text().replace("Path: /hello", "Path: /greet"))
    updated = deploy(deployer, app)
    assert "Modify  HelloWorldFunction " in updated.stdout and "UPDATE_COMPLETE" in updated.stdout
    details = info(deployer, app)
    assert details["outputs"]["HelloWorldFunction"] == outputs["HelloWorldFunction"]
    status, body = fetch(alias_node, "GET", route_url(details, "GET /Prod/greet"))
    assert status == 200 and json.loads(body)["message"] == "HELLO WORLD"
    assert fetch(alias_node, "GET", url)[0] == 404
    assert any(st["StackName"] == name for st in cf.list_stacks()["StackSummaries"])
    assert name in deployer.ok("stacks").stdout

    # Removal deletes everything the stack made.
    removed = deployer.ok("remove", "-f", str(app / "template.yaml"))
    assert "DELETE_COMPLETE" in removed.stdout
    with pytest.raises(botocore.exceptions.ClientError):
        lam.get_function(FunctionName=outputs["HelloWorldFunction"])
    iam = client(alias_node, "iam", s.ACCESS_KEY, s.SECRET_KEY)
    role_name = outputs["HelloWorldFunctionIamRole"].rsplit("/", 1)[1]
    with pytest.raises(botocore.exceptions.ClientError):
        iam.get_role(RoleName=role_name)
    apigw = client(alias_node, "apigatewayv2", s.ACCESS_KEY, s.SECRET_KEY)
    assert not [a for a in apigw.get_apis()["Items"] if a["Name"] == name]
    assert name not in deployer.ok("stacks").stdout
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cf.describe_stacks(StackName=name)
    assert "does not exist" in str(e.value)


def test_a_serverless_framework_service_with_an_api_a_schedule_and_a_queue(alias_node, deployer, tmp_path):
    app = copy_app("sls-service", tmp_path)
    out = deploy(deployer, app, "--stage", "qa")
    assert "as stack orders-qa (stage qa)" in out.stdout and "CREATE_COMPLETE" in out.stdout
    details = info(deployer, app, "--stage", "qa")
    lam = s.lambda_client(alias_node.endpoint)
    fn = lam.get_function(FunctionName="orders-qa-api")["Configuration"]
    assert fn["Runtime"] == "nodejs20.x" and fn["MemorySize"] == 256 and fn["Timeout"] == 10
    variables = fn["Environment"]["Variables"]
    assert variables["STAGE"] == "qa" and variables["GREETING"] == "hello from orders"
    assert variables["QUEUE_URL"] == details["outputs"]["JobsQueueUrl"]
    assert variables["QUEUE_URL"].startswith(alias_node.endpoint)

    status, body = fetch(alias_node, "GET", route_url(details, "GET /orders/{id}").replace("{id}", "42"))
    assert status == 200, body
    assert json.loads(body) == {"id": "42", "stage": "qa", "greeting": "hello from orders"}
    # POST puts a message on the queue (the role's statement allows it); the worker drains it.
    status, body = fetch(alias_node, "POST", route_url(details, "POST /orders"), body=b'{"item": "tea"}',
                        headers={"content-type": "application/json"})
    assert status == 202, body
    sqs = client(alias_node, "sqs", s.ACCESS_KEY, s.SECRET_KEY)
    queue_url = details["outputs"]["JobsQueueUrl"]

    def drained():
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    wait_for(drained, timeout=30)
    wait_for(lambda: 'processed {"item": "tea"}' in deployer.ok("logs", "orders-qa-worker").stdout, timeout=30)
    mappings = lam.list_event_source_mappings(FunctionName="orders-qa-worker")["EventSourceMappings"]
    assert [m["BatchSize"] for m in mappings] == [5]
    events = client(alias_node, "events", s.ACCESS_KEY, s.SECRET_KEY)
    rules = [r for r in events.list_rules()["Rules"] if r.get("ScheduleExpression") == "rate(1 minute)" and r["Name"].startswith("orders-qa-")]
    assert len(rules) == 1 and rules[0]["State"] == "ENABLED"
    # The package (uploaded to the node's S3, as `sam package` does) holds the handler but not
    # what package.patterns leave out.
    s3 = client(alias_node, "s3", s.ACCESS_KEY, s.SECRET_KEY)
    bucket = "nimbus-deployments-000000000000"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="orders-qa/")["Contents"]]
    assert len(keys) == 1 and keys[0].endswith(".zip")
    package = s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    names = zipfile.ZipFile(io.BytesIO(package)).namelist()
    assert "handler.js" in names and "notes.txt" not in names and not any(n.startswith("tests/") for n in names)
    assert hashlib.sha256(package).hexdigest() == keys[0].rsplit("/", 1)[1][:-4]

    deployer.ok("remove", "-f", str(app / "serverless.yml"), "--stage", "qa")
    assert not [r for r in events.list_rules()["Rules"] if r["Name"].startswith("orders-qa-")]
    with pytest.raises(botocore.exceptions.ClientError):
        sqs.get_queue_attributes(QueueUrl=queue_url)


PLAIN = """
Parameters:
  Stage:
    Type: String
    Default: dev
    AllowedValues: [dev, prod]
  Secret:
    Type: String
    NoEcho: true
    Default: hunter2
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Resources:
  Items:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      StreamSpecification: {StreamViewType: NEW_IMAGE}
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: '2012-10-17'
        Statement: [{Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}]
      ManagedPolicyArns: [arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]
  Fn:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.11
      Handler: index.handler
      Role: !GetAtt Role.Arn
      Environment:
        Variables:
          TABLE: !Ref Items
          MODE: !If [IsProd, big, small]
      Code:
        ZipFile: |
          import os
          def handler(event, context):
              return {"table": os.environ["TABLE"], "mode": os.environ["MODE"]}
Outputs:
  TableName:
    Value: !Ref Items
    Export:
      Name: !Sub ${AWS::StackName}-table
  StreamArn:
    Value: !GetAtt Items.StreamArn
  FunctionName:
    Value: !Ref Fn
"""

CONSUMER = """
Resources:
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      Tags: [{Key: table, Value: !ImportValue {STACK}-table}]
Outputs:
  Imported:
    Value: !ImportValue {STACK}-table
"""


def test_aws_cloudformation_deploy_parameters_exports_and_templates(node, tmp_path):
    aws = s.AwsCli(node, tmp_path / "aws")
    name = s.unique_name("cfn")
    template = tmp_path / "plain.yaml"
    template.write_text(PLAIN)
    aws.run("cloudformation", "deploy", "--template-file", str(template), "--stack-name", name)
    cf = cfn(node)
    stack = cf.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    # A NoEcho parameter's value is never shown.
    shown = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert shown == {"Stage": "dev", "Secret": "****"}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["StreamArn"].startswith(f"arn:aws:dynamodb:us-east-1:000000000000:table/{outputs['TableName']}/stream/")
    lam = s.lambda_client(node.endpoint)
    result = json.loads(lam.invoke(FunctionName=outputs["FunctionName"])["Payload"].read())
    assert result == {"table": outputs["TableName"], "mode": "small"}
    resources = {r["LogicalResourceId"]: r for r in cf.describe_stack_resources(StackName=name)["StackResources"]}
    assert set(resources) == {"Items", "Role", "Fn"}
    assert resources["Items"]["PhysicalResourceId"] == outputs["TableName"]

    # A parameter changes one property; the function is updated in place, nothing else.
    aws.run("cloudformation", "deploy", "--template-file", str(template), "--stack-name", name,
            "--parameter-overrides", "Stage=prod")
    result = json.loads(lam.invoke(FunctionName=outputs["FunctionName"])["Payload"].read())
    assert result["mode"] == "big"
    updated = [e for e in cf.describe_stack_events(StackName=name)["StackEvents"] if e["ResourceStatus"] == "UPDATE_COMPLETE"]
    assert {e["LogicalResourceId"] for e in updated} == {"Fn", name}
    # No change: the CLI says so and nothing happens.
    proc = aws.run("cloudformation", "deploy", "--template-file", str(template), "--stack-name", name,
                   "--parameter-overrides", "Stage=prod")
    assert "No changes to deploy" in proc.stdout + proc.stderr
    # A parameter value the template does not allow.
    bad = aws.fails("cloudformation", "deploy", "--template-file", str(template), "--stack-name", name,
                    "--parameter-overrides", "Stage=qa", code="ValidationError")
    assert "AllowedValues" in bad.stderr

    original = cf.get_template(StackName=name)["TemplateBody"]
    assert "AWS::DynamoDB::Table" in (original if isinstance(original, str) else json.dumps(original))
    exports = {e["Name"]: e["Value"] for e in cf.list_exports()["Exports"]}
    assert exports[f"{name}-table"] == outputs["TableName"]

    # Another stack imports the export.
    consumer = s.unique_name("cfn-consumer")
    cf.create_stack(StackName=consumer, TemplateBody=CONSUMER.replace("{STACK}", name))
    assert wait_stack(cf, consumer)["StackStatus"] == "CREATE_COMPLETE"
    imported = {o["OutputKey"]: o["OutputValue"] for o in cf.describe_stacks(StackName=consumer)["Stacks"][0]["Outputs"]}
    assert imported["Imported"] == outputs["TableName"]

    cf.delete_stack(StackName=consumer)
    assert wait_stack_gone(cf, consumer)
    cf.delete_stack(StackName=name)
    assert wait_stack_gone(cf, name)
    with pytest.raises(botocore.exceptions.ClientError):
        lam.get_function(FunctionName=outputs["FunctionName"])
    ddb = client(node, "dynamodb", s.ACCESS_KEY, s.SECRET_KEY)
    with pytest.raises(botocore.exceptions.ClientError):
        ddb.describe_table(TableName=outputs["TableName"])


def wait_stack_gone(cf, name: str, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            status = cf.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        except botocore.exceptions.ClientError as e:
            if "does not exist" in str(e):
                return True
            raise
        assert status != "DELETE_FAILED", status
        time.sleep(0.2)
    return False


FAILING = """
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: {VISIBILITY}
      Tags: [{Key: table, Value: !Ref Table}]
"""


def test_a_failing_step_rolls_back_and_leaves_nothing_behind(node):
    cf = cfn(node)
    ddb = client(node, "dynamodb", s.ACCESS_KEY, s.SECRET_KEY)
    sqs = client(node, "sqs", s.ACCESS_KEY, s.SECRET_KEY)
    name = s.unique_name("rollback")
    tables_before = set(ddb.list_tables()["TableNames"])
    # The queue's visibility timeout is out of range: SQS refuses it after the table exists.
    cf.create_stack(StackName=name, TemplateBody=FAILING.replace("{VISIBILITY}", "99999"))
    stack = wait_stack(cf, name)
    assert stack["StackStatus"] == "ROLLBACK_COMPLETE", stack
    events = cf.describe_stack_events(StackName=name)["StackEvents"]
    failed = [e for e in events if e["ResourceStatus"] == "CREATE_FAILED"]
    assert [e["LogicalResourceId"] for e in failed] == ["Queue"]
    assert "VisibilityTimeout" in failed[0]["ResourceStatusReason"]
    assert any(e["LogicalResourceId"] == "Table" and e["ResourceStatus"] == "DELETE_COMPLETE" for e in events)
    assert set(ddb.list_tables()["TableNames"]) == tables_before
    assert cf.describe_stack_resources(StackName=name)["StackResources"] == []
    # A rolled-back first deploy cannot be updated; it is deleted and made again.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cf.update_stack(StackName=name, TemplateBody=FAILING.replace("{VISIBILITY}", "30"))
    assert "ROLLBACK_COMPLETE" in str(e.value)
    cf.delete_stack(StackName=name)
    assert wait_stack_gone(cf, name)
    cf.create_stack(StackName=name, TemplateBody=FAILING.replace("{VISIBILITY}", "30"))
    assert wait_stack(cf, name)["StackStatus"] == "CREATE_COMPLETE"
    queue = next(r["PhysicalResourceId"] for r in cf.describe_stack_resources(StackName=name)["StackResources"] if r["LogicalResourceId"] == "Queue")
    # A failing update puts back what it changed.
    cf.update_stack(StackName=name, TemplateBody=FAILING.replace("{VISIBILITY}", "45").replace(
        "      Tags:", "      MessageRetentionPeriod: 10\n      Tags:"))
    stack = wait_stack(cf, name)
    assert stack["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE", stack
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "30" and attrs["MessageRetentionPeriod"] == "345600"
    cf.delete_stack(StackName=name)
    assert wait_stack_gone(cf, name)


BAD_TEMPLATES = {
    "yaml": ("Resources:\n  A: [unclosed\n", "YAML not well-formed"),
    "cycle": (
        "Resources:\n  A:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !GetAtt B.QueueName\n"
        "  B:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !GetAtt A.QueueName\n",
        "Circular dependency between resources: [A, B]",
    ),
    "dangling": ("Resources:\n  A:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Ref Nowhere\n", "Unresolved resource dependencies [Nowhere]"),
    "type": ("Resources:\n  Box:\n    Type: AWS::EC2::Instance\n", "Resource Box: type AWS::EC2::Instance is not supported by this node"),
    "property": ("Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      KmsMasterKeyId: alias/x\n", "property KmsMasterKeyId is not supported"),
    "attribute": ("Resources:\n  Q:\n    Type: AWS::SQS::Queue\nOutputs:\n  X:\n    Value: !GetAtt Q.Nope\n", "does not support attribute type Nope"),
    "intrinsic": ("Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: {'Fn::Transmogrify': x}\n", "Fn::Transmogrify"),
    "transform": ("Transform: AWS::Include\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n", "Transform AWS::Include is not supported"),
    "aliases": ("Base: &base {VisibilityTimeout: 30}\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties: *base\n",
                "YAML anchors and aliases are not supported"),
    "pattern": ("Parameters:\n  P:\n    Type: String\n    Default: x\n    AllowedPattern: '(?i)x'\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n",
                "regular-expression features this node does not read"),
    "policy": ("Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    DeletionPolicy: !If [C, Retain, Delete]\n", "intrinsic functions are not supported there"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEMPLATES))
def test_bad_templates_are_refused_with_the_reason_and_nothing_is_made(node, case):
    text, message = BAD_TEMPLATES[case]
    cf = cfn(node)
    name = s.unique_name("bad")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cf.create_change_set(StackName=name, ChangeSetName="c1", ChangeSetType="CREATE", TemplateBody=text)
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert message in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError):
        cf.describe_stacks(StackName=name)


def test_the_cli_refuses_bad_stages_missing_handlers_and_unknown_runtimes(deployer, tmp_path, nimbus_bin, node):
    app = copy_app("sam-hello", tmp_path)
    make_greeting_wheel(app)
    bad = deploy(deployer, app, "--stage", "no stage!", ok=False)
    assert bad.returncode != 0 and "not a valid stage name" in bad.stderr
    (app / "template.yaml").write_text((app / "template.yaml").read_text().replace("app.lambda_handler", "missing.handler"))
    bad = deploy(deployer, app, "--stack-name", "handler-check", ok=False)
    assert bad.returncode != 0 and "the handler missing.handler names missing.py, which is not in the package" in bad.stderr
    # A node without the runtime alias names the runtimes it has.
    plain = s.NimbusCli(nimbus_bin, node)
    (app / "template.yaml").write_text((app / "template.yaml").read_text().replace("missing.handler", "app.lambda_handler"))
    bad = deploy(plain, app, ok=False)
    assert bad.returncode != 0 and "the runtime python3.13 is not available on this node. Available:" in bad.stderr
    assert "python3.11" in bad.stderr and "runtime_aliases" in bad.stderr
    (app / "template.yaml").write_text("Resources: [\n")
    bad = deploy(deployer, app, ok=False)
    assert bad.returncode != 0 and "YAML not well-formed" in bad.stderr
    for name in ("handler-check-dev", "sam-hello-dev"):
        assert name not in deployer.ok("stacks").stdout


def many_functions(count: int, prefix: str = "F") -> str:
    lines = ["Transform: AWS::Serverless-2016-10-31", "Resources:"]
    for i in range(count):
        lines += [
            f"  {prefix}{i}:",
            "    Type: AWS::Serverless::Function",
            "    Properties:",
            "      Runtime: python3.11",
            "      Handler: index.handler",
            "      InlineCode: |",
            "        def handler(event, context):",
            f"            return {i}",
            "      Events:",
            "        Web:",
            "          Type: HttpApi",
            "          Properties:",
            f"            Path: /f{i}",
            "            Method: get",
        ]
    return "\n".join(lines) + "\n"


def test_a_second_deploy_of_a_stack_is_refused_while_the_first_runs(node):
    cf = cfn(node)
    name = s.unique_name("busy")
    cf.create_change_set(StackName=name, ChangeSetName="first", ChangeSetType="CREATE", TemplateBody=many_functions(30))
    cf.execute_change_set(StackName=name, ChangeSetName="first")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cf.update_stack(StackName=name, TemplateBody=many_functions(2))
    assert "CREATE_IN_PROGRESS state and can not be updated" in str(e.value)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cf.delete_stack(StackName=name)
    assert "cannot be deleted while in status CREATE_IN_PROGRESS" in str(e.value)
    assert wait_stack(cf, name)["StackStatus"] == "CREATE_COMPLETE"
    cf.delete_stack(StackName=name)
    assert wait_stack_gone(cf, name)


def test_a_deploy_cut_short_by_sigkill_rolls_back_or_completes(node_factory, nimbus_bin, tmp_path):
    n = node_factory()
    cli = s.NimbusCli(nimbus_bin, n)
    cf = cfn(n)
    app = tmp_path / "many"
    app.mkdir()
    (app / "template.yaml").write_text(many_functions(40))
    lam = s.lambda_client(n.endpoint)

    # The CLI is killed: the node carries on and the stack completes; the next deploy has nothing to do.
    proc = cli.popen("deploy", "-f", str(app / "template.yaml"))
    for line in proc.stdout:
        if "CREATE_COMPLETE" in line and "AWS::Lambda::Function" in line:
            break
    proc.kill()
    proc.wait()
    assert wait_stack(cf, "many-dev")["StackStatus"] == "CREATE_COMPLETE"
    assert "No changes" in cli.ok("deploy", "-f", str(app / "template.yaml")).stdout

    # The node is killed in the middle of an update: started again, it rolls the update back.
    (app / "template.yaml").write_text(many_functions(40).replace("return ", "return 1000 + "))
    proc = cli.popen("deploy", "-f", str(app / "template.yaml"))
    for line in proc.stdout:
        if "UPDATE_COMPLETE" in line and "AWS::Lambda::Function" in line:
            break
    n.stop(signal.SIGKILL)
    proc.wait(timeout=60)
    n.start()
    cf = cfn(n)
    stack = wait_stack(cf, "many-dev")
    assert stack["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE", stack
    lam = s.lambda_client(n.endpoint)
    for r in cf.describe_stack_resources(StackName="many-dev")["StackResources"]:
        if r["ResourceType"] == "AWS::Lambda::Function":
            i = int(r["LogicalResourceId"][1:])
            assert json.loads(lam.invoke(FunctionName=r["PhysicalResourceId"])["Payload"].read()) == i
    # And the next deploy completes.
    out = cli.ok("deploy", "-f", str(app / "template.yaml"), timeout=300)
    assert "UPDATE_COMPLETE" in out.stdout

    # A first deploy cut short by the node's death is rolled back entirely at the next start.
    (app / "template.yaml").write_text(many_functions(40, prefix="G"))
    proc = cli.popen("deploy", "-f", str(app / "template.yaml"), "--stack-name", "fresh")
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "CREATE_COMPLETE" in line and "AWS::Lambda::Function" in line:
            break
    n.stop(signal.SIGKILL)
    proc.wait(timeout=60)
    assert any("CREATE_COMPLETE" in line for line in seen), seen
    n.start()
    cf = cfn(n)
    assert wait_stack(cf, "fresh")["StackStatus"] == "ROLLBACK_COMPLETE"
    lam = s.lambda_client(n.endpoint)
    assert not [f for f in s.list_all_function_names(lam) if f.startswith("fresh-")]
    out = cli.ok("deploy", "-f", str(app / "template.yaml"), "--stack-name", "fresh", timeout=300)
    assert "CREATE_COMPLETE" in out.stdout


def test_one_template_with_users_an_api_a_table_and_a_bucket(node, nimbus, tmp_path):
    app = copy_app("notes", tmp_path)
    out = deploy(nimbus, app, "--stack-name", "notes-e2e")
    assert "CREATE_COMPLETE" in out.stdout
    details = info(nimbus, app, "--stack-name", "notes-e2e")
    outputs = details["outputs"]
    assert outputs["Issuer"] == f"https://cognito-idp.us-east-1.amazonaws.com/{outputs['UserPoolId']}"
    idp = client(node, "cognito-idp", s.ACCESS_KEY, s.SECRET_KEY)
    idp.admin_create_user(UserPoolId=outputs["UserPoolId"], Username="ana@example.com", MessageAction="SUPPRESS",
                          UserAttributes=[{"Name": "email", "Value": "ana@example.com"}, {"Name": "email_verified", "Value": "true"}])
    idp.admin_set_user_password(UserPoolId=outputs["UserPoolId"], Username="ana@example.com",
                                Password="Long-enough-9", Permanent=True)
    # A password the template's policy refuses.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        idp.admin_set_user_password(UserPoolId=outputs["UserPoolId"], Username="ana@example.com",
                                    Password="Short-9", Permanent=True)
    assert e.value.response["Error"]["Code"] == "InvalidPasswordException"
    tokens = idp.initiate_auth(ClientId=outputs["ClientId"], AuthFlow="USER_PASSWORD_AUTH",
                               AuthParameters={"USERNAME": "ana@example.com", "PASSWORD": "Long-enough-9"})["AuthenticationResult"]
    sub = idp.get_user(AccessToken=tokens["AccessToken"])["Username"]

    # The route checks the pool's token (the authorizer names the pool by Cognito's issuer URL).
    write = route_url(details, "POST /notes")
    status, _ = fetch(node, "POST", write, b'{"text": "first"}', {"content-type": "application/json"})
    assert status == 401
    status, body = fetch(node, "POST", write, b'{"text": "first"}',
                         {"content-type": "application/json", "authorization": tokens["IdToken"]})
    assert status == 201, body
    assert json.loads(body) == {"saved": sub}
    assert fetch(node, "GET", route_url(details, "GET /health"))[0] == 200
    ddb = client(node, "dynamodb", s.ACCESS_KEY, s.SECRET_KEY)
    item = ddb.get_item(TableName=outputs["Table"], Key={"id": {"S": sub}})["Item"]
    assert item["text"] == {"S": "first"} and item["email"] == {"S": "ana@example.com"}

    # Files under incoming/ are recorded by the bucket's notification; others are not.
    s3 = client(node, "s3", s.ACCESS_KEY, s.SECRET_KEY)
    s3.put_object(Bucket=outputs["Bucket"], Key="incoming/report.csv", Body=b"a,b\n1,2\n")
    s3.put_object(Bucket=outputs["Bucket"], Key="other/skip.csv", Body=b"x")
    wait_for(lambda: "Item" in ddb.get_item(TableName=outputs["Table"], Key={"id": {"S": "upload#incoming/report.csv"}}), timeout=30)
    time.sleep(0.5)
    assert "Item" not in ddb.get_item(TableName=outputs["Table"], Key={"id": {"S": "upload#other/skip.csv"}})

    # A bucket that still holds objects is not deleted; emptied, the stack goes entirely.
    for key in ("incoming/report.csv", "other/skip.csv"):
        s3.delete_object(Bucket=outputs["Bucket"], Key=key)
    nimbus.ok("remove", "-f", str(app / "template.yaml"), "--stack-name", "notes-e2e")
    with pytest.raises(botocore.exceptions.ClientError):
        idp.describe_user_pool(UserPoolId=outputs["UserPoolId"])
    with pytest.raises(botocore.exceptions.ClientError):
        ddb.describe_table(TableName=outputs["Table"])
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_bucket(Bucket=outputs["Bucket"])


CANARY = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Checkout:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: {NAME}
      Runtime: python3.11
      Handler: index.handler
      AutoPublishAlias: live
      DeploymentPreference:
        Type: Canary10Percent5Minutes
      InlineCode: |
        def handler(event, context):
            {BODY}
"""


def test_a_canary_deployment_is_rolled_back_by_the_new_versions_errors(node_factory, tmp_path):
    # Minutes of the preference pass as seconds here, so a 5-minute canary takes 5 s.
    config = tmp_path / "nimbus.toml"
    config.write_text("[deploy]\ntraffic_shift_speed = 60.0\ntraffic_shift_max_error_rate = 0.1\n")
    n = node_factory(config=config)
    cf = cfn(n)
    lam = s.lambda_client(n.endpoint)
    name = s.unique_name("checkout")

    def template(body: str) -> str:
        return CANARY.replace("{NAME}", name).replace("{BODY}", body)

    cf.create_stack(StackName="shop", TemplateBody=template('return {"version": 1}'))
    assert wait_stack(cf, "shop")["StackStatus"] == "CREATE_COMPLETE"
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1"

    def call_alias(count: int) -> dict:
        seen: dict = {}
        for _ in range(count):
            r = lam.invoke(FunctionName=name, Qualifier="live")
            executed = r["ExecutedVersion"]
            seen.setdefault(executed, []).append("FunctionError" in r)
        return seen

    # A healthy version: 10 % of the alias's traffic for the canary's time, then all of it.
    cf.update_stack(StackName="shop", TemplateBody=template('return {"version": 2}'))
    wait_for(lambda: lam.get_alias(FunctionName=name, Name="live").get("RoutingConfig", {}).get("AdditionalVersionWeights"), timeout=30)
    during = lam.get_alias(FunctionName=name, Name="live")
    assert during["FunctionVersion"] == "1" and during["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}
    seen = call_alias(200)
    assert set(seen) <= {"1", "2"} and len(seen.get("2", [])) > 0 and len(seen["1"]) > len(seen.get("2", []))
    assert wait_stack(cf, "shop")["StackStatus"] == "UPDATE_COMPLETE"
    after = lam.get_alias(FunctionName=name, Name="live")
    assert after["FunctionVersion"] == "2" and not after.get("RoutingConfig", {}).get("AdditionalVersionWeights")

    # A version that fails: its share of the traffic fails, the alias goes back and the
    # stack update rolls back, removing the bad version.
    cf.update_stack(StackName="shop", TemplateBody=template('raise RuntimeError("broken")'))
    wait_for(lambda: lam.get_alias(FunctionName=name, Name="live").get("RoutingConfig", {}).get("AdditionalVersionWeights"), timeout=30)
    seen = call_alias(100)
    assert seen.get("3") and all(seen["3"]) and not any(seen["2"])
    stack = wait_stack(cf, "shop")
    assert stack["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE", stack
    reasons = [e.get("ResourceStatusReason", "") for e in cf.describe_stack_events(StackName="shop")["StackEvents"] if e["ResourceStatus"] == "UPDATE_FAILED"]
    assert any("traffic shift to version 3 was rolled back" in r for r in reasons), reasons
    final = lam.get_alias(FunctionName=name, Name="live")
    assert final["FunctionVersion"] == "2" and not final.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert "3" not in versions
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == {"version": 2}
    cf.delete_stack(StackName="shop")
    assert wait_stack_gone(cf, "shop")


SAM_VENV = s.REPO_ROOT / ".cache" / "sam-cli-venv"
SAM_CLI_PACKAGE = "aws-sam-cli==1.170.0"


def sam_cli() -> Path:
    """AWS SAM CLI from PyPI, in a virtual environment of its own (made once)."""
    sam = SAM_VENV / "bin" / "sam"
    if not sam.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(SAM_VENV)], check=True, timeout=300)
        subprocess.run([str(SAM_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", SAM_CLI_PACKAGE],
                       check=True, timeout=1200)
    return sam


def test_unmodified_sam_build_deploy_and_delete(alias_node, tmp_path):
    sam = sam_cli()
    app = copy_app("sam-hello", tmp_path)
    make_greeting_wheel(app)
    # `sam build` needs the template's runtime on this host; the node would alias it anyway.
    host_python = f"python3.{sys.version_info.minor}"
    (app / "template.yaml").write_text((app / "template.yaml").read_text().replace("python3.13", host_python))
    env = s.clean_env({
        "AWS_ENDPOINT_URL": alias_node.endpoint, "AWS_ACCESS_KEY_ID": s.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": s.SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0", "HOME": str(tmp_path),
    })
    s3 = client(alias_node, "s3", s.ACCESS_KEY, s.SECRET_KEY)
    s3.create_bucket(Bucket="sam-artifacts")

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(sam), *args], cwd=app, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"sam {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
        return proc

    run("build")
    out = run("deploy", "--stack-name", "sam-cli-app", "--s3-bucket", "sam-artifacts", "--capabilities", "CAPABILITY_IAM",
              "--no-confirm-changeset", "--no-progressbar")
    assert "Successfully created/updated stack - sam-cli-app" in out.stdout
    # The template went to S3 and the stack was made from its URL, as on AWS.
    assert any(o["Key"].endswith(".template") for o in s3.list_objects_v2(Bucket="sam-artifacts")["Contents"])
    cf = cfn(alias_node)
    api_id = next(r["PhysicalResourceId"] for r in cf.describe_stack_resources(StackName="sam-cli-app")["StackResources"]
                  if r["LogicalResourceId"] == "ServerlessRestApi")
    status, body = fetch(alias_node, "GET", f"http://{api_id}.execute-api.us-east-1.localhost:{alias_node.port}/Prod/hello")
    assert status == 200 and json.loads(body)["message"] == "hello world", body
    # No change: sam says so and the stack is untouched.
    again = subprocess.run([str(sam), "deploy", "--stack-name", "sam-cli-app", "--s3-bucket", "sam-artifacts",
                            "--capabilities", "CAPABILITY_IAM", "--no-confirm-changeset", "--no-progressbar"],
                           cwd=app, env=env, capture_output=True, text=True, timeout=600)
    assert "No changes to deploy" in again.stdout + again.stderr
    run("delete", "--stack-name", "sam-cli-app", "--no-prompts", "--s3-bucket", "sam-artifacts")
    assert wait_stack_gone(cf, "sam-cli-app")


def test_dry_run_prints_the_plan_and_makes_nothing(node, nimbus, tmp_path):
    app = copy_app("notes", tmp_path)
    out = nimbus.ok("deploy", "-f", str(app / "template.yaml"), "--stack-name", "dry-notes", "--dry-run")
    assert "Add     NotesFunction" in out.stdout and "Dry run: nothing applied." in out.stdout
    assert "dry-notes" not in nimbus.ok("stacks").stdout
    with pytest.raises(botocore.exceptions.ClientError):
        cfn(node).describe_stacks(StackName="dry-notes")


def test_node_dependencies_are_installed_into_the_package(node, nimbus, lambda_client, tmp_path):
    """package.json's dependencies installed with npm (here a local tarball, so nothing leaves
    the machine), devDependencies left out."""
    import tarfile
    app = tmp_path / "node-app"
    app.mkdir()
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    for pkg, body in (("shout", "module.exports = (s) => s.toUpperCase();\n"), ("devtool", "module.exports = 1;\n")):
        src = tmp_path / f"{pkg}-src" / "package"
        src.mkdir(parents=True)
        (src / "package.json").write_text(json.dumps({"name": pkg, "version": "1.0.0", "main": "index.js"}))
        (src / "index.js").write_text(body)
        with tarfile.open(vendor / f"{pkg}-1.0.0.tgz", "w:gz") as t:
            t.add(src, arcname="package")
    (app / "package.json").write_text(json.dumps({
        "name": "node-app", "version": "1.0.0",
        "dependencies": {"shout": f"file:{vendor / 'shout-1.0.0.tgz'}"},
        "devDependencies": {"devtool": f"file:{vendor / 'devtool-1.0.0.tgz'}"},
    }))
    (app / "index.js").write_text("const shout = require('shout');\nexports.handler = async (e) => shout(e.text);\n")
    name = s.unique_name("npm-app")
    (app / "template.yaml").write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        f"    Properties:\n      FunctionName: {name}\n      CodeUri: .\n      Handler: index.handler\n      Runtime: nodejs20.x\n")
    nimbus.ok("deploy", "-f", str(app / "template.yaml"), timeout=300)
    out = json.loads(lambda_client.invoke(FunctionName=name, Payload=b'{"text": "npm"}')["Payload"].read())
    assert out == "NPM"
    s3 = client(node, "s3", s.ACCESS_KEY, s.SECRET_KEY)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="nimbus-deployments-000000000000", Prefix="node-app-dev/")["Contents"]]
    names = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket="nimbus-deployments-000000000000", Key=keys[0])["Body"].read())).namelist()
    assert "node_modules/shout/index.js" in names and not any(n.startswith("node_modules/devtool") for n in names)
    nimbus.ok("remove", "-f", str(app / "template.yaml"))

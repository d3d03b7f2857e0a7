"""Lambda layers through boto3 and the aws CLI: published versions, the packages functions find
under /opt (later layers over earlier ones; Python's and Node.js's paths), sharing with another
account by a layer version's policy, deleting a version functions still use, the bad input
Lambda refuses, and layers declared in a SAM template."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import botocore.exceptions
import pytest

import e2e_support as s
import process_support as p
from test_accounts import create_account
from test_auth import client

PYTHON = p.host_python_runtime()
NODE = "nodejs20.x"
ROLE = s.ROLE


def zipped(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


PY_HANDLER = """
import os, greeting, which
def handler(event, context):
    with open("/opt/data/motd.txt") as f:
        motd = f.read().strip()
    return {"greeting": greeting.hello(event.get("name", "you")), "which": which.NAME, "motd": motd,
            "opt_writable": os.access("/opt", os.W_OK)}
"""


def fails(fn, code):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn()
    assert e.value.response["Error"]["Code"] == code, e.value.response
    return e.value.response["Error"]["Message"]


def test_functions_find_their_layers_under_opt_in_order(lambda_client):
    name = s.unique_name("deps")
    first = lambda_client.publish_layer_version(
        LayerName=name, Description="greeting and data", CompatibleRuntimes=[PYTHON], LicenseInfo="MIT",
        Content={"ZipFile": zipped({
            "python/greeting.py": "def hello(who):\n    return f'hello, {who}'\n",
            "python/which.py": "NAME = 'first'\n",
            "data/motd.txt": "from the first layer\n",
        })})
    assert first["Version"] == 1 and first["LayerVersionArn"].endswith(f":layer:{name}:1")
    assert first["CompatibleRuntimes"] == [PYTHON] and first["Content"]["CodeSize"] > 0
    overrides = s.unique_name("overrides")
    second = lambda_client.publish_layer_version(
        LayerName=overrides, Content={"ZipFile": zipped({"python/which.py": "NAME = 'second'\n"})})

    fn = s.unique_name("layered")
    lambda_client.create_function(
        FunctionName=fn, Runtime=PYTHON, Role=ROLE, Handler="app.handler",
        Code={"ZipFile": zipped({"app.py": PY_HANDLER})},
        Layers=[first["LayerVersionArn"], second["LayerVersionArn"]])
    config = lambda_client.get_function_configuration(FunctionName=fn)
    assert [l["Arn"] for l in config["Layers"]] == [first["LayerVersionArn"], second["LayerVersionArn"]]
    out = json.loads(lambda_client.invoke(FunctionName=fn, Payload=b'{"name": "ana"}')["Payload"].read())
    assert out == {"greeting": "hello, ana", "which": "second", "motd": "from the first layer", "opt_writable": False}

    # The later layer's file is the one seen; without it, the first layer's.
    lambda_client.update_function_configuration(FunctionName=fn, Layers=[first["LayerVersionArn"]])
    s.wait_updated(lambda_client, fn)
    out = json.loads(lambda_client.invoke(FunctionName=fn, Payload=b"{}")["Payload"].read())
    assert out["which"] == "first"

    # A new version of the layer; the function keeps the version it names.
    again = lambda_client.publish_layer_version(LayerName=name, Content={"ZipFile": zipped({"python/greeting.py": "def hello(who):\n    return 'v2'\n"})})
    assert again["Version"] == 2
    versions = lambda_client.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1]
    listed = {l["LayerName"]: l for l in lambda_client.list_layers()["Layers"]}
    assert listed[name]["LatestMatchingVersion"]["Version"] == 2
    assert name in {l["LayerName"] for l in lambda_client.list_layers(CompatibleRuntime=PYTHON)["Layers"]}
    assert name not in {l["LayerName"] for l in lambda_client.list_layers(CompatibleRuntime=NODE)["Layers"]}
    by_arn = lambda_client.get_layer_version_by_arn(Arn=first["LayerVersionArn"])
    assert by_arn["Version"] == 1 and by_arn["Description"] == "greeting and data" and by_arn["LicenseInfo"] == "MIT"

    # Deleting a version a function uses: the function keeps working; new functions cannot use it.
    lambda_client.delete_layer_version(LayerName=name, VersionNumber=1)
    fails(lambda: lambda_client.get_layer_version(LayerName=name, VersionNumber=1), "ResourceNotFoundException")
    lambda_client.update_function_configuration(FunctionName=fn, MemorySize=256)
    s.wait_updated(lambda_client, fn)
    out = json.loads(lambda_client.invoke(FunctionName=fn, Payload=b"{}")["Payload"].read())
    assert out["greeting"] == "hello, you"
    message = fails(lambda: lambda_client.create_function(
        FunctionName=s.unique_name("late"), Runtime=PYTHON, Role=ROLE, Handler="app.handler",
        Code={"ZipFile": zipped({"app.py": PY_HANDLER})}, Layers=[first["LayerVersionArn"]]), "InvalidParameterValueException")
    assert "does not exist" in message
    # Layers can be removed from a function.
    lambda_client.update_function_configuration(FunctionName=fn, Layers=[])
    s.wait_updated(lambda_client, fn)
    assert "Layers" not in lambda_client.get_function_configuration(FunctionName=fn)


def test_nodejs_functions_require_modules_from_layers(lambda_client):
    name = s.unique_name("node-deps")
    layer = lambda_client.publish_layer_version(
        LayerName=name, CompatibleRuntimes=[NODE],
        Content={"ZipFile": zipped({"nodejs/node_modules/shout/index.js": "module.exports = (s) => s.toUpperCase() + '!';\n"})})
    fn = s.unique_name("node-layered")
    lambda_client.create_function(
        FunctionName=fn, Runtime=NODE, Role=ROLE, Handler="index.handler",
        Code={"ZipFile": zipped({"index.js": "const shout = require('shout');\nexports.handler = async (e) => shout(e.text);\n"})},
        Layers=[layer["LayerVersionArn"]])
    out = json.loads(lambda_client.invoke(FunctionName=fn, Payload=b'{"text": "layers"}')["Payload"].read())
    assert out == "LAYERS!"


def test_another_account_uses_a_layer_only_when_its_policy_says_so(nimbus, node, lambda_client):
    name = s.unique_name("shared")
    layer = lambda_client.publish_layer_version(LayerName=name, Content={"ZipFile": zipped({"python/shared_lib.py": "VALUE = 42\n"})})
    _, account, key, secret = create_account(nimbus)
    other = client(node, "lambda", key, secret)
    iam = client(node, "iam", key, secret)
    iam.create_role(RoleName="exec", AssumeRolePolicyDocument=s.LAMBDA_TRUST)
    role = f"arn:aws:iam::{account}:role/exec"

    def create(fn):
        return other.create_function(
            FunctionName=fn, Runtime=PYTHON, Role=role, Handler="app.handler",
            Code={"ZipFile": zipped({"app.py": "import shared_lib\ndef handler(e, c):\n    return shared_lib.VALUE\n"})},
            Layers=[layer["LayerVersionArn"]])

    fails(lambda: create(s.unique_name("denied")), "AccessDeniedException")
    fails(lambda: other.get_layer_version_by_arn(Arn=layer["LayerVersionArn"]), "AccessDeniedException")
    added = lambda_client.add_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="team", Action="lambda:GetLayerVersion", Principal=account)
    assert json.loads(added["Statement"])["Principal"] == {"AWS": f"arn:aws:iam::{account}:root"}
    policy = json.loads(lambda_client.get_layer_version_policy(LayerName=name, VersionNumber=1)["Policy"])
    assert [st["Sid"] for st in policy["Statement"]] == ["team"]
    fn = s.unique_name("allowed")
    create(fn)
    assert json.loads(other.invoke(FunctionName=fn)["Payload"].read()) == 42
    assert other.get_layer_version_by_arn(Arn=layer["LayerVersionArn"])["Version"] == 1
    # The other account cannot change or delete the layer.
    fails(lambda: other.delete_layer_version(LayerName=layer["LayerArn"], VersionNumber=1), "AccessDeniedException")
    fails(lambda: lambda_client.add_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="team", Action="lambda:GetLayerVersion", Principal="*"), "ResourceConflictException")
    lambda_client.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="team")
    fails(lambda: create(s.unique_name("denied-again")), "AccessDeniedException")


def test_bad_layer_input_is_refused(lambda_client, raw_lambda_client, wasm_fixtures):
    name = s.unique_name("bad")
    layer = lambda_client.publish_layer_version(LayerName=name, Content={"ZipFile": zipped({"python/x.py": "X = 1\n"})})
    arn = layer["LayerVersionArn"]
    code = {"ZipFile": zipped({"app.py": "def handler(e, c):\n    return 1\n"})}

    def create(layers, runtime=PYTHON, handler="app.handler", zip_code=code):
        return raw_lambda_client.create_function(FunctionName=s.unique_name("bad-fn"), Runtime=runtime, Role=ROLE,
                                                 Handler=handler, Code=zip_code, Layers=layers)

    assert "at most 5" in fails(lambda: create([arn] * 6), "InvalidParameterValueException")
    fails(lambda: create([arn, arn]), "InvalidParameterValueException")
    fails(lambda: create([arn.rsplit(":", 1)[0]]), "ValidationException")
    fails(lambda: create([arn.rsplit(":", 1)[0] + ":99"]), "InvalidParameterValueException")
    wasm = {"ZipFile": s.make_fixture_zip("echo")}
    assert "/opt" in fails(lambda: create([arn], runtime=s.RUNTIME, handler="echo.wasm", zip_code=wasm), "InvalidParameterValueException")
    fails(lambda: raw_lambda_client.publish_layer_version(LayerName="bad name!", Content={"ZipFile": b"PK"}), "ValidationException")
    fails(lambda: raw_lambda_client.publish_layer_version(LayerName=name, Content={"ZipFile": b"not a zip"}), "InvalidParameterValueException")
    fails(lambda: raw_lambda_client.publish_layer_version(LayerName=name, Content={"ZipFile": zipped({"../escape.py": "x"})}), "InvalidParameterValueException")
    fails(lambda: raw_lambda_client.add_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="s1", Action="lambda:InvokeFunction", Principal="*"), "InvalidParameterValueException")
    fails(lambda: raw_lambda_client.add_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="s1", Action="lambda:GetLayerVersion", Principal="someone"), "InvalidParameterValueException")
    fails(lambda: raw_lambda_client.get_layer_version(LayerName=name, VersionNumber=7), "ResourceNotFoundException")
    # Nothing was published by the refused calls.
    assert [v["Version"] for v in lambda_client.list_layer_versions(LayerName=name)["LayerVersions"]] == [1]


SAM_LAYER = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
      CompatibleRuntimes: [{PYTHON}]
      RetentionPolicy: Delete
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: {NAME}
      CodeUri: src/
      Handler: app.handler
      Runtime: {PYTHON}
      Layers: [!Ref Shared]
Outputs:
  LayerArn:
    Value: !Ref Shared
"""


def test_layers_declared_in_a_sam_template(nimbus, lambda_client, tmp_path):
    app = tmp_path / "layered-app"
    (app / "layer" / "python").mkdir(parents=True)
    (app / "src").mkdir()
    (app / "layer" / "python" / "tools.py").write_text("def answer():\n    return 'from the layer'\n")
    (app / "src" / "app.py").write_text("import tools\ndef handler(e, c):\n    return tools.answer()\n")
    name = s.unique_name("sam-layered")
    (app / "template.yaml").write_text(SAM_LAYER.replace("{PYTHON}", PYTHON).replace("{NAME}", name))
    nimbus.ok("deploy", "-f", str(app / "template.yaml"), timeout=300)
    assert json.loads(lambda_client.invoke(FunctionName=name)["Payload"].read()) == "from the layer"
    layer_arn = lambda_client.get_function_configuration(FunctionName=name)["Layers"][0]["Arn"]
    # New layer content: a new layer version, and the function moves to it.
    (app / "layer" / "python" / "tools.py").write_text("def answer():\n    return 'newer'\n")
    nimbus.ok("deploy", "-f", str(app / "template.yaml"), timeout=300)
    assert json.loads(lambda_client.invoke(FunctionName=name)["Payload"].read()) == "newer"
    newer = lambda_client.get_function_configuration(FunctionName=name)["Layers"][0]["Arn"]
    assert newer != layer_arn and newer.endswith(":2")
    nimbus.ok("remove", "-f", str(app / "template.yaml"), timeout=300)
    layer_name = newer.split(":")[6]
    assert lambda_client.list_layer_versions(LayerName=layer_name)["LayerVersions"] == []


def test_version_numbers_are_never_given_again(node_factory):
    n = node_factory()
    lam = s.lambda_client(n.endpoint)
    content = {"ZipFile": zipped({"python/x.py": "X = 1\n"})}
    assert [lam.publish_layer_version(LayerName="numbers", Content=content)["Version"] for _ in range(2)] == [1, 2]
    lam.delete_layer_version(LayerName="numbers", VersionNumber=2)
    n.stop()
    n.start()
    lam = s.lambda_client(n.endpoint)
    assert lam.publish_layer_version(LayerName="numbers", Content=content)["Version"] == 3
    assert [v["Version"] for v in lam.list_layer_versions(LayerName="numbers")["LayerVersions"]] == [3, 1]
    # A share limited to an organization is refused: this node has none.
    fails(lambda: lam.add_layer_version_permission(LayerName="numbers", VersionNumber=3, StatementId="org",
                                                   Action="lambda:GetLayerVersion", Principal="*",
                                                   OrganizationId="o-abcdefghij"), "InvalidParameterValueException")

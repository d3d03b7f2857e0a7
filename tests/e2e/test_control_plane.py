"""Lambda control plane through the aws CLI and boto3."""

from __future__ import annotations

import json

import pytest

import e2e_support as s


def write_zip(tmp_path, data: bytes, name: str = "code.zip"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def cli_create(aws, tmp_path, name: str, zip_data: bytes, handler: str, *extra: str) -> dict:
    path = write_zip(tmp_path, zip_data, f"{name}.zip")
    return aws(
        "lambda", "create-function",
        "--function-name", name,
        "--runtime", s.RUNTIME,
        "--role", s.ROLE,
        "--handler", handler,
        "--zip-file", f"fileb://{path}",
        *extra,
    )


def check_configuration(cfg: dict, name: str, handler: str, zip_data: bytes) -> None:
    assert cfg["FunctionName"] == name
    assert cfg["Runtime"] == s.RUNTIME
    assert cfg["Handler"] == handler
    assert cfg["CodeSha256"] == s.code_sha256(zip_data)
    assert cfg["CodeSize"] == len(zip_data)
    assert cfg["FunctionArn"].startswith("arn:aws:lambda:")
    assert cfg["FunctionArn"].endswith(f":function:{name}")


# --------------------------------------------------------------------------
# aws CLI
# --------------------------------------------------------------------------


def test_cli_create_wait_get(aws, tmp_path, make_zip):
    name = s.unique_name("cli-create")
    data = make_zip("echo")

    created = cli_create(aws, tmp_path, name, data, "echo.wasm")
    check_configuration(created, name, "echo.wasm", data)
    # Lambda's defaults
    assert created["MemorySize"] == 128
    assert created["Timeout"] == 3

    aws("lambda", "wait", "function-active-v2", "--function-name", name, timeout=90)

    got = aws("lambda", "get-function", "--function-name", name)
    cfg = got["Configuration"]
    check_configuration(cfg, name, "echo.wasm", data)
    assert cfg["State"] == "Active"
    assert cfg["LastUpdateStatus"] == "Successful"

    conf = aws("lambda", "get-function-configuration", "--function-name", name)
    check_configuration(conf, name, "echo.wasm", data)
    assert conf["State"] == "Active"
    assert conf["LastUpdateStatus"] == "Successful"
    assert conf["MemorySize"] == 128
    assert conf["Timeout"] == 3

    meta, body = aws.invoke(name, '{"via":"aws-cli"}')
    assert meta["StatusCode"] == 200
    assert "FunctionError" not in meta
    assert json.loads(body) == {"via": "aws-cli"}


def test_cli_create_with_options(aws, tmp_path, make_zip):
    name = s.unique_name("cli-opts")
    data = make_zip("env")
    created = cli_create(
        aws, tmp_path, name, data, "env.wasm",
        "--memory-size", "256",
        "--timeout", "10",
        "--description", "made by the aws cli",
        "--environment", json.dumps({"Variables": {"COLOUR": "blue"}}),
    )
    assert created["MemorySize"] == 256
    assert created["Timeout"] == 10
    assert created["Description"] == "made by the aws cli"
    assert created["Environment"]["Variables"] == {"COLOUR": "blue"}
    aws("lambda", "wait", "function-active-v2", "--function-name", name, timeout=90)

    _, body = aws.invoke(name, "{}")
    env = json.loads(body)
    assert env["COLOUR"] == "blue"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"


def test_cli_create_duplicate_is_conflict(aws, tmp_path, make_zip):
    name = s.unique_name("cli-dup")
    data = make_zip("echo")
    cli_create(aws, tmp_path, name, data, "echo.wasm")
    path = write_zip(tmp_path, data, "again.zip")
    aws.fails(
        "lambda", "create-function",
        "--function-name", name,
        "--runtime", s.RUNTIME,
        "--role", s.ROLE,
        "--handler", "echo.wasm",
        "--zip-file", f"fileb://{path}",
        code="ResourceConflictException",
    )


def test_cli_update_function_code(aws, tmp_path, make_zip):
    name = s.unique_name("cli-code")
    old = make_zip("echo")
    cli_create(aws, tmp_path, name, old, "echo.wasm")
    aws("lambda", "wait", "function-active-v2", "--function-name", name, timeout=90)
    _, body = aws.invoke(name, '{"before":"update"}')
    assert json.loads(body) == {"before": "update"}

    # Same entry name (the handler stays valid), different module.
    new = make_zip("env", entry="echo.wasm")
    path = write_zip(tmp_path, new, "new.zip")
    updated = aws(
        "lambda", "update-function-code",
        "--function-name", name,
        "--zip-file", f"fileb://{path}",
    )
    assert updated["CodeSha256"] == s.code_sha256(new)
    assert updated["CodeSha256"] != s.code_sha256(old)
    assert updated["CodeSize"] == len(new)

    aws("lambda", "wait", "function-updated-v2", "--function-name", name, timeout=90)
    conf = aws("lambda", "get-function-configuration", "--function-name", name)
    assert conf["CodeSha256"] == s.code_sha256(new)
    assert conf["LastUpdateStatus"] == "Successful"

    _, body = aws.invoke(name, '{"after":"update"}')
    env = json.loads(body)
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name


def test_cli_update_function_configuration(aws, tmp_path, wasm_fixtures):
    name = s.unique_name("cli-config")
    data = s.zip_bytes(
        {
            "echo.wasm": s.fixture_bytes("echo"),
            "env.wasm": s.fixture_bytes("env"),
        }
    )
    cli_create(aws, tmp_path, name, data, "echo.wasm")
    aws("lambda", "wait", "function-active-v2", "--function-name", name, timeout=90)
    _, body = aws.invoke(name, '{"handler":"echo"}')
    assert json.loads(body) == {"handler": "echo"}

    variables = {"FOO": "bar", "WITH_SPACES": "a b c", "UNICODE": "h\u00e9llo"}
    updated = aws(
        "lambda", "update-function-configuration",
        "--function-name", name,
        "--memory-size", "512",
        "--timeout", "30",
        "--environment", json.dumps({"Variables": variables}),
        "--description", "updated description",
        "--handler", "env.wasm",
    )
    assert updated["MemorySize"] == 512
    assert updated["Timeout"] == 30
    assert updated["Environment"]["Variables"] == variables
    assert updated["Description"] == "updated description"
    assert updated["Handler"] == "env.wasm"

    aws("lambda", "wait", "function-updated-v2", "--function-name", name, timeout=90)

    cfg = aws("lambda", "get-function", "--function-name", name)["Configuration"]
    assert cfg["MemorySize"] == 512
    assert cfg["Timeout"] == 30
    assert cfg["Environment"]["Variables"] == variables
    assert cfg["Description"] == "updated description"
    assert cfg["Handler"] == "env.wasm"
    assert cfg["LastUpdateStatus"] == "Successful"
    # A configuration change leaves the code alone.
    assert cfg["CodeSha256"] == s.code_sha256(data)

    meta, body = aws.invoke(name, "{}")
    assert meta["StatusCode"] == 200
    env = json.loads(body)
    for key, value in variables.items():
        assert env[key] == value
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name


def test_cli_invoke_log_tail(aws, tmp_path, make_zip):
    name = s.unique_name("cli-tail")
    cli_create(aws, tmp_path, name, make_zip("logger"), "logger.wasm")
    aws("lambda", "wait", "function-active-v2", "--function-name", name, timeout=90)

    meta, body = aws.invoke(name, '{"n":1}', "--log-type", "Tail")
    assert meta["StatusCode"] == 200
    assert meta["ExecutedVersion"] == "$LATEST"
    assert json.loads(body) == {"n": 1}
    log = s.decode_log_result(meta.get("LogResult"))
    first = s.check_single_invocation_log(log)
    for i in (1, 2, 3):
        assert f"log line {i}" in log
    assert first.init_ms is not None, f"first invoke should be a cold start:\n{log}"

    meta, body = aws.invoke(name, '{"n":2}', "--log-type", "Tail")
    assert json.loads(body) == {"n": 2}
    log = s.decode_log_result(meta.get("LogResult"))
    second = s.check_single_invocation_log(log)
    assert second.init_ms is None, f"second invoke should be warm:\n{log}"
    assert second.request_id != first.request_id


def test_cli_invoke_without_payload(aws, deploy):
    name = deploy("echo")
    meta, body = aws.invoke(name)
    assert meta["StatusCode"] == 200
    assert json.loads(body) == {}


def test_cli_invoke_dry_run(aws, deploy):
    name = deploy("echo")
    meta, body = aws.invoke(name, "{}", "--invocation-type", "DryRun")
    assert meta["StatusCode"] == 204
    assert body == b""


def test_cli_invoke_function_error(aws, deploy):
    name = deploy("fail")
    meta, body = aws.invoke(name, "{}")
    assert meta["StatusCode"] == 200
    assert meta["FunctionError"] == "Unhandled"
    err = json.loads(body)
    assert err["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in err["errorMessage"]


def test_cli_delete_function(aws, deploy):
    name = deploy("echo")
    aws("lambda", "delete-function", "--function-name", name)
    aws.fails("lambda", "get-function", "--function-name", name,
              code="ResourceNotFoundException")
    aws.fails("lambda", "get-function-configuration", "--function-name", name,
              code="ResourceNotFoundException")
    aws.fails("lambda", "delete-function", "--function-name", name,
              code="ResourceNotFoundException")
    listed = aws("lambda", "list-functions")
    assert name not in {f["FunctionName"] for f in listed["Functions"]}


def test_cli_unknown_function(aws, tmp_path):
    name = s.unique_name("cli-missing")
    aws.fails("lambda", "get-function", "--function-name", name,
              code="ResourceNotFoundException")
    outfile = tmp_path / "never.out"
    aws.fails("lambda", "invoke", "--function-name", name, str(outfile),
              code="ResourceNotFoundException")


# --------------------------------------------------------------------------
# ListFunctions pagination
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_functions(deploy):
    prefix = s.unique_name("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for n in names:
        deploy("echo", name=n)
    return names


def check_each_once(all_names: list[str], mine: list[str]) -> None:
    assert len(all_names) == len(set(all_names)), (
        f"functions listed more than once: "
        f"{sorted(n for n in set(all_names) if all_names.count(n) > 1)}"
    )
    for n in mine:
        assert all_names.count(n) == 1, f"{n} listed {all_names.count(n)} times"


def test_cli_list_functions_max_items(aws, five_functions):
    names: list[str] = []
    token = None
    for _ in range(10_000):
        args = ["lambda", "list-functions", "--max-items", "2"]
        if token:
            args += ["--starting-token", token]
        page = aws(*args)
        assert len(page["Functions"]) <= 2
        names.extend(f["FunctionName"] for f in page["Functions"])
        token = page.get("NextToken")
        if not token:
            break
    else:
        pytest.fail("list-functions never stopped paginating")
    check_each_once(names, five_functions)


def test_cli_list_functions_page_size(aws, five_functions):
    # The CLI fetches every page of 2 (MaxItems=2 on the wire) and merges them.
    page = aws("lambda", "list-functions", "--page-size", "2")
    names = [f["FunctionName"] for f in page["Functions"]]
    check_each_once(names, five_functions)
    assert "NextToken" not in page


def test_boto3_list_functions_marker(lambda_client, five_functions):
    names: list[str] = []
    params: dict = {"MaxItems": 2}
    pages = 0
    while True:
        page = lambda_client.list_functions(**params)
        pages += 1
        assert pages < 10_000
        assert len(page["Functions"]) <= 2
        names.extend(f["FunctionName"] for f in page["Functions"])
        marker = page.get("NextMarker")
        if not marker:
            break
        params["Marker"] = marker
    assert pages >= 3  # at least the five functions of this module
    check_each_once(names, five_functions)

    # The configuration in the listing is the function's configuration.
    listed = {}
    for page in lambda_client.get_paginator("list_functions").paginate(
        PaginationConfig={"PageSize": 2}
    ):
        for f in page["Functions"]:
            listed[f["FunctionName"]] = f
    for n in five_functions:
        assert listed[n]["Runtime"] == s.RUNTIME
        assert listed[n]["Handler"] == "echo.wasm"


def test_boto3_list_functions_unpaged(lambda_client, five_functions):
    names = s.list_all_function_names(lambda_client)
    check_each_once(names, five_functions)


# --------------------------------------------------------------------------
# boto3
# --------------------------------------------------------------------------


def test_boto3_create_get(lambda_client, make_zip):
    name = s.unique_name("b3-create")
    data = make_zip("echo")
    created = s.create_function(
        lambda_client, name, data, "echo.wasm", memory=256, timeout=7,
        description="boto3 function", env={"GREETING": "1"},
    )
    check_configuration(created, name, "echo.wasm", data)
    assert created["MemorySize"] == 256
    assert created["Timeout"] == 7
    assert created["Description"] == "boto3 function"
    assert created["Environment"]["Variables"] == {"GREETING": "1"}

    cfg = lambda_client.get_function(FunctionName=name)["Configuration"]
    check_configuration(cfg, name, "echo.wasm", data)
    assert cfg["State"] == "Active"
    assert cfg["LastUpdateStatus"] == "Successful"
    assert cfg["MemorySize"] == 256
    assert cfg["Timeout"] == 7
    assert cfg["Environment"]["Variables"] == {"GREETING": "1"}

    conf = lambda_client.get_function_configuration(FunctionName=name)
    check_configuration(conf, name, "echo.wasm", data)
    assert conf["State"] == "Active"


def test_boto3_limits_accepted(lambda_client, make_zip):
    """The boundaries of the allowed ranges are valid."""
    name = s.unique_name("b3-limits")
    s.create_function(lambda_client, name, make_zip("echo"), "echo.wasm",
                      memory=10240, timeout=900)
    cfg = lambda_client.get_function_configuration(FunctionName=name)
    assert cfg["MemorySize"] == 10240
    assert cfg["Timeout"] == 900
    lambda_client.update_function_configuration(FunctionName=name, MemorySize=128, Timeout=1)
    s.wait_updated(lambda_client, name)
    cfg = lambda_client.get_function_configuration(FunctionName=name)
    assert cfg["MemorySize"] == 128
    assert cfg["Timeout"] == 1


def test_boto3_name_of_64_chars_accepted(lambda_client, make_zip):
    name = s.unique_name("b3-long")
    name = (name + "-" + "x" * 64)[:64]
    assert len(name) == 64
    s.create_function(lambda_client, name, make_zip("echo"), "echo.wasm")
    inv = s.invoke(lambda_client, name, {"long": True})
    assert inv.json() == {"long": True}


def test_boto3_update_code(lambda_client, make_zip):
    name = s.unique_name("b3-code")
    old = make_zip("echo")
    created = s.create_function(lambda_client, name, old, "echo.wasm")
    assert created["CodeSha256"] == s.code_sha256(old)
    assert s.invoke(lambda_client, name, {"v": 1}).json() == {"v": 1}

    new = make_zip("env", entry="echo.wasm")
    updated = lambda_client.update_function_code(FunctionName=name, ZipFile=new)
    assert updated["CodeSha256"] == s.code_sha256(new)
    assert updated["CodeSha256"] != created["CodeSha256"]
    s.wait_updated(lambda_client, name)

    cfg = lambda_client.get_function(FunctionName=name)["Configuration"]
    assert cfg["CodeSha256"] == s.code_sha256(new)
    assert cfg["LastUpdateStatus"] == "Successful"
    assert cfg["State"] == "Active"

    env = s.invoke(lambda_client, name, {"v": 2}).json()
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name


def test_boto3_update_configuration(lambda_client, wasm_fixtures):
    name = s.unique_name("b3-config")
    data = s.zip_bytes(
        {"echo.wasm": s.fixture_bytes("echo"), "env.wasm": s.fixture_bytes("env")}
    )
    s.create_function(lambda_client, name, data, "echo.wasm", env={"OLD": "1"})

    resp = lambda_client.update_function_configuration(
        FunctionName=name,
        MemorySize=1024,
        Timeout=20,
        Environment={"Variables": {"NEW": "2"}},
        Handler="env.wasm",
        Description="reconfigured",
    )
    assert resp["MemorySize"] == 1024
    assert resp["Timeout"] == 20
    assert resp["Environment"]["Variables"] == {"NEW": "2"}
    assert resp["Handler"] == "env.wasm"
    assert resp["Description"] == "reconfigured"
    s.wait_updated(lambda_client, name)

    env = s.invoke(lambda_client, name, {}).json()
    assert env["NEW"] == "2"
    assert "OLD" not in env  # the variables were replaced, not merged
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "1024"

    # Updating one field leaves the others alone.
    lambda_client.update_function_configuration(FunctionName=name, Description="only this")
    s.wait_updated(lambda_client, name)
    cfg = lambda_client.get_function_configuration(FunctionName=name)
    assert cfg["Description"] == "only this"
    assert cfg["MemorySize"] == 1024
    assert cfg["Timeout"] == 20
    assert cfg["Handler"] == "env.wasm"
    assert cfg["Environment"]["Variables"] == {"NEW": "2"}


def test_boto3_delete(lambda_client, deploy):
    name = deploy("echo")
    resp = lambda_client.delete_function(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    s.assert_client_error(lambda: lambda_client.get_function(FunctionName=name),
                          "ResourceNotFoundException", 404)
    s.assert_client_error(lambda: s.invoke(lambda_client, name, {}),
                          "ResourceNotFoundException", 404)
    assert name not in s.list_all_function_names(lambda_client)


def test_boto3_name_reusable_after_delete(lambda_client, make_zip):
    name = s.unique_name("b3-reuse")
    s.create_function(lambda_client, name, make_zip("echo"), "echo.wasm")
    lambda_client.delete_function(FunctionName=name)
    data = make_zip("env")
    created = s.create_function(lambda_client, name, data, "env.wasm")
    assert created["CodeSha256"] == s.code_sha256(data)
    env = s.invoke(lambda_client, name, {}).json()
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name

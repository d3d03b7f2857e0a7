"""Bad requests get Lambda's errors, and the node keeps serving afterwards."""

from __future__ import annotations

import pytest

import e2e_support as s

INVALID = ("InvalidParameterValueException", 400)
# Lambda reports violations of its API model's constraints (name pattern, ranges) this way.
VALIDATION = ("ValidationException", 400)
NOT_FOUND = ("ResourceNotFoundException", 404)
CONFLICT = ("ResourceConflictException", 409)

INVALID_MODULE = b"\0asm\x01\0\0\0" + b"\xde\xad\xbe\xef this is not a wasm section" * 8


@pytest.fixture(scope="session")
def big_unpacked_zip(wasm_fixtures) -> bytes:
    return s.zip_with_large_unpacked_size(260)


def create(client, name, zip_data, handler="echo.wasm", **extra):
    params = {
        "FunctionName": name,
        "Runtime": s.RUNTIME,
        "Role": s.ROLE,
        "Handler": handler,
        "Code": {"ZipFile": zip_data},
    }
    params.update(extra)
    return client.create_function(**params)


def assert_absent(client, name):
    s.assert_client_error(lambda: client.get_function(FunctionName=name), *NOT_FOUND)


# --------------------------------------------------------------------------
# CreateFunction
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["bad name!", "a" * 65, "dot.name", "with/slash", "caf\u00e9"],
    ids=["space-bang", "65-chars", "dot", "slash", "non-ascii"],
)
def test_create_bad_name(raw_lambda_client, make_zip, assert_serving, name):
    s.assert_client_error(lambda: create(raw_lambda_client, name, make_zip("echo")), *VALIDATION)
    assert_serving()


@pytest.mark.parametrize("runtime", ["python3.12", "nodejs18.x", "java21", "go1.x", "wasm32-wasip2", "provided.al2023"])
def test_create_unsupported_runtime(raw_lambda_client, make_zip, assert_serving, runtime):
    name = s.unique_name("runtime")
    s.assert_client_error(
        lambda: create(raw_lambda_client, name, make_zip("echo"), Runtime=runtime), *INVALID
    )
    assert_absent(raw_lambda_client, name)
    assert_serving()


@pytest.mark.parametrize(
    "body",
    [b"this is not a zip file", b"PK\x03\x04 truncated", b""],
    ids=["text", "truncated-zip", "empty"],
)
def test_create_body_not_a_zip(raw_lambda_client, assert_serving, body):
    name = s.unique_name("notzip")
    s.assert_client_error(lambda: create(raw_lambda_client, name, body), *INVALID)
    assert_absent(raw_lambda_client, name)
    assert_serving()


def test_create_zip_missing_handler(raw_lambda_client, make_zip, assert_serving):
    name = s.unique_name("nohandler")
    s.assert_client_error(
        lambda: create(raw_lambda_client, name, make_zip("echo"), handler="missing.wasm"),
        *INVALID,
    )
    assert_absent(raw_lambda_client, name)
    assert_serving()


def test_create_handler_outside_zip(raw_lambda_client, make_zip, assert_serving):
    name = s.unique_name("handlerpath")
    s.assert_client_error(
        lambda: create(raw_lambda_client, name, make_zip("echo"), handler="../echo.wasm"),
        *INVALID,
    )
    assert_absent(raw_lambda_client, name)
    assert_serving()


@pytest.mark.parametrize(
    "bad_entry",
    ["../evil.wasm", "sub/../../evil.wasm", "/abs/evil.wasm"],
    ids=["dotdot", "nested-dotdot", "absolute"],
)
def test_create_zip_with_unsafe_entry(raw_lambda_client, wasm_fixtures, assert_serving, bad_entry):
    name = s.unique_name("zipslip")
    echo = s.fixture_bytes("echo")
    data = s.zip_bytes({"echo.wasm": echo, bad_entry: echo})
    s.assert_client_error(lambda: create(raw_lambda_client, name, data), *INVALID)
    assert_absent(raw_lambda_client, name)
    assert_serving()


def test_create_zip_unpacking_over_250_mb(raw_lambda_client, big_unpacked_zip, assert_serving):
    assert len(big_unpacked_zip) < 5 * 1024 * 1024  # small on the wire
    name = s.unique_name("zipbomb")
    s.assert_client_error(lambda: create(raw_lambda_client, name, big_unpacked_zip), *INVALID)
    assert_absent(raw_lambda_client, name)
    assert_serving()


@pytest.mark.parametrize(
    "module",
    [INVALID_MODULE, b"plain text, not a module\n"],
    ids=["bad-sections", "not-wasm"],
)
def test_create_invalid_module(raw_lambda_client, assert_serving, module):
    name = s.unique_name("badwasm")
    data = s.zip_bytes({"echo.wasm": module})
    s.assert_client_error(lambda: create(raw_lambda_client, name, data), *INVALID)
    assert_absent(raw_lambda_client, name)
    assert_serving()


@pytest.mark.parametrize("memory", [127, 64, 10241, 20000])
def test_create_memory_out_of_range(raw_lambda_client, make_zip, assert_serving, memory):
    name = s.unique_name("memory")
    s.assert_client_error(
        lambda: create(raw_lambda_client, name, make_zip("echo"), MemorySize=memory), *VALIDATION
    )
    assert_absent(raw_lambda_client, name)
    assert_serving()


@pytest.mark.parametrize("timeout", [0, 901, 3600])
def test_create_timeout_out_of_range(raw_lambda_client, make_zip, assert_serving, timeout):
    name = s.unique_name("timeout")
    s.assert_client_error(
        lambda: create(raw_lambda_client, name, make_zip("echo"), Timeout=timeout), *VALIDATION
    )
    assert_absent(raw_lambda_client, name)
    assert_serving()


@pytest.mark.parametrize(
    "key",
    [
        "AWS_REGION",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
    ],
)
def test_create_reserved_environment_key(raw_lambda_client, make_zip, assert_serving, key):
    name = s.unique_name("reserved")
    s.assert_client_error(
        lambda: create(
            raw_lambda_client, name, make_zip("env"), handler="env.wasm",
            Environment={"Variables": {"MINE": "ok", key: "spoofed"}},
        ),
        *INVALID,
    )
    assert_absent(raw_lambda_client, name)
    assert_serving()


def test_create_existing_name_is_conflict(lambda_client, deploy, make_zip, assert_serving):
    name = deploy("echo")
    before = lambda_client.get_function_configuration(FunctionName=name)
    s.assert_client_error(
        lambda: create(lambda_client, name, make_zip("env"), handler="env.wasm"), *CONFLICT
    )
    after = lambda_client.get_function_configuration(FunctionName=name)
    assert after["CodeSha256"] == before["CodeSha256"]
    assert after["Handler"] == "echo.wasm"
    assert s.invoke(lambda_client, name, {"still": "echo"}).json() == {"still": "echo"}
    assert_serving()


# --------------------------------------------------------------------------
# Unknown functions
# --------------------------------------------------------------------------


def test_unknown_function_everywhere(lambda_client, make_zip, assert_serving):
    name = s.unique_name("ghost")
    calls = {
        "GetFunction": lambda: lambda_client.get_function(FunctionName=name),
        "GetFunctionConfiguration": lambda: lambda_client.get_function_configuration(FunctionName=name),
        "Invoke": lambda: s.invoke(lambda_client, name, {}),
        "DeleteFunction": lambda: lambda_client.delete_function(FunctionName=name),
        "UpdateFunctionCode": lambda: lambda_client.update_function_code(
            FunctionName=name, ZipFile=make_zip("echo")
        ),
        "UpdateFunctionConfiguration": lambda: lambda_client.update_function_configuration(
            FunctionName=name, MemorySize=256
        ),
    }
    for op, call in calls.items():
        try:
            s.assert_client_error(call, *NOT_FOUND)
        except AssertionError as err:
            raise AssertionError(f"{op}: {err}") from None
    assert_absent(lambda_client, name)  # nothing was created along the way
    assert_serving()


# --------------------------------------------------------------------------
# Updates with bad input leave the function as it was
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body_kind", ["not-a-zip", "invalid-module", "unsafe-entry"],
)
def test_update_code_with_bad_zip(raw_lambda_client, deploy, assert_serving, body_kind):
    name = deploy("echo")
    before = raw_lambda_client.get_function_configuration(FunctionName=name)
    echo = s.fixture_bytes("echo")
    body = {
        "not-a-zip": b"definitely not a zip",
        "invalid-module": s.zip_bytes({"echo.wasm": INVALID_MODULE}),
        "unsafe-entry": s.zip_bytes({"echo.wasm": echo, "../evil.wasm": echo}),
    }[body_kind]
    s.assert_client_error(
        lambda: raw_lambda_client.update_function_code(FunctionName=name, ZipFile=body), *INVALID
    )
    after = raw_lambda_client.get_function_configuration(FunctionName=name)
    assert after["CodeSha256"] == before["CodeSha256"]
    assert s.invoke(raw_lambda_client, name, {"old": "code"}).json() == {"old": "code"}
    assert_serving()


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"MemorySize": 64}, VALIDATION),
        ({"MemorySize": 10241}, VALIDATION),
        ({"Timeout": 0}, VALIDATION),
        ({"Timeout": 901}, VALIDATION),
        ({"Environment": {"Variables": {"AWS_REGION": "eu-west-1"}}}, INVALID),
    ],
    ids=["memory-low", "memory-high", "timeout-low", "timeout-high", "reserved-env"],
)
def test_update_configuration_out_of_range(raw_lambda_client, deploy, assert_serving, change, expected):
    name = deploy("echo", memory=256, timeout=5)
    s.assert_client_error(
        lambda: raw_lambda_client.update_function_configuration(FunctionName=name, **change),
        *expected,
    )
    cfg = raw_lambda_client.get_function_configuration(FunctionName=name)
    assert cfg["MemorySize"] == 256
    assert cfg["Timeout"] == 5
    assert not cfg.get("Environment", {}).get("Variables")
    assert s.invoke(raw_lambda_client, name, {"unchanged": 1}).json() == {"unchanged": 1}
    assert_serving()


# --------------------------------------------------------------------------
# Invoke
# --------------------------------------------------------------------------


def test_invoke_bad_payloads_then_serving(lambda_client, good_function, assert_serving):
    s.assert_client_error(
        lambda: s.invoke(lambda_client, good_function, b"{not json"),
        "InvalidRequestContentException", 400,
    )
    assert_serving()
    s.assert_client_error(
        lambda: s.invoke(lambda_client, good_function, b'"' + b"x" * s.PAYLOAD_LIMIT + b'"'),
        "RequestTooLargeException", 413,
    )
    assert_serving()


def test_many_bad_requests_in_a_row(raw_lambda_client, make_zip, assert_serving):
    for i in range(20):
        s.assert_client_error(
            lambda: create(raw_lambda_client, f"bad name {i}!", make_zip("echo")), *VALIDATION
        )
        s.assert_client_error(
            lambda: create(raw_lambda_client, s.unique_name("junk"), b"junk " * i), *INVALID
        )
    assert_serving()


def test_invoke_bad_headers_then_serving(node, good_function, assert_serving):
    """Invoke's headers are checked at the edge: unknown invocation or log types and a client
    context that is not base64 JSON are refused with Lambda's errors, and nothing runs."""
    import http.client

    host, port = node.endpoint.removeprefix("http://").split(":")
    cases = [
        ({"X-Amz-Invocation-Type": "Sometimes"}, 400, "ValidationException"),
        ({"X-Amz-Log-Type": "Everything"}, 400, "ValidationException"),
        ({"X-Amz-Client-Context": "!!not base64!!"}, 400, "InvalidRequestContentException"),
        ({"X-Amz-Client-Context": "bm90IGpzb24="}, 400, "InvalidRequestContentException"),
        ({"X-Amz-Client-Context": "e30=" * 1000}, 413, "RequestTooLargeException"),
    ]
    for headers, status, code in cases:
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", f"/2015-03-31/functions/{good_function}/invocations", body=b"{}", headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert (resp.status, resp.getheader("x-amzn-ErrorType")) == (status, code), headers
    assert_serving()

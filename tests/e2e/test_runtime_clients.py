"""AWS's own runtime interface clients, unmodified, run as nimbus functions: awslambdaric
(Python, from PyPI), aws-lambda-ric (Node.js, from npm) and the lambda_runtime crate (Rust),
all as custom `provided` runtimes."""

from __future__ import annotations

import subprocess
import sys

import pytest

import e2e_support as s
import process_support as p

RUST_FIXTURE = s.REPO_ROOT / "tests" / "fixtures" / "rust-lambda"
RUST_TARGET = s.REPO_ROOT / "target" / "rust-lambda"


def awslambdaric_package(tmp_path_factory) -> bytes:
    deps = tmp_path_factory.mktemp("ric") / "deps"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--target", str(deps), "awslambdaric"],
        check=True, timeout=600,
    )
    extra = {}
    for path in sorted(deps.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            extra[f"deps/{path.relative_to(deps)}"] = path.read_bytes()
    return p.zip_dir(p.PROCESS_FIXTURES / "python-ric", extra)


@pytest.fixture(scope="module")
def ric_zip(tmp_path_factory):
    return awslambdaric_package(tmp_path_factory)


@pytest.fixture(scope="module")
def rust_zip():
    subprocess.run(
        ["cargo", "build", "--release", "--target-dir", str(RUST_TARGET)],
        cwd=RUST_FIXTURE, check=True, timeout=1200, capture_output=True,
    )
    binary = RUST_TARGET / "release" / "bootstrap"
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o100755 << 16
        z.writestr(info, binary.read_bytes())
    return buf.getvalue()


def create(client, name, zip_bytes, handler):
    client.create_function(
        FunctionName=name, Runtime="provided.al2023", Role=s.ROLE, Handler=handler,
        Code={"ZipFile": zip_bytes},
    )


def test_awslambdaric_function(lambda_client, ric_zip):
    name = s.unique_name("ric")
    create(lambda_client, name, ric_zip, "app.handler")
    first = s.invoke(lambda_client, name, {"x": 1}, tail=True)
    assert first.function_error is None, first.body
    assert first.json() == {"ric": True, "event": {"x": 1}, "function_name": name}
    assert s.check_single_invocation_log(s.decode_log_result(first.log_result)).init_ms is not None
    assert s.invoke(lambda_client, name, {"x": 2}).json()["event"] == {"x": 2}


def test_awslambdaric_error_shape(lambda_client, ric_zip):
    name = s.unique_name("ric-fail")
    create(lambda_client, name, ric_zip, "app.fails")
    result = s.invoke(lambda_client, name, {})
    assert result.function_error == "Unhandled"
    body = result.json()
    assert body["errorType"] == "RuntimeError"
    assert body["errorMessage"] == "ric says no"
    assert isinstance(body["stackTrace"], list)


def test_rust_lambda_runtime_function(lambda_client, rust_zip):
    name = s.unique_name("rust")
    create(lambda_client, name, rust_zip, "bootstrap")
    result = s.invoke(lambda_client, name, {"y": 2})
    assert result.function_error is None, result.body
    out = result.json()
    assert out["rust"] is True and out["event"] == {"y": 2}
    assert out["request_id"] == result.request_id
    assert out["function_name"] == name
    failed = s.invoke(lambda_client, name, {"fail": True})
    assert failed.function_error == "Unhandled"
    assert failed.json()["errorMessage"] == "rust says no"


@pytest.fixture(scope="module")
def node_ric_zip(tmp_path_factory):
    """aws-lambda-ric from npm. Its install script compiles the native Runtime API client and
    its bundled libcurl from source, so it needs cmake, autoconf, automake, libtool and a C++
    compiler (the test command installs them)."""
    work = tmp_path_factory.mktemp("node-ric")
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "aws-lambda-ric@3.3.0"],
        cwd=work, check=True, timeout=1500, capture_output=True,
    )
    package = work / "node_modules" / "aws-lambda-ric"
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for sub in ["bin", "dist"]:
            for path in sorted((package / sub).rglob("*")):
                if path.is_file():
                    z.write(path, f"node_modules/aws-lambda-ric/{path.relative_to(package)}")
        z.write(package / "package.json", "node_modules/aws-lambda-ric/package.json")
        z.writestr("index.js", "exports.handler = async (event, context) => "
                               "({ ric: 'node', event, fn: context.functionName });\n"
                               "exports.fails = async () => { throw new RangeError('node ric says no'); };\n"
                               "exports.streams = awslambda.streamifyResponse(async (event, stream) => {\n"
                               "  stream.setContentType('text/plain');\n"
                               "  stream.write('ric ');\n"
                               "  await new Promise((r) => setTimeout(r, 1500));\n"
                               "  stream.write('streams');\n"
                               "  stream.end();\n"
                               "});\n")
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o100755 << 16
        z.writestr(info, '#!/bin/sh\nexec /usr/bin/node /var/task/node_modules/aws-lambda-ric/bin/index.mjs "$_HANDLER"\n')
    return buf.getvalue()


def test_node_aws_lambda_ric_function(lambda_client, node_ric_zip):
    name = s.unique_name("node-ric")
    create(lambda_client, name, node_ric_zip, "index.handler")
    result = s.invoke(lambda_client, name, {"z": 3})
    assert result.function_error is None, result.body
    assert result.json() == {"ric": "node", "event": {"z": 3}, "fn": name}
    failing = s.unique_name("node-ric-fail")
    create(lambda_client, failing, node_ric_zip, "index.fails")
    failed = s.invoke(lambda_client, failing, {})
    assert failed.function_error == "Unhandled"
    assert failed.json()["errorType"] == "RangeError"
    assert failed.json()["errorMessage"] == "node ric says no"


def test_node_aws_lambda_ric_streams_its_response(lambda_client, node_ric_zip):
    """AWS's own Node.js runtime client streams through nimbus's Runtime API (chunked, with
    its response-mode header) and the pieces reach an InvokeWithResponseStream caller apart."""
    import time

    name = s.unique_name("node-ric-stream")
    create(lambda_client, name, node_ric_zip, "index.streams")
    response = lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b"{}")
    assert response["ResponseStreamContentType"] == "text/plain"
    chunks, complete = [], None
    for event in response["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append((time.monotonic(), event["PayloadChunk"]["Payload"]))
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    assert b"".join(c for _, c in chunks) == b"ric streams"
    assert chunks[-1][0] - chunks[0][0] >= 1.0, "the first piece was held back until the end"
    assert complete is not None and "ErrorCode" not in complete

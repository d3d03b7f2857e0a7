"""The example under examples/hello-wasm builds and deploys as its README says."""

from __future__ import annotations

import json
import subprocess

import pytest

import e2e_support as s

EXAMPLE = s.REPO_ROOT / "examples" / "hello-wasm"


@pytest.fixture(scope="module")
def hello_wasm():
    subprocess.run(
        ["cargo", "build", "--release", "--target", "wasm32-wasip1"],
        cwd=EXAMPLE,
        check=True,
        capture_output=True,
        timeout=900,
    )
    path = EXAMPLE / "target" / "wasm32-wasip1" / "release" / "hello-wasm.wasm"
    assert path.is_file()
    return path


def test_example_deploys_with_the_aws_cli(aws, tmp_path, hello_wasm):
    name = s.unique_name("hello-aws")
    package = tmp_path / "hello.zip"
    package.write_bytes(s.zip_bytes({"hello-wasm.wasm": hello_wasm.read_bytes()}))
    aws(
        "lambda", "create-function", "--function-name", name, "--runtime", "wasm32-wasip1",
        "--handler", "hello-wasm.wasm", "--role", s.ROLE, "--zip-file", f"fileb://{package}",
    )
    meta, body = aws.invoke(name, '{"name":"nimbus"}')
    assert meta["StatusCode"] == 200
    assert json.loads(body) == {"message": "Hello, nimbus!"}


def test_example_deploys_with_nimbus(nimbus, hello_wasm):
    name = s.unique_name("hello-cli")
    nimbus.ok("deploy", name, "--wasm", str(hello_wasm))
    out = nimbus.ok("invoke", name, "--payload", '{"name":"nimbus"}')
    assert json.loads(out.stdout) == {"message": "Hello, nimbus!"}
    default = nimbus.ok("invoke", name)
    assert json.loads(default.stdout) == {"message": "Hello, world!"}

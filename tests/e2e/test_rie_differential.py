"""Differential tests: the same functions and events on nimbus and on AWS's Runtime Interface
Emulator (RIE, shipped in the aws-sam-cli wheel) give the same responses and error shapes.

The runtimes are the same on both sides (nimbus's Python runtime, AWS's awslambdaric, a custom
bootstrap), so what is compared is the Runtime API each serves them and the Invoke result."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

import e2e_support as s
import process_support as p
from test_runtime_clients import awslambdaric_package

RIE_PATH = s.REPO_ROOT / ".cache" / "aws-lambda-rie"
SAM_CLI = "aws-sam-cli==1.170.0"
PYTHON = p.host_python_runtime()
DIFF = p.PROCESS_FIXTURES / "python-diff"
PY_BOOTSTRAP = s.REPO_ROOT / "crates" / "worker" / "runtimes" / "python" / "bootstrap.py"


def fetch_rie() -> Path:
    if RIE_PATH.is_file():
        return RIE_PATH
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "-d", tmp, SAM_CLI],
            check=True, timeout=600,
        )
        wheel = next(Path(tmp).glob("aws_sam_cli-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            data = z.read("samcli/local/rapid/aws-lambda-rie-x86_64")
    RIE_PATH.parent.mkdir(parents=True, exist_ok=True)
    RIE_PATH.write_bytes(data)
    RIE_PATH.chmod(0o755)
    return RIE_PATH


@pytest.fixture(scope="module")
def rie():
    return fetch_rie()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def rie_running(rie: Path, command: list[str], task_root: Path, handler: str, env: dict | None = None):
    port = free_port()
    environment = {"PATH": "/usr/bin:/bin", "_HANDLER": handler, "LAMBDA_TASK_ROOT": str(task_root),
                   **(env or {})}
    proc = subprocess.Popen(
        [str(rie), "--runtime-interface-emulator-address", f"127.0.0.1:{port}", *command],
        cwd=task_root, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rie_invoke(url: str, payload: bytes) -> bytes:
    request = urllib.request.Request(url, data=payload, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        # The emulator answers a failed init with 502 and the error object.
        return e.read()


def normalise(body: bytes):
    """Parsed JSON with the parts that legitimately differ (request ids, file paths in stack
    traces) reduced to their shape."""
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, dict) and "errorType" in value:
        shape = {k: value[k] for k in ("errorType", "errorMessage") if k in value}
        shape["keys"] = sorted(value)
        shape["stackTrace"] = type(value.get("stackTrace")).__name__
        return shape
    return value


CASES = [
    ("app.echo", {"a": [1, 2, {"b": None}], "s": "ünïcödé"}),
    ("app.nothing", {}),
    ("app.text", {}),
    ("app.raises", {"x": 1}),
    ("app.custom", {}),
]


def compare(client, name: str, url: str, event) -> None:
    payload = json.dumps(event).encode()
    ours = s.invoke(client, name, payload)
    theirs = rie_invoke(url, payload)
    assert ours.status == 200
    assert normalise(ours.body) == normalise(theirs), (ours.body, theirs)
    is_error = isinstance(normalise(theirs), dict) and "errorType" in normalise(theirs)
    assert (ours.function_error == "Unhandled") == is_error


@pytest.mark.parametrize("handler,event", CASES, ids=[c[0] for c in CASES])
def test_nimbus_python_runtime_matches_rie(lambda_client, rie, handler, event):
    name = p.deploy(lambda_client, "python-diff", PYTHON, handler)
    command = ["/usr/bin/python3", "-u", str(PY_BOOTSTRAP)]
    with rie_running(rie, command, DIFF, handler) as url:
        compare(lambda_client, name, url, event)


def test_init_error_matches_rie(lambda_client, rie):
    name = p.deploy(lambda_client, "python-diff", PYTHON, "broken.handler")
    command = ["/usr/bin/python3", "-u", str(PY_BOOTSTRAP)]
    with rie_running(rie, command, DIFF, "broken.handler") as url:
        ours = normalise(s.invoke(lambda_client, name, b"{}").body)
        theirs = normalise(rie_invoke(url, b"{}"))
    assert ours["errorType"] == theirs["errorType"] == "Runtime.ImportModuleError"
    assert ours["errorMessage"] == theirs["errorMessage"]


@pytest.fixture(scope="module")
def ric_dir(tmp_path_factory):
    package = awslambdaric_package(tmp_path_factory)
    folder = tmp_path_factory.mktemp("ric-unpacked")
    with zipfile.ZipFile(__import__("io").BytesIO(package)) as z:
        z.extractall(folder)
    for handler_file in DIFF.glob("*.py"):
        (folder / handler_file.name).write_bytes(handler_file.read_bytes())
    (folder / "bootstrap").chmod(0o755)
    return folder


@pytest.mark.parametrize("handler,event", CASES, ids=[c[0] for c in CASES])
def test_awslambdaric_matches_rie(lambda_client, rie, ric_dir, handler, event):
    name = s.unique_name("ric-diff")
    lambda_client.create_function(
        FunctionName=name, Runtime="provided.al2023", Role=s.ROLE, Handler=handler,
        Code={"ZipFile": p.zip_dir(ric_dir)},
    )
    command = ["/usr/bin/python3", "-m", "awslambdaric", handler]
    env = {"PYTHONPATH": f"{ric_dir / 'deps'}:{ric_dir}"}
    with rie_running(rie, command, ric_dir, handler, env) as url:
        compare(lambda_client, name, url, event)


def test_custom_bootstrap_matches_rie(lambda_client, rie):
    folder = p.PROCESS_FIXTURES / "provided-python"
    name = p.deploy(lambda_client, "provided-python", "provided.al2023", "any")
    with rie_running(rie, [str(folder / "bootstrap")], folder, "any") as url:
        for event in [{"k": "v"}, [1, 2, 3], "text", 7]:
            compare(lambda_client, name, url, event)


def test_runtime_api_refusals_match_rie(lambda_client, rie):
    """Requests outside the normal flow (unknown request id, a second answer, a late init
    error) get the same status codes. Lambda sends a trace id header; the emulator does not,
    so that one field is left out of the comparison."""
    folder = p.PROCESS_FIXTURES / "provided-probe"
    name = p.deploy(lambda_client, "provided-probe", "provided.al2023", "any")
    ours = [s.invoke(lambda_client, name, {"n": i}).json() for i in range(3)]
    with rie_running(rie, [str(folder / "bootstrap")], folder, "any") as url:
        theirs = [json.loads(rie_invoke(url, json.dumps({"n": i}).encode())) for i in range(3)]
    assert ours[0].pop("has_trace") is True
    theirs[0].pop("has_trace")
    assert ours == theirs
    assert ours[0]["unknown_response"] == 400 and ours[1]["late_init_error"] == 403

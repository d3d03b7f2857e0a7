"""Fixtures for the nimbus end-to-end tests.

Environment:
  NIMBUS_BIN   path of the nimbus binary (default: target/release/nimbus)
  AWS_CLI      path of the aws CLI (default: `aws` on PATH)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import e2e_support as s


# --------------------------------------------------------------------------
# Raw HTTP requests are signed like an SDK's
# --------------------------------------------------------------------------
#
# Nodes authenticate every request with SigV4. boto3 and the CLIs sign their own; the tests'
# raw `http.client` / `urllib` requests are signed here with the test key, unless they carry
# the header UNSIGNED (removed before sending) or an Authorization of their own.

UNSIGNED = "X-Nimbus-Test-Unsigned"

import http.client as _http_client

from botocore.auth import SigV4Auth as _SigV4Auth
from botocore.awsrequest import AWSRequest as _AWSRequest
from botocore.credentials import Credentials as _Credentials

_send = _http_client.HTTPConnection.request


def _service(method: str, path: str, headers: dict) -> str:
    target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), None)
    if method == "POST" and target:
        return "sqs" if target.startswith("AmazonSQS.") else "events"
    return "nimbus" if path.startswith(("/nimbus/", "/metrics")) else "lambda"


def _signed_request(self, method, url, body=None, headers=None, **kw):
    headers = dict(headers or {})
    unsigned = any(k.lower() == UNSIGNED.lower() for k in headers)
    headers = {k: v for k, v in headers.items() if k.lower() != UNSIGNED.lower()}
    data = body.encode() if isinstance(body, str) else body
    already = any(k.lower() == "authorization" for k in headers)
    # A presigned URL carries its signature in the query.
    presigned = "X-Amz-Signature=" in url or "Signature=" in url
    if not unsigned and not already and not presigned and (data is None or isinstance(data, (bytes, bytearray))):
        host = next((v for k, v in headers.items() if k.lower() == "host"), f"{self.host}:{self.port}")
        request = _AWSRequest(method=method, url=f"http://{host}{url}", data=bytes(data or b""), headers=headers)
        _SigV4Auth(_Credentials(s.ACCESS_KEY, s.SECRET_KEY), _service(method, url, headers), s.REGION).add_auth(request)
        headers = dict(request.headers.items())
    return _send(self, method, url, body, headers, **kw)


_http_client.HTTPConnection.request = _signed_request


# --------------------------------------------------------------------------
# Binaries and wasm fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wasm_fixtures() -> dict[str, Path]:
    """Builds the wasm fixtures once if any is missing; returns name -> path."""
    missing = [n for n in s.FIXTURE_NAMES if not s.fixture_path(n).is_file()]
    if missing:
        proc = subprocess.run(
            ["bash", str(s.BUILD_SCRIPT)],
            cwd=s.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"{s.BUILD_SCRIPT} failed ({proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}",
                pytrace=False,
            )
        still_missing = [n for n in s.FIXTURE_NAMES if not s.fixture_path(n).is_file()]
        if still_missing:
            pytest.fail(
                f"fixtures still missing after build: {', '.join(still_missing)}",
                pytrace=False,
            )
    return {n: s.fixture_path(n) for n in s.FIXTURE_NAMES}


@pytest.fixture(scope="session")
def nimbus_bin() -> Path:
    raw = os.environ.get("NIMBUS_BIN")
    path = Path(raw) if raw else s.REPO_ROOT / "target" / "release" / "nimbus"
    path = path.resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"nimbus binary not found at {path} (build it or set NIMBUS_BIN)",
            pytrace=False,
        )
    return path


# --------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node(nimbus_bin, wasm_fixtures, tmp_path_factory):
    """The node shared by most tests (never restarted)."""
    base = tmp_path_factory.mktemp("shared-node")
    n = s.Node(nimbus_bin, data_dir=base / "data", log_dir=base / "logs")
    n.start()
    yield n
    n.close()


@pytest.fixture
def node_factory(nimbus_bin, wasm_fixtures, tmp_path):
    """Starts private nodes, each on its own temporary data dir.

    node_factory(config=None, name="node", extra_args=()) -> started Node
    """
    nodes: list[s.Node] = []

    def make(config: Path | None = None, name: str = "node", extra_args=()) -> s.Node:
        base = tmp_path / f"{name}-{len(nodes)}"
        n = s.Node(
            nimbus_bin,
            data_dir=base / "data",
            log_dir=base / "logs",
            config=config,
            extra_args=extra_args,
        )
        nodes.append(n)
        n.start()
        return n

    yield make
    for n in nodes:
        n.close()


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lambda_client(node):
    return s.lambda_client(node.endpoint)


@pytest.fixture(scope="session")
def raw_lambda_client(node):
    """A client without botocore's own parameter checks, so that values out
    of range reach the node."""
    return s.lambda_client(node.endpoint, parameter_validation=False)


@pytest.fixture
def aws(node, tmp_path):
    """aws CLI bound to the shared node: aws("lambda", "get-function", ...)."""
    return s.AwsCli(node, tmp_path / "aws")


@pytest.fixture
def nimbus(nimbus_bin, node):
    """nimbus CLI bound to the shared node."""
    return s.NimbusCli(nimbus_bin, node)


# --------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_zip(wasm_fixtures):
    """make_zip(name, entry=None) -> zip bytes holding fixture NAME as NAME.wasm."""

    def make(name: str, entry: str | None = None) -> bytes:
        assert name in wasm_fixtures, f"unknown fixture {name}"
        return s.make_fixture_zip(name, entry)

    return make


@pytest.fixture(scope="session")
def deploy(lambda_client, make_zip):
    """deploy(fixture, memory=None, timeout=None, env=None, ...) -> name.

    Creates a function from a wasm fixture on the shared node and waits until
    it is Active.
    """

    def make(
        fixture: str = "echo",
        name: str | None = None,
        memory: int | None = None,
        timeout: int | None = None,
        env: dict[str, str] | None = None,
        description: str | None = None,
    ) -> str:
        name = name or s.unique_name(fixture)
        s.create_function(
            lambda_client,
            name,
            make_zip(fixture),
            handler=f"{fixture}.wasm",
            memory=memory,
            timeout=timeout,
            env=env,
            description=description,
        )
        return name

    return make


@pytest.fixture(scope="session")
def good_function(deploy):
    """A known-good echo function on the shared node."""
    return deploy("echo", name=s.unique_name("good-echo"))


@pytest.fixture(scope="session")
def assert_serving(lambda_client, good_function):
    """assert_serving(): the shared node still serves invocations correctly."""

    def check() -> None:
        payload = {"still": "serving", "nonce": s.unique_name("nonce")}
        inv = s.invoke(lambda_client, good_function, payload)
        assert inv.status == 200, inv
        assert inv.function_error is None, inv.body
        assert inv.json() == payload

    return check


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for n in s.live_nodes():
            report.sections.append(("nimbus node", n.stderr_tail()))

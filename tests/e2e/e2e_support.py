"""Shared code for the nimbus end-to-end tests.

Everything here talks to a real `nimbus up` process over HTTP, through boto3,
the `aws` CLI or the `nimbus` CLI. Nothing in here knows how the node works
inside.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import io
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES_DIR = REPO_ROOT / "target" / "fixtures"
BUILD_SCRIPT = REPO_ROOT / "tests" / "fixtures" / "build.sh"
FIXTURE_NAMES = (
    "echo",
    "env",
    "trap",
    "spin",
    "grow",
    "bigout",
    "fail",
    "logger",
    "badjson",
    "slow",
    "record",
    "preinit",
    "http",
)

REGION = "us-east-1"
RUNTIME = "wasm32-wasip1"
ROLE = "arn:aws:iam::000000000000:role/nimbus"
# The administrator key every test node is started with (NIMBUS_ADMIN_ACCESS_KEY_ID): the aws
# CLI, boto3, the nimbus CLI and raw HTTP requests (signed in conftest.py) all use it.
ACCESS_KEY = "NKIAE2ETESTADMIN0001"
SECRET_KEY = "e2e-test-secret/0123456789abcdefghijklmn"
ADMIN_KEY_ENV = {
    "NIMBUS_ADMIN_ACCESS_KEY_ID": ACCESS_KEY,
    "NIMBUS_ADMIN_SECRET_ACCESS_KEY": SECRET_KEY,
}

# Lambda's synchronous payload limit, request and response (6 MB).
PAYLOAD_LIMIT = 6 * 1024 * 1024

# Generous upper bounds so that a hung node fails a test instead of the run.
NODE_START_TIMEOUT = 90.0
NODE_STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 180.0
WAITER_CONFIG = {"Delay": 1, "MaxAttempts": 60}

LISTENING_RE = re.compile(r"nimbus listening on (http://127\.0\.0\.1:(\d+))")

# Set in the environment of every node started by the tests; a function must
# never see the host's environment.
HOST_SENTINEL_VAR = "NIMBUS_E2E_HOST_ONLY"
HOST_SENTINEL_VALUE = "host-environment-must-not-leak"


# --------------------------------------------------------------------------
# Names, zips, hashes
# --------------------------------------------------------------------------


def unique_name(prefix: str = "fn") -> str:
    """A function name that no other test uses (fits Lambda's 64-char limit)."""
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", prefix)[:30]
    return f"e2e-{prefix}-{uuid.uuid4().hex[:12]}"


def fixture_path(name: str) -> Path:
    return FIXTURES_DIR / f"{name}.wasm"


def fixture_bytes(name: str) -> bytes:
    return fixture_path(name).read_bytes()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A deflated zip with the given entries (deterministic bytes).

    Entry names are written as given, so `../x` or `/x` end up in the archive
    verbatim.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for entry, data in entries.items():
            info = zipfile.ZipInfo(entry, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def make_fixture_zip(name: str, entry: Optional[str] = None) -> bytes:
    """Zip holding fixture NAME as entry NAME.wasm (or ENTRY)."""
    return zip_bytes({entry or f"{name}.wasm": fixture_bytes(name)})


def zip_with_large_unpacked_size(mib: int = 260) -> bytes:
    """The echo module plus MIB MiB of zeros, deflated (the zip stays small)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(
        buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9
    ) as zf:
        zf.writestr("echo.wasm", fixture_bytes("echo"))
        chunk = bytes(1024 * 1024)
        with zf.open("zeros.bin", "w", force_zip64=True) as out:
            for _ in range(mib):
                out.write(chunk)
    return buf.getvalue()


def code_sha256(data: bytes) -> str:
    """Lambda's CodeSha256: base64 of the SHA-256 digest of the zip."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


# --------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------

START_RE = re.compile(r"^START RequestId: (?P<id>\S+) Version: \$LATEST[ \t]*$", re.M)
END_RE = re.compile(r"^END RequestId: (?P<id>\S+)[ \t]*$", re.M)
REPORT_RE = re.compile(
    r"^REPORT RequestId: (?P<id>\S+)"
    r"\tDuration: (?P<duration>\d+(?:\.\d+)?) ms"
    r"\tBilled Duration: (?P<billed>\d+) ms"
    r"\tMemory Size: (?P<memory>\d+) MB"
    r"\tMax Memory Used: (?P<max_memory>\d+) MB"
    r"(?:\tInit Duration: (?P<init>\d+(?:\.\d+)?) ms)?"
    r"[ \t]*$",
    re.M,
)


@dataclass
class Report:
    request_id: str
    duration_ms: float
    billed_ms: int
    memory_mb: int
    max_memory_mb: int
    init_ms: Optional[float]


def parse_reports(log: str) -> list[Report]:
    out = []
    for m in REPORT_RE.finditer(log):
        out.append(
            Report(
                request_id=m.group("id"),
                duration_ms=float(m.group("duration")),
                billed_ms=int(m.group("billed")),
                memory_mb=int(m.group("memory")),
                max_memory_mb=int(m.group("max_memory")),
                init_ms=float(m.group("init")) if m.group("init") else None,
            )
        )
    return out


def start_ids(log: str) -> list[str]:
    return [m.group("id") for m in START_RE.finditer(log)]


def end_ids(log: str) -> list[str]:
    return [m.group("id") for m in END_RE.finditer(log)]


def decode_log_result(value: Optional[str]) -> str:
    assert value, "expected a LogResult with LogType=Tail"
    raw = base64.b64decode(value, validate=True)
    assert len(raw) <= 4096, f"LogResult is {len(raw)} bytes, over 4 KB"
    return raw.decode("utf-8", errors="replace")


def check_single_invocation_log(log: str, memory_mb: int = 128) -> Report:
    """Checks the START/END/REPORT frame of a tail holding one invocation.

    Returns the REPORT line, parsed.
    """
    starts = start_ids(log)
    ends = end_ids(log)
    reports = parse_reports(log)
    assert len(starts) == 1, f"expected one START line in:\n{log}"
    assert len(ends) == 1, f"expected one END line in:\n{log}"
    assert len(reports) == 1, f"expected one well-formed REPORT line in:\n{log}"
    rid = starts[0]
    assert ends[0] == rid and reports[0].request_id == rid, log
    s = log.index("START RequestId:")
    e = log.index("END RequestId:")
    r = log.index("REPORT RequestId:")
    assert s < e < r, f"START, END and REPORT out of order:\n{log}"
    rep = reports[0]
    assert rep.memory_mb == memory_mb, log
    assert 0 <= rep.max_memory_mb <= memory_mb, log
    check_billed_duration(rep)
    return rep


def check_billed_duration(rep: Report) -> None:
    # Billed duration is the duration rounded up to the next millisecond. The
    # printed duration is itself rounded, so allow for that on both sides.
    assert rep.billed_ms >= 1, rep
    assert rep.billed_ms >= math.floor(rep.duration_ms), rep
    assert rep.billed_ms <= math.ceil(rep.duration_ms) + 1, rep


# --------------------------------------------------------------------------
# Subprocess environments
# --------------------------------------------------------------------------


def clean_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """os.environ without any AWS_* or NIMBUS_* settings of the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and not k.startswith("NIMBUS_")
    }
    if extra:
        env.update(extra)
    return env


def aws_env(workdir: Path) -> dict[str, str]:
    return clean_env(
        {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            # Keep the user's own files and the metadata service out of it.
            "AWS_CONFIG_FILE": str(workdir / "aws-config-absent"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "aws-credentials-absent"),
            "AWS_EC2_METADATA_DISABLED": "true",
            # No retries: a failure must show up as a failure.
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_RETRY_MODE": "standard",
            "AWS_PAGER": "",
        }
    )


# --------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------

_LIVE_NODES: list["Node"] = []


def live_nodes() -> list["Node"]:
    return list(_LIVE_NODES)


@atexit.register
def _kill_leftover_nodes() -> None:
    for node in list(_LIVE_NODES):
        try:
            node.close()
        except Exception:
            pass


LAMBDA_TRUST = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }],
})


def ensure_execution_role(endpoint: str, name: str = "nimbus") -> None:
    """Creates the execution role the tests' functions name (ROLE), if the node
    does not have it yet: CreateFunction needs a role Lambda may assume."""
    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
    )
    try:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=LAMBDA_TRUST)
    except ClientError as e:
        if e.response["Error"]["Code"] != "EntityAlreadyExists":
            raise


class NodeStartError(RuntimeError):
    pass


class Node:
    """One `nimbus up` process; can be stopped and started again on the same
    data dir (the endpoint may change on each start)."""

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        log_dir: Path,
        config: Optional[Path] = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.extra_args = list(extra_args)
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.config = Path(config) if config else None
        self.proc: Optional[subprocess.Popen] = None
        self.endpoint: Optional[str] = None
        self.port: Optional[int] = None
        self.starts = 0
        self.stderr_path: Optional[Path] = None
        self.listening_line: Optional[str] = None
        # stdout lines after the "listening" line (there should be none)
        self.extra_stdout: list[str] = []
        self._stderr_file = None
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._pump: Optional[threading.Thread] = None

    # ---- lifecycle -------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = NODE_START_TIMEOUT) -> "Node":
        if self.running:
            raise RuntimeError("node already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.stderr_path = self.log_dir / f"nimbus-stderr-{self.starts}.log"
        self._stderr_file = open(self.stderr_path, "wb")
        cmd = [
            str(self.binary),
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(self.data_dir),
        ]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        cmd += self.extra_args
        env = clean_env({HOST_SENTINEL_VAR: HOST_SENTINEL_VALUE, **ADMIN_KEY_ENV})
        env.setdefault("RUST_BACKTRACE", "1")
        self.endpoint = None
        self.port = None
        self.listening_line = None
        self.extra_stdout = []
        self._lines = queue.Queue()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        _LIVE_NODES.append(self)
        self._pump = threading.Thread(
            target=self._pump_stdout, args=(self.proc, self._lines), daemon=True
        )
        self._pump.start()

        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise NodeStartError(
                f"nimbus up printed nothing within {timeout:.0f}s\n{self.stderr_tail()}"
            )
        if line is None:
            rc = self.proc.wait(timeout=10)
            self.close()
            raise NodeStartError(
                f"nimbus up exited with {rc} before listening\n{self.stderr_tail()}"
            )
        m = LISTENING_RE.fullmatch(line.rstrip("\r\n"))
        if not m or int(m.group(2)) == 0:
            self.close()
            raise NodeStartError(
                f"unexpected first stdout line from nimbus up: {line!r}\n"
                f"{self.stderr_tail()}"
            )
        self.listening_line = line.rstrip("\r\n")
        self.endpoint = m.group(1)
        self.port = int(m.group(2))
        if ADMIN_KEY_ENV:
            ensure_execution_role(self.endpoint)
        return self

    def _pump_stdout(self, proc: subprocess.Popen, lines: "queue.Queue") -> None:
        first = True
        assert proc.stdout is not None
        for line in proc.stdout:
            if first:
                lines.put(line)
                first = False
            else:
                self.extra_stdout.append(line.rstrip("\r\n"))
        lines.put(None)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = NODE_STOP_TIMEOUT) -> Optional[int]:
        """Sends SIG and waits. Returns the exit code, or None if the node had
        to be killed because it did not exit within TIMEOUT."""
        if self.proc is None:
            return None
        proc = self.proc
        rc: Optional[int]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                rc = None
        else:
            rc = proc.returncode
        self._finish()
        return rc

    def close(self) -> None:
        """Robust teardown: SIGTERM, wait, then SIGKILL."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
            except ProcessLookupError:
                pass
        self._finish()

    def _finish(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)
            self._pump = None
        if self.proc is not None and self.proc.stdout is not None:
            try:
                self.proc.stdout.close()
            except Exception:
                pass
        if self._stderr_file is not None:
            try:
                self._stderr_file.close()
            except Exception:
                pass
            self._stderr_file = None
        if self in _LIVE_NODES:
            _LIVE_NODES.remove(self)

    def stderr_tail(self, lines: int = 60) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return "(no stderr captured)"
        text = self.stderr_path.read_text("utf-8", errors="replace")
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- nimbus stderr ({self.stderr_path}) ---\n{tail}"


def write_pricing_config(path: Path, request_per_million: float, gb_second: float) -> Path:
    path.write_text(
        "[pricing]\n"
        f"request_per_million = {request_per_million!r}\n"
        f"gb_second = {gb_second!r}\n"
    )
    return path


# --------------------------------------------------------------------------
# boto3
# --------------------------------------------------------------------------


def lambda_client(endpoint: str, parameter_validation: bool = True):
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )
    config = Config(
        region_name=REGION,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=180,
        max_pool_connections=64,
        parameter_validation=parameter_validation,
    )
    return session.client("lambda", endpoint_url=endpoint, config=config)


def create_function(
    client,
    name: str,
    zip_data: bytes,
    handler: str,
    memory: Optional[int] = None,
    timeout: Optional[int] = None,
    env: Optional[dict[str, str]] = None,
    description: Optional[str] = None,
    wait: bool = True,
) -> dict:
    params: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": RUNTIME,
        "Role": ROLE,
        "Handler": handler,
        "Code": {"ZipFile": zip_data},
    }
    if memory is not None:
        params["MemorySize"] = memory
    if timeout is not None:
        params["Timeout"] = timeout
    if env is not None:
        params["Environment"] = {"Variables": env}
    if description is not None:
        params["Description"] = description
    resp = client.create_function(**params)
    if wait:
        client.get_waiter("function_active_v2").wait(
            FunctionName=name, WaiterConfig=WAITER_CONFIG
        )
    return resp


def create_preinit_function(client, make_zip, prefix: str, variables: Optional[dict] = None) -> str:
    """A wasm function of the `preinit` fixture with SnapStart on, active; returns its name."""
    name = unique_name(prefix)
    extra = {"Environment": {"Variables": variables}} if variables else {}
    client.create_function(
        FunctionName=name, Runtime=RUNTIME, Role=ROLE, Handler="preinit.wasm",
        Code={"ZipFile": make_zip("preinit")}, SnapStart={"ApplyOn": "PublishedVersions"}, **extra)
    client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=WAITER_CONFIG)
    return name


def wait_updated(client, name: str) -> None:
    client.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig=WAITER_CONFIG
    )


@dataclass
class Invocation:
    status: int
    function_error: Optional[str]
    executed_version: Optional[str]
    log_result: Optional[str]
    body: bytes
    request_id: Optional[str]
    headers: dict = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def log(self) -> str:
        return decode_log_result(self.log_result)


_NO_PAYLOAD = object()


def invoke(client, name: str, payload: Any = _NO_PAYLOAD, tail: bool = False, **kwargs) -> Invocation:
    """Invokes NAME. PAYLOAD may be bytes (sent as is), anything else is sent
    as JSON; leave it out to send no payload at all."""
    params: dict[str, Any] = {"FunctionName": name}
    if payload is not _NO_PAYLOAD:
        if isinstance(payload, (bytes, bytearray)):
            params["Payload"] = bytes(payload)
        else:
            params["Payload"] = json.dumps(payload).encode("utf-8")
    if tail:
        params["LogType"] = "Tail"
    params.update(kwargs)
    resp = client.invoke(**params)
    body = resp["Payload"].read()
    meta = resp.get("ResponseMetadata", {})
    return Invocation(
        status=resp["StatusCode"],
        function_error=resp.get("FunctionError"),
        executed_version=resp.get("ExecutedVersion"),
        log_result=resp.get("LogResult"),
        body=body,
        request_id=meta.get("RequestId"),
        headers=dict(meta.get("HTTPHeaders", {})),
    )


def client_error(excinfo) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ClientError."""
    err = excinfo.value if hasattr(excinfo, "value") else excinfo
    assert isinstance(err, ClientError), f"not a ClientError: {err!r}"
    return (
        err.response.get("Error", {}).get("Code"),
        err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
    )


def assert_client_error(fn: Callable[[], Any], code: str, status: int) -> ClientError:
    try:
        result = fn()
    except ClientError as err:
        got = client_error(err)
        assert got == (code, status), (
            f"expected {code} ({status}), got {got[0]} ({got[1]}): {err}"
        )
        return err
    raise AssertionError(f"expected {code} ({status}), call succeeded: {result!r}")


def list_all_function_names(client, page_size: Optional[int] = None) -> list[str]:
    names: list[str] = []
    params: dict[str, Any] = {}
    if page_size:
        params["MaxItems"] = page_size
    for _ in range(10_000):
        page = client.list_functions(**params)
        names.extend(f["FunctionName"] for f in page.get("Functions", []))
        marker = page.get("NextMarker")
        if not marker:
            return names
        params["Marker"] = marker
    raise AssertionError("ListFunctions never stopped paginating")


# --------------------------------------------------------------------------
# aws CLI
# --------------------------------------------------------------------------


class AwsCliError(AssertionError):
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.proc = proc
        super().__init__(
            f"aws exited {proc.returncode}: {' '.join(map(str, proc.args))}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )


_AWS_MAJOR: Optional[int] = None


def aws_cli_major_version(aws: str) -> int:
    global _AWS_MAJOR
    if _AWS_MAJOR is None:
        proc = subprocess.run(
            [aws, "--version"], capture_output=True, text=True, timeout=60,
            env=clean_env(),
        )
        m = re.search(r"aws-cli/(\d+)\.", proc.stdout + proc.stderr)
        _AWS_MAJOR = int(m.group(1)) if m else 1
    return _AWS_MAJOR


class AwsCli:
    """Runs `aws ... lambda ...` against a node (its current endpoint)."""

    def __init__(self, node: Node, workdir: Path, executable: Optional[str] = None) -> None:
        self.node = node
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.executable = executable or os.environ.get("AWS_CLI") or shutil.which("aws") or "aws"

    def binary_format_args(self) -> list[str]:
        # CLI v2 would base64-decode blob arguments; v1 sends them raw and
        # does not know the option.
        if aws_cli_major_version(self.executable) >= 2:
            return ["--cli-binary-format", "raw-in-base64-out"]
        return []

    def run(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        assert self.node.endpoint, "node is not running"
        cmd = [
            self.executable,
            "--endpoint-url",
            self.node.endpoint,
            "--region",
            REGION,
            "--output",
            "json",
            *map(str, args),
        ]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=aws_env(self.workdir),
            stdin=subprocess.DEVNULL,
        )

    def __call__(self, *args: str, timeout: float = CLI_TIMEOUT) -> Any:
        """Runs the command, requires exit code 0, returns parsed JSON stdout
        (None when stdout is empty)."""
        proc = self.run(*args, timeout=timeout)
        if proc.returncode != 0:
            raise AwsCliError(proc)
        out = proc.stdout.strip()
        return json.loads(out) if out else None

    def fails(self, *args: str, code: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        """Runs the command, requires a non-zero exit with error CODE."""
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode != 0, f"expected failure, got: {proc.stdout}"
        assert f"({code})" in proc.stderr, proc.stderr
        return proc

    def invoke(self, name: str, payload: Optional[str] = None, *extra: str) -> tuple[dict, bytes]:
        """`aws lambda invoke`; returns (printed metadata, response body)."""
        outfile = self.workdir / f"invoke-{uuid.uuid4().hex}.out"
        args = ["lambda", "invoke", "--function-name", name]
        if payload is not None:
            args += ["--payload", payload, *self.binary_format_args()]
        args += list(extra)
        args.append(str(outfile))
        meta = self(*args)
        body = outfile.read_bytes() if outfile.exists() else b""
        return meta, body


# --------------------------------------------------------------------------
# nimbus CLI
# --------------------------------------------------------------------------


class NimbusCli:
    """Runs the `nimbus` client commands against a node (via NIMBUS_ENDPOINT)."""

    def __init__(self, binary: Path, node: Node) -> None:
        self.binary = Path(binary)
        self.node = node

    def env(self) -> dict[str, str]:
        assert self.node.endpoint, "node is not running"
        return clean_env({"NIMBUS_ENDPOINT": self.node.endpoint, **ADMIN_KEY_ENV})

    def run(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.binary), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode == 0, (
            f"nimbus {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
        return proc

    def popen(self, *args: str, stderr_path: Optional[Path] = None) -> subprocess.Popen:
        """Starts a long-running command; stdout is a pipe, stderr goes to
        STDERR_PATH (or is discarded) so that it can never fill up."""
        if stderr_path is not None:
            with open(stderr_path, "wb") as err:
                return self._popen(args, err)
        return self._popen(args, subprocess.DEVNULL)

    def _popen(self, args, stderr) -> subprocess.Popen:
        return subprocess.Popen(
            [str(self.binary), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self.env(),
        )

    def usage(self) -> dict:
        proc = self.ok("usage", "--json")
        return json.loads(proc.stdout)


def usage_entry(usage: dict, name: str) -> Optional[dict]:
    for entry in usage.get("functions", []):
        if entry.get("function") == name:
            return entry
    return None


# --------------------------------------------------------------------------
# Misc
# --------------------------------------------------------------------------


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.25) -> Any:
    """Calls CHECK until it returns without an AssertionError (returns its
    result), or re-raises the last AssertionError after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def close_enough(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def expected_gb_seconds(memory_mb: int, billed_ms: Iterable[int]) -> float:
    return sum((memory_mb / 1024.0) * (ms / 1000.0) for ms in billed_ms)

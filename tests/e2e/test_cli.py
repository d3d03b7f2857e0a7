"""The nimbus client commands: deploy, invoke, logs, usage."""

from __future__ import annotations

import json
import numbers
import queue
import subprocess
import threading
import time

import pytest

import e2e_support as s


# --------------------------------------------------------------------------
# deploy
# --------------------------------------------------------------------------


def test_deploy_wasm_creates_function(nimbus, lambda_client, wasm_fixtures):
    name = s.unique_name("cli-deploy")
    nimbus.ok(
        "deploy", name,
        "--wasm", wasm_fixtures["env"],
        "--memory", "256",
        "--timeout", "5",
        "--env", "FOO=bar",
        "--env", "BAZ=qux",
    )
    s.wait_updated(lambda_client, name)
    cfg = lambda_client.get_function_configuration(FunctionName=name)
    assert cfg["FunctionName"] == name
    assert cfg["Runtime"] == s.RUNTIME
    assert cfg["MemorySize"] == 256
    assert cfg["Timeout"] == 5
    assert cfg["Environment"]["Variables"] == {"FOO": "bar", "BAZ": "qux"}
    assert cfg["State"] == "Active"

    proc = nimbus.ok("invoke", name)
    env = json.loads(proc.stdout)
    assert env["FOO"] == "bar"
    assert env["BAZ"] == "qux"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"


def test_deploy_existing_function_updates_code_and_config(nimbus, lambda_client, wasm_fixtures):
    name = s.unique_name("cli-redeploy")
    nimbus.ok("deploy", name, "--wasm", wasm_fixtures["echo"], "--memory", "128")
    s.wait_updated(lambda_client, name)
    before = lambda_client.get_function_configuration(FunctionName=name)
    proc = nimbus.ok("invoke", name, "--payload", '{"a":1}')
    assert json.loads(proc.stdout) == {"a": 1}

    nimbus.ok(
        "deploy", name,
        "--wasm", wasm_fixtures["env"],
        "--memory", "512",
        "--timeout", "9",
        "--env", "STAGE=two",
    )
    s.wait_updated(lambda_client, name)
    after = lambda_client.get_function_configuration(FunctionName=name)
    assert after["MemorySize"] == 512
    assert after["Timeout"] == 9
    assert after["Environment"]["Variables"] == {"STAGE": "two"}
    assert after["CodeSha256"] != before["CodeSha256"]
    assert after["LastUpdateStatus"] == "Successful"

    env = json.loads(nimbus.ok("invoke", name).stdout)
    assert env["STAGE"] == "two"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"

    # Still one function of that name.
    assert s.list_all_function_names(lambda_client).count(name) == 1


def test_deploy_zip_with_handler(nimbus, lambda_client, tmp_path, wasm_fixtures):
    name = s.unique_name("cli-zip")
    data = s.zip_bytes(
        {"echo.wasm": s.fixture_bytes("echo"), "bin/logger.wasm": s.fixture_bytes("logger")}
    )
    path = tmp_path / "code.zip"
    path.write_bytes(data)
    nimbus.ok("deploy", name, "--zip", path, "--handler", "bin/logger.wasm")
    s.wait_updated(lambda_client, name)
    cfg = lambda_client.get_function_configuration(FunctionName=name)
    assert cfg["Handler"] == "bin/logger.wasm"
    assert cfg["CodeSha256"] == s.code_sha256(data)

    inv = s.invoke(lambda_client, name, {"z": 1}, tail=True)
    assert inv.json() == {"z": 1}
    assert "log line 1" in inv.log


# --------------------------------------------------------------------------
# invoke
# --------------------------------------------------------------------------


def test_invoke_success_exit_0(nimbus, deploy):
    name = deploy("echo")
    proc = nimbus.run("invoke", name, "--payload", '{"hello":"cli","n":[1,2]}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"hello": "cli", "n": [1, 2]}


def test_invoke_payload_file(nimbus, deploy, tmp_path):
    name = deploy("echo")
    payload = {"from": "file", "text": "\u00e9t\u00e9"}
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    proc = nimbus.run("invoke", name, "--payload-file", path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == payload


def test_invoke_without_payload(nimbus, deploy):
    name = deploy("echo")
    proc = nimbus.run("invoke", name)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}


@pytest.mark.parametrize(
    "fixture,error_type",
    [("fail", "Runtime.ExitError"), ("trap", "Runtime.Trap")],
)
def test_invoke_function_error_exit_1(nimbus, deploy, fixture, error_type):
    name = deploy(fixture)
    proc = nimbus.run("invoke", name, "--payload", "{}")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    err = json.loads(proc.stdout)
    assert err["errorType"] == error_type
    if fixture == "fail":
        assert "exit status 3" in err["errorMessage"]


def test_invoke_unknown_function_exit_2(nimbus):
    proc = nimbus.run("invoke", s.unique_name("missing"), "--payload", "{}")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "error:" in proc.stderr


def test_invoke_unreachable_node_fails(nimbus_bin):
    # Nothing listens on port 9 of the loopback interface.
    proc = subprocess.run(
        [str(nimbus_bin), "invoke", "whatever", "--payload", "{}"],
        capture_output=True, text=True, timeout=120,
        env=s.clean_env({"NIMBUS_ENDPOINT": "http://127.0.0.1:9"}),
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "error" in proc.stderr.lower()


# --------------------------------------------------------------------------
# logs
# --------------------------------------------------------------------------


def invoke_for_id(client, name, payload=None) -> str:
    inv = s.invoke(client, name, payload if payload is not None else {}, tail=True)
    return s.check_single_invocation_log(inv.log).request_id


def test_logs(nimbus, lambda_client, deploy):
    name = deploy("logger")
    id1 = invoke_for_id(lambda_client, name)
    id2 = invoke_for_id(lambda_client, name)

    def check():
        proc = nimbus.ok("logs", name)
        out = proc.stdout
        assert f"START RequestId: {id1}" in out, out
        assert f"REPORT RequestId: {id2}" in out, out
        return out

    out = s.eventually(check, timeout=15)
    start1 = out.index(f"START RequestId: {id1}")
    lines = [out.index(f"log line {i}", start1) for i in (1, 2, 3)]
    end1 = out.index(f"END RequestId: {id1}")
    report1 = out.index(f"REPORT RequestId: {id1}")
    start2 = out.index(f"START RequestId: {id2}")
    report2 = out.index(f"REPORT RequestId: {id2}")
    assert start1 < lines[0] < lines[1] < lines[2] < end1 < report1 < start2 < report2, out
    assert out.count(f"START RequestId: {id1}") == 1
    assert out.count("log line 2") == 2

    reports = s.parse_reports(out)
    assert [r.request_id for r in reports] == [id1, id2]
    assert reports[0].init_ms is not None
    assert reports[1].init_ms is None


def test_logs_of_function_without_invocations(nimbus, deploy):
    name = deploy("logger")
    proc = nimbus.ok("logs", name)
    assert "START RequestId:" not in proc.stdout


class LineReader:
    """Collects the stdout lines of a running process in the background."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.eof = False
        self._q: "queue.Queue" = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.lines):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                return predicate(self.lines)
            try:
                item = self._q.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if item is None:
                self.eof = True
            else:
                self.lines.append(item)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_logs_follow(nimbus, lambda_client, deploy, tmp_path):
    name = deploy("logger")
    old_id = invoke_for_id(lambda_client, name)

    stderr_path = tmp_path / "follow.stderr"
    proc = nimbus.popen("logs", name, "--follow", stderr_path=stderr_path)
    try:
        reader = LineReader(proc)
        # If stored lines come first, they tell us it is attached; if not,
        # carry on after a short while (the loop below retries anyway).
        reader.wait_for(lambda ls: any(old_id in l for l in ls), timeout=5)

        new_ids: list[str] = []

        def saw_new_start(ls):
            return any(f"START RequestId: {rid}" in l for rid in new_ids for l in ls)

        for _ in range(4):
            new_ids.append(invoke_for_id(lambda_client, name))
            if reader.wait_for(saw_new_start, timeout=10):
                break
            assert not reader.eof, (
                f"logs --follow ended early (exit {proc.poll()}): "
                f"{stderr_path.read_text(errors='replace')}"
            )
        assert saw_new_start(reader.lines), (
            f"no new invocation appeared in logs --follow; got:\n" + "\n".join(reader.lines)
        )

        rid = next(r for r in new_ids if any(f"START RequestId: {r}" in l for l in reader.lines))
        assert reader.wait_for(
            lambda ls: any(f"REPORT RequestId: {rid}" in l for l in ls), timeout=10
        ), "\n".join(reader.lines)
        start = next(i for i, l in enumerate(reader.lines) if f"START RequestId: {rid}" in l)
        tail = reader.lines[start:]
        assert any("log line 3" in l for l in tail), "\n".join(reader.lines)

        assert proc.poll() is None, "logs --follow must keep running until killed"
    finally:
        stop_process(proc)


# --------------------------------------------------------------------------
# usage
# --------------------------------------------------------------------------

USAGE_FIELDS = ("invocations", "cold_starts", "errors", "gb_seconds", "cost")


def check_usage_shape(usage: dict) -> None:
    assert isinstance(usage.get("functions"), list), usage
    assert isinstance(usage.get("total"), dict), usage
    pricing = usage.get("pricing")
    assert isinstance(pricing, dict), usage
    for key in ("request_per_million", "gb_second"):
        assert isinstance(pricing[key], numbers.Real) and pricing[key] >= 0, pricing
    for entry in usage["functions"]:
        assert isinstance(entry["function"], str)
        for f in USAGE_FIELDS:
            assert isinstance(entry[f], numbers.Real), entry
        check_cost(entry, pricing)
    for f in USAGE_FIELDS:
        assert isinstance(usage["total"][f], numbers.Real), usage["total"]
    check_cost(usage["total"], pricing)


def check_cost(entry: dict, pricing: dict) -> None:
    expected = (
        entry["invocations"] * pricing["request_per_million"] / 1e6
        + entry["gb_seconds"] * pricing["gb_second"]
    )
    assert s.close_enough(entry["cost"], expected), (entry, pricing, expected)


def billed_reports(client, name, count, payload=None) -> list[s.Report]:
    reports = []
    for _ in range(count):
        inv = s.invoke(client, name, payload if payload is not None else {}, tail=True)
        reports.append(s.parse_reports(inv.log)[-1])
    return reports


def test_usage_json(nimbus, lambda_client, wasm_fixtures):
    ok_name = s.unique_name("usage-ok")
    bad_name = s.unique_name("usage-bad")
    nimbus.ok("deploy", ok_name, "--wasm", wasm_fixtures["echo"], "--memory", "256")
    nimbus.ok("deploy", bad_name, "--wasm", wasm_fixtures["fail"], "--memory", "128")
    s.wait_updated(lambda_client, ok_name)
    s.wait_updated(lambda_client, bad_name)

    ok_reports = billed_reports(lambda_client, ok_name, 3)
    bad_reports = billed_reports(lambda_client, bad_name, 2)
    assert all(r.memory_mb == 256 for r in ok_reports)

    def check():
        usage = nimbus.usage()
        ok = s.usage_entry(usage, ok_name)
        bad = s.usage_entry(usage, bad_name)
        assert ok is not None and ok["invocations"] == 3, usage
        assert bad is not None and bad["invocations"] == 2, usage
        return usage, ok, bad

    usage, ok, bad = s.eventually(check, timeout=15)
    check_usage_shape(usage)

    assert ok["errors"] == 0
    assert ok["cold_starts"] == 1
    assert s.close_enough(
        ok["gb_seconds"], s.expected_gb_seconds(256, [r.billed_ms for r in ok_reports])
    ), (ok, ok_reports)

    assert bad["errors"] == 2
    assert 1 <= bad["cold_starts"] <= 2
    assert s.close_enough(
        bad["gb_seconds"], s.expected_gb_seconds(128, [r.billed_ms for r in bad_reports])
    ), (bad, bad_reports)

    pricing = usage["pricing"]
    for entry in (ok, bad):
        check_cost(entry, pricing)

    total = usage["total"]
    assert total["invocations"] >= 5
    assert total["errors"] >= 2
    assert total["gb_seconds"] >= ok["gb_seconds"] + bad["gb_seconds"] - 1e-9


def test_usage_total_is_sum_of_functions(nimbus_bin, node_factory, wasm_fixtures):
    node = node_factory()
    cli = s.NimbusCli(nimbus_bin, node)
    client = s.lambda_client(node.endpoint)
    names = [s.unique_name("sum-a"), s.unique_name("sum-b")]
    cli.ok("deploy", names[0], "--wasm", wasm_fixtures["echo"], "--memory", "128")
    cli.ok("deploy", names[1], "--wasm", wasm_fixtures["trap"], "--memory", "1024")
    for n in names:
        s.wait_updated(client, n)
    billed_reports(client, names[0], 4)
    billed_reports(client, names[1], 2)

    def check():
        usage = cli.usage()
        got = {e["function"]: e for e in usage["functions"]}
        assert set(got) == set(names), usage
        assert got[names[0]]["invocations"] == 4
        assert got[names[1]]["invocations"] == 2
        return usage

    usage = s.eventually(check, timeout=15)
    check_usage_shape(usage)
    total = usage["total"]
    for f in USAGE_FIELDS:
        summed = sum(e[f] for e in usage["functions"])
        assert s.close_enough(total[f], summed), (f, total, usage["functions"])
    assert total["invocations"] == 6
    assert total["errors"] == 2
    assert total["cold_starts"] >= 2


def test_usage_with_pricing_config(nimbus_bin, node_factory, tmp_path, wasm_fixtures):
    rpm, gbs = 1000.0, 0.25
    config = s.write_pricing_config(tmp_path / "nimbus.toml", rpm, gbs)
    node = node_factory(config=config)
    cli = s.NimbusCli(nimbus_bin, node)
    client = s.lambda_client(node.endpoint)

    name = s.unique_name("priced")
    cli.ok("deploy", name, "--wasm", wasm_fixtures["echo"], "--memory", "2048")
    s.wait_updated(client, name)
    reports = billed_reports(client, name, 3, {"pay": "me"})

    def check():
        usage = cli.usage()
        entry = s.usage_entry(usage, name)
        assert entry is not None and entry["invocations"] == 3, usage
        return usage, entry

    usage, entry = s.eventually(check, timeout=15)
    assert s.close_enough(usage["pricing"]["request_per_million"], rpm), usage["pricing"]
    assert s.close_enough(usage["pricing"]["gb_second"], gbs), usage["pricing"]

    gb = s.expected_gb_seconds(2048, [r.billed_ms for r in reports])
    assert s.close_enough(entry["gb_seconds"], gb), (entry, reports)
    expected_cost = 3 * rpm / 1e6 + gb * gbs
    assert s.close_enough(entry["cost"], expected_cost), (entry, expected_cost)
    assert s.close_enough(usage["total"]["cost"], expected_cost), usage["total"]
    assert usage["total"]["invocations"] == 3


def test_usage_human_readable(nimbus, deploy, lambda_client):
    name = deploy("echo")
    s.invoke(lambda_client, name, {})
    proc = s.eventually(
        lambda: _usage_mentions(nimbus, name), timeout=15
    )
    assert proc.returncode == 0


def _usage_mentions(nimbus, name):
    proc = nimbus.ok("usage")
    assert name in proc.stdout, proc.stdout
    return proc

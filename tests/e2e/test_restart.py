"""Stopping a node and starting it again on the same data dir keeps everything.

Each test runs its own node on its own data dir.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

import e2e_support as s


def restart(node: s.Node, sig: int = signal.SIGTERM):
    """Stops NODE with SIG (requiring exit code 0) and starts it again;
    returns a boto3 client for the new endpoint."""
    rc = node.stop(sig)
    assert rc == 0, f"node exited with {rc} on {signal.Signals(sig).name}\n{node.stderr_tail()}"
    assert node.extra_stdout == [], (
        f"nimbus up must print exactly one line to stdout, also printed: {node.extra_stdout}"
    )
    node.start()
    return s.lambda_client(node.endpoint)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_restart_keeps_functions_and_usage(nimbus_bin, node_factory, wasm_fixtures, make_zip, sig):
    node = node_factory(name="restart")
    cli = s.NimbusCli(nimbus_bin, node)
    client = s.lambda_client(node.endpoint)

    keep = s.unique_name("keep")
    env_fn = s.unique_name("keep-env")
    gone = s.unique_name("gone")

    cli.ok("deploy", keep, "--wasm", wasm_fixtures["echo"], "--memory", "256", "--env", "KEY=v")
    s.wait_updated(client, keep)
    s.create_function(client, env_fn, make_zip("env"), "env.wasm", memory=128)
    s.create_function(client, gone, make_zip("echo"), "echo.wasm")

    for i in range(2):
        assert s.invoke(client, keep, {"before": i}).json() == {"before": i}
    assert s.invoke(client, env_fn, {}).json()["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    client.delete_function(FunctionName=gone)

    # Changes made right before the stop must survive it too.
    client.update_function_configuration(
        FunctionName=env_fn, MemorySize=640, Environment={"Variables": {"AFTER": "restart"}}
    )
    s.wait_updated(client, env_fn)
    keep_cfg = client.get_function_configuration(FunctionName=keep)

    def usage_before_check():
        usage = cli.usage()
        entry = s.usage_entry(usage, keep)
        assert entry is not None and entry["invocations"] == 2, usage
        return entry

    before = s.eventually(usage_before_check, timeout=15)

    client = restart(node, sig)

    names = s.list_all_function_names(client)
    assert names.count(keep) == 1
    assert names.count(env_fn) == 1
    assert gone not in names
    s.assert_client_error(
        lambda: client.get_function(FunctionName=gone), "ResourceNotFoundException", 404
    )

    cfg = client.get_function(FunctionName=keep)["Configuration"]
    assert cfg["State"] == "Active"
    assert cfg["LastUpdateStatus"] == "Successful"
    assert cfg["CodeSha256"] == keep_cfg["CodeSha256"]
    assert cfg["MemorySize"] == 256
    assert cfg["Environment"]["Variables"] == {"KEY": "v"}

    # Usage recorded before the restart is still there.
    after = s.usage_entry(cli.usage(), keep)
    assert after is not None
    assert after["invocations"] == before["invocations"] == 2
    assert after["cold_starts"] == before["cold_starts"]
    assert after["errors"] == before["errors"]
    assert s.close_enough(after["gb_seconds"], before["gb_seconds"])
    assert s.close_enough(after["cost"], before["cost"])

    # The first invoke after a restart is a cold start.
    inv = s.invoke(client, keep, {"after": "restart"}, tail=True)
    assert inv.status == 200
    assert inv.json() == {"after": "restart"}
    rep = s.check_single_invocation_log(inv.log, memory_mb=256)
    assert rep.init_ms is not None, inv.log

    env = s.invoke(client, env_fn, {}).json()
    assert env["AFTER"] == "restart"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "640"

    def usage_after_check():
        entry = s.usage_entry(cli.usage(), keep)
        assert entry is not None and entry["invocations"] == 3, entry
        return entry

    entry = s.eventually(usage_after_check, timeout=15)
    assert entry["cold_starts"] == before["cold_starts"] + 1

    # The restarted node accepts new functions, including the deleted name.
    s.create_function(client, gone, make_zip("echo"), "echo.wasm")
    assert s.invoke(client, gone, {"reborn": True}).json() == {"reborn": True}


def test_restart_twice_and_update_code_in_between(nimbus_bin, node_factory, make_zip):
    node = node_factory(name="twice")
    client = s.lambda_client(node.endpoint)
    name = s.unique_name("twice")
    s.create_function(client, name, make_zip("echo"), "echo.wasm")
    assert s.invoke(client, name, {"round": 0}).json() == {"round": 0}

    client = restart(node)
    new = make_zip("env", entry="echo.wasm")
    client.update_function_code(FunctionName=name, ZipFile=new)
    s.wait_updated(client, name)

    client = restart(node)
    cfg = client.get_function_configuration(FunctionName=name)
    assert cfg["CodeSha256"] == s.code_sha256(new)
    env = s.invoke(client, name, {}).json()
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name


def test_logs_survive_restart(nimbus_bin, node_factory, make_zip):
    node = node_factory(name="logs")
    cli = s.NimbusCli(nimbus_bin, node)
    client = s.lambda_client(node.endpoint)
    name = s.unique_name("logs-restart")
    s.create_function(client, name, make_zip("logger"), "logger.wasm")
    inv = s.invoke(client, name, {}, tail=True)
    rid = s.check_single_invocation_log(inv.log).request_id

    s.eventually(lambda: _logs_contain(cli, name, f"REPORT RequestId: {rid}"), timeout=15)
    restart(node)
    out = _logs_contain(cli, name, f"REPORT RequestId: {rid}")
    assert f"START RequestId: {rid}" in out
    assert "log line 1" in out


def _logs_contain(cli: s.NimbusCli, name: str, needle: str) -> str:
    out = cli.ok("logs", name).stdout
    assert needle in out, out
    return out


def test_stop_is_graceful_with_idle_node(node_factory):
    node = node_factory(name="idle")
    assert node.stop(signal.SIGTERM) == 0
    node.start()
    assert node.stop(signal.SIGINT) == 0


def test_stop_lets_in_flight_invocations_finish(nimbus_bin, node_factory, make_zip):
    """SIGTERM while an invocation runs: the client still gets the function's result, the node
    exits cleanly, and the invocation's usage record is there after a restart."""
    node = node_factory(name="inflight")
    client = s.lambda_client(node.endpoint)
    name = s.unique_name("slow")
    s.create_function(client, name, make_zip("slow"), handler="slow.wasm", timeout=10)
    result: dict = {}

    def call() -> None:
        try:
            result["invocation"] = s.invoke(client, name, {"in": "flight"})
        except Exception as e:  # reported by the assertion below
            result["error"] = e

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.5)
    assert node.stop(signal.SIGTERM) == 0
    worker.join(timeout=30)
    assert "error" not in result, result.get("error")
    invocation = result["invocation"]
    assert invocation.function_error is None
    assert invocation.json() == {"in": "flight"}
    node.start()
    cli = s.NimbusCli(nimbus_bin, node)
    assert s.usage_entry(cli.usage(), name)["invocations"] == 1

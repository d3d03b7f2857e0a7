"""Process functions: Python, Node.js and custom runtimes over the Lambda Runtime API, in a
sandbox, with Lambda's lifecycle (warm reuse, crash, timeout, out of memory)."""

from __future__ import annotations

import json
import time

import pytest

import e2e_support as s
import process_support as p

PYTHON = p.host_python_runtime()
NODE = p.host_node_runtime()


def test_python_function_with_context_environment_and_warm_state(lambda_client):
    name = p.deploy(
        lambda_client, "python-hello", PYTHON, "app.handler",
        MemorySize=256, Environment={"Variables": {"GREETING": "hi"}},
    )
    first = s.invoke(lambda_client, name, {"n": 1}, tail=True)
    assert first.function_error is None, first.body
    out = first.json()
    assert out["event"] == {"n": 1}
    assert out["invocations"] == 1
    assert out["request_id"] == first.request_id
    assert out["function_name"] == name
    assert out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"].endswith(f":function:{name}")
    assert out["memory_limit_in_mb"] == "256"
    assert 0 < out["remaining_ms"] <= 3000
    assert out["log_group_name"] == f"/aws/lambda/{name}"
    env = out["env"]
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert env["_HANDLER"] == "app.handler"
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert env["LAMBDA_RUNTIME_DIR"] == "/var/runtime"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["AWS_REGION"] == s.REGION
    assert env["TZ"] == ":UTC" and env["LANG"] and env["PATH"]
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == out["log_stream_name"]
    assert env["GREETING"] == "hi"
    assert s.HOST_SENTINEL_VAR not in env
    assert out["uid"] != 0
    log = s.decode_log_result(first.log_result)
    assert "hello from python, invocation 1" in log
    report = s.check_single_invocation_log(log, memory_mb=256)
    assert report.init_ms is not None
    assert 0 < report.max_memory_mb <= 256

    assert out["client_context"] is None and out["identity_id"] is None
    context = {"custom": {"app": "e2e"}, "env": {"locale": "en"},
               "client": {"app_title": "shop", "installation_id": "i-1"}}
    encoded = __import__("base64").b64encode(json.dumps(context).encode()).decode()
    second = s.invoke(lambda_client, name, {"n": 2}, tail=True, ClientContext=encoded)
    assert second.json()["invocations"] == 2, "a warm sandbox keeps its global state"
    assert second.json()["client_context"] == {
        "custom": {"app": "e2e"}, "env": {"locale": "en"},
        "client": {"installation_id": "i-1", "app_title": "shop", "app_version_name": None,
                   "app_version_code": None, "app_package_name": None},
    }
    assert s.check_single_invocation_log(s.decode_log_result(second.log_result), memory_mb=256).init_ms is None


def test_python_exception_is_lambdas_error_object(lambda_client):
    name = p.deploy(lambda_client, "python-errors", PYTHON, "app.handler")
    result = s.invoke(lambda_client, name, {"input": 42})
    assert result.function_error == "Unhandled"
    body = result.json()
    assert body["errorType"] == "ValidationFailed"
    assert body["errorMessage"] == "bad input: 42"
    # Only the function's own frames, as AWS's runtime reports them.
    assert isinstance(body["stackTrace"], list) and body["stackTrace"]
    assert all("/var/task/" in frame for frame in body["stackTrace"]), body["stackTrace"]
    assert "in handler" in body["stackTrace"][-1]
    # The sandbox survives a handled error.
    assert s.invoke(lambda_client, name, {"input": 1}).json()["errorMessage"] == "bad input: 1"


def test_python_import_failure_is_an_init_error(lambda_client):
    name = p.deploy(lambda_client, "python-errors", PYTHON, "broken.handler")
    result = s.invoke(lambda_client, name, {}, tail=True)
    assert result.function_error == "Unhandled"
    body = result.json()
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "module_that_does_not_exist" in body["errorMessage"]
    missing = p.deploy(lambda_client, "python-errors", PYTHON, "nothere.handler")
    assert s.invoke(lambda_client, missing, {}).json()["errorType"] == "Runtime.ImportModuleError"


def test_node_async_callback_and_error_handlers(lambda_client):
    name = p.deploy(lambda_client, "node-hello", NODE, "index.handler")
    first = s.invoke(lambda_client, name, {"k": "v"}, tail=True)
    assert first.function_error is None, first.body
    out = first.json()
    assert out["event"] == {"k": "v"}
    assert out["requestId"] == first.request_id
    assert out["functionName"] == name
    assert out["memoryLimitInMB"] == "128"
    assert out["remaining"] > 0
    assert "hello from node, invocation 1" in s.decode_log_result(first.log_result)
    assert s.invoke(lambda_client, name, {}).json()["invocations"] == 2

    callback = p.deploy(lambda_client, "node-hello", NODE, "index.callback")
    assert s.invoke(lambda_client, callback, {"c": 1}).json() == {"callback": True, "event": {"c": 1}}

    failing = p.deploy(lambda_client, "node-hello", NODE, "index.fails")
    result = s.invoke(lambda_client, failing, {})
    assert result.function_error == "Unhandled"
    assert result.json()["errorType"] == "TypeError"
    assert result.json()["errorMessage"] == "node says no"


@pytest.mark.parametrize("runtime", ["provided", "provided.al2", "provided.al2023"])
def test_custom_runtime_bootstrap(lambda_client, runtime):
    name = p.deploy(lambda_client, "provided-python", runtime, "unused.handler")
    assert s.invoke(lambda_client, name, {"echo": runtime}).json() == {"echo": runtime}


def test_provided_without_bootstrap_is_refused(raw_lambda_client):
    with pytest.raises(Exception) as excinfo:
        p.deploy(raw_lambda_client, "python-hello", "provided.al2023", "app.handler")
    assert s.client_error(excinfo) == ("InvalidParameterValueException", 400)


def test_crash_fails_the_invocation_and_replaces_the_sandbox(lambda_client):
    name = p.deploy(lambda_client, "python-lifecycle", PYTHON, "app.handler")
    assert s.invoke(lambda_client, name, {}).json()["invocations"] == 1
    crashed = s.invoke(lambda_client, name, {"action": "crash"}, tail=True)
    assert crashed.function_error == "Unhandled"
    body = crashed.json()
    assert body["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in body["errorMessage"]
    assert "about to crash" in s.decode_log_result(crashed.log_result)
    after = s.invoke(lambda_client, name, {}, tail=True)
    assert after.json()["invocations"] == 1, "a new sandbox serves after the crash"
    assert s.check_single_invocation_log(s.decode_log_result(after.log_result)).init_ms is not None


def test_timeout_kills_the_sandbox(lambda_client):
    name = p.deploy(lambda_client, "python-lifecycle", PYTHON, "app.handler", Timeout=1)
    result = s.invoke(lambda_client, name, {"action": "hang"})
    assert result.function_error == "Unhandled"
    body = result.json()
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    assert s.invoke(lambda_client, name, {}).json()["invocations"] == 1


def test_memory_limit_kills_the_sandbox_and_says_so(lambda_client):
    name = p.deploy(lambda_client, "python-lifecycle", PYTHON, "app.handler", MemorySize=128)
    result = s.invoke(lambda_client, name, {"action": "eat", "mb": 256}, tail=True)
    assert result.function_error == "Unhandled"
    assert result.json()["errorType"] == "Runtime.OutOfMemory"
    report = s.parse_reports(s.decode_log_result(result.log_result))[0]
    assert report.max_memory_mb >= 120
    assert s.invoke(lambda_client, name, {"action": "eat", "mb": 16}).json() == {"survived": 16}


def test_response_over_6_mb_is_refused(lambda_client):
    name = p.deploy(lambda_client, "python-lifecycle", PYTHON, "app.handler", MemorySize=512)
    result = s.invoke(lambda_client, name, {"action": "big"})
    assert result.function_error == "Unhandled"
    assert result.json()["errorType"] == "Function.ResponseSizeTooLarge"
    assert s.invoke(lambda_client, name, {}).function_error is None


def test_idle_sandboxes_are_shut_down_after_keep_alive(node_factory, tmp_path):
    import fleet_support as fs

    # Long enough that the two back-to-back invocations below meet the same sandbox even on a
    # loaded machine; the shutdown is then awaited, not slept for.
    config = tmp_path / "nimbus.toml"
    config.write_text("[sandboxes]\nkeep_alive_s = 4\n")
    node = node_factory(config=config, name="keepalive")
    client = s.lambda_client(node.endpoint)
    name = p.deploy(client, "python-hello", PYTHON, "app.handler")
    assert s.invoke(client, name, {}).json()["invocations"] == 1
    assert s.invoke(client, name, {}).json()["invocations"] == 2
    idle = f'nimbus_sandboxes{{function="{name}",version="$LATEST",worker="local",state="idle"}}'
    assert fs.metric(node, idle) == 1

    def shut_down():
        assert fs.metric(node, idle) == 0

    s.eventually(shut_down, timeout=30)
    again = s.invoke(client, name, {}, tail=True)
    assert again.json()["invocations"] == 1, "the idle sandbox was shut down; this is a cold start"
    assert s.check_single_invocation_log(s.decode_log_result(again.log_result)).init_ms is not None


def test_concurrent_invocations_get_their_own_sandboxes(lambda_client):
    import concurrent.futures

    name = p.deploy(lambda_client, "python-hello", PYTHON, "app.handler")

    def call(i):
        return s.invoke(lambda_client, name, {"i": i}).json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(call, range(8)))
    assert sorted(r["event"]["i"] for r in results) == list(range(8))
    assert all(r["invocations"] >= 1 for r in results)


def test_runtime_logs_are_framed_in_stored_logs(nimbus, lambda_client):
    name = p.deploy(lambda_client, "python-hello", PYTHON, "app.handler")
    rid = s.invoke(lambda_client, name, {}).request_id

    def stored():
        out = nimbus.ok("logs", name).stdout
        assert f"REPORT RequestId: {rid}" in out
        return out

    out = s.eventually(stored)
    assert "hello from python, invocation 1" in out
    assert "INIT_START" in out
    usage = s.usage_entry(nimbus.usage(), name)
    assert usage["invocations"] == 1 and usage["cold_starts"] == 1

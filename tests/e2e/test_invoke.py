"""Invoke: payloads, logs, environment, function errors, limits, concurrency."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import e2e_support as s


@pytest.fixture(scope="module")
def echo_fn(deploy):
    return deploy("echo")


# --------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"hello": "world"},
        {"nested": {"list": [1, 2.5, None, True, "x"]}, "n": -3},
        {"text": "gr\u00fc\u00dfe \u2603 \U0001F600"},
        [1, 2, 3],
        "just a string",
        42,
        None,
    ],
    ids=["object", "nested", "unicode", "array", "string", "number", "null"],
)
def test_echo_round_trips_json(lambda_client, echo_fn, payload):
    inv = s.invoke(lambda_client, echo_fn, payload)
    assert inv.status == 200
    assert inv.function_error is None
    assert inv.executed_version == "$LATEST"
    assert inv.json() == payload


def test_echo_returns_payload_bytes_unchanged(lambda_client, echo_fn):
    raw = b'{ "spaced" :  [1,  2] ,\n "k":"v" }'
    inv = s.invoke(lambda_client, echo_fn, raw)
    assert inv.body == raw


def test_missing_payload_delivers_empty_object(lambda_client, echo_fn):
    inv = s.invoke(lambda_client, echo_fn)
    assert inv.status == 200
    assert inv.function_error is None
    assert inv.json() == {}


def test_empty_payload_delivers_empty_object(lambda_client, echo_fn):
    inv = s.invoke(lambda_client, echo_fn, b"")
    assert inv.status == 200
    assert inv.json() == {}


def test_payload_at_limit_is_accepted(lambda_client, echo_fn):
    # A JSON string of exactly 6 MB, echoed back: neither limit is exceeded.
    payload = b'"' + b"b" * (s.PAYLOAD_LIMIT - 2) + b'"'
    assert len(payload) == s.PAYLOAD_LIMIT
    inv = s.invoke(lambda_client, echo_fn, payload)
    assert inv.status == 200
    assert inv.function_error is None, inv.body[:300]
    assert inv.body == payload


def test_payload_over_limit_is_rejected(lambda_client, echo_fn, assert_serving):
    payload = b'"' + b"c" * (s.PAYLOAD_LIMIT - 1) + b'"'
    assert len(payload) == s.PAYLOAD_LIMIT + 1
    s.assert_client_error(
        lambda: s.invoke(lambda_client, echo_fn, payload),
        "RequestTooLargeException", 413,
    )
    assert_serving()


def test_payload_not_json_is_rejected(lambda_client, echo_fn, assert_serving):
    for bad in (b"not json", b'{"unterminated": ', b"\xff\xfe\x00garbage"):
        s.assert_client_error(
            lambda: s.invoke(lambda_client, echo_fn, bad),
            "InvalidRequestContentException", 400,
        )
    assert_serving()


def test_response_that_is_not_json_is_passed_through(lambda_client, deploy, assert_serving):
    # stdout is the result, whatever it is.
    name = deploy("badjson")
    inv = s.invoke(lambda_client, name, {})
    assert inv.status == 200
    assert inv.function_error is None, inv.body
    assert inv.body == b"not json at all"
    assert_serving()


def test_dry_run(lambda_client, echo_fn):
    inv = s.invoke(lambda_client, echo_fn, {"dry": "run"}, InvocationType="DryRun")
    assert inv.status == 204
    assert inv.body == b""


def test_dry_run_unknown_function(lambda_client):
    s.assert_client_error(
        lambda: s.invoke(lambda_client, s.unique_name("nope"), {}, InvocationType="DryRun"),
        "ResourceNotFoundException", 404,
    )


# --------------------------------------------------------------------------
# Logs (LogType=Tail)
# --------------------------------------------------------------------------


def test_log_tail_cold_then_warm(lambda_client, deploy):
    name = deploy("logger")

    first = s.invoke(lambda_client, name, {"i": 1}, tail=True)
    assert first.status == 200
    assert first.function_error is None
    assert first.executed_version == "$LATEST"
    assert first.json() == {"i": 1}
    log = first.log
    rep1 = s.check_single_invocation_log(log, memory_mb=128)
    assert rep1.init_ms is not None, f"first invoke after create is a cold start:\n{log}"
    assert rep1.init_ms >= 0
    positions = [log.index(f"log line {i}") for i in (1, 2, 3)]
    assert positions == sorted(positions), log
    assert log.index("START RequestId:") < positions[0]
    assert positions[-1] < log.index("END RequestId:")

    second = s.invoke(lambda_client, name, {"i": 2}, tail=True)
    assert second.json() == {"i": 2}
    rep2 = s.check_single_invocation_log(second.log, memory_mb=128)
    assert rep2.init_ms is None, f"second invoke is warm:\n{second.log}"
    assert rep2.request_id != rep1.request_id
    assert "log line 1" in second.log


def test_log_tail_reports_configured_memory(lambda_client, deploy):
    name = deploy("echo", memory=512)
    inv = s.invoke(lambda_client, name, {}, tail=True)
    s.check_single_invocation_log(inv.log, memory_mb=512)


def test_cold_start_again_after_code_update(lambda_client, deploy, make_zip):
    name = deploy("logger")
    assert s.invoke(lambda_client, name, {}, tail=True).log  # cold
    warm = s.invoke(lambda_client, name, {}, tail=True)
    assert s.check_single_invocation_log(warm.log).init_ms is None

    lambda_client.update_function_code(FunctionName=name, ZipFile=make_zip("echo", entry="logger.wasm"))
    s.wait_updated(lambda_client, name)
    after = s.invoke(lambda_client, name, {"new": "code"}, tail=True)
    assert after.json() == {"new": "code"}
    rep = s.check_single_invocation_log(after.log)
    assert rep.init_ms is not None, f"first invoke after an update is cold:\n{after.log}"
    assert "log line" not in after.log  # the new module does not log


def test_no_log_result_without_tail(lambda_client, echo_fn):
    inv = s.invoke(lambda_client, echo_fn, {})
    assert inv.log_result is None


def test_request_id_header_matches_log(lambda_client, echo_fn):
    inv = s.invoke(lambda_client, echo_fn, {}, tail=True)
    rep = s.check_single_invocation_log(inv.log)
    assert inv.request_id == rep.request_id


def test_log_tail_of_failing_function_holds_stderr(lambda_client, deploy):
    name = deploy("fail")
    inv = s.invoke(lambda_client, name, {}, tail=True)
    assert inv.function_error == "Unhandled"
    assert "something went wrong" in inv.log
    s.check_single_invocation_log(inv.log)


# --------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------


def test_standard_environment_variables(lambda_client, deploy):
    own = {"GREETING": "hello", "EQUALS": "a=b=c"}
    name = deploy("env", memory=384, env=own)
    inv = s.invoke(lambda_client, name, {})
    assert inv.function_error is None, inv.body
    env = inv.json()
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "384"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_REGION"] == s.REGION
    for key, value in own.items():
        assert env[key] == value


def test_host_environment_does_not_leak(lambda_client, deploy):
    name = deploy("env")
    env = s.invoke(lambda_client, name, {}).json()
    assert s.HOST_SENTINEL_VAR not in env
    assert s.HOST_SENTINEL_VALUE not in env.values()


# --------------------------------------------------------------------------
# Function errors
# --------------------------------------------------------------------------


def function_error(inv: s.Invocation) -> dict:
    assert inv.status == 200
    assert inv.function_error == "Unhandled", inv.body[:500]
    assert inv.executed_version == "$LATEST"
    err = inv.json()
    assert isinstance(err, dict), err
    assert isinstance(err.get("errorMessage"), str), err
    return err


def test_timeout(lambda_client, deploy, assert_serving):
    name = deploy("spin", timeout=1)
    for _ in range(2):  # a timed-out function stays usable and times out again
        err = function_error(s.invoke(lambda_client, name, {}))
        assert err["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in err["errorMessage"]
    assert_serving()


def test_trap(lambda_client, deploy, assert_serving):
    name = deploy("trap")
    for _ in range(2):
        err = function_error(s.invoke(lambda_client, name, {}))
        assert err["errorType"] == "Runtime.Trap"
    assert_serving()


def test_exit_error(lambda_client, deploy, assert_serving):
    name = deploy("fail")
    err = function_error(s.invoke(lambda_client, name, {}))
    assert err["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in err["errorMessage"]
    assert_serving()


def test_out_of_memory(lambda_client, deploy, assert_serving):
    name = deploy("grow", memory=128, timeout=60)
    err = function_error(s.invoke(lambda_client, name, {}))
    assert err["errorType"] == "Runtime.OutOfMemory"
    assert_serving()


def test_response_too_large(lambda_client, deploy, assert_serving):
    name = deploy("bigout", timeout=60)
    inv = s.invoke(lambda_client, name, {})
    assert len(inv.body) < s.PAYLOAD_LIMIT
    err = function_error(inv)
    assert err["errorType"] == "Function.ResponseSizeTooLarge"
    assert_serving()


def test_function_error_does_not_affect_other_functions(lambda_client, deploy):
    broken = deploy("trap")
    fine = deploy("echo")
    for i in range(3):
        assert function_error(s.invoke(lambda_client, broken, {}))["errorType"] == "Runtime.Trap"
        assert s.invoke(lambda_client, fine, {"i": i}).json() == {"i": i}


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------


def test_parallel_invokes_get_their_own_payload(lambda_client, deploy):
    name = deploy("echo")
    payloads = [{"i": i, "nonce": uuid.uuid4().hex, "pad": "x" * (i * 97)} for i in range(32)]

    def one(payload):
        inv = s.invoke(lambda_client, name, payload)
        return inv.status, inv.function_error, inv.body

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, payloads))

    for payload, (status, ferr, body) in zip(payloads, results):
        assert status == 200
        assert ferr is None, body[:300]
        assert json.loads(body) == payload

"""A hostile function tries to get out of its sandbox. Every attempt must fail inside the
sandbox, and the node and other functions keep serving."""

from __future__ import annotations

import os
import socket

import pytest

import e2e_support as s
import process_support as p

PYTHON = p.host_python_runtime()


@pytest.fixture(scope="module", params=["initialised", "restored"])
def hostile(request, lambda_client):
    """The hostile function, in a sandbox that initialised it or in an environment restored
    from a SnapStart version's snapshot (a copy of the template in a jail of its own), which
    must hold as well."""
    if request.param == "initialised":
        return p.deploy(lambda_client, "python-hostile", PYTHON, "app.handler", Timeout=30, MemorySize=1024)
    name = p.deploy(lambda_client, "python-hostile", PYTHON, "app.handler", Timeout=30, MemorySize=1024,
                    SnapStart={"ApplyOn": "PublishedVersions"})
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=s.WAITER_CONFIG)
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    first = lambda_client.invoke(FunctionName=f"{name}:{version}", LogType="Tail",
                                 Payload=b'{"attack": "syscalls"}')
    assert "Restore Duration" in s.decode_log_result(first.get("LogResult")), "restored, not initialised"
    return f"{name}:{version}"


def attack(client, name, **event):
    result = s.invoke(client, name, event)
    assert result.function_error is None, result.body
    return result.json()


@pytest.mark.parametrize("path", ["/etc/shadow", "/root/.bashrc", "/proc/1/environ"])
def test_cannot_read_host_files(lambda_client, hostile, assert_serving, path):
    out = attack(lambda_client, hostile, attack="read_file", path=path)
    assert out["outcome"] == "failed", out
    assert_serving()


def test_cannot_see_the_nodes_data_directory(lambda_client, hostile, node):
    for path in [str(node.data_dir), str(node.data_dir / "nimbus.redb"), "/root"]:
        out = attack(lambda_client, hostile, attack="list_dir", path=path)
        assert out["outcome"] == "failed", (path, out)


def test_cannot_write_its_code(lambda_client, hostile):
    out = attack(lambda_client, hostile, attack="write_task")
    assert out == {"outcome": "failed", "error": "EROFS", "message": out["message"]}


def test_tmp_is_private_and_limited(lambda_client):
    name = p.deploy(lambda_client, "python-hostile", PYTHON, "app.handler",
                    Timeout=60, MemorySize=1024, EphemeralStorage={"Size": 512})
    out = attack(lambda_client, name, attack="fill_tmp", limit_mb=512)
    assert out["error"] == "ENOSPC", out
    assert out["written_mb"] <= 512


def test_fork_bomb_is_contained(lambda_client, hostile, assert_serving):
    out = attack(lambda_client, hostile, attack="fork_bomb")
    assert out.get("error") == "EAGAIN", out
    assert out["children"] < 1100
    assert_serving()


def test_cannot_reach_host_services_or_other_sandboxes(lambda_client, hostile, node):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    host_port = listener.getsockname()[1]
    node_port = int(node.endpoint.rsplit(":", 1)[1])
    try:
        out = attack(lambda_client, hostile, attack="connect", ports=[host_port, node_port])
    finally:
        listener.close()
    # The node's port inside the sandbox is the sandbox's own door to the node's APIs (so that
    # URLs the node hands out work there), not the node's listener: a host service on another
    # port is out of reach.
    assert out["results"] == {str(host_port): "ECONNREFUSED", str(node_port): "connected"}, out
    assert out["interfaces"] == ["lo"], "the sandbox has loopback only"


def test_runtime_api_connections_and_descriptors_are_capped(lambda_client, hostile, node, assert_serving):
    def node_descriptors() -> int:
        return len(os.listdir(f"/proc/{node.proc.pid}/fd"))

    before = node_descriptors()
    # Both listeners a sandbox can reach: its Runtime API and the node's APIs.
    for services in (False, True):
        out = attack(lambda_client, hostile, attack="runtime_api_flood", attempts=3000,
                     services=services)
        # Lambda's limit on a function's descriptors, which it cannot raise.
        assert out["nofile"] == [1024, 1024], out
        # The kernel's backlog takes some connections the node never accepted; the node
        # itself holds at most its per-sandbox cap of them.
        assert out["held"] < 1024, out
        during_and_after = node_descriptors()
        assert during_and_after < before + 100, (services, before, during_and_after, out)
        assert_serving()


def test_cannot_signal_processes_outside(lambda_client, node):
    # A fresh sandbox: the shared one may still hold fork-bomb children, whose pids inside its
    # namespace (up to about 1,100) can equal a host pid on a machine whose pids wrap at 32,768.
    fresh = p.deploy(lambda_client, "python-hostile", PYTHON, "app.handler")
    pids = attack(lambda_client, fresh, attack="processes")["pids"]
    assert len(pids) <= 3 and 1 in pids, pids
    for pid in (node.proc.pid, os.getpid()):
        assert pid not in pids, (pid, pids)
        out = attack(lambda_client, fresh, attack="signal_outside", pid=pid)
        assert out["error"] == "ESRCH", out


def test_privileged_system_calls_are_denied(lambda_client, hostile):
    out = attack(lambda_client, hostile, attack="syscalls")
    for call in ["unshare_user", "unshare_mount", "mount", "ptrace_attach_1", "setuid_root", "chroot"]:
        assert out[call] in ("EPERM", "EACCES"), (call, out)
    assert out["CapEff"] == "0000000000000000"
    assert out["NoNewPrivs"] == "1"
    assert out["Seccomp"] == "2"
    assert out["uid"] != 0


def test_node_unharmed_after_attacks(lambda_client, hostile, assert_serving):
    for event in [{"attack": "fork_bomb"}, {"attack": "write_task"}, {"attack": "syscalls"}]:
        s.invoke(lambda_client, hostile, event)
    assert_serving()
    hello = p.deploy(lambda_client, "python-hello", PYTHON, "app.handler")
    assert s.invoke(lambda_client, hello, {"ok": 1}).json()["event"] == {"ok": 1}

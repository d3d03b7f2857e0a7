"""SnapStart for Python: a published version with `SnapStart: {ApplyOn: PublishedVersions}` is
initialised once, when it is published, in a template process; every new environment of that
version is a copy of the template moved into a jail of its own. Through boto3 and the node's
real sandboxes: what the init built is there, what each environment must own (uid, /tmp,
credentials, random numbers, variables) is its own, AWS's `snapshot_restore_py` hooks run in
order, a broken snapshot falls back to a normal init, and a restored function is as confined
as a fresh one."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor


import e2e_support as s
import fleet_support as fs
import process_support as p

APP = b'''
import ctypes, os, random, time, uuid
from snapshot_restore_py import register_before_snapshot, register_after_restore

EVENTS = []
INIT = {
    "pid": os.getpid(), "uid": os.getuid(),
    "key": os.environ.get("AWS_ACCESS_KEY_ID"),
    "stream": os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
    "type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
    "random": random.random(),
}
TABLE = [i * i for i in range(200000)]
# A connection made at init, as a client library's pool keeps one (here to the Runtime API).
import socket
KEPT = socket.create_connection(("127.0.0.1", int(os.environ["AWS_LAMBDA_RUNTIME_API"].rpartition(":")[2])))
with open("/tmp/written-at-init", "w") as f:
    f.write("init")
print("initialising", flush=True)

@register_before_snapshot
def before():
    EVENTS.append("before")

def after(tag):
    EVENTS.append("after:" + tag)

register_after_restore(after, "first")
register_after_restore(after, tag="second")
COUNT = 0

def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp_filters", "Uid"):
                fields[name] = value.strip()
    return fields

def refused(call):
    libc = ctypes.CDLL(None, use_errno=True)
    rc = call(libc)
    return rc != 0 and ctypes.get_errno() == 1

def kept():
    """What the init's connection is in an environment: ended (it belonged to the template's
    network), never another connection of the environment's."""
    try:
        return "ended" if KEPT.recv(1, socket.MSG_DONTWAIT) == b"" else "data"
    except BlockingIOError:
        return "open"
    except OSError as e:
        return type(e).__name__

def handler(event, context):
    global COUNT
    COUNT += 1
    if event.get("sleep"):
        time.sleep(event["sleep"])
    print("invoked", COUNT)
    return {
        "marker": MARKER, "events": EVENTS, "count": COUNT, "table": len(TABLE), "init": INIT,
        "type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "uid": os.getuid(), "pid": os.getpid(), "uuid": str(uuid.uuid4()), "random": random.random(),
        "urandom": os.urandom(8).hex(),
        "key": os.environ.get("AWS_ACCESS_KEY_ID"), "stream": os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        "version": os.environ.get("AWS_LAMBDA_FUNCTION_VERSION"), "tmp": sorted(os.listdir("/tmp")),
        "status": status(), "pids": sorted(int(d) for d in os.listdir("/proc") if d.isdigit()),
        "setns_refused": refused(lambda c: c.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0)),
        "unshare_refused": refused(lambda c: c.unshare(0x10000000)),
        "cwd": os.getcwd(), "kept": kept(),
    }
'''


def app(marker: str) -> bytes:
    return s.zip_bytes({"app.py": APP.replace(b"MARKER", repr(marker).encode())})


def create(lambda_client, name, code, runtime=None, handler="app.handler", **extra):
    """A function with SnapStart on (Python unless `runtime` says otherwise), active."""
    lambda_client.create_function(
        FunctionName=name, Runtime=runtime or p.host_python_runtime(), Role=s.ROLE, Handler=handler,
        Code={"ZipFile": code}, SnapStart={"ApplyOn": "PublishedVersions"}, Timeout=30, **extra)
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=s.WAITER_CONFIG)


def invoke(lambda_client, name, qualifier=None, payload=None, error=False):
    """The decoded answer and the log; `error`: whether the invocation must fail."""
    kw = {"Qualifier": qualifier} if qualifier else {}
    r = lambda_client.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode(), LogType="Tail", **kw)
    body = r["Payload"].read()
    assert ("FunctionError" in r) == error, body
    return json.loads(body), s.decode_log_result(r.get("LogResult"))


def templates_of(name: str) -> list[int]:
    """Pids of the snapshot templates the node runs for function `name` (this test shares the
    machine with its node). Environments restored from a template live one pid namespace deeper
    (and rewrite the environment block they started with); a copy on its way there is the
    template's child and still shows the template's."""
    found = []
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/status") as f:
                status = f.read().splitlines()
            depth = next(len(l.split()) - 1 for l in status if l.startswith("NSpid:"))
            parents[int(pid)] = next(int(l.split()[1]) for l in status if l.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        if b"_NIMBUS_SNAPSHOT=template" in env and f"AWS_LAMBDA_FUNCTION_NAME={name}".encode() in env \
                and depth == 2:
            found.append(int(pid))
    return [pid for pid in found if parents.get(pid) not in found]


def environ_showing(entry: str) -> bytes:
    """The one process on this machine whose /proc/PID/environ holds `entry`: its environ."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if entry.encode() in env.split(b"\0"):
            found.append(env)
    assert len(found) == 1, (entry, len(found))
    return found[0]


def publish_and_restore_two(lambda_client, name, latest_events):
    """Checks that $LATEST initialises as usual (running no hooks: its events are
    `latest_events`), publishes a version (its snapshot made then) and invokes it twice at once:
    two environments restored from the one initialisation. Returns the version and both
    (answer, log)."""
    got = lambda_client.get_function_configuration(FunctionName=name)
    assert got["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    latest, log = invoke(lambda_client, name)
    assert latest["events"] == latest_events and latest["type"] == "on-demand"
    assert "Init Duration" in log and "Restore Duration" not in log, log

    version = lambda_client.publish_version(FunctionName=name)["Version"]
    got = lambda_client.get_function_configuration(FunctionName=name, Qualifier=version)
    assert got["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    assert len(templates_of(name)) == 1, "the snapshot was made when the version was published"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: invoke(lambda_client, name, version, {"sleep": 1.5}), range(2)))
    return version, results


def assert_restored(got, log, version, runtime_prefix):
    """What every restored environment must be, whatever its runtime: the init's state, its own
    uid, /tmp, credentials, log stream and variables, confined as a fresh sandbox."""
    assert got["marker"] == "one" and got["version"] == version
    assert got["table"] == 200000, "state built at init is there"
    assert got["count"] == 1, "per-invocation state starts from the snapshot's"
    assert got["type"] == "snap-start" and got["init"]["type"] == "snap-start"
    assert "Restore Duration:" in log and "Billed Restore Duration:" in log, log
    assert "Init Duration" not in log.split("REPORT")[-1], log
    assert f"RESTORE_START Runtime Version: nimbus:{runtime_prefix}" in log, log
    assert "invoked 1" in log
    # Its own: uid, /tmp, credentials, log stream; never the template's.
    assert got["uid"] != got["init"]["uid"]
    assert got["tmp"] == [], "/tmp is the environment's own, not the template's"
    assert got["key"] and got["key"] != got["init"]["key"], "fresh credentials after restore"
    assert got["stream"] != got["init"]["stream"]
    assert got["cwd"] == "/var/task"
    # What /proc shows (to the host: the copy cannot read its own) as the variables it
    # started with is its own, not the template's.
    environ = environ_showing(f"AWS_LAMBDA_LOG_STREAM_NAME={got['stream']}")
    assert got["init"]["key"].encode() not in environ and got["init"]["stream"].encode() not in environ
    # Confined as a fresh sandbox: no capabilities, the restored filters, and no other process
    # of the node in sight.
    assert got["status"]["CapEff"] == "0000000000000000" and got["status"]["CapBnd"] == "0000000000000000"
    assert got["status"]["NoNewPrivs"] == "1" and int(got["status"]["Seccomp_filters"]) >= 3
    assert got["pids"] == [1, got["pid"]], (got["pids"], got["pid"])


def test_a_published_python_version_starts_from_its_snapshot(lambda_client):
    name = s.unique_name("snappy")
    create(lambda_client, name, app("one"))
    version, results = publish_and_restore_two(lambda_client, name, latest_events=[])
    (a, log_a), (b, log_b) = results
    for got, log in results:
        assert got["events"] == ["before", "after:first", "after:second"], got["events"]
        assert_restored(got, log, version, "python3.")
        assert got["kept"] == "ended", got["kept"]
        assert got["setns_refused"] and got["unshare_refused"]
    assert a["uid"] != b["uid"]
    assert a["uuid"] != b["uuid"] and a["random"] != b["random"] and a["urandom"] != b["urandom"]
    assert a["stream"] != b["stream"] and a["key"] != b["key"]
    # The snapshot's init log is given once, with the first restored environment.
    both = log_a + log_b
    assert both.count("Phase: snapshot") == 1 and both.count("initialising") == 1, both

    # A warm environment keeps its state between invocations.
    again, log = invoke(lambda_client, name, version)
    assert again["count"] == 2 and "Restore Duration" not in log


def test_a_new_version_snapshots_the_new_code_and_deleting_a_version_drops_its_snapshot(lambda_client, node):
    def reported(kind):
        return fs.metric(node, f'nimbus_worker_snapshot_{kind}{{worker="local"}}')

    templates_before = reported("templates")
    name = s.unique_name("snapver")
    create(lambda_client, name, app("one"))
    v1 = lambda_client.publish_version(FunctionName=name)["Version"]
    assert reported("templates") == templates_before + 1
    assert reported("memory_bytes") > 0, "the templates' memory is reported"
    lambda_client.update_function_code(FunctionName=name, ZipFile=app("two"))
    s.wait_updated(lambda_client, name)
    v2 = lambda_client.publish_version(FunctionName=name)["Version"]
    assert invoke(lambda_client, name, v2)[0]["marker"] == "two"
    assert invoke(lambda_client, name, v1)[0]["marker"] == "one"
    assert len(templates_of(name)) == 2

    lambda_client.delete_function(FunctionName=name, Qualifier=v1)

    def templates(count):
        def check():
            assert len(templates_of(name)) == count

        return check

    s.eventually(templates(1))
    assert reported("templates") == templates_before + 1
    lambda_client.delete_function(FunctionName=name)
    s.eventually(templates(0))
    assert reported("templates") == templates_before


def test_provisioned_concurrency_on_a_snapstart_version_restores_its_environments(lambda_client):
    name = s.unique_name("snapprov")
    create(lambda_client, name, app("prov"))
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    lambda_client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    def ready():
        got = lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
        assert got["Status"] == "READY", got

    s.eventually(ready, timeout=30)
    got, log = invoke(lambda_client, name, version)
    assert got["events"] == ["before", "after:first", "after:second"]
    assert got["type"] == "provisioned-concurrency" and got["table"] == 200000, (got, log)
    report = log.split("REPORT")[-1]
    assert "Restore Duration" not in report and "Init Duration" not in report, log
    lambda_client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)


def test_a_snapshot_that_died_falls_back_to_a_normal_init(lambda_client):
    """The template exits a moment after it is ready (a thread its init started; threads are
    not copied into environments). The environment restored ahead of need before it died still
    serves; the next cold start initialises normally and says why."""
    name = s.unique_name("snapdie")
    code = s.zip_bytes({"app.py": b'''
import os, threading, time
def _die():
    time.sleep(1)
    os._exit(3)
if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
    threading.Thread(target=_die, daemon=True).start()
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")}
'''})
    create(lambda_client, name, code)
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    time.sleep(2.5)
    # Two at once: two new environments. The fallback init starts the thread as well (its type
    # is snap-start): the answers come before it fires.
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: invoke(lambda_client, name, version, {"sleep": 0.3}), range(2)))
    assert all(got["type"] == "snap-start" for got, _ in results)
    fell_back = [log for _, log in results if "RESTORE_FAILED" in log]
    assert fell_back, [log for _, log in results]
    assert "initialised normally" in fell_back[0] and "Init Duration" in fell_back[0].split("REPORT")[-1]
    assert "Restore Duration" not in fell_back[0], fell_back[0]


def test_a_failing_init_or_hook_refuses_the_version_or_the_restore(lambda_client):
    name = s.unique_name("snapfail")
    create(lambda_client, name, s.zip_bytes({"app.py": b"raise RuntimeError('no database')\ndef handler(e, c):\n    return 1\n"}))
    err = s.assert_client_error(lambda: lambda_client.publish_version(FunctionName=name),
                                "InvalidParameterValueException", 400)
    assert "no database" in err.response["Error"]["Message"]
    assert [v["Version"] for v in lambda_client.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST"]

    hooks = s.unique_name("snaphook")
    create(lambda_client, hooks, s.zip_bytes({"app.py": b'''
from snapshot_restore_py import register_after_restore
@register_after_restore
def reconnect():
    raise ConnectionError("cannot reconnect")
def handler(e, c):
    return 1
'''}))
    version = lambda_client.publish_version(FunctionName=hooks)["Version"]
    r = lambda_client.invoke(FunctionName=hooks, Qualifier=version, Payload=b"{}")
    assert r.get("FunctionError") == "Unhandled"
    error = json.loads(r["Payload"].read())
    assert error["errorType"] == "Runtime.AfterRestoreError" and "cannot reconnect" in error["errorMessage"], error


def test_snapstart_is_refused_where_it_cannot_apply(lambda_client):
    err = s.assert_client_error(lambda: lambda_client.create_function(
        FunctionName=s.unique_name("snapno"), Runtime="provided.al2023", Role=s.ROLE, Handler="index.handler",
        Code={"ZipFile": s.zip_bytes({"bootstrap": b"#!/bin/sh\n"})},
        SnapStart={"ApplyOn": "PublishedVersions"}), "InvalidParameterValueException", 400)
    assert "SnapStart is not supported" in err.response["Error"]["Message"]

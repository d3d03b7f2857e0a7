"""SnapStart for Node.js: a published version with `SnapStart: {ApplyOn: PublishedVersions}` is
initialised once, when it is published, in a template process; every new environment of that
version is a copy of the template (forked by the runtime's addon) moved into a jail of its own.
Through boto3 and the node's real sandboxes: what the init built is there, what each environment
must own (uid, /tmp, credentials, random numbers, variables, pid) is its own, the
`snapshot-restore-node` hooks run in order, Node's event loop, thread pool and exits work in a
copy, and a restored function is as confined as a fresh one."""

from __future__ import annotations

import json
import time

import e2e_support as s
import process_support as p
import test_snapstart_python as snap
from test_snapstart_python import invoke, templates_of

APP = b'''
const crypto = require('crypto');
const fs = require('fs');
const { registerBeforeSnapshot, registerAfterRestore } = require('snapshot-restore-node');

const EVENTS = [];
const INIT = {
  pid: process.pid, uid: process.getuid(),
  key: process.env.AWS_ACCESS_KEY_ID, stream: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
  type: process.env.AWS_LAMBDA_INITIALIZATION_TYPE,
  random: Math.random(), uuid: crypto.randomUUID(),
};
const TABLE = Array.from({ length: 200000 }, (_, i) => i * i);
fs.writeFileSync('/tmp/written-at-init', 'init');
// A connection made at init, as a client library's pool keeps one (here to the Runtime API),
// without an error handler: in an environment it must end, not fail (which would be thrown).
let KEPT = 'open';
const kept = require('net').connect(Number(process.env.AWS_LAMBDA_RUNTIME_API.split(':')[1]), '127.0.0.1');
kept.on('data', () => {});
kept.on('close', () => { KEPT = 'closed'; });
// The thread pool runs at init: a copy has none of its threads and must start its own.
fs.promises.readdir('/var/task').then(() => EVENTS.push('pool'));
console.log('initialising');

registerBeforeSnapshot(() => EVENTS.push('before:first'));
registerBeforeSnapshot(async () => { await new Promise((r) => setTimeout(r, 5)); EVENTS.push('before:second'); });
registerAfterRestore((tag) => EVENTS.push('after:' + tag), 'first');
registerAfterRestore(async (tag) => { await new Promise((r) => setTimeout(r, 5)); EVENTS.push('after:' + tag); }, 'second');
let COUNT = 0;

function status() {
  const fields = {};
  for (const line of fs.readFileSync('/proc/self/status', 'utf8').split('\\n')) {
    const [name, value] = line.split(':');
    if (['CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp_filters', 'Uid'].includes(name)) fields[name] = value.trim();
  }
  return fields;
}

exports.handler = async (event, context) => {
  COUNT += 1;
  if (event.exit) process.exit(event.exit);
  if (event.throwLater) setTimeout(() => { throw new Error('thrown from a timer'); }, 10);
  if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep * 1000));
  console.log('invoked', COUNT);
  return {
    marker: MARKER, events: EVENTS, count: COUNT, table: TABLE.length, init: INIT,
    type: process.env.AWS_LAMBDA_INITIALIZATION_TYPE,
    uid: process.getuid(), pid: process.pid, uuid: crypto.randomUUID(), webUuid: globalThis.crypto.randomUUID(),
    random: Math.random(), bytes: crypto.randomBytes(8).toString('hex'),
    key: process.env.AWS_ACCESS_KEY_ID, stream: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    version: process.env.AWS_LAMBDA_FUNCTION_VERSION, tmp: fs.readdirSync('/tmp').sort(),
    status: status(), pids: fs.readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d)).map(Number).sort((a, b) => a - b),
    cwd: process.cwd(), pool: (await fs.promises.readFile('/proc/self/comm', 'utf8')).trim(),
    remaining: context.getRemainingTimeInMillis() > 0, kept: KEPT,
  };
};
'''


def app(marker: str) -> bytes:
    return s.zip_bytes({"index.js": APP.replace(b"MARKER", json.dumps(marker).encode())})


def create(lambda_client, name, code, **extra):
    snap.create(lambda_client, name, code, runtime=p.host_node_runtime(), handler="index.handler", **extra)


def test_a_published_node_version_starts_from_its_snapshot(lambda_client):
    name = s.unique_name("snapnode")
    create(lambda_client, name, app("one"))
    version, results = snap.publish_and_restore_two(lambda_client, name, latest_events=["pool"])
    (a, log_a), (b, log_b) = results
    for got, log in results:
        # Before hooks in the reverse order of registration, after hooks in order.
        assert got["events"] == ["pool", "before:second", "before:first", "after:first", "after:second"], got
        snap.assert_restored(got, log, version, "nodejs")
        assert got["remaining"] and got["pool"] == "node"
        assert got["kept"] == "closed", got["kept"]
    assert a["uid"] != b["uid"]
    # Unique: nothing random is shared between two copies of one snapshot, even what the
    # template's init had drawn from already.
    for key in ("uuid", "webUuid", "random", "bytes", "stream", "key"):
        assert a[key] != b[key], key
    assert a["uuid"] != a["init"]["uuid"]
    both = log_a + log_b
    assert both.count("Phase: snapshot") == 1 and both.count("initialising") == 1, both

    again, log = invoke(lambda_client, name, version)
    assert again["count"] == 2 and "Restore Duration" not in log


def test_a_copy_that_exits_or_throws_ends_at_once_and_the_next_is_restored(lambda_client):
    """A copy has the template's main thread only: process.exit and an uncaught exception end
    it without waiting for Node's other threads, so the invocation fails at once rather than
    at its timeout."""
    name = s.unique_name("snapexit")
    create(lambda_client, name, app("exit"))
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    started = time.monotonic()
    error, log = invoke(lambda_client, name, version, {"exit": 3}, error=True)
    assert error["errorType"] == "Runtime.ExitError", error
    error, log = invoke(lambda_client, name, version, {"throwLater": True, "sleep": 1}, error=True)
    assert error["errorType"] == "Runtime.ExitError", error
    assert "thrown from a timer" in log, log
    assert time.monotonic() - started < 20
    got, log = invoke(lambda_client, name, version)
    assert got["count"] == 1 and "Restore Duration" in log, log


def test_node_snapshot_invalidation_versions_and_provisioned_concurrency(lambda_client):
    name = s.unique_name("snapnv")
    create(lambda_client, name, app("one"))
    v1 = lambda_client.publish_version(FunctionName=name)["Version"]
    lambda_client.update_function_code(FunctionName=name, ZipFile=app("two"))
    s.wait_updated(lambda_client, name)
    v2 = lambda_client.publish_version(FunctionName=name)["Version"]
    assert invoke(lambda_client, name, v2)[0]["marker"] == "two"
    assert invoke(lambda_client, name, v1)[0]["marker"] == "one"
    assert len(templates_of(name)) == 2

    lambda_client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=v2, ProvisionedConcurrentExecutions=1)

    def ready():
        got = lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=v2)
        assert got["Status"] == "READY", got

    s.eventually(ready, timeout=30)
    lambda_client.delete_function(FunctionName=name, Qualifier=v1)

    def templates(count):
        def check():
            assert len(templates_of(name)) == count

        return check

    s.eventually(templates(1))
    lambda_client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=v2)
    lambda_client.delete_function(FunctionName=name)
    s.eventually(templates(0))


def test_node_init_and_hook_failures(lambda_client):
    name = s.unique_name("snapnfail")
    create(lambda_client, name, s.zip_bytes({"index.js": b"throw new Error('no database');\n"}))
    err = s.assert_client_error(lambda: lambda_client.publish_version(FunctionName=name),
                                "InvalidParameterValueException", 400)
    assert "no database" in err.response["Error"]["Message"]

    # A hook that is not a function is refused where it is registered: an init error.
    notfn = s.unique_name("snapnnotfn")
    create(lambda_client, notfn, s.zip_bytes({"index.js": b"""
require('snapshot-restore-node').registerAfterRestore('reconnect');
exports.handler = async () => 1;
"""}))
    err = s.assert_client_error(lambda: lambda_client.publish_version(FunctionName=notfn),
                                "InvalidParameterValueException", 400)
    assert "a runtime hook must be a function" in err.response["Error"]["Message"], err.response
    assert [v["Version"] for v in lambda_client.list_versions_by_function(FunctionName=notfn)["Versions"]] == ["$LATEST"]

    hooks = s.unique_name("snapnhook")
    create(lambda_client, hooks, s.zip_bytes({"index.js": b'''
const { registerAfterRestore } = require('snapshot-restore-node');
registerAfterRestore(async () => { throw new Error('cannot reconnect'); });
exports.handler = async () => 1;
'''}))
    version = lambda_client.publish_version(FunctionName=hooks)["Version"]
    r = lambda_client.invoke(FunctionName=hooks, Qualifier=version, Payload=b"{}")
    assert r.get("FunctionError") == "Unhandled"
    error = json.loads(r["Payload"].read())
    assert error["errorType"] == "Runtime.AfterRestoreError" and "cannot reconnect" in error["errorMessage"], error

"""SnapStart for WebAssembly modules: a published version of a function with `SnapStart:
{ApplyOn: PublishedVersions}` is pre-initialised through its `wizer.initialize` export, and every
sandbox of that version starts from the initialised state, with the invocation's environment;
`$LATEST` runs as before. Through boto3, with Lambda's configuration shapes."""

from __future__ import annotations

import json

import e2e_support as s
import fleet_support as fs
import process_support as p


def invoke(client, name, qualifier=None, tail=False):
    kw = {"Qualifier": qualifier} if qualifier else {}
    if tail:
        kw["LogType"] = "Tail"
    r = client.invoke(FunctionName=name, Payload=b"{}", **kw)
    assert "FunctionError" not in r, r["Payload"].read()
    log = s.decode_log_result(r.get("LogResult")) if tail else ""
    return json.loads(r["Payload"].read()), log


def test_a_published_version_starts_from_its_initialised_state(lambda_client, make_zip):
    name = s.unique_name("snap")
    created = lambda_client.create_function(
        FunctionName=name, Runtime=s.RUNTIME, Role=s.ROLE, Handler="preinit.wasm",
        Code={"ZipFile": make_zip("preinit")}, SnapStart={"ApplyOn": "PublishedVersions"},
        Environment={"Variables": {"TABLE": "primes"}})
    assert created["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=s.WAITER_CONFIG)

    # $LATEST does not start from a snapshot: the module fills its table itself.
    latest, _ = invoke(lambda_client, name)
    assert latest["preinitialized"] is False and latest["primes"] == 20_000

    version = lambda_client.publish_version(FunctionName=name)
    assert version["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    got = lambda_client.get_function_configuration(FunctionName=name, Qualifier=version["Version"])
    assert got["SnapStart"]["OptimizationStatus"] == "On"

    first, log = invoke(lambda_client, name, version["Version"], tail=True)
    assert first["preinitialized"] is True, first
    assert first["init_runs"] == 1, "the initialisation ran once, at publish, not in this instance"
    assert (first["primes"], first["last"]) == (20_000, 224_737)
    assert first["version"] == version["Version"], "the environment is the invocation's, not the snapshot's"
    assert first["log_stream"], "the sandbox's own variables are there"
    assert first["init_version"] == int(version["Version"]), "the init saw the version's variables"
    assert "Restore Duration:" in log and "Billed Restore Duration:" in log and "Init Duration" not in log, log
    second, _ = invoke(lambda_client, name, version["Version"])
    assert second["preinitialized"] is True and second["init_runs"] == 1

    # A new version after a code change is made from the new code.
    lambda_client.update_function_code(FunctionName=name, ZipFile=make_zip("echo", "preinit.wasm"))
    s.wait_updated(lambda_client, name)
    s.assert_client_error(lambda: lambda_client.publish_version(FunctionName=name),
                          "InvalidParameterValueException", 400)
    assert [v["Version"] for v in lambda_client.list_versions_by_function(FunctionName=name)["Versions"]] \
        == ["$LATEST", version["Version"]], "a version whose snapshot failed was not created"
    # Turning SnapStart off publishes a plain version.
    lambda_client.update_function_configuration(FunctionName=name, SnapStart={"ApplyOn": "None"})
    s.wait_updated(lambda_client, name)
    plain = lambda_client.publish_version(FunctionName=name)
    assert plain["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    echoed = lambda_client.invoke(FunctionName=name, Qualifier=plain["Version"], Payload=b'{"a":1}')
    assert json.loads(echoed["Payload"].read()) == {"a": 1}


def test_snapshots_are_reported_and_deleted_with_their_version(lambda_client, make_zip, node):
    """Each published version's pre-initialised module is a file of its own on the worker,
    reported in the metrics, and deleted with its version or its function."""
    def disk():
        return fs.metric(node, 'nimbus_worker_snapshot_disk_bytes{worker="local"}')

    before = disk()
    name = s.create_preinit_function(lambda_client, make_zip, "snapdisk")
    v1 = lambda_client.publish_version(FunctionName=name)["Version"]
    one = disk() - before
    assert one > 0, "the snapshot's bytes are reported"
    lambda_client.update_function_configuration(FunctionName=name, Environment={"Variables": {"SECOND": "2"}})
    s.wait_updated(lambda_client, name)
    v2 = lambda_client.publish_version(FunctionName=name)["Version"]
    assert v2 != v1
    two = disk() - before - one
    assert two > 0, "the second version's snapshot is a file of its own"
    assert invoke(lambda_client, name, v2)[0]["preinitialized"] is True

    lambda_client.delete_function(FunctionName=name, Qualifier=v1)
    fs.wait_for(lambda: disk() - before == two)
    # The remaining version still starts from its snapshot.
    assert invoke(lambda_client, name, v2)[0]["preinitialized"] is True
    lambda_client.delete_function(FunctionName=name)
    fs.wait_for(lambda: disk() == before)


def test_snapstart_settings_that_cannot_apply_are_refused(lambda_client, raw_lambda_client, make_zip):
    s.assert_client_error(lambda: raw_lambda_client.create_function(
        FunctionName=s.unique_name("snapbad"), Runtime=s.RUNTIME, Role=s.ROLE, Handler="preinit.wasm",
        Code={"ZipFile": make_zip("preinit")}, SnapStart={"ApplyOn": "Sometimes"}), "ValidationException", 400)


def test_snapshots_stay_within_the_workers_disk_limit(node_factory, make_zip, tmp_path):
    """`[worker] snapshot_disk_mb` bounds what a worker keeps on disk for snapshots: making room
    for a new one deletes the least recently used, whose version still starts initialised; one
    larger than the limit alone refuses the publish with the reason, and nothing is lost."""
    config = tmp_path / "nimbus.toml"
    config.write_text("[worker]\nsnapshot_disk_mb = 1\n")
    node = node_factory(config=config, name="snapdisk")
    client = s.lambda_client(node.endpoint)

    def disk():
        return fs.metric(node, 'nimbus_worker_snapshot_disk_bytes{worker="local"}')

    name = s.create_preinit_function(client, make_zip, "snapbound", {"BALLAST_KB": "600"})
    v1 = client.publish_version(FunctionName=name)["Version"]
    one = disk()
    assert 600 * 1024 < one <= 1 << 20, one
    client.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"BALLAST_KB": "600", "SECOND": "2"}})
    s.wait_updated(client, name)
    v2 = client.publish_version(FunctionName=name)["Version"]
    assert 600 * 1024 < disk() <= 1 << 20, "the first version's snapshot made room for the second"
    for version in (v1, v2):
        out, _ = invoke(client, name, version)
        assert out["preinitialized"] is True and out["init_runs"] == 1, out
        assert out["ballast"] == 600 * 1024, out

    # Too large for the limit on its own: refused with the reason; the others are untouched.
    client.update_function_configuration(FunctionName=name, Environment={"Variables": {"BALLAST_KB": "1500"}})
    s.wait_updated(client, name)
    err = s.assert_client_error(lambda: client.publish_version(FunctionName=name),
                                "InvalidParameterValueException", 400)
    assert "1 MB this worker keeps for snapshots" in str(err), err
    assert [v["Version"] for v in client.list_versions_by_function(FunctionName=name)["Versions"]] \
        == ["$LATEST", v1, v2]
    assert 600 * 1024 < disk() <= 1 << 20
    assert invoke(client, name, v2)[0]["preinitialized"] is True

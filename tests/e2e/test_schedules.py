"""Schedules through the EventBridge API (`aws events`, boto3)."""

from __future__ import annotations

import json
import signal
import time

import boto3
import pytest
from botocore.config import Config

import e2e_support as s
from test_async import log_entries, until


def events_client(endpoint: str):
    return boto3.session.Session(
        aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY, region_name=s.REGION
    ).client("events", endpoint_url=endpoint, config=Config(retries={"total_max_attempts": 1}))


def code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_rule_api_and_bad_input(node, lambda_client, make_zip):
    ev = events_client(node.endpoint)
    fn = s.unique_name("target")
    s.create_function(lambda_client, fn, make_zip("record"), handler="record.wasm")
    fn_arn = lambda_client.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
    name = s.unique_name("rule")
    arn = ev.put_rule(Name=name, ScheduleExpression="cron(0 12 ? * MON-FRI *)", Description="noon")["RuleArn"]
    assert arn.endswith(f":rule/{name}")
    described = ev.describe_rule(Name=name)
    assert described["ScheduleExpression"] == "cron(0 12 ? * MON-FRI *)" and described["State"] == "ENABLED"
    ev.disable_rule(Name=name)
    assert ev.describe_rule(Name=name)["State"] == "DISABLED"
    ev.enable_rule(Name=name)
    assert name in [r["Name"] for r in ev.list_rules(NamePrefix=name)["Rules"]]
    put = ev.put_targets(Rule=name, Targets=[
        {"Id": "ok", "Arn": fn_arn, "Input": '{"fixed": true}'},
        {"Id": "missing", "Arn": fn_arn + "-nope"},
    ])
    assert put["FailedEntryCount"] == 1 and put["FailedEntries"][0]["TargetId"] == "missing"
    assert [t["Id"] for t in ev.list_targets_by_rule(Rule=name)["Targets"]] == ["ok"]
    with pytest.raises(Exception) as e:
        ev.delete_rule(Name=name)
    assert code(e) == "ValidationException"
    ev.remove_targets(Rule=name, Ids=["ok"])
    ev.delete_rule(Name=name)
    with pytest.raises(Exception) as e:
        ev.describe_rule(Name=name)
    assert code(e) == "ResourceNotFoundException"
    for bad in ["rate(1 minutes)", "rate(0 hours)", "cron(* * * * * *)", "cron(0 25 * * ? *)",
                "cron(0 0 ? * ? *)", "every day", "cron(0 0 * * ?)"]:
        with pytest.raises(Exception) as e:
            ev.put_rule(Name=s.unique_name("bad"), ScheduleExpression=bad)
        assert code(e) == "ValidationException", bad
    with pytest.raises(Exception) as e:
        ev.put_targets(Rule=s.unique_name("norule"), Targets=[{"Id": "a", "Arn": fn_arn}])
    assert code(e) == "ResourceNotFoundException"


def scheduled_events(endpoint: str, fn: str) -> list[dict]:
    found = []
    for entry in log_entries(endpoint, fn):
        for line in entry["text"].splitlines():
            if line.startswith("EVENT "):
                found.append(json.loads(line[len("EVENT "):]))
    return found


def test_schedule_fires_once_per_due_time_across_a_restart(node_factory, tmp_path, make_zip):
    config = tmp_path / "fast.toml"
    config.write_text("[async]\nretry_base_ms = 100\n")
    node = node_factory(config=config, name="schedules")
    client = s.lambda_client(node.endpoint)
    fn = s.unique_name("tick")
    s.create_function(client, fn, make_zip("record"), handler="record.wasm")
    fn_arn = client.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
    ev = events_client(node.endpoint)
    rule = s.unique_name("every-minute")
    ev.put_rule(Name=rule, ScheduleExpression="rate(1 minute)")
    ev.put_targets(Rule=rule, Targets=[{"Id": "t", "Arn": fn_arn}])
    first = until(lambda: scheduled_events(node.endpoint, fn), timeout=90, interval=1)[0]
    assert first["detail-type"] == "Scheduled Event" and first["source"] == "aws.events"
    assert first["resources"] == [f"arn:aws:events:us-east-1:000000000000:rule/{rule}"]
    assert node.stop(signal.SIGTERM) == 0
    node.start()
    time.sleep(3)
    times = [e["time"] for e in scheduled_events(node.endpoint, fn)]
    assert times.count(first["time"]) == 1, f"the fire at {first['time']} ran again after the restart: {times}"


def test_malformed_json_protocol_bodies(node):
    import http.client

    host, port = node.endpoint.removeprefix("http://").split(":")
    for target, content_type in [("AWSEvents.PutRule", "application/x-amz-json-1.1"),
                                 ("AmazonSQS.CreateQueue", "application/x-amz-json-1.0")]:
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", "/", body=b"[1, 2", headers={"X-Amz-Target": target, "Content-Type": content_type})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 400 and "__type" in body, (target, body)
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("POST", "/", body=b"{}", headers={"X-Amz-Target": "AWSEvents.Nope"})
    assert conn.getresponse().status == 400

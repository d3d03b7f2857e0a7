"""SigV4 authentication, through the real aws CLI and boto3: the node's administrator key works,
an unknown key, a wrong secret and an unsigned request are refused with each API's codes, and
nothing changes."""

from __future__ import annotations

import http.client
import json
import os
import subprocess

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

import e2e_support as s
from conftest import UNSIGNED


def cli(node, workdir, key_id: str, secret: str, *args: str) -> subprocess.CompletedProcess:
    env = s.aws_env(workdir)
    env["AWS_ACCESS_KEY_ID"] = key_id
    env["AWS_SECRET_ACCESS_KEY"] = secret
    aws = os.environ.get("AWS_CLI") or "aws"
    return subprocess.run(
        [aws, "--endpoint-url", node.endpoint, "--region", s.REGION, "--output", "json", *args],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
    )


def client(node, service: str, key_id: str, secret: str):
    return boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=s.REGION
    ).client(service, endpoint_url=node.endpoint,
             config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def test_the_aws_cli_needs_the_nodes_key(node, tmp_path):
    ok = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "lambda", "list-functions")
    assert ok.returncode == 0, ok.stderr
    assert "Functions" in json.loads(ok.stdout)

    unknown = cli(node, tmp_path, "NKIAUNKNOWNKEY000001", s.SECRET_KEY, "lambda", "list-functions")
    assert unknown.returncode != 0
    assert "(UnrecognizedClientException)" in unknown.stderr, unknown.stderr

    wrong = cli(node, tmp_path, s.ACCESS_KEY, "not-the-secret-0123456789", "lambda", "list-functions")
    assert wrong.returncode != 0
    assert "(InvalidSignatureException)" in wrong.stderr, wrong.stderr

    sqs = cli(node, tmp_path, s.ACCESS_KEY, "not-the-secret-0123456789",
              "sqs", "create-queue", "--queue-name", "never-made")
    assert sqs.returncode != 0
    assert "SignatureDoesNotMatch" in sqs.stderr, sqs.stderr
    listed = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "sqs", "list-queues")
    assert "never-made" not in listed.stdout


def test_boto3_gets_each_apis_codes(node):
    good = client(node, "sqs", s.ACCESS_KEY, s.SECRET_KEY)
    good.list_queues()
    for key_id, secret, lambda_code, sqs_code in [
        ("NKIAUNKNOWNKEY000001", s.SECRET_KEY, "UnrecognizedClientException", "InvalidClientTokenId"),
        (s.ACCESS_KEY, "not-the-secret-0123456789", "InvalidSignatureException", "SignatureDoesNotMatch"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client(node, "lambda", key_id, secret).list_functions()
        assert e.value.response["Error"]["Code"] == lambda_code
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client(node, "sqs", key_id, secret).create_queue(QueueName="never-made")
        assert e.value.response["Error"]["Code"] == sqs_code
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client(node, "events", key_id, secret).list_rules()
        assert e.value.response["Error"]["Code"] == lambda_code
    assert "never-made" not in json.dumps(good.list_queues())


def test_unsigned_and_stale_requests_are_refused(node):
    host, port = node.endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/2015-03-31/functions", headers={UNSIGNED: "1"})
    r = conn.getresponse()
    r.read()
    assert r.status == 403
    assert r.getheader("x-amzn-ErrorType") == "MissingAuthenticationTokenException"

    # A signature made ten minutes ago.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    import datetime
    from unittest import mock
    request = AWSRequest(method="GET", url=f"{node.endpoint}/2015-03-31/functions")
    then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=then.replace(tzinfo=None)):
        SigV4Auth(Credentials(s.ACCESS_KEY, s.SECRET_KEY), "lambda", s.REGION).add_auth(request)
    conn.request("GET", "/2015-03-31/functions", headers=dict(request.headers.items()))
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 403
    assert r.getheader("x-amzn-ErrorType") == "InvalidSignatureException"
    assert "Signature expired" in body["Message"]

    # The health check is open.
    conn.request("GET", "/nimbus/v1/health", headers={UNSIGNED: "1"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200


def test_the_first_start_writes_an_admin_key(nimbus_bin, tmp_path):
    data = tmp_path / "data"
    node = s.Node(nimbus_bin, data, tmp_path / "logs")
    env_backup = dict(s.ADMIN_KEY_ENV)
    # Without a key in the environment, the node makes one.
    s.ADMIN_KEY_ENV.clear()
    try:
        node.start()
    finally:
        s.ADMIN_KEY_ENV.update(env_backup)
    try:
        credentials = data / "admin.credentials"
        assert oct(credentials.stat().st_mode & 0o777) == "0o600"
        text = credentials.read_text()
        key_id = text.split("aws_access_key_id = ")[1].split()[0]
        secret = text.split("aws_secret_access_key = ")[1].split()[0]
        assert key_id != s.ACCESS_KEY
        client(node, "lambda", key_id, secret).list_functions()
        with pytest.raises(botocore.exceptions.ClientError):
            client(node, "lambda", s.ACCESS_KEY, s.SECRET_KEY).list_functions()
    finally:
        node.stop()


def test_the_cli_prints_a_profile_the_aws_cli_uses(nimbus_bin, node, tmp_path):
    env = s.clean_env({"NIMBUS_ENDPOINT": node.endpoint, **s.ADMIN_KEY_ENV})
    out = subprocess.run([str(nimbus_bin), "credentials", "--profile", "mynode"], capture_output=True,
                         text=True, timeout=60, env=env, check=True).stdout
    credentials, config = out.split("# ~/.aws/config")
    (tmp_path / "credentials").write_text(credentials.replace("# ~/.aws/credentials", ""))
    (tmp_path / "config").write_text(config)
    assert f"endpoint_url = {node.endpoint}" in config
    aws_env = s.clean_env({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
                           "AWS_CONFIG_FILE": str(tmp_path / "config")})
    aws = os.environ.get("AWS_CLI") or "aws"
    listed = subprocess.run([aws, "--profile", "mynode", "lambda", "list-functions"], capture_output=True,
                            text=True, timeout=120, env=aws_env)
    assert listed.returncode == 0, listed.stderr
    assert "Functions" in json.loads(listed.stdout)


def test_a_bad_profile_name_is_refused_and_nothing_written(nimbus_bin, node, tmp_path):
    env = s.clean_env({"NIMBUS_ENDPOINT": node.endpoint, "HOME": str(tmp_path), **s.ADMIN_KEY_ENV})
    for bad in ["my node", "x]\naws_access_key_id = y", ""]:
        proc = subprocess.run([str(nimbus_bin), "credentials", "--profile", bad, "--write"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode != 0
        assert "profile name" in proc.stderr, proc.stderr
    assert not (tmp_path / ".aws").exists()
    # Written once, then refused rather than written twice.
    ok = subprocess.run([str(nimbus_bin), "credentials", "--write"], capture_output=True, text=True,
                        timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    again = subprocess.run([str(nimbus_bin), "credentials", "--write"], capture_output=True, text=True,
                           timeout=60, env=env)
    assert again.returncode != 0 and "already has [nimbus]" in again.stderr, again.stderr
    assert (tmp_path / ".aws" / "credentials").read_text().count("[nimbus]") == 1
    assert oct((tmp_path / ".aws" / "credentials").stat().st_mode & 0o777) == "0o600"

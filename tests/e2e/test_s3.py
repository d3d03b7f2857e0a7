"""Object storage through S3's own clients: boto3 (with its default checksums, multipart
transfers and presigned URLs), the aws CLI's `s3` and `s3api` commands, raw signed requests for
what the SDKs refuse to send; policies with `s3:` actions; a function that reads and writes
objects with unmodified boto3 code."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from boto3.s3.transfer import TransferConfig

import e2e_support as s
import process_support as p
from conftest import UNSIGNED
from test_auth import cli
from test_iam import admin

PYTHON = p.host_python_runtime()


def s3_client(node, key_id=s.ACCESS_KEY, secret=s.SECRET_KEY, **config):
    return boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=s.REGION
    ).client("s3", endpoint_url=node.endpoint,
             config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, **config))


@pytest.fixture(scope="module")
def s3(node):
    return s3_client(node)


def bucket_name(prefix="b"):
    return s.unique_name(prefix).lower().replace("_", "-")[:63]


@pytest.fixture
def bucket(s3):
    name = bucket_name()
    s3.create_bucket(Bucket=name)
    return name


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def fails(fn, code, status):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn()
    assert code_of(e) == (code, status), e.value.response
    return e.value


def signed(node, method, path, body=b"", headers=None, query=""):
    """A request signed for S3 with the admin key, sent as is (for what boto3 will not send)."""
    url = f"{node.endpoint}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    creds = botocore.credentials.Credentials(s.ACCESS_KEY, s.SECRET_KEY)
    SigV4Auth(creds, "s3", s.REGION).add_auth(request)
    prepared = urllib.request.Request(url, data=body or None, method=method,
                                      headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_buckets_and_objects_round_trip(s3):
    name = bucket_name()
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=name)
    fails(lambda: s3.create_bucket(Bucket=name), "BucketAlreadyOwnedByYou", 409)
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None

    put = s3.put_object(Bucket=name, Key="docs/hello.txt", Body=b"hello, world",
                        ContentType="text/plain", CacheControl="max-age=60",
                        ContentDisposition="inline", Metadata={"Owner": "ada"},
                        Tagging="team=storage&tier=hot")
    assert put["ETag"] == '"%s"' % hashlib.md5(b"hello, world").hexdigest()
    got = s3.get_object(Bucket=name, Key="docs/hello.txt")
    assert got["Body"].read() == b"hello, world"
    assert got["ContentType"] == "text/plain"
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == "inline"
    assert got["Metadata"] == {"owner": "ada"}
    assert got["ETag"] == put["ETag"]
    assert got["TagCount"] == 2
    head = s3.head_object(Bucket=name, Key="docs/hello.txt")
    assert head["ContentLength"] == 12 and head["ETag"] == put["ETag"]
    tags = s3.get_object_tagging(Bucket=name, Key="docs/hello.txt")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "storage", "tier": "hot"}

    part = s3.get_object(Bucket=name, Key="docs/hello.txt", Range="bytes=7-")
    assert part["Body"].read() == b"world"
    assert part["ContentRange"] == "bytes 7-11/12"
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert s3.get_object(Bucket=name, Key="docs/hello.txt", Range="bytes=-5")["Body"].read() == b"world"
    fails(lambda: s3.get_object(Bucket=name, Key="docs/hello.txt", Range="bytes=100-200"),
          "InvalidRange", 416)

    # Larger than what stays inline, in several chunks.
    big = os.urandom(3 * 1024 * 1024 + 17)
    s3.put_object(Bucket=name, Key="big.bin", Body=big)
    assert s3.get_object(Bucket=name, Key="big.bin")["Body"].read() == big
    middle = s3.get_object(Bucket=name, Key="big.bin", Range="bytes=1000000-2000000")["Body"].read()
    assert middle == big[1000000:2000001]

    fails(lambda: s3.delete_bucket(Bucket=name), "BucketNotEmpty", 409)
    s3.delete_object(Bucket=name, Key="docs/hello.txt")
    s3.delete_object(Bucket=name, Key="never-there")
    fails(lambda: s3.get_object(Bucket=name, Key="docs/hello.txt"), "NoSuchKey", 404)
    out = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "big.bin"}, {"Key": "absent"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["absent", "big.bin"]
    s3.delete_bucket(Bucket=name)
    fails(lambda: s3.head_bucket(Bucket=name), "404", 404)
    fails(lambda: s3.get_object(Bucket=name, Key="x"), "NoSuchBucket", 404)


def test_checksums_as_sdks_send_them(node, s3, bucket):
    # boto3's default: a CRC32 computed while sending (a trailer over aws-chunked where it can).
    body = b"checksummed " * 1000
    s3.put_object(Bucket=bucket, Key="default", Body=body)
    head = s3.head_object(Bucket=bucket, Key="default", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"]
    for algorithm in ["CRC32C", "SHA1", "SHA256", "CRC64NVME"]:
        key = f"with-{algorithm}"
        out = s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm=algorithm)
        assert out[f"Checksum{algorithm}"], out
        got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got[f"Checksum{algorithm}"] == out[f"Checksum{algorithm}"]
        assert got["Body"].read() == body
    # Without any: S3 keeps a CRC64NVME of every new object.
    status, _, _ = signed(node, "PUT", f"/{bucket}/plain", b"plain body")
    assert status == 200
    assert s3.head_object(Bucket=bucket, Key="plain", ChecksumMode="ENABLED")["ChecksumCRC64NVME"]

    # A checksum that does not match the body: refused, nothing stored.
    fails(lambda: s3.put_object(Bucket=bucket, Key="bad-crc", Body=body, ChecksumCRC32="AAAAAA=="),
          "BadDigest", 400)
    fails(lambda: s3.put_object(Bucket=bucket, Key="bad-md5", Body=body,
                                ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg=="), "BadDigest", 400)
    fails(lambda: s3.head_object(Bucket=bucket, Key="bad-crc"), "404", 404)
    fails(lambda: s3.head_object(Bucket=bucket, Key="bad-md5"), "404", 404)


def test_a_signature_over_another_body_is_refused(node, bucket, s3):
    url = f"{node.endpoint}/{bucket}/forged"
    request = AWSRequest(method="PUT", url=url, data=b"the signed body")
    request.headers["x-amz-content-sha256"] = hashlib.sha256(b"the signed body").hexdigest()
    SigV4Auth(botocore.credentials.Credentials(s.ACCESS_KEY, s.SECRET_KEY), "s3", s.REGION).add_auth(request)
    forged = urllib.request.Request(url, data=b"another body!!!", method="PUT",
                                    headers=dict(request.headers.items()))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(forged, timeout=30)
    assert e.value.code == 400
    assert b"<Code>XAmzContentSHA256Mismatch</Code>" in e.value.read()
    fails(lambda: s3.head_object(Bucket=bucket, Key="forged"), "404", 404)


def test_multipart_upload_of_50_mib_with_upload_file(s3, bucket, tmp_path):
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1024 * 1024))
    config = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024,
                            max_concurrency=4)
    s3.upload_file(str(source), bucket, "uploads/big.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="uploads/big.bin")
    assert head["ContentLength"] == 50 * 1024 * 1024
    assert head["ETag"].endswith('-7"'), head["ETag"]
    target = tmp_path / "back.bin"
    s3.download_file(bucket, "uploads/big.bin", str(target), Config=config)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    part2 = s3.get_object(Bucket=bucket, Key="uploads/big.bin", PartNumber=2)
    assert part2["PartsCount"] == 7
    assert part2["ContentLength"] == 8 * 1024 * 1024
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_multipart_rules(s3, bucket):
    mb5 = b"x" * (5 * 1024 * 1024)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="application/x-test",
                                    Metadata={"k": "v"})["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("mp", up)]
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=mb5)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="mp", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, len(mb5)), (2, 4)]
    fails(lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]}),
        "InvalidPartOrder", 400)
    fails(lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": '"%s"' % ("0" * 32)}]}),
        "InvalidPart", 400)
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    raw = b"".join(bytes.fromhex(e.strip('"')) for e in (e1, e2))
    assert done["ETag"] == '"%s-2"' % hashlib.md5(raw).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"k": "v"}
    assert got["Body"].read() == mb5 + b"tail"
    fails(lambda: s3.list_parts(Bucket=bucket, Key="mp", UploadId=up), "NoSuchUpload", 404)

    # A part under 5 MiB that is not the last; then an abort.
    small = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    tags = [s3.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=n, Body=b"tiny")["ETag"]
            for n in (1, 2)]
    fails(lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key="small", UploadId=small,
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": t} for n, t in enumerate(tags)]}),
        "EntityTooSmall", 400)
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=small)
    fails(lambda: s3.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=3, Body=b"x"),
          "NoSuchUpload", 404)

    # UploadPartCopy from a range of an existing object.
    cp = s3.create_multipart_upload(Bucket=bucket, Key="copied")["UploadId"]
    r = s3.upload_part_copy(Bucket=bucket, Key="copied", UploadId=cp, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "mp"},
                            CopySourceRange=f"bytes=0-{len(mb5) - 1}")
    e = s3.upload_part(Bucket=bucket, Key="copied", UploadId=cp, PartNumber=2, Body=b"!")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="copied", UploadId=cp, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": e}]})
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == mb5 + b"!"


def test_listing_in_s3s_order_with_prefixes_and_pages(node, s3, bucket):
    keys = ["a/1", "a/2", "b", "c/x/1", "c/y", "d e", "z", "é/1"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    v2 = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in v2["Contents"]] == keys
    assert v2["KeyCount"] == len(keys) and not v2["IsTruncated"]
    rolled = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["a/", "c/", "é/"]
    assert [o["Key"] for o in rolled["Contents"]] == ["b", "d e", "z"]
    under = s3.list_objects_v2(Bucket=bucket, Prefix="c/", Delimiter="/")
    assert [p["Prefix"] for p in under["CommonPrefixes"]] == ["c/x/"]
    assert [o["Key"] for o in under["Contents"]] == ["c/y"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="c/y")
    assert [o["Key"] for o in after["Contents"]] == ["d e", "z", "é/1"]

    seen = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/",
                                                              PaginationConfig={"PageSize": 2}):
        assert page["KeyCount"] <= 2
        seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        seen += [o["Key"] for o in page.get("Contents", [])]
    assert sorted(seen) == sorted(["a/", "b", "c/", "d e", "é/", "z"]) and len(seen) == 6
    seen_v1 = []
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 3}):
        seen_v1 += [o["Key"] for o in page.get("Contents", [])]
    assert seen_v1 == keys
    # encoding-type=url: boto3 asks for it by default on ListObjects and decodes what comes back.
    status, _, body = signed(node, "GET", f"/{bucket}", query="encoding-type=url&prefix=d")
    assert status == 200 and b"<Key>d%20e</Key>" in body


def test_conditional_requests_and_copies(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    fails(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfNoneMatch="*"), "PreconditionFailed", 412)
    assert s3.put_object(Bucket=bucket, Key="new", Body=b"n", IfNoneMatch="*")["ETag"]
    fails(lambda: s3.get_object(Bucket=bucket, Key="k", IfMatch='"nope"'), "PreconditionFailed", 412)
    fails(lambda: s3.get_object(Bucket=bucket, Key="k", IfNoneMatch=etag), "304", 304)
    assert s3.get_object(Bucket=bucket, Key="k", IfMatch=etag)["Body"].read() == b"v1"

    s3.put_object(Bucket=bucket, Key="src", Body=b"source", ContentType="text/x-src", Metadata={"a": "1"})
    s3.copy_object(Bucket=bucket, Key="same-meta", CopySource={"Bucket": bucket, "Key": "src"})
    got = s3.get_object(Bucket=bucket, Key="same-meta")
    assert got["Body"].read() == b"source" and got["Metadata"] == {"a": "1"}
    s3.copy_object(Bucket=bucket, Key="new-meta", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", ContentType="text/plain", Metadata={"b": "2"})
    got = s3.get_object(Bucket=bucket, Key="new-meta")
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"b": "2"}
    fails(lambda: s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"}),
          "InvalidRequest", 400)
    fails(lambda: s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "src"},
                                 CopySourceIfMatch='"other"'), "PreconditionFailed", 412)
    fails(lambda: s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "absent"}),
          "NoSuchKey", 404)


@pytest.mark.parametrize("version", ["default", "s3v4"])
def test_presigned_urls(node, bucket, version):
    # botocore presigns with signature version 2 unless told otherwise; both must work.
    s3 = s3_client(node) if version == "default" else s3_client(node, signature_version="s3v4")
    s3.put_object(Bucket=bucket, Key="shared.txt", Body=b"for your eyes")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared.txt"}, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"for your eyes"
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "dropped.txt"},
                                        ExpiresIn=60)
    # No Content-Type: the URL was signed without one (urllib would add its own).
    req = urllib.request.Request(put_url, data=b"uploaded by a browser", method="PUT",
                                 headers={"Content-Type": ""})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    assert s3.get_object(Bucket=bucket, Key="dropped.txt")["Body"].read() == b"uploaded by a browser"

    tampered = url.replace("shared.txt", "dropped.txt")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered, timeout=10)
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()
    short = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared.txt"}, ExpiresIn=1)
    time.sleep(2.2)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(short, timeout=10)
    assert e.value.code == 403 and b"AccessDenied" in e.value.read()


def test_the_aws_cli_s3_commands(node, tmp_path):
    name = bucket_name("cli")

    def aws(*args):
        out = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, *args)
        assert out.returncode == 0, out.stderr
        return out.stdout

    aws("s3", "mb", f"s3://{name}")
    src = tmp_path / "site"
    (src / "css").mkdir(parents=True)
    (src / "index.html").write_text("<h1>hi</h1>")
    (src / "css" / "site.css").write_text("h1 { color: red }")
    (src / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))
    aws("s3", "cp", str(src / "index.html"), f"s3://{name}/index.html")
    aws("s3", "sync", str(src), f"s3://{name}/site")
    listing = aws("s3", "ls", f"s3://{name}/site/", "--recursive")
    for k in ["site/index.html", "site/css/site.css", "site/big.bin"]:
        assert k in listing, listing
    back = tmp_path / "back"
    aws("s3", "sync", f"s3://{name}/site", str(back))
    assert (back / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert (back / "css" / "site.css").read_text() == "h1 { color: red }"
    url = aws("s3", "presign", f"s3://{name}/index.html", "--expires-in", "60").strip()
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"<h1>hi</h1>"
    head = json.loads(aws("s3api", "head-object", "--bucket", name, "--key", "index.html"))
    assert head["ContentLength"] == len("<h1>hi</h1>")
    failed = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "s3", "rb", f"s3://{name}")
    assert failed.returncode != 0 and "BucketNotEmpty" in failed.stderr
    aws("s3", "rm", f"s3://{name}", "--recursive")
    aws("s3", "rb", f"s3://{name}")
    assert name not in aws("s3", "ls")


def test_bad_input_gets_s3s_errors(node, s3, bucket):
    fails(lambda: s3.create_bucket(Bucket="Bad_Name"), "InvalidBucketName", 400)
    fails(lambda: s3.create_bucket(Bucket="ab"), "InvalidBucketName", 400)
    fails(lambda: s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x"), "KeyTooLongError", 400)
    fails(lambda: s3.put_object(Bucket=bucket + "-absent", Key="k", Body=b"x"), "NoSuchBucket", 404)
    # A bucket of another region, asked of this region's endpoint (signed for eu-west-1 as boto3
    # does it when told that region).
    elsewhere = s3_client(node, region_name="eu-west-1")
    fails(lambda: elsewhere.create_bucket(Bucket=bucket_name(),
                                          CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}),
          "IllegalLocationConstraintException", 400)
    status, _, body = signed(node, "POST", f"/{bucket}", b"<Delete><Object><Key>a</Key>", query="delete",
                             headers={"Content-MD5": "", "Content-Type": "application/xml"})
    assert status == 400 and b"MalformedXML" in body, body
    # A body shorter than its Content-Length never reaches the store.
    status, _, body = signed(node, "PUT", f"/{bucket}/short", b"abc",
                             headers={"x-amz-decoded-content-length": "10"})
    assert status == 400, body
    fails(lambda: s3.head_object(Bucket=bucket, Key="short"), "404", 404)
    fails(lambda: s3.get_object(Bucket=bucket, Key="k", PartNumber=0), "InvalidArgument", 400)
    # Tags: more than ten, an aws: key, a duplicate key; nothing stored, nothing changed.
    fails(lambda: s3.put_object(Bucket=bucket, Key="tagged", Body=b"x",
                                Tagging="&".join(f"k{i}=v" for i in range(11))), "BadRequest", 400)
    fails(lambda: s3.put_object(Bucket=bucket, Key="tagged", Body=b"x", Tagging="aws:owner=me"),
          "InvalidTag", 400)
    fails(lambda: s3.head_object(Bucket=bucket, Key="tagged"), "404", 404)
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x", Tagging="team=a")
    fails(lambda: s3.put_object_tagging(Bucket=bucket, Key="tagged", Tagging={"TagSet": [
        {"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]}), "InvalidTag", 400)
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == [{"Key": "team", "Value": "a"}]


def test_unsigned_and_unknown_keys_are_refused(node, bucket):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(
            f"{node.endpoint}/x", headers={"Host": f"{bucket}.s3.localhost", UNSIGNED: "1"}), timeout=10)
    assert e.value.code == 403 and b"AccessDenied" in e.value.read()
    stranger = s3_client(node, "NKIAUNKNOWNKEY000001", "nope")
    fails(lambda: stranger.list_objects_v2(Bucket=bucket), "InvalidAccessKeyId", 403)
    wrong_secret = s3_client(node, s.ACCESS_KEY, "not-the-secret")
    fails(lambda: wrong_secret.list_objects_v2(Bucket=bucket), "SignatureDoesNotMatch", 403)


def test_virtual_hosted_requests(node, s3, bucket):
    s3.put_object(Bucket=bucket, Key="vh.txt", Body=b"virtual")
    port = node.endpoint.rsplit(":", 1)[1]
    host = f"{bucket}.s3.localhost:{port}"
    url = f"http://{host}/vh.txt"
    request = AWSRequest(method="GET", url=url)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(b"").hexdigest()
    SigV4Auth(botocore.credentials.Credentials(s.ACCESS_KEY, s.SECRET_KEY), "s3", s.REGION).add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = host
    raw = urllib.request.Request(f"{node.endpoint}/vh.txt", headers=headers)
    with urllib.request.urlopen(raw, timeout=10) as r:
        assert r.read() == b"virtual"


def test_policies_decide_what_a_user_may_do(node, s3, bucket):
    iam = admin(node, "iam")
    user = s.unique_name("reader")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="public-read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/public/*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"},
        ]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    as_user = s3_client(node, key["AccessKeyId"], key["SecretAccessKey"])
    s3.put_object(Bucket=bucket, Key="public/a.txt", Body=b"open")
    s3.put_object(Bucket=bucket, Key="private/b.txt", Body=b"closed")
    assert as_user.get_object(Bucket=bucket, Key="public/a.txt")["Body"].read() == b"open"
    assert as_user.list_objects_v2(Bucket=bucket)["KeyCount"] == 2
    err = fails(lambda: as_user.get_object(Bucket=bucket, Key="private/b.txt"), "AccessDenied", 403)
    assert "s3:GetObject" in err.response["Error"]["Message"]
    fails(lambda: as_user.put_object(Bucket=bucket, Key="public/c.txt", Body=b"x"), "AccessDenied", 403)
    fails(lambda: as_user.create_bucket(Bucket=bucket_name()), "AccessDenied", 403)
    out = as_user.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "public/a.txt"}]})
    assert [e["Code"] for e in out["Errors"]] == ["AccessDenied"]
    assert s3.head_object(Bucket=bucket, Key="public/a.txt")["ContentLength"] == 4


def test_versioning_keeps_every_version_and_delete_markers(node, s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"before")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"two" * 30000)["VersionId"]
    assert v1 != v2 and "null" not in (v1, v2)
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["VersionId"] == v2 and got["Body"].read() == b"two" * 30000
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v1)["Body"].read() == b"one"
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"before"
    assert s3.head_object(Bucket=bucket, Key="k", VersionId=v1)["ContentLength"] == 3

    # A delete hides the key under a marker; the versions stay.
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    marker = deleted["VersionId"]
    assert deleted["DeleteMarker"] is True
    hidden = fails(lambda: s3.get_object(Bucket=bucket, Key="k"), "NoSuchKey", 404)
    headers = hidden.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    fails(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId=marker), "MethodNotAllowed", 405)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    listing = s3.list_object_versions(Bucket=bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in listing["Versions"]] == [(v2, False), (v1, False), ("null", False)]
    assert [(m["VersionId"], m["IsLatest"]) for m in listing["DeleteMarkers"]] == [(marker, True)]
    assert listing["Versions"][0]["Size"] == 90000 and listing["Versions"][0]["ETag"].startswith('"')
    # Page by page, the same versions.
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1})
    seen = [v["VersionId"] for page in pages for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
    assert sorted(seen) == sorted([marker, v2, v1, "null"])

    # An old version copied over the key becomes its newest; removing versions for good walks back.
    copied = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k", "VersionId": v1})
    assert copied["CopySourceVersionId"] == v1
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"one"
    gone = s3.delete_object(Bucket=bucket, Key="k", VersionId=copied["VersionId"])
    assert gone["VersionId"] == copied["VersionId"] and "DeleteMarker" not in gone
    fails(lambda: s3.head_object(Bucket=bucket, Key="k"), "404", 404)
    unmarked = s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert unmarked["DeleteMarker"] is True
    assert s3.get_object(Bucket=bucket, Key="k")["VersionId"] == v2

    # Tags belong to one version.
    s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=v1, Tagging={"TagSet": [{"Key": "old", "Value": "yes"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v1)["TagSet"] == [{"Key": "old", "Value": "yes"}]
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []

    # Bad version ids; a bucket with versions is not empty.
    fails(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId="not-a-version"), "InvalidArgument", 400)
    fails(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId="0" * 32), "NoSuchVersion", 404)
    fails(lambda: s3.list_object_versions(Bucket=bucket, VersionIdMarker=v1), "InvalidArgument", 400)
    fails(lambda: s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Off"}),
          "MalformedXML", 400)
    s3.delete_object(Bucket=bucket, Key="k")
    fails(lambda: s3.delete_bucket(Bucket=bucket), "BucketNotEmpty", 409)

    # Suspended: new writes are the null version, replacing the old null version.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"again")["VersionId"] == "null"
    ids = [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]]
    assert ids == ["null", v2, v1]

    # Removing every version and marker empties the bucket.
    listing = s3.list_object_versions(Bucket=bucket)
    doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
              for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed})
    assert sorted(d["VersionId"] for d in out["Deleted"]) == sorted(d["VersionId"] for d in doomed)
    assert not out.get("Errors")
    s3.delete_bucket(Bucket=bucket)


def test_versions_through_the_cli_policies_and_notifications(node, s3, bucket, tmp_path):
    def aws(*args):
        out = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, *args)
        assert out.returncode == 0, out.stderr
        return out.stdout

    sqs = admin(node, "sqs")
    queue_url = sqs.create_queue(QueueName=s.unique_name("versions"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"Id": "all", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
    aws("s3api", "put-bucket-versioning", "--bucket", bucket,
        "--versioning-configuration", "Status=Enabled")
    made = s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"v1")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="doc.txt")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="doc.txt", VersionId=marker)
    out = json.loads(aws("s3api", "list-object-versions", "--bucket", bucket))
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in out["Versions"]] == [("doc.txt", made, True)]

    records = drain_records(sqs, queue_url, 3)
    events = sorted((r["eventName"], r["s3"]["object"]["versionId"]) for r in records)
    assert events == sorted([("ObjectCreated:Put", made), ("ObjectRemoved:DeleteMarkerCreated", marker),
                             ("ObjectRemoved:Delete", marker)])

    # Reading an old version is its own action.
    iam = admin(node, "iam")
    user = s.unique_name("current-only")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    as_user = s3_client(node, key["AccessKeyId"], key["SecretAccessKey"])
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"v2")
    assert as_user.get_object(Bucket=bucket, Key="doc.txt")["Body"].read() == b"v2"
    err = fails(lambda: as_user.get_object(Bucket=bucket, Key="doc.txt", VersionId=made), "AccessDenied", 403)
    assert "s3:GetObjectVersion" in err.response["Error"]["Message"]


def test_a_function_reads_and_writes_objects_with_boto3(node, lambda_client, s3, bucket):
    role_arn = s3_role(admin(node, "iam"), bucket, [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}])
    s3.put_object(Bucket=bucket, Key="in.txt", Body=b"shout this")
    name = p.deploy(lambda_client, "python-aws", PYTHON, "s3.handler", Role=role_arn, Timeout=30)
    out = s.invoke(lambda_client, name, {"bucket": bucket, "key": "in.txt"})
    assert out.function_error is None, out.payload
    assert out.json() == {"read": 10, "wrote": "in.txt.upper", "listed": 2}
    got = s3.get_object(Bucket=bucket, Key="in.txt.upper")
    assert got["Body"].read() == b"SHOUT THIS" and got["Metadata"] == {"source": "in.txt"}
    # The role reaches this bucket only.
    other = bucket_name()
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="in.txt", Body=b"nope")
    denied = s.invoke(lambda_client, name, {"bucket": other, "key": "in.txt"})
    assert denied.function_error == "Unhandled"
    assert "AccessDenied" in json.dumps(denied.json())


def s3_role(iam, bucket, extra_statements=()):
    """A role Lambda may assume that reads and writes BUCKET's objects."""
    role = s.unique_name("s3fn")
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=s.LAMBDA_TRUST)["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="rw", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"arn:aws:s3:::{bucket}/*"},
            *extra_statements,
        ]}))
    return arn


def drain_records(sqs, queue_url, n):
    """At least N S3 event records from a queue, each message deleted once read."""
    records = []

    def enough():
        for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            records.extend(json.loads(m["Body"])["Records"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        assert len(records) >= n
    s.eventually(enough, timeout=20)
    return records


def test_notifications_to_a_queue(node, s3, bucket):
    sqs = admin(node, "sqs")
    queue_url = sqs.create_queue(QueueName=s.unique_name("uploads"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    config = {"QueueConfigurations": [
        {"Id": "created", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"}, {"Name": "suffix", "Value": ".txt"}]}}},
        {"Id": "removed", "QueueArn": queue_arn, "Events": ["s3:ObjectRemoved:Delete"]},
    ]}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    got = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert [(c["Id"], c["Events"]) for c in got] == [("created", ["s3:ObjectCreated:*"]),
                                                     ("removed", ["s3:ObjectRemoved:Delete"])]
    assert got[0]["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "in/"},
                                                      {"Name": "suffix", "Value": ".txt"}]

    put = s3.put_object(Bucket=bucket, Key="in/my file.txt", Body=b"hello")
    s3.put_object(Bucket=bucket, Key="in/skipped.png", Body=b"not matched")
    s3.copy_object(Bucket=bucket, Key="in/copy.txt", CopySource={"Bucket": bucket, "Key": "in/my file.txt"})
    s3.delete_object(Bucket=bucket, Key="in/skipped.png")
    records = drain_records(sqs, queue_url, 3)
    by_name = {r["eventName"]: r for r in records}
    assert set(by_name) == {"ObjectCreated:Put", "ObjectCreated:Copy", "ObjectRemoved:Delete"}
    created = by_name["ObjectCreated:Put"]
    assert created["eventVersion"] == "2.1" and created["eventSource"] == "aws:s3"
    assert created["s3"]["configurationId"] == "created"
    assert created["s3"]["bucket"]["name"] == bucket
    assert created["s3"]["object"]["key"] == "in/my+file.txt"
    assert created["s3"]["object"]["size"] == 5
    assert created["s3"]["object"]["eTag"] == put["ETag"].strip('"')
    assert by_name["ObjectRemoved:Delete"]["s3"]["object"]["key"] == "in/skipped.png"
    assert "size" not in by_name["ObjectRemoved:Delete"]["s3"]["object"]

    # Bad configurations change nothing.
    fails(lambda: s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn + "-absent", "Events": ["s3:ObjectCreated:*"]}]}),
        "InvalidArgument", 400)
    fails(lambda: s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]},
                                {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:Put"]}]}),
        "InvalidArgument", 400)
    fails(lambda: s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "LambdaFunctionConfigurations": [{"LambdaFunctionArn": f"arn:aws:lambda:{s.REGION}:000000000000:function:absent",
                                          "Events": ["s3:ObjectCreated:*"]}]}),
        "InvalidArgument", 400)
    # Another account's queue, and a topic (not served): refused.
    other = fails(lambda: s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn.replace(":000000000000:", ":111111111111:"),
                                 "Events": ["s3:ObjectCreated:*"]}]}), "InvalidArgument", 400)
    assert "another account" in other.response["Error"]["Message"]
    fails(lambda: s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "TopicConfigurations": [{"TopicArn": f"arn:aws:sns:{s.REGION}:000000000000:t",
                                 "Events": ["s3:ObjectCreated:*"]}]}), "InvalidArgument", 400)
    assert len(s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]) == 2
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)


def test_an_upload_runs_a_function_that_writes_the_result(node, lambda_client, s3, bucket):
    iam = admin(node, "iam")
    name = p.deploy(lambda_client, "python-aws", PYTHON, "s3.on_upload", Role=s3_role(iam, bucket), Timeout=30)
    function_arn = lambda_client.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "LambdaFunctionConfigurations": [{"Id": "thumbs", "LambdaFunctionArn": function_arn,
                                          "Events": ["s3:ObjectCreated:*"],
                                          "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}}]})
    s3.put_object(Bucket=bucket, Key="uploads/a b.txt", Body=b"make me loud")

    def result():
        got = s3.get_object(Bucket=bucket, Key="out/uploads/a b.txt")
        return got["Body"].read(), got["Metadata"]
    body, meta = _eventually_object(result)
    assert body == b"MAKE ME LOUD" and meta == {"event": "ObjectCreated:Put"}
    # Its own output is outside the prefix: no loop.
    time.sleep(1)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["out/uploads/a b.txt", "uploads/a b.txt"]


def _eventually_object(read, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] != "NoSuchKey" or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_an_upload_reaches_a_function_through_a_queue(node, lambda_client, s3, bucket):
    iam, sqs = admin(node, "iam"), admin(node, "sqs")
    queue_url = sqs.create_queue(QueueName=s.unique_name("pipeline"), Attributes={"VisibilityTimeout": "40"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    role = s3_role(iam, bucket, [{"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                                "sqs:GetQueueAttributes"], "Resource": queue_arn}])
    name = p.deploy(lambda_client, "python-aws", PYTHON, "s3.on_upload", Role=role, Timeout=30)
    lambda_client.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=name, BatchSize=5)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:Put"],
                                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"}]}}}]})
    s3.put_object(Bucket=bucket, Key="in/queued.txt", Body=b"via the queue")
    body = _eventually_object(lambda: s3.get_object(Bucket=bucket, Key="out/in/queued.txt")["Body"].read())
    assert body == b"VIA THE QUEUE"


def post_form(url: str, fields: dict, filename: str, data: bytes):
    """A browser's form upload: multipart/form-data with the file last."""
    boundary = "----nimbus" + os.urandom(8).hex()
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(url, data=b"".join(parts), method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", UNSIGNED: "1"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("version", ["default", "s3v4"])
def test_browser_form_uploads_with_a_post_policy(node, bucket, version):
    s3 = s3_client(node) if version == "default" else s3_client(node, signature_version="s3v4")
    post = s3.generate_presigned_post(
        bucket, "uploads/${filename}", Fields={"success_action_status": "201"},
        Conditions=[["starts-with", "$key", "uploads/"], ["content-length-range", 1, 1000],
                    {"success_action_status": "201"}],
        ExpiresIn=60)
    status, body = post_form(post["url"], post["fields"], "photo.jpg", b"\xff\xd8 an image")
    assert status == 201, body
    assert b"<Key>uploads/photo.jpg</Key>" in body
    assert s3.get_object(Bucket=bucket, Key="uploads/photo.jpg")["Body"].read() == b"\xff\xd8 an image"

    # Over the policy's size range; a key outside its prefix; a tampered policy: nothing stored.
    status, body = post_form(post["url"], post["fields"], "big.bin", b"x" * 2000)
    assert status == 400 and b"EntityTooLarge" in body, body
    outside = dict(post["fields"], key="elsewhere/photo.jpg")
    status, body = post_form(post["url"], outside, "photo.jpg", b"data")
    assert status in (400, 403) and b"Policy" in body, body
    tampered = dict(post["fields"], policy=post["fields"]["policy"][:-4] + "AAAA")
    status, body = post_form(post["url"], tampered, "photo2.jpg", b"data")
    assert status in (400, 403), body
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["uploads/photo.jpg"]


def test_sigkill_keeps_every_acknowledged_object_and_its_event(node_factory):
    """Writers upload concurrently while a large upload is half sent; the node is killed with
    SIGKILL. After a restart every acknowledged object is there, whole, with its notification
    in the queue; the half-sent upload left no object and no file behind."""
    import socket
    import threading

    node = node_factory(name="s3kill")
    s3, sqs = s3_client(node), admin(node, "sqs")
    bucket = bucket_name("kill")
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=s.unique_name("acked"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "w/"}]}}}]})

    # A large upload that stops half way: headers announce 64 MiB, 8 MiB arrive.
    url = s3_client(node, signature_version="s3v4").generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "half.bin"}, ExpiresIn=300)
    host, port = node.endpoint.split("//")[1].split(":")
    path = url.split(node.endpoint, 1)[1]
    half = socket.create_connection((host, int(port)))
    half.sendall(f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {64 << 20}\r\n\r\n".encode())
    half.sendall(os.urandom(8 << 20))

    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n):
        client = s3_client(node)
        i = 0
        while not stop.is_set():
            key = f"w/{n}/{i}"
            body = os.urandom(100 + (i % 3) * 40_000) if i % 5 else os.urandom(300_000)
            try:
                client.put_object(Bucket=bucket, Key=key, Body=body)
            except Exception:
                return
            with lock:
                acked[key] = body
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    s.eventually(lambda: len(acked) >= 40, timeout=60)
    node.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    half.close()
    node.start()

    s3, sqs = s3_client(node), admin(node, "sqs")
    with lock:
        expected = dict(acked)
    for key, body in expected.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
    fails(lambda: s3.head_object(Bucket=bucket, Key="half.bin"), "404", 404)
    listed = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in page.get("Contents", [])}
    assert set(expected) <= listed
    # Each file under blobs/ belongs to an object (nothing of the half upload is left).
    blobs = [f for f in (node.data_dir / "objects" / "blobs").rglob("*") if f.is_file()]
    big = [k for k in listed if s3.head_object(Bucket=bucket, Key=k)["ContentLength"] > 64 * 1024]
    assert len(blobs) == len(big)
    events = set()

    def all_events():
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            for r in json.loads(m["Body"])["Records"]:
                events.add(r["s3"]["object"]["key"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        assert set(expected) <= {k.replace("%2F", "/") for k in events}
    s.eventually(all_events, timeout=60)


def test_cors_for_browsers(node, s3, bucket):
    fails(lambda: s3.get_bucket_cors(Bucket=bucket), "NoSuchCORSConfiguration", 404)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["https://app.example.com"], "AllowedMethods": ["PUT", "GET"],
         "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
    ]})
    rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert rules[0]["AllowedOrigins"] == ["https://app.example.com"] and rules[0]["MaxAgeSeconds"] == 600
    fails(lambda: s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}), "InvalidRequest", 400)

    def preflight(origin, method, headers=None):
        h = {"Origin": origin, "Access-Control-Request-Method": method, UNSIGNED: "1"}
        if headers:
            h["Access-Control-Request-Headers"] = headers
        request = urllib.request.Request(f"{node.endpoint}/{bucket}/upload.txt", method="OPTIONS", headers=h)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.headers

    status, headers = preflight("https://app.example.com", "PUT", "Content-Type, X-Amz-Date")
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "PUT" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Max-Age"] == "600"
    assert preflight("https://app.example.com", "DELETE")[0] == 403
    assert preflight("https://app.example.com", "PUT", "Authorization")[0] == 403
    status, headers = preflight("https://elsewhere.example", "GET")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"

    # The actual request, from the page, with a presigned URL.
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "upload.txt"}, ExpiresIn=60)
    request = urllib.request.Request(url, data=b"from a page", method="PUT",
                                     headers={"Origin": "https://app.example.com", "Content-Type": ""})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert r.headers["Access-Control-Expose-Headers"] == "ETag"
    s3.delete_bucket_cors(Bucket=bucket)
    assert preflight("https://app.example.com", "PUT")[0] == 403


def test_s3cmd(node, tmp_path):
    import sysconfig

    s3cmd = os.path.join(sysconfig.get_path("scripts"), "s3cmd")
    config = tmp_path / "s3cfg"
    config.write_text("[default]\n")
    host = node.endpoint.split("//")[1]
    name = bucket_name("s3cmd")

    def run(*args):
        out = subprocess.run(
            [sys.executable, s3cmd, "-c", str(config), f"--access_key={s.ACCESS_KEY}",
             f"--secret_key={s.SECRET_KEY}", f"--host={host}", f"--host-bucket={host}", "--no-ssl",
             f"--region={s.REGION}", *args],
            capture_output=True, text=True, timeout=120, env=s.clean_env())
        assert out.returncode == 0, out.stderr + out.stdout
        return out.stdout

    source = tmp_path / "notes.txt"
    source.write_text("written by s3cmd\n")
    run("mb", f"s3://{name}")
    run("put", str(source), f"s3://{name}/docs/notes.txt")
    assert f"s3://{name}/docs/notes.txt" in run("ls", "--recursive", f"s3://{name}")
    target = tmp_path / "back.txt"
    run("get", f"s3://{name}/docs/notes.txt", str(target))
    assert target.read_text() == "written by s3cmd\n"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    run("put", "--multipart-chunk-size-mb=5", str(big), f"s3://{name}/big.bin")
    run("get", f"s3://{name}/big.bin", str(tmp_path / "big.back"))
    assert (tmp_path / "big.back").read_bytes() == big.read_bytes()
    run("del", "--recursive", "--force", f"s3://{name}")
    run("rb", f"s3://{name}")

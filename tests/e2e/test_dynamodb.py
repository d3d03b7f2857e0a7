"""Tables through DynamoDB's own clients: boto3's client and resource APIs (conditions, updates,
queries with `Key(...)`, `batch_writer`), the aws CLI with its waiter; DynamoDB's exceptions
for bad input; policies with `dynamodb:` actions."""

from __future__ import annotations

import json
from decimal import Decimal

import boto3
import botocore
import pytest
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config

import e2e_support as s
from test_auth import cli
from test_iam import admin


def ddb_client(node, key_id=s.ACCESS_KEY, secret=s.SECRET_KEY):
    return boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=s.REGION
    ).client("dynamodb", endpoint_url=node.endpoint,
             config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


@pytest.fixture(scope="module")
def ddb(node):
    return ddb_client(node)


@pytest.fixture(scope="module")
def resource(node):
    return boto3.session.Session(
        aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY, region_name=s.REGION
    ).resource("dynamodb", endpoint_url=node.endpoint)


def new_table(ddb, range_key=True, **extra):
    name = s.unique_name("t")
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "N"})
    ddb.create_table(TableName=name, KeySchema=keys, AttributeDefinitions=attrs,
                     BillingMode="PAY_PER_REQUEST", **extra)
    return name


def fails(fn, code, message=None):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn()
    err = e.value.response["Error"]
    assert err["Code"] == code, e.value.response
    if message is not None:
        assert message in err["Message"], err["Message"]
    return e.value


def test_tables_through_the_cli_with_its_waiter(node, tmp_path):
    name = s.unique_name("cli")

    def aws(*args):
        out = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "dynamodb", *args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    created = aws("create-table", "--table-name", name,
                  "--attribute-definitions", "AttributeName=id,AttributeType=S",
                  "--key-schema", "AttributeName=id,KeyType=HASH",
                  "--provisioned-throughput", "ReadCapacityUnits=5,WriteCapacityUnits=5")
    assert created["TableDescription"]["TableArn"] == f"arn:aws:dynamodb:{s.REGION}:000000000000:table/{name}"
    aws("wait", "table-exists", "--table-name", name)
    aws("put-item", "--table-name", name, "--item", '{"id": {"S": "a"}, "n": {"N": "1.50"}}')
    got = aws("get-item", "--table-name", name, "--key", '{"id": {"S": "a"}}')
    assert got["Item"] == {"id": {"S": "a"}, "n": {"N": "1.5"}}
    described = aws("describe-table", "--table-name", name)["Table"]
    assert described["ItemCount"] == 1 and described["TableStatus"] == "ACTIVE"
    assert described["ProvisionedThroughput"]["ReadCapacityUnits"] == 5
    assert name in aws("list-tables")["TableNames"]
    aws("delete-table", "--table-name", name)
    aws("wait", "table-not-exists", "--table-name", name)


def test_items_with_conditions_updates_and_return_values(ddb):
    name = new_table(ddb)
    key = {"pk": {"S": "user#1"}, "sk": {"N": "1"}}
    ddb.put_item(TableName=name, Item={**key, "status": {"S": "new"}, "tags": {"SS": ["a", "b"]},
                                       "n": {"N": "10"}, "doc": {"M": {"list": {"L": [{"N": "1"}, {"N": "2"}]}}}})
    # Conditional writes: a placeholder for a reserved word; a failed condition changes nothing.
    fails(lambda: ddb.put_item(TableName=name, Item=key, ConditionExpression="attribute_not_exists(pk)"),
          "ConditionalCheckFailedException")
    failed = fails(lambda: ddb.delete_item(TableName=name, Key=key, ConditionExpression="#s = :done",
                                           ExpressionAttributeNames={"#s": "status"},
                                           ExpressionAttributeValues={":done": {"S": "done"}},
                                           ReturnValuesOnConditionCheckFailure="ALL_OLD"),
                   "ConditionalCheckFailedException")
    assert failed.response["Item"]["status"] == {"S": "new"}
    out = ddb.update_item(
        TableName=name, Key=key,
        UpdateExpression="SET #s = :done, n = n + :one, doc.#l[2] = :three ADD tags :c REMOVE doc.gone",
        ConditionExpression="#s = :new AND size(tags) = :two AND contains(tags, :a)",
        ExpressionAttributeNames={"#s": "status", "#l": "list"},
        ExpressionAttributeValues={":done": {"S": "done"}, ":one": {"N": "1"}, ":three": {"N": "3"},
                                   ":c": {"SS": ["c"]}, ":new": {"S": "new"}, ":two": {"N": "2"},
                                   ":a": {"S": "a"}},
        ReturnValues="UPDATED_NEW")
    assert out["Attributes"]["n"] == {"N": "11"} and out["Attributes"]["status"] == {"S": "done"}
    item = ddb.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"]
    assert sorted(item["tags"]["SS"]) == ["a", "b", "c"]
    assert item["doc"]["M"]["list"]["L"] == [{"N": "1"}, {"N": "2"}, {"N": "3"}]
    projected = ddb.get_item(TableName=name, Key=key, ProjectionExpression="#s, doc.#l[1]",
                             ExpressionAttributeNames={"#s": "status", "#l": "list"})["Item"]
    assert projected == {"status": {"S": "done"}, "doc": {"M": {"list": {"L": [{"N": "2"}]}}}}
    old = ddb.delete_item(TableName=name, Key=key, ReturnValues="ALL_OLD")["Attributes"]
    assert old["n"] == {"N": "11"}
    assert "Item" not in ddb.get_item(TableName=name, Key=key)
    # An update of a missing item creates it from its key.
    created = ddb.update_item(TableName=name, Key=key, UpdateExpression="SET hits = if_not_exists(hits, :z) + :one",
                              ExpressionAttributeValues={":z": {"N": "0"}, ":one": {"N": "1"}},
                              ReturnValues="ALL_NEW")["Attributes"]
    assert created == {**key, "hits": {"N": "1"}}


def test_the_resource_api_queries_and_batches(resource, ddb):
    name = new_table(ddb)
    table = resource.Table(name)
    with table.batch_writer() as batch:
        for i in range(60):
            batch.put_item(Item={"pk": f"p{i % 3}", "sk": i, "price": Decimal(i) / 4, "name": f"item {i}"})
    assert table.item_count == 60
    got = table.query(KeyConditionExpression=Key("pk").eq("p1") & Key("sk").between(10, 30))
    assert [i["sk"] for i in got["Items"]] == list(range(10, 31, 3)) and got["Count"] == 7
    backwards = table.query(KeyConditionExpression=Key("pk").eq("p0"), ScanIndexForward=False, Limit=4)
    assert [i["sk"] for i in backwards["Items"]] == [57, 54, 51, 48]
    assert backwards["LastEvaluatedKey"] == {"pk": "p0", "sk": 48}
    rest = table.query(KeyConditionExpression=Key("pk").eq("p0"), ScanIndexForward=False,
                       ExclusiveStartKey=backwards["LastEvaluatedKey"])
    assert [i["sk"] for i in rest["Items"]] == list(range(45, -1, -3))
    filtered = table.query(KeyConditionExpression=Key("pk").eq("p2"), FilterExpression=Attr("price").gt(10))
    assert filtered["ScannedCount"] == 20 and [i["sk"] for i in filtered["Items"]] == list(range(41, 60, 3))
    assert table.query(KeyConditionExpression=Key("pk").eq("p2"), Select="COUNT")["Count"] == 20
    # Scans page through everything once, and parallel segments split it.
    seen, start = [], {}
    while True:
        page = table.scan(Limit=25, **start)
        seen += [(i["pk"], i["sk"]) for i in page["Items"]]
        if "LastEvaluatedKey" not in page:
            break
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    assert len(seen) == 60 and len(set(seen)) == 60
    segments = [table.scan(Segment=n, TotalSegments=3)["Count"] for n in range(3)]
    assert sum(segments) == 60
    # Numbers compare as numbers, not strings.
    assert sorted(i["sk"] for i in table.scan(FilterExpression=Attr("sk").lt(3))["Items"]) == [0, 1, 2]
    got = ddb.batch_get_item(RequestItems={name: {"Keys": [{"pk": {"S": "p0"}, "sk": {"N": "0"}},
                                                           {"pk": {"S": "p1"}, "sk": {"N": "1"}},
                                                           {"pk": {"S": "p1"}, "sk": {"N": "2"}}]}})
    assert len(got["Responses"][name]) == 2 and got["UnprocessedKeys"] == {}


def test_bad_input_gets_dynamodbs_exceptions(ddb):
    name = new_table(ddb)
    key = {"pk": {"S": "k"}, "sk": {"N": "1"}}
    fails(lambda: ddb.get_item(TableName="no-such-table", Key=key), "ResourceNotFoundException")
    fails(lambda: new_table_named(ddb, name), "ResourceInUseException")
    fails(lambda: ddb.put_item(TableName=name, Item={"pk": {"N": "1"}, "sk": {"N": "1"}}),
          "ValidationException", "Type mismatch for key pk expected: S actual: N")
    fails(lambda: ddb.put_item(TableName=name, Item={"pk": {"S": ""}, "sk": {"N": "1"}}),
          "ValidationException", "empty string value")
    fails(lambda: ddb.put_item(TableName=name, Item={"pk": {"S": "x"}}), "ValidationException",
          "Missing the key sk in the item")
    fails(lambda: ddb.put_item(TableName=name, Item={**key, "big": {"S": "x" * 410_000}}),
          "ValidationException", "Item size has exceeded the maximum allowed size")
    fails(lambda: ddb.put_item(TableName=name, Item={**key, "n": {"N": "12abc"}}), "ValidationException")
    fails(lambda: ddb.put_item(TableName=name, Item={**key, "s": {"SS": []}}), "ValidationException")
    fails(lambda: ddb.get_item(TableName=name, Key={"pk": {"S": "k"}}), "ValidationException",
          "The provided key element does not match the schema")
    fails(lambda: ddb.update_item(TableName=name, Key=key, UpdateExpression="SET status = :v",
                                  ExpressionAttributeValues={":v": {"S": "x"}}),
          "ValidationException", "reserved keyword")
    fails(lambda: ddb.update_item(TableName=name, Key=key, UpdateExpression="SET a = :v"),
          "ValidationException", "attribute value used in expression is not defined")
    fails(lambda: ddb.update_item(TableName=name, Key=key, UpdateExpression="SET a = :v",
                                  ExpressionAttributeValues={":v": {"S": "x"}, ":unused": {"S": "y"}}),
          "ValidationException", "unused in expressions")
    fails(lambda: ddb.update_item(TableName=name, Key=key, UpdateExpression="SET pk = :v",
                                  ExpressionAttributeValues={":v": {"S": "x"}}),
          "ValidationException", "This attribute is part of the key")
    fails(lambda: ddb.put_item(TableName=name, Item=key, ConditionExpression="a = = b"),
          "ValidationException", "Syntax error")
    fails(lambda: ddb.query(TableName=name, KeyConditionExpression="sk = :v",
                            ExpressionAttributeValues={":v": {"N": "1"}}),
          "ValidationException", "Query condition missed key schema element")
    fails(lambda: ddb.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": key}}] * 2}),
          "ValidationException", "duplicates")
    fails(lambda: ddb.batch_write_item(RequestItems={name: [
        {"PutRequest": {"Item": {"pk": {"S": "k"}, "sk": {"N": str(i)}}}} for i in range(26)]}),
        "ValidationException")
    fails(lambda: ddb.create_table(TableName="x", KeySchema=[{"AttributeName": "a", "KeyType": "HASH"}],
                                   AttributeDefinitions=[{"AttributeName": "a", "AttributeType": "S"}],
                                   BillingMode="PAY_PER_REQUEST"), "ValidationException")
    # None of the refused writes left anything.
    assert ddb.scan(TableName=name)["Count"] == 0


def new_table_named(ddb, name):
    ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")


def test_policies_decide_what_a_user_may_do(node, ddb):
    name = new_table(ddb, range_key=False)
    iam = admin(node, "iam")
    user = s.unique_name("reader")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Query"],
                       "Resource": f"arn:aws:dynamodb:{s.REGION}:000000000000:table/{name}"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    as_user = ddb_client(node, key["AccessKeyId"], key["SecretAccessKey"])
    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}, "v": {"S": "1"}})
    assert as_user.get_item(TableName=name, Key={"pk": {"S": "a"}})["Item"]["v"] == {"S": "1"}
    err = fails(lambda: as_user.put_item(TableName=name, Item={"pk": {"S": "b"}}), "AccessDeniedException")
    assert "dynamodb:PutItem" in err.response["Error"]["Message"]


def test_transactions_are_all_or_nothing(ddb):
    name = new_table(ddb, range_key=False)
    ddb.put_item(TableName=name, Item={"pk": {"S": "acct#1"}, "balance": {"N": "100"}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "acct#2"}, "balance": {"N": "5"}})

    def transfer(amount, token=None):
        extra = {"ClientRequestToken": token} if token else {}
        return ddb.transact_write_items(TransactItems=[
            {"Update": {"TableName": name, "Key": {"pk": {"S": "acct#1"}},
                        "UpdateExpression": "SET balance = balance - :a",
                        "ConditionExpression": "balance >= :a",
                        "ExpressionAttributeValues": {":a": {"N": str(amount)}}}},
            {"Update": {"TableName": name, "Key": {"pk": {"S": "acct#2"}},
                        "UpdateExpression": "SET balance = balance + :a",
                        "ExpressionAttributeValues": {":a": {"N": str(amount)}}}},
            {"Put": {"TableName": name, "Item": {"pk": {"S": f"log#{amount}"}, "amount": {"N": str(amount)}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
        ], **extra)

    def balances():
        got = ddb.transact_get_items(TransactItems=[
            {"Get": {"TableName": name, "Key": {"pk": {"S": "acct#1"}}}},
            {"Get": {"TableName": name, "Key": {"pk": {"S": "acct#2"}}, "ProjectionExpression": "balance"}},
            {"Get": {"TableName": name, "Key": {"pk": {"S": "nobody"}}}},
        ])["Responses"]
        assert got[2] == {}
        assert got[1]["Item"] == {"balance": got[1]["Item"]["balance"]}
        return got[0]["Item"]["balance"]["N"], got[1]["Item"]["balance"]["N"]

    transfer(30, token="t-30")
    assert balances() == ("70", "35")
    # A retry with the same token does nothing more; the same token on another request is refused.
    transfer(30, token="t-30")
    assert balances() == ("70", "35")
    fails(lambda: transfer(31, token="t-30"), "IdempotentParameterMismatchException")
    # One failed condition cancels every action, with a reason for each.
    canceled = fails(lambda: transfer(500), "TransactionCanceledException")
    reasons = [r["Code"] for r in canceled.response["CancellationReasons"]]
    assert reasons == ["ConditionalCheckFailed", "None", "None"]
    assert balances() == ("70", "35")
    assert "Item" not in ddb.get_item(TableName=name, Key={"pk": {"S": "log#500"}})
    check = fails(lambda: ddb.transact_write_items(TransactItems=[
        {"ConditionCheck": {"TableName": name, "Key": {"pk": {"S": "acct#2"}},
                            "ConditionExpression": "balance > :x", "ExpressionAttributeValues": {":x": {"N": "1000"}},
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
        {"Delete": {"TableName": name, "Key": {"pk": {"S": "acct#1"}}}},
    ]), "TransactionCanceledException")
    assert check.response["CancellationReasons"][0]["Item"]["balance"] == {"N": "35"}
    assert balances() == ("70", "35")
    fails(lambda: ddb.transact_write_items(TransactItems=[
        {"Delete": {"TableName": name, "Key": {"pk": {"S": "acct#1"}}}},
        {"Delete": {"TableName": name, "Key": {"pk": {"S": "acct#1"}}}},
    ]), "ValidationException", "multiple operations on one item")
    fails(lambda: ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": name, "Item": {"pk": {"S": f"x{i}"}}}} for i in range(101)]), "ValidationException")


def test_time_to_live_removes_expired_items(node, ddb):
    import time
    name, arn = stream_table(ddb, view="OLD_IMAGE")
    assert ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"
    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
    described = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    fails(lambda: ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "x"}),
          "ValidationException", "already enabled")
    now = int(time.time())
    ddb.put_item(TableName=name, Item={"pk": {"S": "old"}, "expires": {"N": str(now - 10)}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "new"}, "expires": {"N": str(now + 3600)}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "forever"}})

    def swept():
        assert "Item" not in ddb.get_item(TableName=name, Key={"pk": {"S": "old"}})
    s.eventually(swept, timeout=15)
    left = sorted(i["pk"]["S"] for i in ddb.scan(TableName=name)["Items"])
    assert left == ["forever", "new"]
    # The stream marks the deletion as the service's, not a user's.
    streams = boto3.session.Session(
        aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY, region_name=s.REGION
    ).client("dynamodbstreams", endpoint_url=node.endpoint)
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    removed = [r for r in streams.get_records(ShardIterator=it)["Records"] if r["eventName"] == "REMOVE"]
    assert len(removed) == 1 and removed[0]["dynamodb"]["OldImage"]["pk"] == {"S": "old"}
    assert removed[0]["userIdentity"] == {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}


def test_secondary_indexes(ddb, resource):
    name = s.unique_name("idx")
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "customer", "KeyType": "HASH"},
                   {"AttributeName": "order", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "customer", "AttributeType": "S"},
                              {"AttributeName": "order", "AttributeType": "S"},
                              {"AttributeName": "status", "AttributeType": "S"},
                              {"AttributeName": "total", "AttributeType": "N"}],
        GlobalSecondaryIndexes=[{"IndexName": "by-status",
                                 "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                                               {"AttributeName": "total", "KeyType": "RANGE"}],
                                 "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["note"]}}],
        LocalSecondaryIndexes=[{"IndexName": "by-total",
                                "KeySchema": [{"AttributeName": "customer", "KeyType": "HASH"},
                                              {"AttributeName": "total", "KeyType": "RANGE"}],
                                "Projection": {"ProjectionType": "ALL"}}])
    described = ddb.describe_table(TableName=name)["Table"]
    assert [i["IndexName"] for i in described["GlobalSecondaryIndexes"]] == ["by-status"]
    assert described["GlobalSecondaryIndexes"][0]["IndexStatus"] == "ACTIVE"
    assert described["LocalSecondaryIndexes"][0]["Projection"] == {"ProjectionType": "ALL"}
    table = resource.Table(name)
    for i, (customer, status, total) in enumerate([("ann", "open", 30), ("ann", "open", 5), ("bob", "open", 30),
                                                   ("bob", "shipped", 7), ("cid", None, 1)]):
        item = {"customer": customer, "order": f"o{i}", "total": total, "note": f"n{i}", "secret": "x"}
        if status:
            item["status"] = status
        table.put_item(Item=item)
    got = table.query(IndexName="by-status", KeyConditionExpression=Key("status").eq("open") & Key("total").gte(10))
    assert sorted(i["order"] for i in got["Items"]) == ["o0", "o2"]
    assert all(set(i) == {"customer", "order", "status", "total", "note"} for i in got["Items"])
    page = table.query(IndexName="by-status", KeyConditionExpression=Key("status").eq("open"), Limit=1)
    assert set(page["LastEvaluatedKey"]) == {"customer", "order", "status", "total"}
    rest = table.query(IndexName="by-status", KeyConditionExpression=Key("status").eq("open"),
                       ExclusiveStartKey=page["LastEvaluatedKey"])
    assert rest["Count"] == 2 and page["Items"][0]["order"] not in [i["order"] for i in rest["Items"]]
    by_total = table.query(IndexName="by-total", KeyConditionExpression=Key("customer").eq("ann"), ScanIndexForward=False)
    assert [i["total"] for i in by_total["Items"]] == [30, 5] and by_total["Items"][0]["secret"] == "x"
    # Items without the index's key are not in it; a status change moves an item.
    assert table.scan(IndexName="by-status")["Count"] == 4
    described = ddb.describe_table(TableName=name)["Table"]
    gsi, lsi = described["GlobalSecondaryIndexes"][0], described["LocalSecondaryIndexes"][0]
    assert (gsi["ItemCount"], lsi["ItemCount"], described["ItemCount"]) == (4, 5, 5)
    # The index keeps fewer attributes than the table: it takes fewer bytes.
    assert 0 < gsi["IndexSizeBytes"] < lsi["IndexSizeBytes"]
    table.update_item(Key={"customer": "ann", "order": "o1"}, UpdateExpression="SET #s = :s",
                      ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":s": "shipped"})
    shipped = table.query(IndexName="by-status", KeyConditionExpression=Key("status").eq("shipped"))
    assert sorted(i["order"] for i in shipped["Items"]) == ["o1", "o3"]
    fails(lambda: table.put_item(Item={"customer": "dan", "order": "o9", "status": 5}), "ValidationException",
          "Type mismatch for Index Key status")
    fails(lambda: table.query(IndexName="nope", KeyConditionExpression=Key("status").eq("open")), "ValidationException")
    fails(lambda: table.query(IndexName="by-status", KeyConditionExpression=Key("status").eq("open"), ConsistentRead=True),
          "ValidationException", "Consistent reads are not supported")


def test_an_index_added_later_is_filled_from_the_items_there(ddb, resource):
    name = new_table(ddb, range_key=False)
    table = resource.Table(name)
    for i in range(10):
        table.put_item(Item={"pk": f"u{i}", "team": "red" if i % 2 else "blue", "score": i})
    ddb.update_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "team", "AttributeType": "S"},
                              {"AttributeName": "score", "AttributeType": "N"}],
        GlobalSecondaryIndexUpdates=[{"Create": {
            "IndexName": "by-team",
            "KeySchema": [{"AttributeName": "team", "KeyType": "HASH"}, {"AttributeName": "score", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    ddb.get_waiter("table_exists").wait(TableName=name)
    red = table.query(IndexName="by-team", KeyConditionExpression=Key("team").eq("red"), ScanIndexForward=False)
    assert [i["score"] for i in red["Items"]] == [9, 7, 5, 3, 1]
    assert ddb.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"][0]["ItemCount"] == 10
    table.delete_item(Key={"pk": "u0"})
    assert ddb.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"][0]["ItemCount"] == 9
    assert set(red["Items"][0]) == {"pk", "team", "score"}
    ddb.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by-team"}}])
    assert "GlobalSecondaryIndexes" not in ddb.describe_table(TableName=name)["Table"]
    fails(lambda: table.query(IndexName="by-team", KeyConditionExpression=Key("team").eq("red")),
          "ValidationException")


def table_role(iam, name):
    """A role Lambda may assume that reads and writes table NAME's items."""
    role = s.unique_name("ddbfn")
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=s.LAMBDA_TRUST)["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="rw", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow",
                       "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
                       "Resource": f"arn:aws:dynamodb:{s.REGION}:000000000000:table/{name}"}]}))
    return arn


def test_functions_use_tables_with_unmodified_sdk_code(node, lambda_client, ddb):
    import process_support as p
    iam = admin(node, "iam")
    counts = new_table(ddb, range_key=False)
    py = p.deploy(lambda_client, "python-aws", p.host_python_runtime(), "ddb.handler",
                  Role=table_role(iam, counts), Timeout=30)
    for visits in (1, 2):
        out = s.invoke(lambda_client, py, {"table": counts, "page": "/home"})
        assert out.function_error is None, out.payload
        assert out.json() == {"visits": visits, "found": 1}
    people = new_table(ddb)
    js = p.deploy(lambda_client, "node-aws", p.host_node_runtime(), "ddb.handler",
                  Role=table_role(iam, people), Timeout=30)
    out = s.invoke(lambda_client, js, {"table": people, "user": "u1"})
    assert out.function_error is None, out.payload
    assert out.json() == {"name": "Ada", "tags": ["a", "b"], "langs": ["js", "py"], "count": 1,
                          "conflict": "ConditionalCheckFailedException"}
    stored = ddb.get_item(TableName=people, Key={"pk": {"S": "u1"}, "sk": {"N": "1"}})["Item"]
    assert stored["tags"] == {"SS": ["a", "b"]} and stored["profile"]["M"]["langs"]["L"][0] == {"S": "js"}
    # The role reaches that table only.
    denied = s.invoke(lambda_client, py, {"table": people, "page": "/home"})
    assert denied.function_error == "Unhandled" and "AccessDenied" in json.dumps(denied.json())


def test_pynamodb_models(node):
    from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UnicodeSetAttribute
    from pynamodb.exceptions import PutError
    from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
    from pynamodb.models import Model

    class ByCity(GlobalSecondaryIndex):
        class Meta:
            index_name = "by-city"
            projection = AllProjection()
        city = UnicodeAttribute(hash_key=True)
        age = NumberAttribute(range_key=True)

    class Person(Model):
        class Meta:
            table_name = s.unique_name("people")
            host = node.endpoint
            region = s.REGION
            aws_access_key_id = s.ACCESS_KEY
            aws_secret_access_key = s.SECRET_KEY
            billing_mode = "PAY_PER_REQUEST"
        email = UnicodeAttribute(hash_key=True)
        name = UnicodeAttribute()
        city = UnicodeAttribute()
        age = NumberAttribute()
        tags = UnicodeSetAttribute(null=True)
        by_city = ByCity()

    Person.create_table(wait=True)
    Person("ada@example.com", name="Ada", city="London", age=36, tags={"math"}).save()
    Person("alan@example.com", name="Alan", city="London", age=41).save()
    Person("grace@example.com", name="Grace", city="Arlington", age=85).save()
    ada = Person.get("ada@example.com")
    assert ada.name == "Ada" and ada.tags == {"math"}
    ada.update(actions=[Person.age.add(1), Person.tags.add({"code"})])
    assert Person.get("ada@example.com").age == 37
    assert sorted(p.name for p in Person.by_city.query("London", Person.age > 36)) == ["Ada", "Alan"]
    assert [p.name for p in Person.scan(Person.age >= 80)] == ["Grace"]
    with pytest.raises(PutError):
        Person("ada@example.com", name="Other", city="X", age=1).save(condition=Person.email.does_not_exist())
    assert Person.count() == 3
    Person.get("alan@example.com").delete()
    assert Person.count() == 2
    Person.delete_table()


def stream_table(ddb, view="NEW_AND_OLD_IMAGES"):
    name = new_table(ddb, range_key=False, StreamSpecification={"StreamEnabled": True, "StreamViewType": view})
    return name, ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"]


def test_streams_api_reads_changes_in_order(node, ddb):
    streams = boto3.session.Session(
        aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY, region_name=s.REGION
    ).client("dynamodbstreams", endpoint_url=node.endpoint)
    name, arn = stream_table(ddb)
    assert arn.startswith(f"arn:aws:dynamodb:{s.REGION}:000000000000:table/{name}/stream/")
    described = ddb.describe_table(TableName=name)["Table"]
    assert described["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    key = {"pk": {"S": "a"}}
    ddb.put_item(TableName=name, Item={**key, "v": {"S": "1"}})
    ddb.put_item(TableName=name, Item={**key, "v": {"S": "1"}})  # no change: no record
    ddb.update_item(TableName=name, Key=key, UpdateExpression="SET v = :v", ExpressionAttributeValues={":v": {"S": "2"}})
    ddb.delete_item(TableName=name, Key=key)
    desc = streams.describe_stream(StreamArn=arn)["StreamDescription"]
    assert desc["StreamStatus"] == "ENABLED" and desc["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    shard = desc["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = streams.get_records(ShardIterator=it)
    records = got["Records"]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert records[0]["dynamodb"]["NewImage"] == {"pk": {"S": "a"}, "v": {"S": "1"}}
    assert "OldImage" not in records[0]["dynamodb"]
    assert records[1]["dynamodb"]["OldImage"]["v"] == {"S": "1"} and records[1]["dynamodb"]["NewImage"]["v"] == {"S": "2"}
    assert records[2]["dynamodb"]["Keys"] == key and "NewImage" not in records[2]["dynamodb"]
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs) and records[0]["eventSource"] == "aws:dynamodb"
    assert streams.get_records(ShardIterator=got["NextShardIterator"])["Records"] == []
    after = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                       SequenceNumber=records[0]["dynamodb"]["SequenceNumber"])["ShardIterator"]
    assert [r["eventName"] for r in streams.get_records(ShardIterator=after, Limit=1)["Records"]] == ["MODIFY"]
    latest = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    ddb.put_item(TableName=name, Item={"pk": {"S": "b"}})
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in streams.get_records(ShardIterator=latest)["Records"]] == ["b"]
    assert arn in [x["StreamArn"] for x in streams.list_streams(TableName=name)["Streams"]]
    fails(lambda: streams.get_records(ShardIterator="garbage"), "ValidationException")
    fails(lambda: streams.describe_stream(StreamArn=arn + "x"), "ResourceNotFoundException")
    # Turned off, the stream stays readable and its shard closes.
    ddb.update_table(TableName=name, StreamSpecification={"StreamEnabled": False})
    assert streams.describe_stream(StreamArn=arn)["StreamDescription"]["StreamStatus"] == "DISABLED"


def first_failure(sqs, queue_url: str, timeout: float) -> dict:
    """The first failure record that reaches an on-failure queue, waiting up to TIMEOUT."""
    def reported():
        got = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
        assert got
        return json.loads(got[0]["Body"])
    return s.eventually(reported, timeout=timeout)


def test_a_stream_runs_a_function_in_order_and_failures_go_to_the_destination(node, lambda_client, ddb):
    import process_support as p
    iam, sqs = admin(node, "iam"), admin(node, "sqs")
    source, arn = stream_table(ddb)
    copies = new_table(ddb, range_key=False)
    role_arn = table_role(iam, copies)
    fn = p.deploy(lambda_client, "python-aws", p.host_python_runtime(), "stream.on_change", Role=role_arn,
                  Timeout=30, Environment={"Variables": {"TARGET": copies}})
    dlq_url = sqs.create_queue(QueueName=s.unique_name("stream-failures"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    mapping = lambda_client.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=fn, StartingPosition="TRIM_HORIZON", BatchSize=10,
        MaximumRetryAttempts=1, DestinationConfig={"OnFailure": {"Destination": dlq_arn}})
    assert mapping["StartingPosition"] == "TRIM_HORIZON" and mapping["MaximumRetryAttempts"] == 1
    ddb.put_item(TableName=source, Item={"pk": {"S": "x"}, "v": {"S": "1"}})
    ddb.update_item(TableName=source, Key={"pk": {"S": "x"}}, UpdateExpression="SET v = :v",
                    ExpressionAttributeValues={":v": {"S": "2"}})
    ddb.delete_item(TableName=source, Key={"pk": {"S": "x"}})
    # And a function's write: invoke → function → table → stream → function.
    writer = p.deploy(lambda_client, "python-aws", p.host_python_runtime(), "ddb.handler",
                      Role=table_role(iam, source), Timeout=30)
    assert s.invoke(lambda_client, writer, {"table": source, "page": "home"}).function_error is None

    def four():
        items = ddb.scan(TableName=copies)["Items"]
        assert len(items) == 4, items
        return sorted(items, key=lambda i: i["pk"]["S"])
    items = s.eventually(four, timeout=30)
    assert [i["event"]["S"] for i in items if i["pk"]["S"].startswith("home#")] == ["INSERT"]
    items = [i for i in items if i["pk"]["S"].startswith("x#")]
    assert [(i["event"]["S"], i["new"]["S"], i["old"]["S"]) for i in items] == [
        ("INSERT", "1", "-"), ("MODIFY", "2", "1"), ("REMOVE", "-", "2")]
    assert items[0]["source"]["S"] == arn
    # A batch the function keeps failing is retried once, then described to the destination.
    ddb.put_item(TableName=source, Item={"pk": {"S": "bad"}, "fail": {"BOOL": True}})

    failure = first_failure(sqs, dlq_url, timeout=30)
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["DDBStreamBatchInfo"]["streamArn"] == arn and failure["DDBStreamBatchInfo"]["batchSize"] == 1
    # The stream moves on past it.
    ddb.put_item(TableName=source, Item={"pk": {"S": "after"}, "v": {"S": "3"}})
    def moved_on():
        assert len(ddb.scan(TableName=copies)["Items"]) == 5
    s.eventually(moved_on, timeout=30)


def stream_lines(node, name: str, prefix: str) -> list[str]:
    from test_async import log_entries
    return [line.removeprefix(prefix) for entry in log_entries(node.endpoint, name)
            for line in entry["text"].splitlines() if line.startswith(prefix)]


def test_a_failing_stream_batch_is_bisected_down_to_the_poisoned_record(node, lambda_client, ddb):
    import process_support as p
    sqs = admin(node, "sqs")
    source, arn = stream_table(ddb)
    keys = [f"k{i}" for i in range(8)]
    for key in keys:
        item = {"pk": {"S": key}}
        if key == "k5":
            item["fail"] = {"BOOL": True}
        ddb.put_item(TableName=source, Item=item)
    fn = p.deploy(lambda_client, "python-aws", p.host_python_runtime(), "stream.bisecting", Timeout=30,
                  Environment={"Variables": {"TARGET": source}})
    dlq_url = sqs.create_queue(QueueName=s.unique_name("bisect-failures"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    mapping = lambda_client.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=fn, StartingPosition="TRIM_HORIZON", BatchSize=8,
        BisectBatchOnFunctionError=True, MaximumRetryAttempts=3,
        DestinationConfig={"OnFailure": {"Destination": dlq_arn}})
    assert mapping["BisectBatchOnFunctionError"] is True

    failure = first_failure(sqs, dlq_url, timeout=60)
    # Halving isolated the poisoned record: it alone was given up on.
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["DDBStreamBatchInfo"]["batchSize"] == 1

    def all_good_handled():
        batches = [b.split(",") for b in stream_lines(node, fn, "BATCH ")]
        succeeded = {k for b in batches if "k5" not in b for k in b}
        assert succeeded == set(keys) - {"k5"}, batches
        return batches
    batches = s.eventually(all_good_handled, timeout=60)
    assert batches[0] == keys, "the first try takes the whole batch"
    sizes = [len(b) for b in batches]
    assert 4 in sizes and 1 in sizes, sizes
    assert [b for b in batches if "k5" in b][-1] == ["k5"]
    lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])


def test_a_stream_batch_reports_its_failed_item_and_resumes_from_it(node, lambda_client, ddb):
    import process_support as p
    iam = admin(node, "iam")
    source, arn = stream_table(ddb)
    markers = new_table(ddb, range_key=False)
    keys = [f"r{i}" for i in range(8)]
    for key in keys:
        item = {"pk": {"S": key}}
        if key == "r4":
            item["fail"] = {"BOOL": True}
        ddb.put_item(TableName=source, Item=item)
    fn = p.deploy(lambda_client, "python-aws", p.host_python_runtime(), "stream.reporting",
                  Role=table_role(iam, markers), Timeout=30, Environment={"Variables": {"TARGET": markers}})
    mapping = lambda_client.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=fn, StartingPosition="TRIM_HORIZON", BatchSize=8,
        FunctionResponseTypes=["ReportBatchItemFailures"], MaximumRetryAttempts=5)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    def all_done():
        done = stream_lines(node, fn, "DONE ")
        assert sorted(set(done)) == keys, done
        return done
    done = s.eventually(all_done, timeout=60)
    # What came before the reported record was checkpointed, not run again.
    assert sorted(done) == keys, done
    assert ddb.get_item(TableName=markers, Key={"pk": {"S": "marker#r4"}}).get("Item")
    lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])


def test_legacy_parameters_older_clients_send(ddb):
    name = new_table(ddb)
    key = {"pk": {"S": "p"}, "sk": {"N": "1"}}
    ddb.put_item(TableName=name, Item={**key, "n": {"N": "1"}, "tag": {"S": "a"}},
                 Expected={"pk": {"Exists": False}})
    fails(lambda: ddb.put_item(TableName=name, Item=key, Expected={"pk": {"Exists": False}}),
          "ConditionalCheckFailedException")
    ddb.update_item(TableName=name, Key=key, AttributeUpdates={
        "n": {"Action": "ADD", "Value": {"N": "4"}}, "tag": {"Action": "DELETE"},
        "new": {"Action": "PUT", "Value": {"S": "yes"}}},
        Expected={"n": {"ComparisonOperator": "EQ", "AttributeValueList": [{"N": "1"}]}})
    got = ddb.get_item(TableName=name, Key=key, AttributesToGet=["n", "new", "tag"])["Item"]
    assert got == {"n": {"N": "5"}, "new": {"S": "yes"}}
    ddb.put_item(TableName=name, Item={"pk": {"S": "p"}, "sk": {"N": "2"}, "n": {"N": "9"}})
    q = ddb.query(TableName=name, KeyConditions={
        "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "p"}]},
        "sk": {"ComparisonOperator": "GE", "AttributeValueList": [{"N": "1"}]}},
        QueryFilter={"n": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "6"}]}})
    assert [i["sk"]["N"] for i in q["Items"]] == ["2"] and q["ScannedCount"] == 2
    scanned = ddb.scan(TableName=name, ScanFilter={"new": {"ComparisonOperator": "NOT_NULL"}})
    assert [i["sk"]["N"] for i in scanned["Items"]] == ["1"]
    fails(lambda: ddb.get_item(TableName=name, Key=key, AttributesToGet=["n"], ProjectionExpression="n"),
          "ValidationException", "Can not use both expression and non-expression parameters")


def test_sigkill_keeps_every_acknowledged_write_and_its_stream_record(node_factory):
    """Writers put and update items concurrently (some in transactions) while the node is
    killed with SIGKILL. After a restart every acknowledged write is there, and the stream holds
    a record for each of them."""
    import signal
    import threading

    node = node_factory(name="ddbkill")
    ddb = ddb_client(node)
    name, arn = stream_table(ddb, view="KEYS_ONLY")
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n):
        client = ddb_client(node)
        i = 0
        while not stop.is_set():
            key = f"w{n}-{i}"
            try:
                if i % 4 == 3:
                    client.transact_write_items(TransactItems=[
                        {"Put": {"TableName": name, "Item": {"pk": {"S": key}, "n": {"N": str(i)}}}},
                        {"Put": {"TableName": name, "Item": {"pk": {"S": key + "-pair"}}}}])
                    written = [key, key + "-pair"]
                else:
                    client.put_item(TableName=name, Item={"pk": {"S": key}, "n": {"N": str(i)}},
                                    ConditionExpression="attribute_not_exists(pk)")
                    written = [key]
            except Exception:
                return
            with lock:
                acked.update(written)
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    s.eventually(lambda: len(acked) >= 200, timeout=60)
    node.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    node.start()

    ddb = ddb_client(node)
    with lock:
        expected = set(acked)
    stored = set()
    for page in ddb.get_paginator("scan").paginate(TableName=name):
        stored |= {i["pk"]["S"] for i in page["Items"]}
    assert expected <= stored
    # Every pair of a transaction is whole: both items or neither.
    for k in stored:
        if k.endswith("-pair"):
            assert k[:-len("-pair")] in stored
    streams = boto3.session.Session(
        aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY, region_name=s.REGION
    ).client("dynamodbstreams", endpoint_url=node.endpoint)
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    recorded = set()
    while True:
        got = streams.get_records(ShardIterator=it, Limit=1000)
        recorded |= {r["dynamodb"]["Keys"]["pk"]["S"] for r in got["Records"]}
        if not got["Records"]:
            break
        it = got["NextShardIterator"]
    assert recorded == stored


def test_a_local_index_fetches_what_it_does_not_keep(ddb, resource):
    name = s.unique_name("lsi")
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"},
                              {"AttributeName": "rank", "AttributeType": "N"}],
        LocalSecondaryIndexes=[{"IndexName": "by-rank",
                                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                              {"AttributeName": "rank", "KeyType": "RANGE"}],
                                "Projection": {"ProjectionType": "KEYS_ONLY"}}])
    table = resource.Table(name)
    for i in range(3):
        table.put_item(Item={"pk": "p", "sk": f"s{i}", "rank": 10 - i, "body": f"b{i}"})
    keys_only = table.query(IndexName="by-rank", KeyConditionExpression=Key("pk").eq("p"))["Items"]
    assert [set(i) for i in keys_only] == [{"pk", "sk", "rank"}] * 3
    assert [i["rank"] for i in keys_only] == [8, 9, 10]
    whole = table.query(IndexName="by-rank", KeyConditionExpression=Key("pk").eq("p"), Select="ALL_ATTRIBUTES")
    assert [i["body"] for i in whole["Items"]] == ["b2", "b1", "b0"]
    named = table.query(IndexName="by-rank", KeyConditionExpression=Key("pk").eq("p"), ProjectionExpression="body")
    assert [i for i in named["Items"]] == [{"body": "b2"}, {"body": "b1"}, {"body": "b0"}]


def test_a_transactions_token_outlives_a_restart(node_factory):
    node = node_factory(name="tokens")
    ddb = ddb_client(node)
    name = new_table(ddb, range_key=False)
    ddb.put_item(TableName=name, Item={"pk": {"S": "c"}, "n": {"N": "0"}})

    def bump(by):
        return ddb.transact_write_items(ClientRequestToken="once", TransactItems=[
            {"Update": {"TableName": name, "Key": {"pk": {"S": "c"}}, "UpdateExpression": "SET n = n + :b",
                        "ExpressionAttributeValues": {":b": {"N": str(by)}}}}])
    bump(1)
    node.stop()
    node.start()
    ddb = ddb_client(node)
    bump(1)
    assert ddb.get_item(TableName=name, Key={"pk": {"S": "c"}})["Item"]["n"] == {"N": "1"}
    fails(lambda: bump(2), "IdempotentParameterMismatchException")


def test_bad_stream_and_index_settings_are_refused(node, lambda_client, ddb):
    import process_support as p
    name, arn = stream_table(ddb)
    fn = p.deploy(lambda_client, "python-aws", p.host_python_runtime(), "stream.on_change",
                  Timeout=30, Environment={"Variables": {"TARGET": name}})

    def refused(code, **params):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lambda_client.create_event_source_mapping(EventSourceArn=arn, FunctionName=fn, **params)
        assert e.value.response["Error"]["Code"] == code, e.value.response
    refused("InvalidParameterValueException")  # no StartingPosition
    refused("ValidationException", StartingPosition="AT_TIMESTAMP")
    refused("InvalidParameterValueException", StartingPosition="LATEST",
            DestinationConfig={"OnFailure": {"Destination": f"arn:aws:sqs:{s.REGION}:000000000000:absent"}})
    assert lambda_client.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"] == []
    fails(lambda: ddb.update_table(TableName=name, StreamSpecification={"StreamEnabled": True,
                                                                         "StreamViewType": "KEYS_ONLY"}),
          "ValidationException", "already has an enabled stream")
    fails(lambda: ddb.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "none"}}]),
          "ResourceNotFoundException")
    fails(lambda: ddb.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Create": {
        "IndexName": "gsi", "KeySchema": [{"AttributeName": "undefined", "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "ALL"}}}]), "ValidationException", "not defined in AttributeDefinitions")
    assert "GlobalSecondaryIndexes" not in ddb.describe_table(TableName=name)["Table"]

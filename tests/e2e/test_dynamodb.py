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

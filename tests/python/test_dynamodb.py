"""The DynamoDB subset (for KCL's lease, coordinator and worker-metrics tables) and CloudWatch
metrics, driven with boto3 against millrace: tables with and without sort keys, on-demand
and provisioned, a global secondary index added by UpdateTable, conditional writes with
expressions and with the legacy Expected, update expressions, return values, Query and Scan
paging, error shapes, durability across a SIGKILL, and PutMetricData read back.
"""

from __future__ import annotations

import datetime as dt

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"


def make(service: str, endpoint: str):
    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="AKIDMILLRACETEST", aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


@pytest.fixture
def ddb(endpoint):
    return make("dynamodb", endpoint)


def error_of(call, *args, **kwargs) -> tuple[str, str, dict]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    return info.value.response["Error"]["Code"], info.value.response["Error"].get("Message", ""), info.value.response


def lease_table(ddb, name="leases", **extra):
    return ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST", **extra)


def test_table_lifecycle_and_errors(ddb):
    created = lease_table(ddb)["TableDescription"]
    assert created["TableStatus"] in ("CREATING", "ACTIVE")
    assert created["TableArn"].endswith(":table/leases")
    assert created["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ddb.get_waiter("table_exists").wait(TableName="leases", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    code, message, _ = error_of(lease_table, ddb)
    assert (code, message) == ("ResourceInUseException", "Table already exists: leases")
    ddb.create_table(
        TableName="prov", KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}, {"AttributeName": "s", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}, {"AttributeName": "s", "AttributeType": "N"}],
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 7})
    described = ddb.describe_table(TableName="prov")["Table"]
    assert described["ProvisionedThroughput"]["WriteCapacityUnits"] == 7
    assert described["TableStatus"] == "ACTIVE"
    assert sorted(ddb.list_tables()["TableNames"]) == ["leases", "prov"]
    page = ddb.list_tables(Limit=1)
    assert page["TableNames"] == ["leases"] and page["LastEvaluatedTableName"] == "leases"

    code, message, response = error_of(ddb.describe_table, TableName="missing")
    assert code == "ResourceNotFoundException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    code, _, _ = error_of(ddb.get_item, TableName="missing", Key={"leaseKey": {"S": "a"}})
    assert code == "ResourceNotFoundException"
    code, message, _ = error_of(ddb.get_item, TableName="leases", Key={"nope": {"S": "a"}})
    assert (code, message) == ("ValidationException", "The provided key element does not match the schema")
    code, message, _ = error_of(ddb.put_item, TableName="leases", Item={"other": {"S": "x"}})
    assert code == "ValidationException" and "Missing the key leaseKey" in message
    code, _, _ = error_of(ddb.create_table, TableName="x", KeySchema=[{"AttributeName": "a", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "a", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    assert code == "ValidationException"  # name too short

    # TTL and continuous backups, as KCL sets them.
    ddb.update_time_to_live(TableName="leases", TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiry"})
    assert ddb.describe_time_to_live(TableName="leases")["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED", "AttributeName": "expiry"}
    ddb.update_continuous_backups(TableName="leases",
                                  PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    backups = ddb.describe_continuous_backups(TableName="leases")["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    ddb.tag_resource(ResourceArn=created["TableArn"], Tags=[{"Key": "team", "Value": "streams"}])
    assert ddb.list_tags_of_resource(ResourceArn=created["TableArn"])["Tags"] == [{"Key": "team", "Value": "streams"}]

    deleted = ddb.delete_table(TableName="leases")["TableDescription"]
    assert deleted["TableStatus"] == "DELETING"
    code, _, _ = error_of(ddb.describe_table, TableName="leases")
    assert code == "ResourceNotFoundException"


def test_conditional_writes_and_return_values(ddb):
    lease_table(ddb)
    item = {"leaseKey": {"S": "shard-0"}, "leaseCounter": {"N": "1"}, "leaseOwner": {"S": "w1"},
            "checkpoint": {"S": "TRIM_HORIZON"}}
    ddb.put_item(TableName="leases", Item=item, ConditionExpression="attribute_not_exists(leaseKey)")
    code, message, response = error_of(ddb.put_item, TableName="leases", Item=item,
                                       ConditionExpression="attribute_not_exists(leaseKey)",
                                       ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert (code, message) == ("ConditionalCheckFailedException", "The conditional request failed")
    assert response["Item"]["leaseOwner"] == {"S": "w1"}

    # Take the lease: counter must match, owner changes, counter goes up.
    updated = ddb.update_item(
        TableName="leases", Key={"leaseKey": {"S": "shard-0"}},
        UpdateExpression="SET #o = :new, #c = #c + :one REMOVE pending",
        ConditionExpression="#c = :expected AND (attribute_not_exists(#o) OR #o <> :new)",
        ExpressionAttributeNames={"#o": "leaseOwner", "#c": "leaseCounter"},
        ExpressionAttributeValues={":new": {"S": "w2"}, ":one": {"N": "1"}, ":expected": {"N": "1"}},
        ReturnValues="UPDATED_NEW")
    assert updated["Attributes"] == {"leaseOwner": {"S": "w2"}, "leaseCounter": {"N": "2"}}
    code, _, _ = error_of(
        ddb.update_item, TableName="leases", Key={"leaseKey": {"S": "shard-0"}},
        UpdateExpression="SET leaseOwner = :new", ConditionExpression="leaseCounter = :expected",
        ExpressionAttributeValues={":new": {"S": "w3"}, ":expected": {"N": "1"}})
    assert code == "ConditionalCheckFailedException"

    # The legacy API KCL itself uses: Expected and AttributeUpdates.
    old = ddb.update_item(
        TableName="leases", Key={"leaseKey": {"S": "shard-0"}},
        Expected={"leaseCounter": {"Value": {"N": "2"}}, "gone": {"Exists": False}},
        AttributeUpdates={"checkpoint": {"Value": {"S": "49600"}, "Action": "PUT"},
                          "leaseCounter": {"Value": {"N": "5"}, "Action": "ADD"},
                          "leaseOwner": {"Action": "DELETE"}},
        ReturnValues="ALL_OLD")["Attributes"]
    assert old["leaseCounter"] == {"N": "2"} and old["leaseOwner"] == {"S": "w2"}
    now = ddb.get_item(TableName="leases", Key={"leaseKey": {"S": "shard-0"}}, ConsistentRead=True)["Item"]
    assert now == {"leaseKey": {"S": "shard-0"}, "leaseCounter": {"N": "7"}, "checkpoint": {"S": "49600"}}
    code, _, _ = error_of(ddb.delete_item, TableName="leases", Key={"leaseKey": {"S": "shard-0"}},
                          Expected={"leaseOwner": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "w2"}]}})
    assert code == "ConditionalCheckFailedException"

    # Update expressions: if_not_exists, list_append, ADD and DELETE on sets, nested paths.
    ddb.update_item(
        TableName="leases", Key={"leaseKey": {"S": "shard-1"}},
        UpdateExpression="SET parents = list_append(if_not_exists(parents, :empty), :p), info = :m "
                         "ADD tags :t, hits :one",
        ExpressionAttributeValues={":empty": {"L": []}, ":p": {"L": [{"S": "shard-a"}]},
                                   ":m": {"M": {"depth": {"N": "1"}}}, ":t": {"SS": ["x", "y"]}, ":one": {"N": "1"}})
    result = ddb.update_item(
        TableName="leases", Key={"leaseKey": {"S": "shard-1"}},
        UpdateExpression="SET info.depth = info.depth + :one, parents[1] = :b DELETE tags :x",
        ConditionExpression="size(parents) = :one AND contains(tags, :xs) AND attribute_type(info, :map)",
        ExpressionAttributeValues={":one": {"N": "1"}, ":b": {"S": "shard-b"}, ":x": {"SS": ["x"]},
                                   ":xs": {"S": "x"}, ":map": {"S": "M"}},
        ReturnValues="ALL_NEW")["Attributes"]
    assert result["info"] == {"M": {"depth": {"N": "2"}}}
    assert result["parents"] == {"L": [{"S": "shard-a"}, {"S": "shard-b"}]}
    assert result["tags"] == {"SS": ["y"]} and result["hits"] == {"N": "1"}
    projected = ddb.get_item(TableName="leases", Key={"leaseKey": {"S": "shard-1"}},
                             ProjectionExpression="#i.depth, hits", ExpressionAttributeNames={"#i": "info"})["Item"]
    assert projected == {"info": {"M": {"depth": {"N": "2"}}}, "hits": {"N": "1"}}

    # Expression errors, as DynamoDB words them.
    code, message, _ = error_of(ddb.update_item, TableName="leases", Key={"leaseKey": {"S": "shard-1"}},
                                UpdateExpression="SET a = :v", ExpressionAttributeValues={":v": {"S": "1"}, ":w": {"S": "2"}})
    assert code == "ValidationException" and "unused in expressions" in message and ":w" in message
    code, message, _ = error_of(ddb.update_item, TableName="leases", Key={"leaseKey": {"S": "shard-1"}},
                                UpdateExpression="SET leaseKey = :v", ExpressionAttributeValues={":v": {"S": "1"}})
    assert code == "ValidationException" and "part of the key" in message
    code, message, _ = error_of(ddb.put_item, TableName="leases", Item={"leaseKey": {"S": "z"}},
                                ConditionExpression="leaseKey = = :v", ExpressionAttributeValues={":v": {"S": "1"}})
    assert code == "ValidationException" and "Syntax error" in message
    code, message, _ = error_of(ddb.put_item, TableName="leases",
                                Item={"leaseKey": {"S": "big"}, "blob": {"S": "x" * (400 * 1024)}})
    assert code == "ValidationException" and "Item size has exceeded" in message

    deleted = ddb.delete_item(TableName="leases", Key={"leaseKey": {"S": "shard-1"}}, ReturnValues="ALL_OLD",
                              ConditionExpression="attribute_exists(hits)")
    assert deleted["Attributes"]["hits"] == {"N": "1"}
    assert "Item" not in ddb.get_item(TableName="leases", Key={"leaseKey": {"S": "shard-1"}})


def test_query_scan_paging_and_global_secondary_index(ddb):
    ddb.create_table(
        TableName="events",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "n", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST")
    for i in range(25):
        owner = {"S": f"w{i % 3}"} if i % 5 else None  # every fifth item has no owner: sparse index
        item = {"pk": {"S": "a" if i < 20 else "b"}, "n": {"N": str(i)}, "even": {"BOOL": i % 2 == 0}}
        if owner:
            item["owner"] = owner
        ddb.put_item(TableName="events", Item=item)
    # Query: numeric sort order (2 < 10), range conditions, paging, reverse, filter.
    got, start = [], None
    while True:
        kwargs = {"ExclusiveStartKey": start} if start else {}
        page = ddb.query(TableName="events", KeyConditionExpression="pk = :a AND n BETWEEN :lo AND :hi",
                         ExpressionAttributeValues={":a": {"S": "a"}, ":lo": {"N": "2"}, ":hi": {"N": "15"}},
                         Limit=4, **kwargs)
        got += [int(i["n"]["N"]) for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert got == list(range(2, 16))
    back = ddb.query(TableName="events", KeyConditionExpression="pk = :a AND n < :t",
                     ExpressionAttributeValues={":a": {"S": "a"}, ":t": {"N": "5"}}, ScanIndexForward=False)
    assert [int(i["n"]["N"]) for i in back["Items"]] == [4, 3, 2, 1, 0]
    filtered = ddb.query(TableName="events", KeyConditionExpression="pk = :a",
                         FilterExpression="even = :t AND n IN (:x, :y, :z)",
                         ExpressionAttributeValues={":a": {"S": "a"}, ":t": {"BOOL": True}, ":x": {"N": "4"},
                                                    ":y": {"N": "5"}, ":z": {"N": "6"}})
    assert [int(i["n"]["N"]) for i in filtered["Items"]] == [4, 6] and filtered["ScannedCount"] == 20
    count = ddb.query(TableName="events", KeyConditionExpression="pk = :b",
                      ExpressionAttributeValues={":b": {"S": "b"}}, Select="COUNT")
    assert count["Count"] == 5 and "Items" not in count
    code, message, _ = error_of(ddb.query, TableName="events", KeyConditionExpression="n = :x",
                                ExpressionAttributeValues={":x": {"N": "1"}})
    assert code == "ValidationException" and "missed key schema element" in message or "non-key" in message

    # Scan with paging visits every item once.
    seen, start, pages = [], None, 0
    while True:
        kwargs = {"ExclusiveStartKey": start} if start else {}
        page = ddb.scan(TableName="events", Limit=7, **kwargs)
        pages += 1
        seen += [(i["pk"]["S"], int(i["n"]["N"])) for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert sorted(seen) == sorted([("a" if i < 20 else "b", i) for i in range(25)]) and pages == 4
    segments = [ddb.scan(TableName="events", Segment=s, TotalSegments=3)["Count"] for s in range(3)]
    assert sum(segments) == 25

    # Add a global secondary index (as KCL 3 does on its lease table) and query it.
    table = ddb.update_table(
        TableName="events", AttributeDefinitions=[{"AttributeName": "owner", "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[{"Create": {
            "IndexName": "by-owner", "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"}}}])["TableDescription"]
    assert table["GlobalSecondaryIndexes"][0]["IndexStatus"] in ("CREATING", "ACTIVE")
    index = ddb.describe_table(TableName="events")["Table"]["GlobalSecondaryIndexes"][0]
    assert index["IndexName"] == "by-owner" and index["IndexStatus"] == "ACTIVE"
    owned, start = [], None
    while True:
        kwargs = {"ExclusiveStartKey": start} if start else {}
        page = ddb.query(TableName="events", IndexName="by-owner", KeyConditionExpression="#o = :w",
                         ExpressionAttributeNames={"#o": "owner"}, ExpressionAttributeValues={":w": {"S": "w1"}},
                         Limit=3, **kwargs)
        for i in page["Items"]:
            assert set(i) == {"pk", "n", "owner"}  # KEYS_ONLY
        owned += [int(i["n"]["N"]) for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert sorted(owned) == [i for i in range(25) if i % 3 == 1 and i % 5]
    assert ddb.scan(TableName="events", IndexName="by-owner")["Count"] == 20
    code, _, _ = error_of(ddb.query, TableName="events", IndexName="by-owner", ConsistentRead=True,
                          KeyConditionExpression="#o = :w", ExpressionAttributeNames={"#o": "owner"},
                          ExpressionAttributeValues={":w": {"S": "w1"}})
    assert code == "ValidationException"
    code, _, _ = error_of(ddb.put_item, TableName="events",
                          Item={"pk": {"S": "c"}, "n": {"N": "1"}, "owner": {"N": "5"}})
    assert code == "ValidationException"  # index key of the wrong type

    # Batch writes and reads.
    ddb.batch_write_item(RequestItems={"events": [
        {"PutRequest": {"Item": {"pk": {"S": "c"}, "n": {"N": str(i)}}}} for i in range(3)] + [
        {"DeleteRequest": {"Key": {"pk": {"S": "b"}, "n": {"N": "20"}}}}]})
    got = ddb.batch_get_item(RequestItems={"events": {"Keys": [
        {"pk": {"S": "c"}, "n": {"N": "1"}}, {"pk": {"S": "b"}, "n": {"N": "20"}}]}})["Responses"]["events"]
    assert got == [{"pk": {"S": "c"}, "n": {"N": "1"}}]


def test_tables_survive_sigkill(make_server):
    server = make_server()
    ddb = make("dynamodb", server.endpoint)
    lease_table(ddb)
    for i in range(50):
        ddb.update_item(TableName="leases", Key={"leaseKey": {"S": f"shard-{i % 5}"}},
                        UpdateExpression="ADD checkpoints :one", ExpressionAttributeValues={":one": {"N": "1"}})
    server.kill()
    server.start()
    ddb = make("dynamodb", server.endpoint)
    items = ddb.scan(TableName="leases")["Items"]
    assert sorted((i["leaseKey"]["S"], i["checkpoints"]["N"]) for i in items) == [
        (f"shard-{i}", "10") for i in range(5)]


def test_cloudwatch_metrics_are_kept_as_time_series(endpoint):
    cw = make("cloudwatch", endpoint)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    dims = [{"Name": "Operation", "Value": "ProcessTask"}, {"Name": "ShardId", "Value": "shardId-0"}]
    cw.put_metric_data(Namespace="app-kcl", MetricData=[
        {"MetricName": "RecordsProcessed", "Dimensions": dims, "Value": 10, "Unit": "Count", "Timestamp": now},
        {"MetricName": "RecordsProcessed", "Dimensions": dims, "Value": 30, "Unit": "Count", "Timestamp": now},
        {"MetricName": "Time", "Dimensions": dims[:1], "Unit": "Milliseconds", "Timestamp": now,
         "StatisticValues": {"SampleCount": 2, "Sum": 8, "Minimum": 3, "Maximum": 5}},
    ])
    listed = cw.list_metrics(Namespace="app-kcl")["Metrics"]
    assert sorted(m["MetricName"] for m in listed) == ["RecordsProcessed", "Time"]
    assert cw.list_metrics(Namespace="app-kcl", Dimensions=[{"Name": "ShardId"}])["Metrics"][0]["MetricName"] == \
        "RecordsProcessed"
    stats = cw.get_metric_statistics(
        Namespace="app-kcl", MetricName="RecordsProcessed", Dimensions=dims,
        StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=5), Period=60,
        Statistics=["Sum", "SampleCount", "Maximum", "Average"])["Datapoints"]
    assert len(stats) == 1
    assert (stats[0]["Sum"], stats[0]["SampleCount"], stats[0]["Maximum"], stats[0]["Average"]) == (40, 2, 30, 20)
    assert stats[0]["Unit"] == "Count"
    data = cw.get_metric_data(
        StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=5),
        MetricDataQueries=[{"Id": "t", "MetricStat": {"Metric": {"Namespace": "app-kcl", "MetricName": "Time",
                                                                 "Dimensions": dims[:1]},
                                                      "Period": 60, "Stat": "Average"}}])["MetricDataResults"]
    assert data[0]["Values"] == [4.0]
    with pytest.raises(ClientError) as info:
        cw.put_metric_data(Namespace="AWS/Kinesis", MetricData=[{"MetricName": "x", "Value": 1}])
    assert info.value.response["Error"]["Code"] in ("InvalidParameterValue", "InvalidParameterValueException")

"""boto3: stream lifecycle, listing, describing, retention, limits.

The server runs with lifecycle delays so the CREATING, UPDATING and DELETING states last
long enough to be seen, as they are on AWS.
"""

from __future__ import annotations

import datetime

import pytest
from botocore.exceptions import ClientError

from kinesis_util import (
    ACCOUNT_ID, HASH_KEY_MAX, assert_tiles_hash_space, create_active, error_of, list_all_shards,
    status_of, stream_arn, unique_name, wait_status,
)

SERVER_CONFIG = """
[streams]
create_delay_ms = 1000
delete_delay_ms = 1000
update_delay_ms = 1000
consumer_delay_ms = 1000
"""


def test_create_describe_delete_lifecycle(kinesis):
    name = unique_name("life")
    before = datetime.datetime.now(datetime.timezone.utc)
    response = kinesis.create_stream(StreamName=name, ShardCount=2)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert status_of(kinesis, name) == "CREATING"
    wait_status(kinesis, name, "ACTIVE")

    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamName"] == name
    assert summary["StreamARN"] == stream_arn(name)
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert summary["RetentionPeriodHours"] == 24
    assert summary["OpenShardCount"] == 2
    assert summary["ConsumerCount"] == 0
    assert summary["EncryptionType"] == "NONE"
    assert summary["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]
    created = summary["StreamCreationTimestamp"]
    assert before - datetime.timedelta(seconds=2) <= created <= datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)

    description = kinesis.describe_stream(StreamName=name)["StreamDescription"]
    assert description["StreamName"] == name
    assert description["StreamARN"] == stream_arn(name)
    assert description["StreamStatus"] == "ACTIVE"
    assert description["HasMoreShards"] is False
    assert description["RetentionPeriodHours"] == 24
    assert [s["ShardId"] for s in description["Shards"]] == ["shardId-000000000000", "shardId-000000000001"]
    for shard in description["Shards"]:
        assert "ParentShardId" not in shard
        assert int(shard["SequenceNumberRange"]["StartingSequenceNumber"]) >= 0
        assert "EndingSequenceNumber" not in shard["SequenceNumberRange"]
    assert_tiles_hash_space(description["Shards"])
    # Two shards split the space evenly, as AWS does.
    assert description["Shards"][0]["HashKeyRange"] == {
        "StartingHashKey": "0", "EndingHashKey": str(2**127 - 1)}
    assert description["Shards"][1]["HashKeyRange"] == {
        "StartingHashKey": str(2**127), "EndingHashKey": str(HASH_KEY_MAX)}

    kinesis.delete_stream(StreamName=name)
    assert status_of(kinesis, name) == "DELETING"
    wait_status(kinesis, name, None)
    with pytest.raises(ClientError) as excinfo:
        kinesis.describe_stream_summary(StreamName=name)
    assert error_of(excinfo) == (
        "ResourceNotFoundException", f"Stream {name} under account {ACCOUNT_ID} not found.")
    assert name not in kinesis.list_streams()["StreamNames"]


def test_create_existing_stream_is_refused(kinesis):
    name = unique_name("dup")
    create_active(kinesis, name, 1)
    with pytest.raises(ClientError) as excinfo:
        kinesis.create_stream(StreamName=name, ShardCount=1)
    assert error_of(excinfo) == (
        "ResourceInUseException", f"Stream {name} under account {ACCOUNT_ID} already exists.")


def test_unknown_stream_errors(kinesis):
    name = unique_name("missing")
    expected = ("ResourceNotFoundException", f"Stream {name} under account {ACCOUNT_ID} not found.")
    for call in (
        lambda: kinesis.describe_stream(StreamName=name),
        lambda: kinesis.describe_stream_summary(StreamName=name),
        lambda: kinesis.delete_stream(StreamName=name),
        lambda: kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"x"),
        lambda: kinesis.list_shards(StreamName=name),
        lambda: kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo) == expected


def test_list_streams_sorted_and_paginated(kinesis):
    names = sorted(f"list-{suffix}" for suffix in ("c", "a", "b"))
    for name in ("list-c", "list-a", "list-b"):
        kinesis.create_stream(StreamName=name, ShardCount=1)
    for name in names:
        wait_status(kinesis, name, "ACTIVE")

    everything = kinesis.list_streams()
    assert everything["StreamNames"] == names
    assert everything["HasMoreStreams"] is False
    summaries = everything["StreamSummaries"]
    assert [s["StreamName"] for s in summaries] == names
    for s in summaries:
        assert s["StreamARN"] == stream_arn(s["StreamName"])
        assert s["StreamStatus"] == "ACTIVE"
        assert s["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
        assert isinstance(s["StreamCreationTimestamp"], datetime.datetime)

    first = kinesis.list_streams(Limit=2)
    assert first["StreamNames"] == names[:2]
    assert first["HasMoreStreams"] is True
    assert first.get("NextToken")
    by_token = kinesis.list_streams(NextToken=first["NextToken"])
    assert by_token["StreamNames"] == names[2:]
    assert by_token["HasMoreStreams"] is False
    by_name = kinesis.list_streams(ExclusiveStartStreamName=names[0])
    assert by_name["StreamNames"] == names[1:]

    paginated = [n for page in kinesis.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 1})
                 for n in page["StreamNames"]]
    assert paginated == names


def test_streams_are_namespaced_by_region(endpoint, kinesis):
    from kinesis_util import client

    west = client(endpoint, region="us-west-2")
    name = unique_name("region")
    create_active(kinesis, name, 1)
    assert name not in west.list_streams()["StreamNames"]
    with pytest.raises(ClientError) as excinfo:
        west.describe_stream_summary(StreamName=name)
    assert error_of(excinfo)[0] == "ResourceNotFoundException"
    west.create_stream(StreamName=name, ShardCount=3)
    wait_status(west, name, "ACTIVE")
    west_summary = west.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert west_summary["StreamARN"] == stream_arn(name, region="us-west-2")
    assert west_summary["OpenShardCount"] == 3
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["OpenShardCount"] == 1


def test_describe_stream_pages_shards(kinesis):
    name = unique_name("pages")
    create_active(kinesis, name, 3)
    first = kinesis.describe_stream(StreamName=name, Limit=2)["StreamDescription"]
    assert [s["ShardId"] for s in first["Shards"]] == ["shardId-000000000000", "shardId-000000000001"]
    assert first["HasMoreShards"] is True
    rest = kinesis.describe_stream(StreamName=name, ExclusiveStartShardId="shardId-000000000001")["StreamDescription"]
    assert [s["ShardId"] for s in rest["Shards"]] == ["shardId-000000000002"]
    assert rest["HasMoreShards"] is False


def test_list_shards_paging_and_filters(kinesis):
    name = unique_name("ls")
    create_active(kinesis, name, 5)
    page = kinesis.list_shards(StreamName=name, MaxResults=2)
    assert [s["ShardId"] for s in page["Shards"]] == ["shardId-000000000000", "shardId-000000000001"]
    assert page.get("NextToken")
    shards = list_all_shards(kinesis, name, MaxResults=2)
    assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(5)]
    assert_tiles_hash_space(shards)
    after = kinesis.list_shards(StreamName=name, ExclusiveStartShardId="shardId-000000000002")
    assert [s["ShardId"] for s in after["Shards"]] == ["shardId-000000000003", "shardId-000000000004"]
    by_arn = kinesis.list_shards(StreamARN=stream_arn(name))
    assert [s["ShardId"] for s in by_arn["Shards"]] == [s["ShardId"] for s in shards]
    # A NextToken carries the stream: naming the stream again is an error.
    with pytest.raises(ClientError) as excinfo:
        kinesis.list_shards(StreamName=name, NextToken=page["NextToken"])
    assert error_of(excinfo)[0] == "InvalidArgumentException"


def test_on_demand_stream(kinesis):
    name = unique_name("ondemand")
    summary = create_active(kinesis, name, None, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    assert summary["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert summary["OpenShardCount"] == 4
    shards = list_all_shards(kinesis, name)
    assert len(shards) == 4
    assert_tiles_hash_space(shards)
    limits = kinesis.describe_limits()
    assert limits["OnDemandStreamCount"] == 1
    assert limits["OnDemandStreamCountLimit"] == 50


def test_update_stream_mode(kinesis):
    name = unique_name("mode")
    create_active(kinesis, name, 2)
    kinesis.update_stream_mode(StreamARN=stream_arn(name), StreamModeDetails={"StreamMode": "ON_DEMAND"})
    assert status_of(kinesis, name) == "UPDATING"
    wait_status(kinesis, name, "ACTIVE")
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert kinesis.describe_limits()["OnDemandStreamCount"] == 1
    kinesis.update_stream_mode(StreamARN=stream_arn(name), StreamModeDetails={"StreamMode": "PROVISIONED"})
    wait_status(kinesis, name, "ACTIVE")
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert kinesis.describe_limits()["OnDemandStreamCount"] == 0


def test_describe_limits_counts_open_shards(kinesis):
    before = kinesis.describe_limits()
    assert before["ShardLimit"] == 500
    assert before["OpenShardCount"] == 0
    create_active(kinesis, unique_name("lim"), 3)
    create_active(kinesis, unique_name("lim"), 2)
    after = kinesis.describe_limits()
    assert after["ShardLimit"] == 500
    assert after["OpenShardCount"] == 5
    assert after["OnDemandStreamCount"] == 0
    assert after["OnDemandStreamCountLimit"] == 50


def test_retention_increase_and_decrease(kinesis):
    name = unique_name("ret")
    create_active(kinesis, name, 1)
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    wait_status(kinesis, name, "ACTIVE")
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48

    with pytest.raises(ClientError) as excinfo:
        kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=30)
    assert error_of(excinfo) == (
        "InvalidArgumentException",
        f"Requested retention period (30 hours) for stream {name} can not be shorter than existing "
        "retention period (48 hours). Use DecreaseRetentionPeriod API.")

    with pytest.raises(ClientError) as excinfo:
        kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=72)
    assert error_of(excinfo) == (
        "InvalidArgumentException",
        f"Requested retention period (72 hours) for stream {name} can not be longer than existing "
        "retention period (48 hours). Use IncreaseRetentionPeriod API.")

    with pytest.raises(ClientError) as excinfo:
        kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=12)
    assert error_of(excinfo) == (
        "InvalidArgumentException",
        "Minimum allowed retention period is 24 hours. Requested retention period (12 hours) is too short.")

    with pytest.raises(ClientError) as excinfo:
        kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=8761)
    assert error_of(excinfo) == (
        "InvalidArgumentException",
        "Maximum allowed retention period is 8760 hours. Requested retention period (8761 hours) is too long.")

    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=8760)
    wait_status(kinesis, name, "ACTIVE")
    kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=24)
    wait_status(kinesis, name, "ACTIVE")
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"] == 24
    # by ARN as well
    kinesis.increase_stream_retention_period(StreamARN=stream_arn(name), RetentionPeriodHours=100)
    wait_status(kinesis, name, "ACTIVE")
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"] == 100


def test_stream_not_active_is_refused_while_updating(kinesis):
    name = unique_name("busy")
    create_active(kinesis, name, 1)
    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
    assert status_of(kinesis, name) == "UPDATING"
    with pytest.raises(ClientError) as excinfo:
        kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126))
    assert error_of(excinfo) == (
        "ResourceInUseException",
        f"Stream {name} under account {ACCOUNT_ID} not ACTIVE, instead in state UPDATING")
    wait_status(kinesis, name, "ACTIVE")
    assert len(list_all_shards(kinesis, name)) == 3


def test_create_while_creating_is_in_use_and_name_is_reusable_after_delete(kinesis):
    name = unique_name("creating")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    assert status_of(kinesis, name) == "CREATING"
    with pytest.raises(ClientError) as excinfo:
        kinesis.create_stream(StreamName=name, ShardCount=1)
    assert error_of(excinfo)[0] == "ResourceInUseException"
    wait_status(kinesis, name, "ACTIVE")
    kinesis.delete_stream(StreamName=name)
    wait_status(kinesis, name, None)
    # The name can be used again once the stream is gone.
    create_active(kinesis, name, 2)
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["OpenShardCount"] == 2

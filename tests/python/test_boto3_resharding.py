"""boto3: SplitShard, MergeShards, UpdateShardCount and the lineage ListShards reports."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from kinesis_util import (
    ACCOUNT_ID, HASH_KEY_MAX, assert_tiles_hash_space, create_active, error_of, hash_range, is_open,
    iterator, list_all_shards, read_to_end, read_until, stream_arn, unique_name, wait_status,
)

MID = 2**127


def by_id(shards: list[dict]) -> dict[str, dict]:
    return {s["ShardId"]: s for s in shards}


def put_n(kinesis, name: str, n: int, prefix: str, **kwargs) -> list[dict]:
    return [dict(kinesis.put_record(StreamName=name, PartitionKey=f"{prefix}-{i}", Data=f"{prefix}-{i}".encode(),
                                    **kwargs), Data=f"{prefix}-{i}".encode()) for i in range(n)]


def test_split_shard_lineage_and_reading_the_parent_to_its_end(kinesis):
    name = unique_name("split")
    create_active(kinesis, name, 1)
    before = put_n(kinesis, name, 10, "before")

    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(MID))
    wait_status(kinesis, name, "ACTIVE")

    shards = by_id(list_all_shards(kinesis, name))
    assert sorted(shards) == ["shardId-000000000000", "shardId-000000000001", "shardId-000000000002"]
    parent, low, high = shards["shardId-000000000000"], shards["shardId-000000000001"], shards["shardId-000000000002"]
    assert not is_open(parent)
    parent_end = int(parent["SequenceNumberRange"]["EndingSequenceNumber"])
    assert parent_end >= max(int(r["SequenceNumber"]) for r in before)
    assert hash_range(parent) == (0, HASH_KEY_MAX)
    for child in (low, high):
        assert child["ParentShardId"] == "shardId-000000000000"
        assert "AdjacentParentShardId" not in child
        assert is_open(child)
        assert int(child["SequenceNumberRange"]["StartingSequenceNumber"]) > parent_end
    assert hash_range(low) == (0, MID - 1)
    assert hash_range(high) == (MID, HASH_KEY_MAX)
    assert_tiles_hash_space([low, high])
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 2

    # The closed parent still serves its records, then ends with ChildShards and no iterator.
    records, last = read_to_end(kinesis, iterator(kinesis, name, "shardId-000000000000"))
    assert [(r["SequenceNumber"], r["Data"]) for r in records] == [(p["SequenceNumber"], p["Data"]) for p in before]
    assert "NextShardIterator" not in last
    assert sorted(last["ChildShards"], key=lambda c: c["ShardId"]) == [
        {"ShardId": "shardId-000000000001", "ParentShards": ["shardId-000000000000"],
         "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(MID - 1)}},
        {"ShardId": "shardId-000000000002", "ParentShards": ["shardId-000000000000"],
         "HashKeyRange": {"StartingHashKey": str(MID), "EndingHashKey": str(HASH_KEY_MAX)}},
    ]

    # New records go to the children, numbered above everything in the parent.
    after = [kinesis.put_record(StreamName=name, PartitionKey="k", ExplicitHashKey=str(h), Data=b"after")
             for h in (0, MID - 1, MID, HASH_KEY_MAX)]
    assert [a["ShardId"] for a in after] == ["shardId-000000000001"] * 2 + ["shardId-000000000002"] * 2
    assert min(int(a["SequenceNumber"]) for a in after) > parent_end
    for child_id in ("shardId-000000000001", "shardId-000000000002"):
        got, _ = read_until(kinesis, iterator(kinesis, name, child_id), 2)
        assert [r["SequenceNumber"] for r in got] == [a["SequenceNumber"] for a in after if a["ShardId"] == child_id]

    # DescribeStream shows the same lineage.
    described = by_id(kinesis.describe_stream(StreamName=name)["StreamDescription"]["Shards"])
    assert described["shardId-000000000001"]["ParentShardId"] == "shardId-000000000000"
    assert described["shardId-000000000000"]["SequenceNumberRange"] == parent["SequenceNumberRange"]


def test_merge_shards_lineage(kinesis):
    name = unique_name("merge")
    create_active(kinesis, name, 2)
    left = put_n(kinesis, name, 3, "left", ExplicitHashKey="0")
    right = put_n(kinesis, name, 3, "right", ExplicitHashKey=str(HASH_KEY_MAX))
    kinesis.merge_shards(StreamName=name, ShardToMerge="shardId-000000000000",
                         AdjacentShardToMerge="shardId-000000000001")
    wait_status(kinesis, name, "ACTIVE")

    shards = by_id(list_all_shards(kinesis, name))
    assert sorted(shards) == ["shardId-000000000000", "shardId-000000000001", "shardId-000000000002"]
    merged = shards["shardId-000000000002"]
    assert merged["ParentShardId"] == "shardId-000000000000"
    assert merged["AdjacentParentShardId"] == "shardId-000000000001"
    assert hash_range(merged) == (0, HASH_KEY_MAX)
    assert is_open(merged)
    for parent_id, written in (("shardId-000000000000", left), ("shardId-000000000001", right)):
        parent = shards[parent_id]
        assert not is_open(parent)
        assert int(merged["SequenceNumberRange"]["StartingSequenceNumber"]) > \
               int(parent["SequenceNumberRange"]["EndingSequenceNumber"])
        records, last = read_to_end(kinesis, iterator(kinesis, name, parent_id))
        assert [r["SequenceNumber"] for r in records] == [w["SequenceNumber"] for w in written]
        assert "NextShardIterator" not in last
        assert last["ChildShards"] == [{
            "ShardId": "shardId-000000000002",
            "ParentShards": ["shardId-000000000000", "shardId-000000000001"],
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(HASH_KEY_MAX)},
        }]
    assert kinesis.put_record(StreamName=name, PartitionKey="x", Data=b"x")["ShardId"] == "shardId-000000000002"


def test_update_shard_count_uniform_scaling(kinesis):
    name = unique_name("scale")
    create_active(kinesis, name, 2)
    before = put_n(kinesis, name, 8, "before")
    response = kinesis.update_shard_count(StreamName=name, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
    assert response["StreamName"] == name
    assert response["CurrentShardCount"] == 2
    assert response["TargetShardCount"] == 4
    assert response["StreamARN"] == stream_arn(name)
    wait_status(kinesis, name, "ACTIVE")

    shards = list_all_shards(kinesis, name)
    old = [s for s in shards if s["ShardId"] in ("shardId-000000000000", "shardId-000000000001")]
    new_open = [s for s in shards if is_open(s)]
    assert len(new_open) == 4
    assert_tiles_hash_space(new_open)
    quarter = 2**126
    for shard in new_open:
        start, end = hash_range(shard)
        assert abs((end - start + 1) - quarter) <= 4, f"{shard['ShardId']} is not a quarter of the space"
        assert shard["ParentShardId"] in {s["ShardId"] for s in shards if not is_open(s)}
    assert all(not is_open(s) for s in old), "every old shard is replaced by uniform scaling to 4"
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["OpenShardCount"] == 4

    # Records written before are still where they were; the parents end with ChildShards.
    for parent in old:
        records, last = read_to_end(kinesis, iterator(kinesis, name, parent["ShardId"]))
        assert [r["SequenceNumber"] for r in records] == \
               [b["SequenceNumber"] for b in before if b["ShardId"] == parent["ShardId"]]
        assert last["ChildShards"], "a closed shard's last GetRecords names its children"
        for child in last["ChildShards"]:
            assert parent["ShardId"] in child["ParentShards"]

    open_only = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert sorted(s["ShardId"] for s in open_only) == sorted(s["ShardId"] for s in new_open)
    # AT_TRIM_HORIZON: the shards open at the trim horizon (here: the stream's creation);
    # FROM_TRIM_HORIZON: every shard from the trim horizon on.
    at_horizon = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "AT_TRIM_HORIZON"})["Shards"]
    assert sorted(s["ShardId"] for s in at_horizon) == ["shardId-000000000000", "shardId-000000000001"]
    everything = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "FROM_TRIM_HORIZON"})["Shards"]
    assert sorted(s["ShardId"] for s in everything) == sorted(s["ShardId"] for s in shards)


def test_update_shard_count_limits(kinesis):
    name = unique_name("scalelim")
    create_active(kinesis, name, 2)
    with pytest.raises(ClientError) as excinfo:
        kinesis.update_shard_count(StreamName=name, TargetShardCount=5, ScalingType="UNIFORM_SCALING")
    assert error_of(excinfo) == (
        "LimitExceededException",
        "UpdateShardCount cannot scale up over double your current open shard count. "
        "Current open shard count: 2, Target shard count: 5")
    big = unique_name("scalelim")
    create_active(kinesis, big, 5)
    with pytest.raises(ClientError) as excinfo:
        kinesis.update_shard_count(StreamName=big, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    assert error_of(excinfo) == (
        "LimitExceededException",
        "UpdateShardCount cannot scale down below half your current open shard count. "
        "Current open shard count: 5, Target shard count: 2")
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["OpenShardCount"] == 2


def test_split_and_merge_errors(kinesis):
    name = unique_name("reserr")
    create_active(kinesis, name, 3)
    with pytest.raises(ClientError) as excinfo:
        kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000009", NewStartingHashKey=str(MID))
    assert error_of(excinfo) == (
        "ResourceNotFoundException",
        f"Could not find shard shardId-000000000009 in stream {name} under account {ACCOUNT_ID}.")

    first_start, first_end = hash_range(list_all_shards(kinesis, name)[0])
    with pytest.raises(ClientError) as excinfo:
        kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000",
                            NewStartingHashKey=str(first_end + 10))
    code, message = error_of(excinfo)
    assert code == "InvalidArgumentException"
    assert message == (
        f"NewStartingHashKey {first_end + 10} used in SplitShard() on shard shardId-000000000000 in stream {name} "
        f"under account {ACCOUNT_ID} is not both greater than one plus the shard's StartingHashKey {first_start} "
        f"and less than the shard's EndingHashKey {first_end}.")

    with pytest.raises(ClientError) as excinfo:
        kinesis.merge_shards(StreamName=name, ShardToMerge="shardId-000000000000",
                             AdjacentShardToMerge="shardId-000000000002")
    assert error_of(excinfo) == (
        "InvalidArgumentException",
        f"Shards shardId-000000000000 and shardId-000000000002 in stream {name} under account {ACCOUNT_ID} "
        "are not an adjacent pair of shards eligible for merging")
    # Nothing changed.
    shards = list_all_shards(kinesis, name)
    assert len(shards) == 3 and all(is_open(s) for s in shards)
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"


def test_shard_limit(endpoint, kinesis):
    """The account's open-shard limit (500 by default, as on AWS) covers creates and splits."""
    name = unique_name("many")
    create_active(kinesis, name, 499)
    with pytest.raises(ClientError) as excinfo:
        kinesis.create_stream(StreamName=unique_name("toomany"), ShardCount=2)
    code, message = error_of(excinfo)
    assert code == "LimitExceededException"
    assert "500" in message, message
    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey="1000")
    wait_status(kinesis, name, "ACTIVE")
    assert kinesis.describe_limits()["OpenShardCount"] == 500
    second_start, _ = hash_range(by_id(list_all_shards(kinesis, name))["shardId-000000000001"])
    with pytest.raises(ClientError) as excinfo:
        kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000001",
                            NewStartingHashKey=str(second_start + 1000))
    assert error_of(excinfo)[0] == "LimitExceededException"

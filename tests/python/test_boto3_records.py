"""boto3: PutRecord, PutRecords, GetShardIterator (all five types) and GetRecords."""

from __future__ import annotations

import datetime

import pytest
from botocore.exceptions import ClientError

from harness import wait_until
from kinesis_util import (
    ACCOUNT_ID, HASH_KEY_MAX, create_active, error_of, iterator, list_all_shards, partition_hash,
    read_available, read_until, shard_for_hash, stream_arn, unique_name, wait_status,
)

CLOCK_SLACK = datetime.timedelta(seconds=2)


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def test_put_record_get_records_round_trip(kinesis):
    name = unique_name("rt")
    create_active(kinesis, name, 2)
    shards = list_all_shards(kinesis, name)
    sent = []  # (shard id, sequence number, partition key, data)
    before = now_utc()
    for i in range(40):
        key = f"key-{i}"
        data = f"record {i} ".encode() + bytes(range(256))  # every byte value survives
        response = kinesis.put_record(StreamName=name, PartitionKey=key, Data=data)
        assert response["ShardId"] == shard_for_hash(shards, partition_hash(key)), key
        assert int(response["SequenceNumber"]) > 0
        sent.append((response["ShardId"], response["SequenceNumber"], key, data))
    after = now_utc()
    assert {s[0] for s in sent} == {"shardId-000000000000", "shardId-000000000001"}, "keys should hit both shards"

    for shard in shards:
        expected = [s for s in sent if s[0] == shard["ShardId"]]
        seqs = [int(s[1]) for s in expected]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "sequence numbers strictly increase"
        assert seqs[0] >= int(shard["SequenceNumberRange"]["StartingSequenceNumber"])
        records, last = read_until(kinesis, iterator(kinesis, name, shard["ShardId"]), len(expected))
        assert [(r["SequenceNumber"], r["PartitionKey"], r["Data"]) for r in records] == \
               [(s[1], s[2], s[3]) for s in expected]
        arrivals = [r["ApproximateArrivalTimestamp"] for r in records]
        assert arrivals == sorted(arrivals), "arrival timestamps never go back within a shard"
        for arrival in arrivals:
            assert before - CLOCK_SLACK <= arrival <= after + CLOCK_SLACK
        assert "NextShardIterator" in last
        assert last["MillisBehindLatest"] == 0


def test_put_record_by_arn_and_explicit_hash_key(kinesis):
    name = unique_name("ehk")
    create_active(kinesis, name, 4)
    shards = list_all_shards(kinesis, name)
    for shard in shards:
        start, end = int(shard["HashKeyRange"]["StartingHashKey"]), int(shard["HashKeyRange"]["EndingHashKey"])
        for hash_key in (start, end):
            response = kinesis.put_record(StreamARN=stream_arn(name), PartitionKey="same-key",
                                          ExplicitHashKey=str(hash_key), Data=b"x")
            assert response["ShardId"] == shard["ShardId"]
    response = kinesis.put_record(StreamName=name, PartitionKey="k", ExplicitHashKey=str(HASH_KEY_MAX), Data=b"y")
    assert response["ShardId"] == shards[-1]["ShardId"]
    with pytest.raises(ClientError) as excinfo:
        kinesis.put_record(StreamName=name, PartitionKey="k", ExplicitHashKey=str(2**128), Data=b"z")
    assert error_of(excinfo)[0] == "InvalidArgumentException"


def test_sequence_number_for_ordering(kinesis):
    name = unique_name("order")
    create_active(kinesis, name, 1)
    first = kinesis.put_record(StreamName=name, PartitionKey="a", Data=b"1")["SequenceNumber"]
    second = kinesis.put_record(StreamName=name, PartitionKey="b", Data=b"2",
                                SequenceNumberForOrdering=first)["SequenceNumber"]
    assert int(second) > int(first)


def test_put_records_per_record_results(kinesis):
    name = unique_name("batch")
    create_active(kinesis, name, 3)
    shards = list_all_shards(kinesis, name)
    entries = [{"PartitionKey": f"pk-{i % 17}", "Data": f"batch-{i}".encode()} for i in range(200)]
    response = kinesis.put_records(StreamName=name, Records=entries)
    assert response["FailedRecordCount"] == 0
    assert len(response["Records"]) == len(entries)
    for entry, result in zip(entries, response["Records"]):
        assert "ErrorCode" not in result
        assert result["ShardId"] == shard_for_hash(shards, partition_hash(entry["PartitionKey"]))
    for shard in shards:
        expected = [(r["SequenceNumber"], e["PartitionKey"], e["Data"])
                    for e, r in zip(entries, response["Records"]) if r["ShardId"] == shard["ShardId"]]
        seqs = [int(s[0]) for s in expected]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "a batch keeps its order within a shard"
        records, _ = read_until(kinesis, iterator(kinesis, name, shard["ShardId"]), len(expected))
        assert [(r["SequenceNumber"], r["PartitionKey"], r["Data"]) for r in records] == expected
    # By ARN, with an explicit hash key.
    response = kinesis.put_records(StreamARN=stream_arn(name), Records=[
        {"PartitionKey": "p", "ExplicitHashKey": "0", "Data": b"first shard"}])
    assert response["Records"][0]["ShardId"] == "shardId-000000000000"


def test_put_records_batch_limit(kinesis):
    name = unique_name("limit")
    create_active(kinesis, name, 1)
    entries = [{"PartitionKey": "k", "Data": b"x"} for _ in range(501)]
    with pytest.raises(ClientError) as excinfo:
        kinesis.put_records(StreamName=name, Records=entries)
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert message.startswith("1 validation error detected: Value '")
    assert message.endswith("at 'records' failed to satisfy constraint: "
                            "Member must have length less than or equal to 500"), message


def test_shard_iterator_types(kinesis):
    name = unique_name("iter")
    create_active(kinesis, name, 1)
    shard_id = "shardId-000000000000"
    latest_before = iterator(kinesis, name, shard_id, "LATEST")
    empty = kinesis.get_records(ShardIterator=iterator(kinesis, name, shard_id))
    assert empty["Records"] == []
    assert empty["NextShardIterator"]
    assert empty["MillisBehindLatest"] == 0

    puts = [kinesis.put_record(StreamName=name, PartitionKey=f"k{i}", Data=f"v{i}".encode()) for i in range(6)]
    seqs = [p["SequenceNumber"] for p in puts]
    everything, _ = read_until(kinesis, iterator(kinesis, name, shard_id, "TRIM_HORIZON"), 6)
    assert [r["SequenceNumber"] for r in everything] == seqs
    assert [r["Data"] for r in everything] == [f"v{i}".encode() for i in range(6)]

    at, _ = read_until(kinesis, iterator(kinesis, name, shard_id, "AT_SEQUENCE_NUMBER",
                                         StartingSequenceNumber=seqs[2]), 4)
    assert [r["SequenceNumber"] for r in at] == seqs[2:]
    after, _ = read_until(kinesis, iterator(kinesis, name, shard_id, "AFTER_SEQUENCE_NUMBER",
                                            StartingSequenceNumber=seqs[2]), 3)
    assert [r["SequenceNumber"] for r in after] == seqs[3:]

    # LATEST taken before the puts sees all of them; taken now it sees only later ones.
    from_latest_before, _ = read_until(kinesis, latest_before, 6)
    assert [r["SequenceNumber"] for r in from_latest_before] == seqs
    latest_now = iterator(kinesis, name, shard_id, "LATEST")
    nothing = kinesis.get_records(ShardIterator=latest_now)
    assert nothing["Records"] == []
    newer = kinesis.put_record(StreamName=name, PartitionKey="late", Data=b"late")
    late, _ = read_until(kinesis, nothing["NextShardIterator"], 1)
    assert [r["SequenceNumber"] for r in late] == [newer["SequenceNumber"]]

    arrivals = [r["ApproximateArrivalTimestamp"] for r in everything]
    from_start, _ = read_until(kinesis, iterator(kinesis, name, shard_id, "AT_TIMESTAMP",
                                                 Timestamp=arrivals[0] - datetime.timedelta(hours=1)), 7)
    assert [r["SequenceNumber"] for r in from_start] == seqs + [newer["SequenceNumber"]]
    middle = arrivals[3]
    from_middle, _ = read_until(kinesis, iterator(kinesis, name, shard_id, "AT_TIMESTAMP", Timestamp=middle),
                                len([a for a in arrivals if a >= middle]) + 1)
    assert [r["SequenceNumber"] for r in from_middle] == \
           [r["SequenceNumber"] for r in everything if r["ApproximateArrivalTimestamp"] >= middle] + \
           [newer["SequenceNumber"]]
    # A timestamp in the future is refused (AWS's own wording).
    with pytest.raises(ClientError) as excinfo:
        iterator(kinesis, name, shard_id, "AT_TIMESTAMP", Timestamp=now_utc() + datetime.timedelta(hours=1))
    code, message = error_of(excinfo)
    assert code == "InvalidArgumentException"
    assert message.startswith("The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. "
                              "timestampInMillis: "), message
    assert ", currentTimestampInMillis: " in message


def test_get_records_limit_and_continuation(kinesis):
    name = unique_name("lim")
    create_active(kinesis, name, 1)
    entries = [{"PartitionKey": "k", "Data": f"{i}".encode()} for i in range(10)]
    seqs = [r["SequenceNumber"] for r in kinesis.put_records(StreamName=name, Records=entries)["Records"]]
    page = kinesis.get_records(ShardIterator=iterator(kinesis, name, "shardId-000000000000"), Limit=4)
    assert [r["SequenceNumber"] for r in page["Records"]] == seqs[:4]
    assert page["MillisBehindLatest"] >= 0
    rest, _ = read_until(kinesis, page["NextShardIterator"], 6)
    assert [r["SequenceNumber"] for r in rest] == seqs[4:]
    # An iterator can be used again: reading is not consuming.
    again = kinesis.get_records(ShardIterator=page["NextShardIterator"], Limit=2)
    assert [r["SequenceNumber"] for r in again["Records"]] == seqs[4:6]


def test_tip_reads_return_nothing_and_wait_for_new_records(kinesis):
    name = unique_name("tip")
    create_active(kinesis, name, 1)
    shard_iterator = iterator(kinesis, name, "shardId-000000000000")
    assert read_available(kinesis, shard_iterator) == []
    put = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"hello")
    records, _ = read_until(kinesis, shard_iterator, 1)
    assert [(r["SequenceNumber"], r["Data"]) for r in records] == [(put["SequenceNumber"], b"hello")]


def test_shard_iterator_errors(kinesis):
    name = unique_name("iterr")
    create_active(kinesis, name, 2)
    seq_on_shard_1 = kinesis.put_record(StreamName=name, PartitionKey="k", ExplicitHashKey=str(HASH_KEY_MAX),
                                        Data=b"x")["SequenceNumber"]

    with pytest.raises(ClientError) as excinfo:
        kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000009", ShardIteratorType="LATEST")
    assert error_of(excinfo) == (
        "ResourceNotFoundException",
        f"Shard shardId-000000000009 in stream {name} under account {ACCOUNT_ID} does not exist")

    with pytest.raises(ClientError) as excinfo:
        kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                   ShardIteratorType="AT_SEQUENCE_NUMBER")
    assert error_of(excinfo) == (
        "InvalidArgumentException",
        "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or "
        "(2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. "
        "Request specified AT_SEQUENCE_NUMBER and no StartingSequenceNumber.")

    with pytest.raises(ClientError) as excinfo:
        kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                   ShardIteratorType="TRIM_HORIZON", StartingSequenceNumber=seq_on_shard_1)
    assert error_of(excinfo) == (
        "InvalidArgumentException",
        "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or "
        "(2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. "
        "Request specified TRIM_HORIZON and also a StartingSequenceNumber.")

    with pytest.raises(ClientError) as excinfo:
        kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                   ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=seq_on_shard_1)
    assert error_of(excinfo) == (
        "InvalidArgumentException",
        "Invalid StartingSequenceNumber. It encodes shardId-000000000001, "
        "while it was used in a call to a shard with shardId-000000000000")

    with pytest.raises(ClientError) as excinfo:
        kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                   ShardIteratorType="AT_TIMESTAMP")
    assert error_of(excinfo)[0] == "InvalidArgumentException"

    with pytest.raises(ClientError) as excinfo:
        kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000", ShardIteratorType="SOMEWHERE")
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    prefix = ("1 validation error detected: Value 'SOMEWHERE' at 'shardIteratorType' failed to satisfy "
              "constraint: Member must satisfy enum value set: [")
    assert message.startswith(prefix) and message.endswith("]"), message
    # AWS lists the set in no documented order.
    assert set(message[len(prefix):-1].split(", ")) == {
        "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"}


def test_invalid_and_tampered_shard_iterators(kinesis):
    name = unique_name("badit")
    create_active(kinesis, name, 1)
    with pytest.raises(ClientError) as excinfo:
        kinesis.get_records(ShardIterator="AAAAAAAAAAGZ0xJL9Ye3Xp0")
    assert error_of(excinfo) == ("InvalidArgumentException", "Invalid ShardIterator.")
    real = iterator(kinesis, name, "shardId-000000000000")
    flipped = real[:-6] + ("A" if real[-6] != "A" else "B") + real[-5:]
    with pytest.raises(ClientError) as excinfo:
        kinesis.get_records(ShardIterator=flipped)
    assert error_of(excinfo) == ("InvalidArgumentException", "Invalid ShardIterator.")


def test_iterator_of_deleted_stream(kinesis):
    name = unique_name("gone")
    create_active(kinesis, name, 1)
    shard_iterator = iterator(kinesis, name, "shardId-000000000000")
    kinesis.delete_stream(StreamName=name)
    wait_status(kinesis, name, None)
    with pytest.raises(ClientError) as excinfo:
        kinesis.get_records(ShardIterator=shard_iterator)
    assert error_of(excinfo)[0] == "ResourceNotFoundException"


def test_record_size_limits(kinesis):
    name = unique_name("big")
    create_active(kinesis, name, 1)
    key = "k" * 16
    data = bytes(i % 251 for i in range(1024 * 1024 - len(key)))  # data + key = exactly 1 MiB
    put = kinesis.put_record(StreamName=name, PartitionKey=key, Data=data)
    records, _ = read_until(kinesis, iterator(kinesis, name, "shardId-000000000000"), 1)
    assert records[0]["SequenceNumber"] == put["SequenceNumber"]
    assert records[0]["Data"] == data

    with pytest.raises(ClientError) as excinfo:
        kinesis.put_record(StreamName=name, PartitionKey="k" * 257, Data=b"x")
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert message == ("1 validation error detected: Value '" + "k" * 257 + "' at 'partitionKey' failed to "
                       "satisfy constraint: Member must have length less than or equal to 256")


def test_accounts_are_separated_by_access_key_id(endpoint, kinesis):
    """A 12-digit access key id selects that account: its streams are invisible to others."""
    import boto3
    from botocore.config import Config

    other = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="111122223333", aws_secret_access_key="x",
                         config=Config(retries={"total_max_attempts": 1}))
    name = unique_name("acct")
    other.create_stream(StreamName=name, ShardCount=1)
    wait_until(lambda: other.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
               ["StreamStatus"] == "ACTIVE", 10, "stream ACTIVE in account 111122223333")
    arn = other.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    assert arn == f"arn:aws:kinesis:us-east-1:111122223333:stream/{name}"
    assert name not in kinesis.list_streams()["StreamNames"]
    with pytest.raises(ClientError) as excinfo:
        kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"x")
    assert error_of(excinfo) == (
        "ResourceNotFoundException", f"Stream {name} under account {ACCOUNT_ID} not found.")

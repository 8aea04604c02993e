"""Time-driven behaviour without sleeping: shard iterators expire after 5 minutes and
retention really removes records. The server runs with --enable-clock-advance, and the
tests move its clock with POST /millrace-api/advance-clock?ms=N (millrace's test hook).
"""

from __future__ import annotations

import urllib.request

import pytest
from botocore.exceptions import ClientError

from harness import wait_until
from kinesis_util import create_active, error_of, iterator, read_available, read_until, unique_name, wait_status

SERVER_ARGS = ["--enable-clock-advance"]
HOUR_MS = 3600 * 1000


def advance(server, ms: int) -> None:
    request = urllib.request.Request(f"{server.endpoint}/millrace-api/advance-clock?ms={ms}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_shard_iterator_expires_after_five_minutes(server, kinesis):
    name = unique_name("expire")
    create_active(kinesis, name, 1)
    put = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"x")
    old = iterator(kinesis, name, "shardId-000000000000")
    advance(server, 299_000)
    fresh = kinesis.get_records(ShardIterator=old)  # 4 min 59 s old: still valid
    assert [r["SequenceNumber"] for r in fresh["Records"]] == [put["SequenceNumber"]]
    advance(server, 2_000)
    with pytest.raises(ClientError) as excinfo:
        kinesis.get_records(ShardIterator=old)
    code, message = error_of(excinfo)
    assert code == "ExpiredIteratorException"
    assert message.startswith("Iterator expired. The iterator was created at time "), message
    assert message.endswith("which is further in the future than the tolerated delay of 300000 milliseconds."), message
    # The iterator handed out 2 s ago is still good.
    assert kinesis.get_records(ShardIterator=fresh["NextShardIterator"])["Records"] == []


def test_retention_removes_old_records(server, kinesis):
    name = unique_name("retain")
    create_active(kinesis, name, 1)
    old = [kinesis.put_record(StreamName=name, PartitionKey="k", Data=f"old {i}".encode()) for i in range(3)]
    records, _ = read_until(kinesis, iterator(kinesis, name, "shardId-000000000000"), 3)
    assert [r["SequenceNumber"] for r in records] == [p["SequenceNumber"] for p in old]
    advance(server, 25 * HOUR_MS)
    new = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"new")

    def visible():
        got = read_available(kinesis, iterator(kinesis, name, "shardId-000000000000"))
        return [r["SequenceNumber"] for r in got]

    wait_until(lambda: visible() == [new["SequenceNumber"]], 10,
               "records older than the 24 h retention to be gone from TRIM_HORIZON", interval_s=0.5)


def test_longer_retention_keeps_records(server, kinesis):
    name = unique_name("keep")
    create_active(kinesis, name, 1)
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    wait_status(kinesis, name, "ACTIVE")
    put = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"kept")
    advance(server, 25 * HOUR_MS)
    records = read_available(kinesis, iterator(kinesis, name, "shardId-000000000000"))
    assert [(r["SequenceNumber"], r["Data"]) for r in records] == [(put["SequenceNumber"], b"kept")]

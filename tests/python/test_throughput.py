"""Per-shard limits as AWS enforces them by default: 1 MiB/s or 1,000 records/s written,
5 GetRecords calls/s read. Exceeding them is ProvisionedThroughputExceededException (per
record in PutRecords), never an accepted write that is lost."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from kinesis_util import ACCOUNT_ID, client, create_active, error_of, iterator, read_until, unique_name


def test_write_limit_per_shard(kinesis):
    name = unique_name("wlimit")
    create_active(kinesis, name, 1)
    payload = b"x" * 2048
    accepted = []
    failures = []
    for batch_idx in range(6):  # 6 MiB as fast as one client goes: well over 1 MiB/s
        entries = [{"PartitionKey": f"{batch_idx}-{i}", "Data": payload} for i in range(500)]
        response = kinesis.put_records(StreamName=name, Records=entries)
        for result in response["Records"]:
            if "ErrorCode" in result:
                failures.append(result)
            else:
                accepted.append(result["SequenceNumber"])
        assert response["FailedRecordCount"] == sum(1 for r in response["Records"] if "ErrorCode" in r)
    assert failures, "6 MiB in a burst to one shard should exceed its 1 MiB/s write limit"
    assert accepted, "the first MiB fits the limit"
    for failure in failures:
        assert failure["ErrorCode"] == "ProvisionedThroughputExceededException"
        assert failure["ErrorMessage"] == (
            f"Rate exceeded for shard shardId-000000000000 in stream {name} under account {ACCOUNT_ID}.")
        assert "SequenceNumber" not in failure
    # Every accepted record is there, and nothing else.
    records, _ = read_until(kinesis, iterator(kinesis, name, "shardId-000000000000"), len(accepted), timeout_s=30)
    assert [r["SequenceNumber"] for r in records] == accepted


def test_put_record_over_the_limit_is_refused(kinesis):
    name = unique_name("wlimit1")
    create_active(kinesis, name, 1)
    payload = b"y" * (512 * 1024)
    with pytest.raises(ClientError) as excinfo:
        for _ in range(8):  # 4 MiB in a burst
            kinesis.put_record(StreamName=name, PartitionKey="k", Data=payload)
    assert error_of(excinfo) == (
        "ProvisionedThroughputExceededException",
        f"Rate exceeded for shard shardId-000000000000 in stream {name} under account {ACCOUNT_ID}.")


def test_get_records_call_rate_limit(endpoint, kinesis):
    name = unique_name("rlimit")
    create_active(kinesis, name, 1)
    shard_iterator = iterator(kinesis, name, "shardId-000000000000")
    unpaced = client(endpoint, paced=False)
    with pytest.raises(ClientError) as excinfo:
        for _ in range(20):  # far more than 5 calls in one second
            shard_iterator = unpaced.get_records(ShardIterator=shard_iterator)["NextShardIterator"]
    assert error_of(excinfo)[0] == "ProvisionedThroughputExceededException"

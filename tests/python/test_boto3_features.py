"""boto3: tags, resource policies, enhanced monitoring, stream consumers, encryption."""

from __future__ import annotations

import json
import re

import pytest
from botocore.exceptions import ClientError

from harness import wait_until
from kinesis_util import (
    ACCOUNT_ID, create_active, error_of, iterator, read_until, status_of, stream_arn, unique_name, wait_status,
)

SERVER_CONFIG = """
[streams]
update_delay_ms = 1000
consumer_delay_ms = 1000
"""

ALL_METRICS = {"IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords",
               "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded",
               "IteratorAgeMilliseconds"}


def tags_of(kinesis, **kwargs) -> dict[str, str]:
    response = kinesis.list_tags_for_stream(**kwargs)
    assert response["HasMoreTags"] is False
    return {t["Key"]: t["Value"] for t in response["Tags"]}


def test_tags_by_name_and_by_arn(kinesis):
    name = unique_name("tags")
    create_active(kinesis, name, 1, Tags={"created": "with-stream"})
    assert tags_of(kinesis, StreamName=name) == {"created": "with-stream"}
    kinesis.add_tags_to_stream(StreamName=name, Tags={"team": "data", "env": "test", "empty": ""})
    assert tags_of(kinesis, StreamName=name) == {"created": "with-stream", "team": "data", "env": "test", "empty": ""}
    kinesis.add_tags_to_stream(StreamARN=stream_arn(name), Tags={"team": "platform"})
    assert tags_of(kinesis, StreamARN=stream_arn(name)) == {
        "created": "with-stream", "team": "platform", "env": "test", "empty": ""}

    page = kinesis.list_tags_for_stream(StreamName=name, Limit=2)
    assert len(page["Tags"]) == 2
    assert page["HasMoreTags"] is True
    rest = kinesis.list_tags_for_stream(StreamName=name, ExclusiveStartTagKey=page["Tags"][-1]["Key"])
    assert {t["Key"] for t in page["Tags"]} | {t["Key"] for t in rest["Tags"]} == {"created", "team", "env", "empty"}
    assert not {t["Key"] for t in page["Tags"]} & {t["Key"] for t in rest["Tags"]}

    kinesis.remove_tags_from_stream(StreamName=name, TagKeys=["env", "not-there"])
    kinesis.remove_tags_from_stream(StreamARN=stream_arn(name), TagKeys=["empty"])
    assert tags_of(kinesis, StreamName=name) == {"created": "with-stream", "team": "platform"}


def test_tag_resource_api(kinesis):
    name = unique_name("tagres")
    create_active(kinesis, name, 1)
    arn = stream_arn(name)
    kinesis.tag_resource(ResourceARN=arn, Tags={"a": "1", "b": "2"})
    listed = kinesis.list_tags_for_resource(ResourceARN=arn)
    assert {t["Key"]: t["Value"] for t in listed["Tags"]} == {"a": "1", "b": "2"}
    kinesis.untag_resource(ResourceARN=arn, TagKeys=["a"])
    assert tags_of(kinesis, StreamName=name) == {"b": "2"}


def test_tag_limits_and_characters(kinesis):
    name = unique_name("taglim")
    create_active(kinesis, name, 1)
    kinesis.add_tags_to_stream(StreamName=name, Tags={f"k{i}": "v" for i in range(50)})
    with pytest.raises(ClientError) as excinfo:
        kinesis.add_tags_to_stream(StreamName=name, Tags={"one-too-many": "v"})
    assert error_of(excinfo)[0] == "InvalidArgumentException"
    with pytest.raises(ClientError) as excinfo:
        kinesis.add_tags_to_stream(StreamName=name, Tags={"k0": "bad\u0001value"})
    assert error_of(excinfo)[0] == "InvalidArgumentException"
    assert tags_of(kinesis, StreamName=name) == {f"k{i}": "v" for i in range(50)}


def test_resource_policy(kinesis):
    name = unique_name("policy")
    create_active(kinesis, name, 1)
    arn = stream_arn(name)
    assert kinesis.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "read",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
            "Action": ["kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:DescribeStreamSummary"],
            "Resource": arn,
        }],
    }
    kinesis.put_resource_policy(ResourceARN=arn, Policy=json.dumps(policy))
    assert json.loads(kinesis.get_resource_policy(ResourceARN=arn)["Policy"]) == policy
    kinesis.delete_resource_policy(ResourceARN=arn)
    assert kinesis.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"
    missing = stream_arn(unique_name("nopolicy"))
    with pytest.raises(ClientError) as excinfo:
        kinesis.get_resource_policy(ResourceARN=missing)
    assert error_of(excinfo)[0] == "ResourceNotFoundException"


def test_enhanced_monitoring(kinesis):
    name = unique_name("mon")
    create_active(kinesis, name, 1)
    response = kinesis.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["IncomingBytes", "OutgoingRecords"])
    assert response["StreamName"] == name
    assert response["StreamARN"] == stream_arn(name)
    assert response["CurrentShardLevelMetrics"] == []
    assert set(response["DesiredShardLevelMetrics"]) == {"IncomingBytes", "OutgoingRecords"}
    wait_status(kinesis, name, "ACTIVE")
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert len(summary["EnhancedMonitoring"]) == 1
    assert set(summary["EnhancedMonitoring"][0]["ShardLevelMetrics"]) == {"IncomingBytes", "OutgoingRecords"}

    response = kinesis.enable_enhanced_monitoring(StreamARN=stream_arn(name), ShardLevelMetrics=["ALL"])
    assert set(response["CurrentShardLevelMetrics"]) == {"IncomingBytes", "OutgoingRecords"}
    assert set(response["DesiredShardLevelMetrics"]) == ALL_METRICS
    wait_status(kinesis, name, "ACTIVE")

    response = kinesis.disable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["IncomingBytes"])
    assert set(response["CurrentShardLevelMetrics"]) == ALL_METRICS
    assert set(response["DesiredShardLevelMetrics"]) == ALL_METRICS - {"IncomingBytes"}
    wait_status(kinesis, name, "ACTIVE")
    response = kinesis.disable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["ALL"])
    assert response["DesiredShardLevelMetrics"] == []
    wait_status(kinesis, name, "ACTIVE")
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]


def consumer_status(kinesis, consumer_arn: str) -> str | None:
    try:
        return kinesis.describe_stream_consumer(ConsumerARN=consumer_arn)["ConsumerDescription"]["ConsumerStatus"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def test_stream_consumers(kinesis):
    name = unique_name("cons")
    create_active(kinesis, name, 2)
    arn = stream_arn(name)
    consumer = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="reader-1")["Consumer"]
    assert consumer["ConsumerName"] == "reader-1"
    assert consumer["ConsumerStatus"] == "CREATING"
    assert re.fullmatch(re.escape(f"{arn}/consumer/reader-1:") + r"\d+", consumer["ConsumerARN"]), consumer["ConsumerARN"]
    wait_until(lambda: consumer_status(kinesis, consumer["ConsumerARN"]) == "ACTIVE", 10, "consumer ACTIVE")

    described = kinesis.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
    assert described["ConsumerName"] == "reader-1"
    assert described["ConsumerARN"] == consumer["ConsumerARN"]
    assert described["StreamARN"] == arn
    assert described["ConsumerCreationTimestamp"] == consumer["ConsumerCreationTimestamp"]
    by_name = kinesis.describe_stream_consumer(StreamARN=arn, ConsumerName="reader-1")["ConsumerDescription"]
    assert by_name == described

    second = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="reader-2")["Consumer"]
    listed = kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]
    assert sorted(c["ConsumerName"] for c in listed) == ["reader-1", "reader-2"]
    assert {c["ConsumerARN"] for c in listed} == {consumer["ConsumerARN"], second["ConsumerARN"]}
    wait_until(lambda: consumer_status(kinesis, second["ConsumerARN"]) == "ACTIVE", 10, "second consumer ACTIVE")
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["ConsumerCount"] == 2

    with pytest.raises(ClientError) as excinfo:
        kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="reader-1")
    assert error_of(excinfo)[0] == "ResourceInUseException"

    kinesis.deregister_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
    assert consumer_status(kinesis, consumer["ConsumerARN"]) == "DELETING"
    wait_until(lambda: consumer_status(kinesis, consumer["ConsumerARN"]) is None, 10, "consumer gone")
    kinesis.deregister_stream_consumer(StreamARN=arn, ConsumerName="reader-2")
    wait_until(lambda: consumer_status(kinesis, second["ConsumerARN"]) is None, 10, "second consumer gone")
    assert kinesis.list_stream_consumers(StreamARN=arn)["Consumers"] == []
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["ConsumerCount"] == 0

    with pytest.raises(ClientError) as excinfo:
        kinesis.list_stream_consumers(StreamARN=stream_arn(unique_name("nostream")))
    assert error_of(excinfo)[0] == "ResourceNotFoundException"


def test_delete_stream_with_consumers_needs_enforce_consumer_deletion(kinesis):
    name = unique_name("delcons")
    create_active(kinesis, name, 1)
    consumer = kinesis.register_stream_consumer(StreamARN=stream_arn(name), ConsumerName="c")["Consumer"]
    wait_until(lambda: consumer_status(kinesis, consumer["ConsumerARN"]) == "ACTIVE", 10, "consumer ACTIVE")
    with pytest.raises(ClientError) as excinfo:
        kinesis.delete_stream(StreamName=name)
    assert error_of(excinfo)[0] == "ResourceInUseException"
    assert status_of(kinesis, name) == "ACTIVE"
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    wait_status(kinesis, name, None)
    assert consumer_status(kinesis, consumer["ConsumerARN"]) is None


def test_stream_encryption(kinesis):
    name = unique_name("kms")
    create_active(kinesis, name, 1)
    plain = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"plain")
    assert plain.get("EncryptionType", "NONE") == "NONE"

    kinesis.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")
    assert status_of(kinesis, name) == "UPDATING"
    wait_status(kinesis, name, "ACTIVE")
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["EncryptionType"] == "KMS"
    assert summary["KeyId"] == "alias/aws/kinesis"
    description = kinesis.describe_stream(StreamName=name)["StreamDescription"]
    assert description["EncryptionType"] == "KMS"
    assert description["KeyId"] == "alias/aws/kinesis"

    secret = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"secret")
    assert secret["EncryptionType"] == "KMS"
    batch = kinesis.put_records(StreamName=name, Records=[{"PartitionKey": "k", "Data": b"batch"}])
    assert batch["EncryptionType"] == "KMS"
    records, _ = read_until(kinesis, iterator(kinesis, name, "shardId-000000000000"), 3)
    assert [r["Data"] for r in records] == [b"plain", b"secret", b"batch"]
    assert records[0].get("EncryptionType", "NONE") == "NONE"
    assert records[1]["EncryptionType"] == "KMS"
    assert records[2]["EncryptionType"] == "KMS"

    kinesis.stop_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")
    wait_status(kinesis, name, "ACTIVE")
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["EncryptionType"] == "NONE"
    after = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"plain again")
    assert after.get("EncryptionType", "NONE") == "NONE"


def test_account_scoped_errors_name_the_account(kinesis):
    arn = stream_arn(unique_name("nope"))
    with pytest.raises(ClientError) as excinfo:
        kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="c")
    code, message = error_of(excinfo)
    assert code == "ResourceNotFoundException"
    assert ACCOUNT_ID in message

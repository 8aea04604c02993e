"""Kinesis channels (the 2026 additions) with boto3: the control plane, delivery into the
test suite's S3 server (s3s-fs) as objects, and into Apache Iceberg tables that an
independent reader (pyiceberg, over the same S3 server) opens and reads back.

Data freshness (300 s at least, as on AWS) passes by moving the server's clock
(--enable-clock-advance), never by sleeping: a helper advances the clock while it waits
for the objects, so records read after one advance are flushed by a later one.
"""

from __future__ import annotations

import gzip
import json
import re
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

from firehose_util import S3_ACCESS_KEY, S3_SECRET_KEY, S3Server
from harness import ServerProcess, wait_until
from kinesis_util import ACCOUNT_ID, REGION, client, error_of, unique_name, wait_status

ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/channel"
CHANNEL_ARN = re.compile(rf"^arn:aws:kinesis:{REGION}:{ACCOUNT_ID}:channel/\S+$")
FRESHNESS_MS = 300_000
WAIT_S = 30.0


class Env:
    def __init__(self, base, s3: S3Server):
        self.base, self.s3 = base, s3
        self.server: ServerProcess | None = None

    def config(self) -> str:
        return f"""
[firehose]
s3_endpoint = "{self.s3.endpoint}"
s3_region = "us-east-1"
s3_access_key_id = "{S3_ACCESS_KEY}"
s3_secret_access_key = "{S3_SECRET_KEY}"
source_poll_interval_ms = 100
"""

    def advance(self, ms: int) -> None:
        request = urllib.request.Request(f"{self.server.endpoint}/millrace-api/advance-clock?ms={ms}",
                                         method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def advance_until(self, condition, what: str):
        """Moves the clock past the data freshness until `condition` holds."""
        def step():
            found = condition()
            if not found:
                self.advance(FRESHNESS_MS + 1_000)
            return found
        return wait_until(step, WAIT_S, what, interval_s=0.2)

    def pyiceberg_properties(self) -> dict:
        return {"s3.endpoint": self.s3.endpoint, "s3.access-key-id": S3_ACCESS_KEY,
                "s3.secret-access-key": S3_SECRET_KEY, "s3.region": "us-east-1"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("channels")
    s3 = S3Server(base / "s3", base / "s3.log").start()
    e = Env(base, s3)
    e.server = ServerProcess(base / "data", base / "server.log",
                             extra_args=["--enable-clock-advance", "--shard-throughput", "unlimited"],
                             config_text=e.config()).start()
    yield e
    e.server.close()
    s3.stop()


@pytest.fixture
def fx(env):
    env.server.reset()
    return env


def on_demand_stream(kinesis) -> str:
    name = unique_name("ch")
    kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    wait_status(kinesis, name, "ACTIVE")
    return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]


def new_bucket(env) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    env.s3.client().create_bucket(Bucket=name)
    return name


def s3_destination(bucket: str, **storage) -> dict:
    config = {"BucketARN": f"arn:aws:s3:::{bucket}", "ExpectedBucketOwner": ACCOUNT_ID,
              "CompressionType": "NONE"}
    config.update(storage)
    return {"StorageConfiguration": config}


def tables_destination(bucket: str, tables: list[dict]) -> dict:
    return {
        "DeadLetterQueueS3Configuration": {"BucketARN": f"arn:aws:s3:::{bucket}",
                                           "ExpectedBucketOwner": ACCOUNT_ID},
        "S3TablesConfigurationList": [
            {"TableBucketARN": f"arn:aws:s3tables:{REGION}:{ACCOUNT_ID}:bucket/{bucket}",
             "CompressionType": "ZSTD", **t} for t in tables],
    }


def create_channel(kinesis, stream_arn: str, fmt: str = "JSON", **destination) -> str:
    created = kinesis.create_channel(
        ChannelName=unique_name("channel"), ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[{"StreamARN": stream_arn, "RecordConfiguration": {"RecordFormatType": fmt}}],
        **destination)["ChannelDescription"]
    arn = created["ChannelARN"]
    wait_until(lambda: kinesis.describe_channel(ChannelARN=arn)["ChannelDescription"]["ChannelStatus"] == "ACTIVE",
               WAIT_S, f"channel {arn} ACTIVE")
    return arn


def put(kinesis, stream_arn: str, payloads: list[bytes]) -> None:
    for start in range(0, len(payloads), 500):
        batch = payloads[start:start + 500]
        answer = kinesis.put_records(
            StreamARN=stream_arn,
            Records=[{"Data": data, "PartitionKey": f"pk-{start + i}"} for i, data in enumerate(batch)])
        assert answer["FailedRecordCount"] == 0, answer


def test_control_plane_shapes_states_and_errors(fx):
    kinesis = client(fx.server.endpoint)
    stream_arn = on_demand_stream(kinesis)
    bucket = new_bucket(fx)
    created = kinesis.create_channel(
        ChannelName="to-s3", ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[{"StreamARN": stream_arn, "RecordConfiguration": {"RecordFormatType": "JSON"}}],
        S3DestinationConfiguration=s3_destination(bucket, CompressionType="GZIP"),
        LoggingConfiguration={"CloudWatchLogs": {"Enabled": True, "LogGroupName": "/millrace/channels"}},
        Tags={"team": "data"})["ChannelDescription"]
    assert created["ChannelStatus"] == "CREATING"
    assert CHANNEL_ARN.match(created["ChannelARN"]), created["ChannelARN"]
    arn = created["ChannelARN"]
    described = kinesis.describe_channel(ChannelARN=arn)["ChannelDescription"]
    assert described["ChannelStatus"] == "ACTIVE"
    assert described["ChannelName"] == "to-s3"
    assert described["ServiceExecutionRoleARN"] == ROLE
    destination = described["S3DestinationConfiguration"]
    assert destination["DataFreshnessInSeconds"] == 300
    assert destination["StorageConfiguration"]["CompressionType"] == "GZIP"
    # The dead-letter bucket defaults to the destination bucket.
    assert destination["DeadLetterQueueS3Configuration"]["BucketARN"] == f"arn:aws:s3:::{bucket}"
    assert described["LoggingConfiguration"]["CloudWatchLogs"] == {"Enabled": True, "LogGroupName": "/millrace/channels"}
    assert described["StreamConfigurationList"][0]["StreamARN"] == stream_arn

    assert kinesis.describe_stream_summary(StreamARN=stream_arn)["StreamDescriptionSummary"]["ChannelCount"] == 1
    limits = kinesis.describe_limits()
    assert (limits["ChannelCount"], limits["ChannelCountLimit"]) == (1, 100)
    summaries = kinesis.list_channels()["ChannelSummaries"]
    assert [(s["ChannelName"], s["ChannelDestinationType"], s["ChannelStatus"]) for s in summaries] == [
        ("to-s3", "S3", "ACTIVE")]
    assert kinesis.list_channels(StreamFilter=[{"StreamARN": stream_arn + "x"}])["ChannelSummaries"] == []

    updated = kinesis.update_channel(ChannelARN=arn, S3DestinationConfiguration={"DataFreshnessInSeconds": 600})
    assert updated["ChannelDescription"]["ChannelStatus"] == "UPDATING"
    assert kinesis.describe_channel(ChannelARN=arn)["ChannelDescription"]["S3DestinationConfiguration"][
        "DataFreshnessInSeconds"] == 600

    def refused(call, **kwargs) -> tuple[str, str]:
        with pytest.raises(ClientError) as excinfo:
            call(**kwargs)
        return error_of(excinfo)

    base = dict(ServiceExecutionRoleARN=ROLE, StreamConfigurationList=[
        {"StreamARN": stream_arn, "RecordConfiguration": {"RecordFormatType": "JSON"}}])
    assert refused(kinesis.create_channel, ChannelName="to-s3", S3DestinationConfiguration=s3_destination(bucket),
                   **base)[0] == "ResourceInUseException"
    assert refused(kinesis.create_channel, ChannelName="second", S3DestinationConfiguration=s3_destination(bucket),
                   **base)[0] == "LimitExceededException"
    assert refused(kinesis.create_channel, ChannelName="neither", **base)[0] == "InvalidArgumentException"
    assert refused(kinesis.create_channel, ChannelName="both", S3DestinationConfiguration=s3_destination(bucket),
                   S3TablesDestinationConfiguration=tables_destination(bucket, [{"Namespace": "n", "TableName": "t"}]),
                   **base)[0] == "InvalidArgumentException"
    fresh = s3_destination(bucket)
    fresh["DataFreshnessInSeconds"] = 60
    assert refused(kinesis.create_channel, ChannelName="fresh", S3DestinationConfiguration=fresh,
                   **base)[0] == "InvalidArgumentException"
    missing = dict(base, StreamConfigurationList=[
        {"StreamARN": stream_arn + "-gone", "RecordConfiguration": {"RecordFormatType": "JSON"}}])
    assert refused(kinesis.create_channel, ChannelName="missing", S3DestinationConfiguration=s3_destination(bucket),
                   **missing)[0] == "ResourceNotFoundException"
    provisioned = unique_name("prov")
    kinesis.create_stream(StreamName=provisioned, ShardCount=1)
    wait_status(kinesis, provisioned, "ACTIVE")
    prov_arn = kinesis.describe_stream_summary(StreamName=provisioned)["StreamDescriptionSummary"]["StreamARN"]
    assert refused(kinesis.create_channel, ChannelName="prov", S3DestinationConfiguration=s3_destination(bucket),
                   ServiceExecutionRoleARN=ROLE, StreamConfigurationList=[
                       {"StreamARN": prov_arn, "RecordConfiguration": {"RecordFormatType": "JSON"}}]
                   )[0] == "InvalidArgumentException"
    assert refused(kinesis.create_channel, ChannelName="bad name!", S3DestinationConfiguration=s3_destination(bucket),
                   **base)[0] == "ValidationException"
    assert refused(kinesis.delete_stream, StreamARN=stream_arn)[0] == "ResourceInUseException"

    kinesis.delete_channel(ChannelARN=arn)
    assert refused(kinesis.describe_channel, ChannelARN=arn)[0] == "ResourceNotFoundException"
    assert kinesis.list_channels()["ChannelSummaries"] == []
    kinesis.delete_stream(StreamARN=stream_arn)


def test_records_become_gzip_objects_in_the_s3_server(fx):
    kinesis = client(fx.server.endpoint)
    stream_arn = on_demand_stream(kinesis)
    bucket = new_bucket(fx)
    create_channel(kinesis, stream_arn, S3DestinationConfiguration=s3_destination(
        bucket, CompressionType="GZIP", OutputKeyTemplate="events/{timestamp:yyyy-MM-dd}/"))
    first = [json.dumps({"n": i}).encode() for i in range(1200)]
    put(kinesis, stream_arn, first)
    # Nothing is written before the data freshness passed.
    assert fx.s3.keys(bucket) == []
    keys = fx.advance_until(lambda: fx.s3.keys(bucket) or None, "objects in the bucket")

    def delivered() -> list[bytes]:
        lines = []
        for key in fx.s3.keys(bucket):
            assert re.fullmatch(r"events/\d{4}-\d\d-\d\d/channel-\S+-\d{4}(-\d\d){5}-[0-9a-f-]{36}\.gz", key), key
            lines.extend(gzip.decompress(fx.s3.get(bucket, key)).splitlines())
        return lines

    assert len(keys) >= 1
    fx.advance_until(lambda: len(delivered()) >= len(first) or None, "every record delivered")
    assert sorted(delivered()) == sorted(first)
    second = [json.dumps({"m": i}).encode() for i in range(50)]
    put(kinesis, stream_arn, second)
    fx.advance_until(lambda: len(delivered()) >= len(first) + len(second) or None, "the second batch")
    assert sorted(delivered()) == sorted(first + second)


def test_iceberg_table_read_back_by_pyiceberg(fx):
    from pyiceberg.table import StaticTable

    kinesis = client(fx.server.endpoint)
    stream_arn = on_demand_stream(kinesis)
    bucket = new_bucket(fx)
    create_channel(kinesis, stream_arn, S3TablesDestinationConfiguration=tables_destination(bucket, [
        {"Namespace": "analytics", "TableName": "events"},
        {"Namespace": "analytics", "TableName": "events_hourly",
         "PartitionSpec": {"PartitionFields": [
             {"SourceName": "approximate_arrival_timestamp", "Transform": "TIME_HOUR"}]}},
    ]))
    first = [json.dumps({"n": i}) for i in range(700)]
    put(kinesis, stream_arn, [p.encode() for p in first])

    def hint(table: str) -> int | None:
        keys = fx.s3.keys(bucket, f"analytics/{table}/metadata/version-hint.text")
        return int(fx.s3.get(bucket, keys[0])) if keys else None

    def read(table: str):
        version = hint(table)
        metadata = f"s3://{bucket}/analytics/{table}/metadata/v{version}.metadata.json"
        return StaticTable.from_metadata(metadata, properties=fx.pyiceberg_properties())

    def rows(table: str) -> list[dict]:
        if hint(table) is None:
            return []
        return read(table).scan().to_arrow().to_pylist()

    fx.advance_until(lambda: len(rows("events")) >= len(first) or None, "the first snapshot")
    got = rows("events")
    assert sorted(r["data"] for r in got) == sorted(first)
    assert {r["partition_key"] for r in got} == {f"pk-{i}" for i in range(len(first))}
    assert all(r["shard_id"].startswith("shardId-") and r["sequence_number"].isdigit() for r in got)
    assert all(r["approximate_arrival_timestamp"].tzinfo is not None for r in got)

    second = [json.dumps({"m": i}) for i in range(30)]
    put(kinesis, stream_arn, [p.encode() for p in second])
    fx.advance_until(lambda: len(rows("events")) >= len(first) + len(second) or None, "the second snapshot")
    table = read("events")
    assert sorted(r["data"] for r in table.scan().to_arrow().to_pylist()) == sorted(first + second)
    assert len(table.metadata.snapshots) >= 2
    assert table.metadata.current_snapshot().summary["operation"].value == "append"

    fx.advance_until(lambda: len(rows("events_hourly")) >= len(first) + len(second) or None, "the hourly table")
    hourly = read("events_hourly")
    assert [f.transform.__class__.__name__ for f in hourly.spec().fields] == ["HourTransform"]
    assert sorted(r["data"] for r in hourly.scan().to_arrow().to_pylist()) == sorted(first + second)
    kinesis.delete_channel(ChannelARN=kinesis.list_channels()["ChannelSummaries"][0]["ChannelARN"])


def test_kill_minus_nine_before_a_flush_loses_nothing(make_server, tmp_path):
    from pyiceberg.table import StaticTable

    s3 = S3Server(tmp_path / "s3", tmp_path / "s3.log").start()
    env = Env(tmp_path, s3)
    try:
        env.server = make_server(["--enable-clock-advance", "--shard-throughput", "unlimited"],
                                 config_text=env.config())
        kinesis = client(env.server.endpoint)
        stream_arn = on_demand_stream(kinesis)
        bucket = new_bucket(env)
        create_channel(kinesis, stream_arn,
                       S3TablesDestinationConfiguration=tables_destination(bucket, [
                           {"Namespace": "ns", "TableName": "t"}]))
        first = [f"a{i}" for i in range(300)]
        put(kinesis, stream_arn, [p.encode() for p in first])

        def count() -> int:
            keys = s3.keys(bucket, "ns/t/metadata/version-hint.text")
            if not keys:
                return 0
            version = int(s3.get(bucket, keys[0]))
            table = StaticTable.from_metadata(f"s3://{bucket}/ns/t/metadata/v{version}.metadata.json",
                                              properties=env.pyiceberg_properties())
            return len(table.scan().to_arrow())

        env.advance_until(lambda: count() >= len(first) or None, "the first snapshot")
        # Records read into the buffer but not flushed are lost with the process, and read
        # again after the restart from the committed positions.
        second = [f"b{i}" for i in range(200)]
        put(kinesis, stream_arn, [p.encode() for p in second])
        env.server.kill()
        env.server.restart()
        env.advance_until(lambda: count() >= len(first) + len(second) or None, "the records after the restart")
        version = int(s3.get(bucket, "ns/t/metadata/version-hint.text"))
        table = StaticTable.from_metadata(f"s3://{bucket}/ns/t/metadata/v{version}.metadata.json",
                                          properties=env.pyiceberg_properties())
        assert sorted(r["data"] for r in table.scan().to_arrow().to_pylist()) == sorted(first + second)
    finally:
        if env.server is not None:
            env.server.close()
        s3.stop()

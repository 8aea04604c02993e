"""Metrics, request logs and the operator CLI, through the real binary and real clients:
the Prometheus text of GET /metrics checked against the requests the test made, the
AWS/Kinesis datapoints read back with the AWS CLI v2 (`aws cloudwatch ...`) and boto3,
the JSON and logfmt access logs, and `millrace streams / put / tail`; the shard-level
metrics of EnableEnhancedMonitoring (AWS CLI to enable, boto3 to read back per-shard sums);
the AWS/KinesisVideo counters of a PutMedia upload and the AWS/KinesisAnalytics counters of
a running SQL application.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness import millrace_bin, wait_until
from kinesis_util import create_active, iterator, list_all_shards, unique_name

AWS = os.environ.get("MILLRACE_AWS_CLI", "/usr/bin/aws")
CLI_TIMEOUT_S = 60
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def prometheus(endpoint: str) -> dict[tuple[str, frozenset], float]:
    """Parses the exposition text: {(metric name, labels): value}; checks the # TYPE lines."""
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: dict[tuple[str, frozenset], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "summary"), line
            typed.add(name)
            continue
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, _, labels, value = match.groups()
        base = re.sub(r"_(sum|count)$", "", name)
        assert name in typed or base in typed, f"{name} has no # TYPE line"
        samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def stream_value(samples, name: str, stream: str) -> float:
    labels = frozenset({("account", "000000000000"), ("region", "us-east-1"), ("stream_name", stream)})
    return samples.get((name, labels), 0.0)


def rollup(endpoint: str) -> int:
    request = urllib.request.Request(f"{endpoint}/millrace-api/rollup-metrics", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())["datapoints"]


def put_and_read(kinesis, name: str) -> dict:
    """PutRecord 5 times, PutRecords once with 10 records, then read everything back;
    returns what the metrics should say."""
    create_active(kinesis, name, shard_count=2)
    n_bytes = 0
    for i in range(5):
        data, key = b"x" * (10 + i), f"pk-{i}"
        kinesis.put_record(StreamName=name, Data=data, PartitionKey=key)
        n_bytes += len(data) + len(key)
    batch = [{"Data": json.dumps({"n": i}).encode(), "PartitionKey": f"batch-{i}"} for i in range(10)]
    answer = kinesis.put_records(StreamName=name, Records=batch)
    assert answer["FailedRecordCount"] == 0
    n_bytes += sum(len(r["Data"]) + len(r["PartitionKey"]) for r in batch)
    n_read, n_calls = 0, 0
    for shard in list_all_shards(kinesis, name):
        records = kinesis.get_records(ShardIterator=iterator(kinesis, name, shard["ShardId"]), Limit=1000)
        n_calls += 1
        n_read += len(records["Records"])
    assert n_read == 15
    return {"records": 15, "bytes": n_bytes, "get_calls": n_calls}


def test_prometheus_text_counts_what_the_test_did(kinesis, endpoint):
    name = unique_name("prom")
    expected = put_and_read(kinesis, name)
    samples = prometheus(endpoint)
    value = lambda metric: stream_value(samples, f"millrace_kinesis_{metric}", name)  # noqa: E731
    assert value("incoming_records_sum") == expected["records"]
    assert value("incoming_bytes_sum") == expected["bytes"]
    assert value("incoming_records_count") == 6, "one observation per successful put request"
    assert (value("put_record_success_count"), value("put_record_success_sum")) == (5, 5)
    assert (value("put_records_success_count"), value("put_records_success_sum")) == (1, 1)
    assert value("put_records_total_records_sum") == 10
    assert value("put_records_successful_records_sum") == 10
    assert value("put_records_failed_records_sum") == 0
    assert value("put_record_latency_milliseconds_count") == 5
    assert value("get_records_records_sum") == expected["records"]
    assert value("get_records_success_count") == expected["get_calls"]
    assert value("get_records_iterator_age_milliseconds_count") == expected["get_calls"]
    assert value("write_provisioned_throughput_exceeded_sum") == 0

    # A put into a stream that does not exist is not a success of any stream's.
    with pytest.raises(ClientError):
        kinesis.put_record(StreamName=name + "-missing", Data=b"x", PartitionKey="k")
    samples = prometheus(endpoint)
    assert stream_value(samples, "millrace_kinesis_incoming_records_sum", name + "-missing") == 0

    # Deleting the stream drops its series (bounded label sets).
    kinesis.delete_stream(StreamName=name)
    assert all(dict(labels).get("stream_name") != name for (_, labels) in prometheus(endpoint))


def test_read_throttles_are_counted(kinesis, endpoint):
    """Calls GetRecords on one shard faster than its 5 calls/s limit (an unpaced client)
    until one is refused, then checks the metric counts exactly the refusals seen."""
    import kinesis_util

    name = unique_name("throttle")
    create_active(kinesis, name, shard_count=1)
    shard_id = list_all_shards(kinesis, name)[0]["ShardId"]
    fast = kinesis_util.client(endpoint, paced=False)
    it = fast.get_shard_iterator(StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    n_refused, n_ok = 0, 0
    for _ in range(200):
        try:
            it = fast.get_records(ShardIterator=it)["NextShardIterator"]
            n_ok += 1
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
            n_refused += 1
            if n_refused == 3:
                break
    assert n_refused == 3, "200 back-to-back GetRecords calls on one shard were never throttled"
    samples = prometheus(endpoint)
    assert stream_value(samples, "millrace_kinesis_read_provisioned_throughput_exceeded_sum", name) == n_refused
    assert stream_value(samples, "millrace_kinesis_get_records_success_count", name) == n_ok + n_refused
    assert stream_value(samples, "millrace_kinesis_get_records_success_sum", name) == n_ok


def aws_cli(endpoint: str, *args: str):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ACCESS_KEY_ID": "AKIDMILLRACECLI",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_PAGER": "",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }
    command = [AWS, *args, "--endpoint-url", endpoint, "--region", "us-east-1", "--output", "json"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}): {result.stderr}"
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_aws_cli_reads_kinesis_metrics_from_cloudwatch(kinesis, endpoint):
    name = unique_name("cw")
    expected = put_and_read(kinesis, name)
    # (The periodic roll-up may have run first: either way the datapoints are stored.)
    rollup(endpoint)
    assert rollup(endpoint) == 0, "a second roll-up with nothing new stores nothing"
    dims = f"Name=StreamName,Value={name}"
    listed = aws_cli(endpoint, "cloudwatch", "list-metrics", "--namespace", "AWS/Kinesis", "--dimensions", dims)
    names = {m["MetricName"] for m in listed["Metrics"]}
    assert {"IncomingRecords", "IncomingBytes", "PutRecord.Success", "PutRecords.TotalRecords",
            "GetRecords.Records", "GetRecords.IteratorAgeMilliseconds"} <= names
    assert all(m["Dimensions"] == [{"Name": "StreamName", "Value": name}] for m in listed["Metrics"])
    now = dt.datetime.now(dt.timezone.utc)
    window = ["--start-time", (now - dt.timedelta(minutes=10)).isoformat(),
              "--end-time", (now + dt.timedelta(minutes=5)).isoformat(), "--period", "60"]
    stats = aws_cli(endpoint, "cloudwatch", "get-metric-statistics", "--namespace", "AWS/Kinesis",
                    "--metric-name", "IncomingRecords", "--dimensions", dims,
                    "--statistics", "Sum", "SampleCount", *window)
    assert stats["Label"] == "IncomingRecords"
    assert sum(p["Sum"] for p in stats["Datapoints"]) == expected["records"]
    assert sum(p["SampleCount"] for p in stats["Datapoints"]) == 6
    bytes_stats = aws_cli(endpoint, "cloudwatch", "get-metric-statistics", "--namespace", "AWS/Kinesis",
                          "--metric-name", "IncomingBytes", "--dimensions", dims, "--statistics", "Sum", *window)
    assert sum(p["Sum"] for p in bytes_stats["Datapoints"]) == expected["bytes"]
    assert all(p["Unit"] == "Bytes" for p in bytes_stats["Datapoints"])

    # More traffic, another roll-up: the sums grow by exactly that.
    kinesis.put_record(StreamName=name, Data=b"late", PartitionKey="k")
    rollup(endpoint)
    cw = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="AKIDMILLRACETEST", aws_secret_access_key="secret",
                      config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    data = cw.get_metric_data(
        MetricDataQueries=[{"Id": "incoming", "MetricStat": {
            "Metric": {"Namespace": "AWS/Kinesis", "MetricName": "IncomingRecords",
                       "Dimensions": [{"Name": "StreamName", "Value": name}]},
            "Period": 60, "Stat": "Sum"}}],
        StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=5))
    [result] = data["MetricDataResults"]
    assert sum(result["Values"]) == expected["records"] + 1


SERVER_LOG_ARGS = ["--access-log", "--log-format", "json"]


def test_json_access_log_names_operation_stream_status_latency(make_server):
    import kinesis_util

    server = make_server(SERVER_LOG_ARGS)
    kinesis = kinesis_util.client(server.endpoint)
    name = unique_name("log")
    create_active(kinesis, name, shard_count=1)
    answer = kinesis.put_record(StreamName=name, Data=b"hello", PartitionKey="k")
    request_id = answer["ResponseMetadata"]["RequestId"]

    def logged():
        for line in server.log_path.read_text("utf-8", "replace").splitlines():
            if request_id in line and line.startswith("{"):
                return json.loads(line)
        return None

    entry = wait_until(logged, 10, f"an access log line with request id {request_id}")
    assert entry["level"] == "INFO"
    assert entry["target"] == "millrace::access"
    fields = entry["fields"]
    assert fields["request_id"] == request_id
    assert fields["operation"] == "PutRecord"
    assert fields["stream"] == name
    assert fields["status"] == 200
    assert isinstance(fields["latency_us"], int)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([millrace_bin(), *args], input=stdin, capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S)
    assert result.returncode == 0, f"millrace {' '.join(args)} failed: {result.stderr}"
    return result


def test_cli_streams_put_and_tail(kinesis, endpoint):
    name = unique_name("cli")
    create_active(kinesis, name, shard_count=3)
    listed = run_cli("streams", "--endpoint", endpoint).stdout.splitlines()
    assert any(line.split("\t")[:2] == [name, "ACTIVE"] and "3 shards" in line for line in listed), listed
    lines = [f"line {i} ✓" for i in range(1200)]
    put = run_cli("put", name, "--endpoint", endpoint, stdin="\n".join(lines) + "\n")
    assert "put 1200 records" in put.stderr
    tailed = run_cli("tail", name, "--from-start", "--limit", "1200", "--endpoint", endpoint).stdout.splitlines()
    assert sorted(tailed) == sorted(lines)
    samples = prometheus(endpoint)
    assert stream_value(samples, "millrace_kinesis_put_records_successful_records_sum", name) == 1200


LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def test_logfmt_access_log_has_the_same_fields(make_server):
    import kinesis_util

    server = make_server(["--access-log", "--log-format", "logfmt"])
    kinesis = kinesis_util.client(server.endpoint)
    name = unique_name("logfmt")
    create_active(kinesis, name, shard_count=1)
    answer = kinesis.put_record(StreamName=name, Data=b"hello", PartitionKey="k")
    request_id = answer["ResponseMetadata"]["RequestId"]

    def logged():
        for line in server.log_path.read_text("utf-8", "replace").splitlines():
            if f"request_id={request_id}" in line:
                return line
        return None

    line = wait_until(logged, 10, f"a logfmt access log line with request id {request_id}")
    fields = {k: json.loads(v) if v.startswith('"') else v for k, v in LOGFMT_PAIR.findall(line)}
    assert line.startswith("ts="), line
    assert fields["level"] == "INFO"
    assert fields["target"] == "millrace::access"
    assert fields["operation"] == "PutRecord"
    assert fields["stream"] == name
    assert fields["status"] == "200"
    assert int(fields["latency_us"]) >= 0
    assert fields["msg"] == "request"


def shard_labels(stream: str, shard_id: str) -> frozenset:
    return frozenset({("account", "000000000000"), ("region", "us-east-1"),
                      ("stream_name", stream), ("shard_id", shard_id)})


def test_enhanced_monitoring_counts_enabled_metrics_per_shard(kinesis, endpoint):
    name = unique_name("shardlvl")
    create_active(kinesis, name, shard_count=2)
    shards = list_all_shards(kinesis, name)
    first, second = shards[0]["ShardId"], shards[1]["ShardId"]
    second_key = shards[1]["HashKeyRange"]["StartingHashKey"]
    # Before EnableEnhancedMonitoring: no per-shard series.
    kinesis.put_record(StreamName=name, Data=b"early", PartitionKey="k", ExplicitHashKey="0")
    assert not any(n.startswith("millrace_kinesis_shard_") for (n, _) in prometheus(endpoint))

    answer = aws_cli(endpoint, "kinesis", "enable-enhanced-monitoring", "--stream-name", name,
                     "--shard-level-metrics", "IncomingRecords", "OutgoingRecords")
    assert answer["DesiredShardLevelMetrics"] == ["IncomingRecords", "OutgoingRecords"]
    kinesis.put_records(StreamName=name, Records=[
        {"Data": b"a" * 7, "PartitionKey": "k", "ExplicitHashKey": "0"} for _ in range(3)
    ] + [{"Data": b"b", "PartitionKey": "k", "ExplicitHashKey": second_key}])
    kinesis.put_record(StreamName=name, Data=b"c", PartitionKey="k", ExplicitHashKey=second_key)
    kinesis.put_record(StreamName=name, Data=b"d", PartitionKey="k", ExplicitHashKey=second_key)
    read = kinesis.get_records(ShardIterator=iterator(kinesis, name, first), Limit=1000)
    assert len(read["Records"]) == 4

    samples = prometheus(endpoint)
    assert samples[("millrace_kinesis_shard_incoming_records_sum", shard_labels(name, first))] == 3
    assert samples[("millrace_kinesis_shard_incoming_records_count", shard_labels(name, first))] == 1
    assert samples[("millrace_kinesis_shard_incoming_records_sum", shard_labels(name, second))] == 3
    assert samples[("millrace_kinesis_shard_outgoing_records_sum", shard_labels(name, first))] == 4
    assert not any(n.startswith("millrace_kinesis_shard_incoming_bytes") for (n, _) in samples), \
        "IncomingBytes was not enabled"

    rollup(endpoint)
    cw = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="AKIDMILLRACETEST", aws_secret_access_key="secret",
                      config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    now = dt.datetime.now(dt.timezone.utc)

    def shard_sum(metric: str, shard_id: str) -> float:
        stats = cw.get_metric_statistics(
            Namespace="AWS/Kinesis", MetricName=metric, Statistics=["Sum"], Period=60,
            Dimensions=[{"Name": "StreamName", "Value": name}, {"Name": "ShardId", "Value": shard_id}],
            StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=5))
        return sum(p["Sum"] for p in stats["Datapoints"])

    assert shard_sum("IncomingRecords", first) == 3
    assert shard_sum("IncomingRecords", second) == 3
    assert shard_sum("OutgoingRecords", first) == 4
    listed = cw.list_metrics(Namespace="AWS/Kinesis",
                             Dimensions=[{"Name": "StreamName", "Value": name}])["Metrics"]
    per_shard = {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
                 for m in listed if len(m["Dimensions"]) == 2}
    assert per_shard == {(metric, (("ShardId", shard), ("StreamName", name)))
                         for metric in ("IncomingRecords", "OutgoingRecords")
                         for shard in (first, second) if (metric, shard) != ("OutgoingRecords", second)}

    # Disabled: the per-shard series go and stop counting.
    aws_cli(endpoint, "kinesis", "disable-enhanced-monitoring", "--stream-name", name,
            "--shard-level-metrics", "ALL")
    kinesis.put_record(StreamName=name, Data=b"late", PartitionKey="k", ExplicitHashKey="0")
    samples = prometheus(endpoint)
    assert not any(dict(labels).get("stream_name") == name
                   for (n, labels) in samples if n.startswith("millrace_kinesis_shard_"))
    assert stream_value(samples, "millrace_kinesis_incoming_records_sum", name) == 8


def counter_value(samples, name: str, **labels: str) -> float:
    wanted = frozenset({("account", "000000000000"), ("region", "us-east-1"), *labels.items()})
    return samples.get((name, wanted), 0.0)


def test_video_metrics_count_put_media_fragments_and_frames(endpoint):
    from test_video import client as video_client, cluster, session_header, upload_bytes

    video = video_client("kinesisvideo", endpoint)
    name = unique_name("cam")
    video.create_stream(StreamName=name, DataRetentionInHours=1)
    body = session_header() + cluster(0, True) + cluster(2000, True) + cluster(4000, True)
    acks = upload_bytes(endpoint, name, body)
    assert [a["EventType"] for a in acks].count("PERSISTED") == 3, acks
    media = video_client("kinesis-video-archived-media", endpoint)
    assert len(media.list_fragments(StreamName=name)["Fragments"]) == 3

    samples = prometheus(endpoint)
    value = lambda metric: counter_value(samples, f"millrace_kinesisvideo_{metric}_total",  # noqa: E731
                                         stream_name=name)
    assert value("put_media_incoming_fragments") == 3
    assert value("put_media_incoming_frames") == 9, "3 blocks per hand-made cluster"
    assert value("put_media_incoming_bytes") == len(body)
    assert value("put_media_success") == 3
    assert value("list_fragments_success") == 1

    rollup(endpoint)
    cw = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="AKIDMILLRACETEST", aws_secret_access_key="secret",
                      config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    now = dt.datetime.now(dt.timezone.utc)
    stats = cw.get_metric_statistics(
        Namespace="AWS/KinesisVideo", MetricName="PutMedia.IncomingFragments", Statistics=["Sum"],
        Period=60, Dimensions=[{"Name": "StreamName", "Value": name}],
        StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=5))
    assert sum(p["Sum"] for p in stats["Datapoints"]) == 3

    # A deleted stream's series go.
    arn = video.describe_stream(StreamName=name)["StreamInfo"]["StreamARN"]
    video.delete_stream(StreamARN=arn)
    assert all(dict(labels).get("stream_name") != name for (n, labels) in prometheus(endpoint)
               if n.startswith("millrace_kinesisvideo_"))


PASSTHROUGH_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), PRICE DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER, PRICE FROM "SOURCE_SQL_STREAM_001";
"""


def test_analytics_metrics_count_input_and_output_records(kinesis, endpoint):
    from test_analytics import analytics, describe, input_config, output_config, put, wait_records

    ka = analytics(endpoint)
    source, dest, name = unique_name("src"), unique_name("dst"), unique_name("app")
    create_active(kinesis, source, shard_count=1)
    create_active(kinesis, dest, shard_count=1)
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)],
                          Outputs=[output_config("DESTINATION_SQL_STREAM", dest)],
                          ApplicationCode=PASSTHROUGH_SQL)
    detail = describe(ka, name)
    input_id = detail["InputDescriptions"][0]["InputId"]
    output_id = detail["OutputDescriptions"][0]["OutputId"]
    ka.start_application(ApplicationName=name, InputConfigurations=[{
        "Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"}}])
    payloads = [json.dumps({"ticker": "AMZN", "price": i}).encode() for i in range(12)]
    put(kinesis, source, payloads)
    wait_records(kinesis, dest, len(payloads))

    def flow_value(flow: str, flow_id: str, metric: str) -> float:
        return counter_value(prometheus(endpoint), f"millrace_kinesisanalytics_{metric}_total",
                             application=name, flow=flow, id=flow_id)

    wait_until(lambda: flow_value("Output", output_id, "records") == len(payloads), 10,
               "the output records counted")
    assert flow_value("Input", input_id, "records") == len(payloads)
    assert flow_value("Input", input_id, "bytes") == sum(len(p) for p in payloads)
    assert flow_value("Output", output_id, "success") >= 1

    rollup(endpoint)
    cw = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="AKIDMILLRACETEST", aws_secret_access_key="secret",
                      config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    now = dt.datetime.now(dt.timezone.utc)
    stats = cw.get_metric_statistics(
        Namespace="AWS/KinesisAnalytics", MetricName="Records", Statistics=["Sum"], Period=60,
        Dimensions=[{"Name": "Application", "Value": name}, {"Name": "Flow", "Value": "Input"},
                    {"Name": "Id", "Value": input_id}],
        StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=5))
    assert sum(p["Sum"] for p in stats["Datapoints"]) == len(payloads)
    ka.stop_application(ApplicationName=name)

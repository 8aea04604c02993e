"""Firehose with boto3 against real components: an S3 server (s3s-fs), PostgreSQL, an HTTP
endpoint and a transformation function (firehose_util.py).

Buffer intervals are passed with the clock-advance call, never by sleeping. Every object is
read back from the S3 server and decoded (gzip, zip, Snappy framing, Hadoop snappy, Parquet
with pyarrow); rows are read back from PostgreSQL with psql.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import struct
import urllib.request
import uuid
import zipfile

import cramjam
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

import kinesis_util
from firehose_util import S3_ACCESS_KEY, S3_SECRET_KEY, Endpoint, Function, Postgres, S3Server
from harness import ServerProcess, wait_until

FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:upper"
ROLE = "arn:aws:iam::000000000000:role/firehose"
WAIT_S = 20.0


class Env:
    def __init__(self, server, s3, pg, endpoint, function):
        self.server, self.s3, self.pg, self.endpoint, self.function = server, s3, pg, endpoint, function

    def advance(self, ms: int) -> None:
        request = urllib.request.Request(f"{self.server.endpoint}/millrace-api/advance-clock?ms={ms}",
                                         method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("firehose")
    s3 = S3Server(base / "s3", base / "s3.log").start()
    pg = Postgres().start()
    endpoint = Endpoint()
    function = Function()
    config = f"""
[firehose]
s3_endpoint = "{s3.endpoint}"
s3_region = "us-east-1"
s3_access_key_id = "{S3_ACCESS_KEY}"
s3_secret_access_key = "{S3_SECRET_KEY}"
source_poll_interval_ms = 200

[[firehose.function]]
arn = "{FUNCTION_ARN}"
url = "{function.url}"

[[firehose.table]]
database = "analytics"
name = "events"
columns = [
  {{ name = "id", type = "bigint" }},
  {{ name = "name", type = "string" }},
  {{ name = "price", type = "double" }},
  {{ name = "tags", type = "array<string>" }},
]
"""
    server = ServerProcess(base / "data", base / "server.log",
                           extra_args=["--enable-clock-advance", "--shard-throughput", "unlimited"],
                           config_text=config).start()
    yield Env(server, s3, pg, endpoint, function)
    server.close()
    s3.stop()
    pg.stop()
    endpoint.stop()
    function.stop()


@pytest.fixture
def fx(env):
    env.server.reset()
    env.endpoint.clear()
    env.function.invocations.clear()
    return env


def firehose_client(env):
    return kinesis_util.client(env.server.endpoint, service="firehose")


def new_bucket(env) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    env.s3.client().create_bucket(Bucket=name)
    return name


def s3_config(bucket: str, **extra) -> dict:
    config = {"BucketARN": f"arn:aws:s3:::{bucket}", "RoleARN": ROLE,
              "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60}}
    config.update(extra)
    return config


def put_lines(firehose, name: str, lines: list[str]) -> None:
    for start in range(0, len(lines), 500):
        answer = firehose.put_record_batch(
            DeliveryStreamName=name,
            Records=[{"Data": (line + "\n").encode()} for line in lines[start:start + 500]])
        assert answer["FailedPutCount"] == 0


def wait_keys(env, bucket: str, n: int, prefix: str = "") -> list[str]:
    return wait_until(lambda: (lambda keys: keys if len(keys) >= n else None)(env.s3.keys(bucket, prefix)),
                      WAIT_S, f"{n} objects in s3://{bucket}/{prefix}")


def test_gzip_objects_in_the_s3_server_with_the_aws_key_layout(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    firehose.create_delivery_stream(
        DeliveryStreamName="orders",
        ExtendedS3DestinationConfiguration=s3_config(bucket, Prefix="orders/", CompressionFormat="GZIP"))
    put_lines(firehose, "orders", [json.dumps({"n": i}) for i in range(50)])
    firehose.put_record(DeliveryStreamName="orders", Record={"Data": b'{"n":50}\n'})
    assert fx.s3.keys(bucket) == []
    fx.advance(61_000)
    keys = wait_keys(fx, bucket, 1)
    assert len(keys) == 1
    assert re.fullmatch(r"orders/\d{4}/\d\d/\d\d/\d\d/orders-1-\d{4}(-\d\d){5}-[0-9a-f-]{36}\.gz", keys[0]), keys[0]
    lines = gzip.decompress(fx.s3.get(bucket, keys[0])).decode().splitlines()
    assert lines == [json.dumps({"n": i}) for i in range(50)] + ['{"n":50}']


def test_size_hint_delivers_without_waiting_for_the_interval(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    firehose.create_delivery_stream(
        DeliveryStreamName="big",
        ExtendedS3DestinationConfiguration=s3_config(bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 900}))
    record = "x" * 100_000
    put_lines(firehose, "big", [record] * 11)  # 1.1 MB > 1 MiB
    keys = wait_keys(fx, bucket, 1)
    assert len(fx.s3.get(bucket, keys[0])) >= 1024 * 1024


@pytest.mark.parametrize("compression", ["ZIP", "Snappy", "HADOOP_SNAPPY"])
def test_compression_formats(fx, compression):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    firehose.create_delivery_stream(
        DeliveryStreamName="c", ExtendedS3DestinationConfiguration=s3_config(bucket, CompressionFormat=compression))
    lines = [json.dumps({"i": i, "pad": "y" * 50}) for i in range(200)]
    put_lines(firehose, "c", lines)
    fx.advance(61_000)
    key = wait_keys(fx, bucket, 1)[0]
    body = fx.s3.get(bucket, key)
    if compression == "ZIP":
        assert key.endswith(".zip")
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            (name,) = archive.namelist()
            data = archive.read(name)
    elif compression == "Snappy":
        assert key.endswith(".snappy")
        data = bytes(cramjam.snappy.decompress(body))
    else:
        assert key.endswith(".hsnappy")
        data, pos = b"", 0
        while pos < len(body):  # Hadoop block format: raw length, compressed length, raw snappy
            raw_len, compressed_len = struct.unpack(">II", body[pos:pos + 8])
            block = bytes(cramjam.snappy.decompress_raw(body[pos + 8:pos + 8 + compressed_len]))
            assert len(block) == raw_len
            data += block
            pos += 8 + compressed_len
    assert data.decode().splitlines() == lines


def test_json_to_parquet_with_a_declared_table(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    firehose.create_delivery_stream(
        DeliveryStreamName="parquet",
        ExtendedS3DestinationConfiguration=s3_config(
            bucket, Prefix="tables/events/", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
            BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60},
            DataFormatConversionConfiguration={
                "Enabled": True,
                "SchemaConfiguration": {"DatabaseName": "analytics", "TableName": "events", "RoleARN": ROLE},
                "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
                "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}},
            }))
    good = [{"ID": i, "Name": f"item-{i}", "price": i * 1.5, "tags": ["a", str(i)]} for i in range(100)]
    put_lines(firehose, "parquet", [json.dumps(r) for r in good] + ["not json", '{"id": "NaN-text"}'])
    fx.advance(61_000)
    key = wait_keys(fx, bucket, 1, "tables/")[0]
    assert key.endswith(".parquet")
    table = pq.read_table(io.BytesIO(fx.s3.get(bucket, key)))
    assert table.column_names == ["id", "name", "price", "tags"]
    assert table.column("id").to_pylist() == list(range(100))
    assert table.column("name").to_pylist()[7] == "item-7"
    assert table.column("tags").to_pylist()[3] == ["a", "3"]
    error_key = wait_keys(fx, bucket, 1, "errors/format-conversion-failed/")[0]
    errors = [json.loads(line) for line in fx.s3.get(bucket, error_key).decode().splitlines()]
    assert sorted(base64.b64decode(e["rawData"]) for e in errors) == [b"not json\n", b'{"id": "NaN-text"}\n']
    assert all("lastErrorCode" in e and "attemptsMade" in e for e in errors)


def test_dynamic_partitioning_with_jq(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    firehose.create_delivery_stream(
        DeliveryStreamName="dp",
        ExtendedS3DestinationConfiguration=s3_config(
            bucket, Prefix="customer=!{partitionKeyFromQuery:customer}/year=!{partitionKeyFromQuery:year}/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
            DynamicPartitioningConfiguration={"Enabled": True},
            ProcessingConfiguration={"Enabled": True, "Processors": [
                {"Type": "MetadataExtraction", "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery",
                     "ParameterValue": '{customer: .customer, year: .ts | strftime("%Y")}'},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
                {"Type": "AppendDelimiterToRecord", "Parameters": []}]}))
    records = [{"customer": c, "ts": 1700000000, "i": i} for i in range(10) for c in ("acme", "globex")]
    answer = firehose.put_record_batch(
        DeliveryStreamName="dp",
        Records=[{"Data": json.dumps(r).encode()} for r in records] + [{"Data": b"oops"}])
    assert answer["FailedPutCount"] == 0
    fx.advance(61_000)
    keys = wait_keys(fx, bucket, 2, "customer=")
    assert sorted(k.split("/")[0] + "/" + k.split("/")[1] for k in keys) == ["customer=acme/year=2023",
                                                                            "customer=globex/year=2023"]
    for key in keys:
        customer = key.split("/")[0].split("=")[1]
        lines = fx.s3.get(bucket, key).decode().splitlines()
        assert len(lines) == 10 and all(json.loads(l)["customer"] == customer for l in lines)
    error_key = wait_keys(fx, bucket, 1, "errors/processing-failed/")[0]
    (error,) = [json.loads(l) for l in fx.s3.get(bucket, error_key).decode().splitlines()]
    assert base64.b64decode(error["rawData"]) == b"oops"


def test_transformation_function_with_lambda_partition_keys(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    firehose.create_delivery_stream(
        DeliveryStreamName="lambda",
        ExtendedS3DestinationConfiguration=s3_config(
            bucket, Prefix="c=!{partitionKeyFromLambda:customer}/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
            DynamicPartitioningConfiguration={"Enabled": True},
            ProcessingConfiguration={"Enabled": True, "Processors": [
                {"Type": "Lambda", "Parameters": [
                    {"ParameterName": "LambdaArn", "ParameterValue": FUNCTION_ARN},
                    {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "60"}]}]}))
    lines = [json.dumps({"customer": "acme", "v": "a"}), json.dumps({"customer": "acme", "v": "drop me"}),
             json.dumps({"customer": "initech", "v": "b"}), json.dumps({"customer": "x", "v": "fail me"})]
    put_lines(firehose, "lambda", lines)
    fx.advance(61_000)
    keys = wait_keys(fx, bucket, 2, "c=")
    by_customer = {k.split("/")[0]: fx.s3.get(bucket, k).decode() for k in keys}
    assert by_customer == {"c=acme": '{"CUSTOMER": "ACME", "V": "A"}\n', "c=initech": '{"CUSTOMER": "INITECH", "V": "B"}\n'}
    error_key = wait_keys(fx, bucket, 1, "errors/processing-failed/")[0]
    (error,) = [json.loads(l) for l in fx.s3.get(bucket, error_key).decode().splitlines()]
    assert base64.b64decode(error["rawData"]).startswith(b'{"customer": "x"')
    assert error["lambdaArn"] == FUNCTION_ARN
    assert error["errorCode"] == "Lambda.ProcessingFailed"
    event = fx.function.invocations[0]
    assert event["deliveryStreamArn"] == "arn:aws:firehose:us-east-1:000000000000:deliverystream/lambda"
    assert event["region"] == "us-east-1"
    assert {"recordId", "approximateArrivalTimestamp", "data"} <= set(event["records"][0])


def http_stream(firehose, name: str, url: str, bucket: str, **extra) -> None:
    config = {
        "EndpointConfiguration": {"Url": url, "Name": "recorder", "AccessKey": "s3cr3t-key"},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
        "RequestConfiguration": {"ContentEncoding": "GZIP",
                                 "CommonAttributes": [{"AttributeName": "env", "AttributeValue": "test"}]},
        "RetryOptions": {"DurationInSeconds": 60},
        "S3BackupMode": "FailedDataOnly",
        "S3Configuration": {"BucketARN": f"arn:aws:s3:::{bucket}", "RoleARN": ROLE},
        "RoleARN": ROLE,
    }
    config.update(extra)
    firehose.create_delivery_stream(DeliveryStreamName=name, HttpEndpointDestinationConfiguration=config)


def test_http_endpoint_request_contract(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    http_stream(firehose, "http", fx.endpoint.url, bucket)
    description = firehose.describe_delivery_stream(DeliveryStreamName="http")["DeliveryStreamDescription"]
    http = description["Destinations"][0]["HttpEndpointDestinationDescription"]
    assert http["EndpointConfiguration"] == {"Url": fx.endpoint.url, "Name": "recorder"}  # no access key
    put_lines(firehose, "http", ["one", "two"])
    fx.advance(61_000)
    wait_until(lambda: fx.endpoint.requests, WAIT_S, "a request at the endpoint")
    request = fx.endpoint.requests[0]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["x-amz-firehose-protocol-version"] == "1.0"
    assert headers["x-amz-firehose-access-key"] == "s3cr3t-key"
    assert headers["x-amz-firehose-source-arn"] == "arn:aws:firehose:us-east-1:000000000000:deliverystream/http"
    assert json.loads(headers["x-amz-firehose-common-attributes"]) == {"commonAttributes": {"env": "test"}}
    assert headers["content-encoding"] == "gzip" and headers["content-type"] == "application/json"
    assert headers["x-amz-firehose-request-id"] == request["body"]["requestId"]
    assert isinstance(request["body"]["timestamp"], int)
    assert fx.endpoint.records() == [b"one\n", b"two\n"]


def test_http_endpoint_retries_then_writes_failed_records_to_s3(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    fx.endpoint.clear(mode="500")
    http_stream(firehose, "flaky", fx.endpoint.url, bucket)
    put_lines(firehose, "flaky", ["a"])
    fx.advance(61_000)
    wait_until(lambda: len(fx.endpoint.requests) >= 2, WAIT_S, "a retry")
    ids = {r["headers"].get("X-Amz-Firehose-Request-Id") for r in fx.endpoint.requests}
    assert len(ids) == 1, "the request id stays the same across retries"
    # The endpoint recovers: the retry succeeds and nothing goes to the error output.
    fx.endpoint.mode = "ok"
    wait_until(lambda: fx.endpoint.records(accepted_only=True) == [b"a\n"], WAIT_S, "a successful retry")
    # Now a delivery that fails for the whole retry window (60 s on the server's clock).
    fx.endpoint.clear(mode="bad-body")
    put_lines(firehose, "flaky", ["b"])
    fx.advance(61_000)
    wait_until(lambda: fx.endpoint.requests, WAIT_S, "a request")
    for _ in range(20):
        fx.advance(10_000)
        if fx.s3.keys(bucket, "http-endpoint-failed/"):
            break
    key = wait_keys(fx, bucket, 1, "http-endpoint-failed/")[0]
    (error,) = [json.loads(l) for l in fx.s3.get(bucket, key).decode().splitlines()]
    assert error["errorCode"] == "HttpEndpoint.DestinationException"
    assert base64.b64decode(error["rawData"]) == b"b\n"
    assert error["attemptsMade"] >= 2


def test_http_endpoint_413_is_not_retried(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    fx.endpoint.clear(mode="413")
    http_stream(firehose, "toolarge", fx.endpoint.url, bucket)
    put_lines(firehose, "toolarge", ["c"])
    fx.advance(61_000)
    wait_until(lambda: fx.endpoint.requests, WAIT_S, "a request")
    fx.endpoint.mode = "ok"
    put_lines(firehose, "toolarge", ["d"])
    fx.advance(61_000)
    wait_until(lambda: b"d\n" in fx.endpoint.records(accepted_only=True), WAIT_S, "the next batch")
    assert fx.endpoint.records().count(b"c\n") == 1
    assert fx.s3.keys(bucket, "http-endpoint-failed/") == []


def test_postgresql_standing_in_for_redshift(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    table = f"events_{uuid.uuid4().hex[:8]}"
    fx.pg.psql(f"CREATE TABLE {table} (id bigint, name text, price numeric)")
    firehose.create_delivery_stream(
        DeliveryStreamName="warehouse",
        RedshiftDestinationConfiguration={
            "RoleARN": ROLE,
            "ClusterJDBCURL": f"jdbc:redshift://local.redshift.127.0.0.1:{fx.pg.port}/postgres",
            "CopyCommand": {"DataTableName": table, "DataTableColumns": "id,name,price", "CopyOptions": "JSON 'auto'"},
            "Username": "postgres", "Password": "unused-with-trust",
            "S3Configuration": {"BucketARN": f"arn:aws:s3:::{bucket}", "RoleARN": ROLE, "Prefix": "staging/",
                                "CompressionFormat": "GZIP",
                                "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60}},
        })
    put_lines(firehose, "warehouse", [json.dumps({"id": i, "NAME": f"n{i}", "price": i / 4}) for i in range(30)])
    fx.advance(61_000)
    wait_until(lambda: fx.pg.psql(f"SELECT count(*) FROM {table}") == "30", WAIT_S, "30 rows in PostgreSQL")
    assert fx.pg.psql(f"SELECT name || ':' || price FROM {table} WHERE id = 6") == "n6:1.5"
    staged = wait_keys(fx, bucket, 1, "staging/")
    assert gzip.decompress(fx.s3.get(bucket, staged[0])).decode().count("\n") == 30


def test_kinesis_stream_as_source(fx):
    firehose = firehose_client(fx)
    kinesis = kinesis_util.client(fx.server.endpoint)
    bucket = new_bucket(fx)
    kinesis_util.create_active(kinesis, "source", shard_count=2)
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/source"
    firehose.create_delivery_stream(
        DeliveryStreamName="fromk", DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": arn, "RoleARN": ROLE},
        ExtendedS3DestinationConfiguration=s3_config(bucket))
    with pytest.raises(ClientError) as refused:
        firehose.put_record(DeliveryStreamName="fromk", Record={"Data": b"x"})
    assert refused.value.response["Error"]["Code"] == "InvalidArgumentException"
    sent = [f"k{i}" for i in range(40)]
    kinesis.put_records(StreamName="source",
                        Records=[{"Data": (s + "\n").encode(), "PartitionKey": s} for s in sent])
    def delivered():
        fx.advance(61_000)
        lines = [l for k in fx.s3.keys(bucket) for l in fx.s3.get(bucket, k).decode().splitlines()]
        return lines if len(lines) >= len(sent) else None
    lines = wait_until(delivered, WAIT_S, "the stream's records in S3", interval_s=0.5)
    assert sorted(lines) == sorted(sent)


def test_sigkill_while_buffering_loses_no_record(fx):
    firehose = firehose_client(fx)
    bucket = new_bucket(fx)
    firehose.create_delivery_stream(
        DeliveryStreamName="crash",
        ExtendedS3DestinationConfiguration=s3_config(bucket, BufferingHints={"SizeInMBs": 5, "IntervalInSeconds": 900}))
    sent = [json.dumps({"i": i}) for i in range(2000)]
    put_lines(firehose, "crash", sent)
    assert fx.s3.keys(bucket) == []
    fx.server.kill()
    fx.server.start()
    # The restarted server's clock starts again from real time, behind the clock the earlier
    # tests of this module advanced (and stamped these records with): move well past both.
    fx.advance(6 * 3600_000 + 901_000)
    firehose = firehose_client(fx)
    key = wait_keys(fx, bucket, 1)[0]
    assert fx.s3.get(bucket, key).decode().splitlines() == sent


def test_control_plane_errors(fx):
    firehose = firehose_client(fx)
    with pytest.raises(ClientError) as missing:
        firehose.describe_delivery_stream(DeliveryStreamName="nope")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert missing.value.response["Error"]["Message"] == "Firehose nope under account 000000000000 not found."
    with pytest.raises(ClientError) as two:
        firehose.create_delivery_stream(
            DeliveryStreamName="two", ExtendedS3DestinationConfiguration=s3_config("b"),
            HttpEndpointDestinationConfiguration={"EndpointConfiguration": {"Url": "https://x"},
                                                  "S3Configuration": {"BucketARN": "arn:aws:s3:::b", "RoleARN": ROLE}})
    assert two.value.response["Error"]["Code"] == "InvalidArgumentException"
    with pytest.raises(ClientError) as bad_name:
        kinesis_util.client(fx.server.endpoint, service="firehose", validate=False).create_delivery_stream(
            DeliveryStreamName="bad name!", ExtendedS3DestinationConfiguration=s3_config("b"))
    assert bad_name.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as no_function:
        firehose.create_delivery_stream(
            DeliveryStreamName="nofn", ExtendedS3DestinationConfiguration=s3_config("b", ProcessingConfiguration={
                "Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
                    {"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:000000000000:function:unmapped"}]}]}))
    assert no_function.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert "[[firehose.function]]" in no_function.value.response["Error"]["Message"]

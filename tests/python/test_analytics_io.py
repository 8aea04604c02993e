"""Kinesis Data Analytics applications' statuses, Lambda and Firehose outputs, Firehose
delivery streams as inputs and input preprocessing, driven with boto3 (``kinesisanalytics``, ``kinesis``, ``lambda``,
``firehose``). Firehose delivers to the embedded store (buckets are folders of the data
directory); its buffer interval is passed with the clock-advance call.

Functions are real HTTP servers in the test, registered with the Lambda API's
CreateFunction (``Code.ImageUri`` is their URL), as in test_functions.py. Every wait polls a
condition under a deadline (``wait_until``); a function that must stay busy blocks on an
event the test sets, not on a timer.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from harness import free_port, wait_until
from kinesis_util import ACCOUNT_ID, REGION, client, create_active, stream_arn, unique_name

SERVER_ARGS = ["--shard-throughput", "unlimited", "--enable-clock-advance"]
ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/analytics"
TIMEOUT_S = 30.0

SCHEMA = {
    "RecordFormat": {
        "RecordFormatType": "JSON",
        "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}},
    },
    "RecordEncoding": "UTF-8",
    "RecordColumns": [
        {"Name": "TICKER", "SqlType": "VARCHAR(8)", "Mapping": "$.ticker"},
        {"Name": "PRICE", "SqlType": "DOUBLE", "Mapping": "$.price"},
    ],
}

ECHO_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(8), PRICE DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER, PRICE FROM "SOURCE_SQL_STREAM_001";
"""


class FunctionServer:
    """An HTTP function: records the events it receives; ``behaviour(event)`` returns the
    answer object."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.behaviour = lambda event: {"records": []}
        self.port = free_port()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                event = json.loads(self.rfile.read(length))
                with outer.lock:
                    outer.events.append(event)
                    behaviour = outer.behaviour
                data = json.dumps(behaviour(event)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.events)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def functions(endpoint):
    """Makes HTTP functions registered through CreateFunction; closes them after the test."""
    lam = boto3.client("lambda", endpoint_url=endpoint, region_name=REGION,
                       aws_access_key_id="AKIDMILLRACETEST", aws_secret_access_key="secret",
                       config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    made: list[FunctionServer] = []

    def make(name: str) -> tuple[FunctionServer, str]:
        server = FunctionServer()
        made.append(server)
        created = lam.create_function(FunctionName=name, Role=f"arn:aws:iam::{ACCOUNT_ID}:role/r",
                                      Code={"ImageUri": server.url}, PackageType="Image")
        return server, created["FunctionArn"]

    yield make
    for server in made:
        server.close()


def analytics(endpoint: str):
    return client(endpoint, service="kinesisanalytics")


def describe(ka, name: str) -> dict:
    return ka.describe_application(ApplicationName=name)["ApplicationDetail"]


def wait_status(ka, name: str, status: str) -> None:
    wait_until(lambda: describe(ka, name)["ApplicationStatus"] == status, TIMEOUT_S, f"{name} {status}")


def input_config(source: str, preprocessor: str | None = None) -> dict:
    config = {
        "NamePrefix": "SOURCE_SQL_STREAM",
        "KinesisStreamsInput": {"ResourceARN": stream_arn(source), "RoleARN": ROLE},
        "InputParallelism": {"Count": 1},
        "InputSchema": SCHEMA,
    }
    if preprocessor:
        config["InputProcessingConfiguration"] = {
            "InputLambdaProcessor": {"ResourceARN": preprocessor, "RoleARN": ROLE}}
    return config


def stream_output(name: str, stream: str) -> dict:
    return {"Name": name, "KinesisStreamsOutput": {"ResourceARN": stream_arn(stream), "RoleARN": ROLE},
            "DestinationSchema": {"RecordFormatType": "JSON"}}


def start(ka, name: str) -> None:
    input_id = describe(ka, name)["InputDescriptions"][0]["InputId"]
    ka.start_application(ApplicationName=name, InputConfigurations=[{
        "Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"}}])


def put(kinesis, stream: str, payloads: list[bytes]) -> None:
    result = kinesis.put_records(StreamName=stream,
                                 Records=[{"Data": p, "PartitionKey": str(i)} for i, p in enumerate(payloads)])
    assert result["FailedRecordCount"] == 0


def read_all(kinesis, stream: str) -> list[bytes]:
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    out: list[bytes] = []
    while True:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        out.extend(r["Data"] for r in page["Records"])
        iterator = page["NextShardIterator"]
        if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
            return out


def wait_records(kinesis, stream: str, n: int) -> list[bytes]:
    def enough():
        records = read_all(kinesis, stream)
        return records if len(records) >= n else None
    return wait_until(enough, TIMEOUT_S, f"{n} records in {stream}", interval_s=0.1)


def test_statuses_starting_running_stopping_ready(endpoint):
    ka = analytics(endpoint)
    kinesis = client(endpoint)
    source, dest = unique_name("src"), unique_name("dst")
    create_active(kinesis, dest)
    name = unique_name("app")
    # The source stream does not exist yet: the runner cannot open its input, so the
    # application stays STARTING until it does.
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)],
                          Outputs=[stream_output("DESTINATION_SQL_STREAM", dest)], ApplicationCode=ECHO_SQL)
    start(ka, name)
    assert describe(ka, name)["ApplicationStatus"] == "STARTING"
    assert [a["ApplicationStatus"] for a in ka.list_applications()["ApplicationSummaries"]
            if a["ApplicationName"] == name] == ["STARTING"]
    with pytest.raises(ka.exceptions.ResourceInUseException):
        ka.update_application(ApplicationName=name, CurrentApplicationVersionId=1,
                              ApplicationUpdate={"ApplicationCodeUpdate": ECHO_SQL})
    with pytest.raises(ka.exceptions.ResourceInUseException):
        start(ka, name)

    create_active(kinesis, source)
    wait_status(ka, name, "RUNNING")
    put(kinesis, source, [json.dumps({"ticker": "AMZN", "price": 1.5}).encode()])
    assert [json.loads(r) for r in wait_records(kinesis, dest, 1)] == [{"TICKER": "AMZN", "PRICE": 1.5}]

    ka.stop_application(ApplicationName=name)
    assert describe(ka, name)["ApplicationStatus"] in ("STOPPING", "READY")
    wait_status(ka, name, "READY")
    # Stopped with its checkpoint written: a restart from LAST_STOPPED_POINT repeats nothing.
    put(kinesis, source, [json.dumps({"ticker": "MSFT", "price": 2.5}).encode()])
    input_id = describe(ka, name)["InputDescriptions"][0]["InputId"]
    ka.start_application(ApplicationName=name, InputConfigurations=[{
        "Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": "LAST_STOPPED_POINT"}}])
    wait_status(ka, name, "RUNNING")
    records = [json.loads(r) for r in wait_records(kinesis, dest, 2)]
    assert records == [{"TICKER": "AMZN", "PRICE": 1.5}, {"TICKER": "MSFT", "PRICE": 2.5}]


def test_lambda_output_retries_failed_records_and_stop_waits_for_delivery(endpoint, functions):
    ka = analytics(endpoint)
    kinesis = client(endpoint)
    sink, sink_arn = functions(unique_name("sink"))
    delivered: list[dict] = []
    failed_once: set[str] = set()
    lock = threading.Lock()
    release = threading.Event()
    hold = threading.Event()

    def behaviour(event):
        if hold.is_set():
            release.wait(TIMEOUT_S)
        answers = []
        for record in event["records"]:
            row = json.loads(base64.b64decode(record["data"]))
            with lock:
                # Each row of ticker FAIL is refused the first time it is offered.
                if row["TICKER"] == "FAIL" and record["recordId"] not in failed_once \
                        and record["lambdaDeliveryRecordMetadata"]["retryHint"] == 0:
                    failed_once.add(record["recordId"])
                    answers.append({"recordId": record["recordId"], "result": "DeliveryFailed"})
                    continue
                delivered.append(row)
            answers.append({"recordId": record["recordId"], "result": "Ok"})
        return {"records": answers}

    sink.behaviour = behaviour
    source = unique_name("src")
    create_active(kinesis, source)
    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)], ApplicationCode=ECHO_SQL,
                          Outputs=[{"Name": "DESTINATION_SQL_STREAM",
                                    "LambdaOutput": {"ResourceARN": sink_arn, "RoleARN": ROLE},
                                    "DestinationSchema": {"RecordFormatType": "JSON"}}])
    assert describe(ka, name)["OutputDescriptions"][0]["LambdaOutputDescription"]["ResourceARN"] == sink_arn
    start(ka, name)
    wait_status(ka, name, "RUNNING")
    rows = [{"ticker": t, "price": p} for t, p in [("AMZN", 1.0), ("FAIL", 2.0), ("MSFT", 3.0), ("FAIL", 4.0)]]
    put(kinesis, source, [json.dumps(r).encode() for r in rows])

    def all_delivered():
        with lock:
            return len(delivered) >= 4
    wait_until(all_delivered, TIMEOUT_S, "4 rows delivered")
    with lock:
        assert sorted((r["TICKER"], r["PRICE"]) for r in delivered) == sorted((r["ticker"], r["price"]) for r in rows)
    events = sink.snapshot()
    assert all(e["applicationArn"] == describe(ka, name)["ApplicationARN"] and e["invocationId"] for e in events)
    retried = [r for e in events for r in e["records"] if r["lambdaDeliveryRecordMetadata"]["retryHint"] > 0]
    assert sorted(json.loads(base64.b64decode(r["data"]))["PRICE"] for r in retried) == [2.0, 4.0]

    # A stop while the function holds a delivery: STOPPING until the delivery is answered,
    # then READY, and the held row was delivered.
    hold.set()
    n_events = len(sink.snapshot())
    put(kinesis, source, [json.dumps({"ticker": "LAST", "price": 5.0}).encode()])
    wait_until(lambda: len(sink.snapshot()) > n_events, TIMEOUT_S, "a held delivery")
    ka.stop_application(ApplicationName=name)
    assert describe(ka, name)["ApplicationStatus"] == "STOPPING"
    release.set()
    wait_status(ka, name, "READY")
    with lock:
        assert delivered[-1] == {"TICKER": "LAST", "PRICE": 5.0}
        assert len(delivered) == 5


def test_input_preprocessing_ok_dropped_and_failed(endpoint, functions):
    ka = analytics(endpoint)
    kinesis = client(endpoint)
    preprocessor, preprocessor_arn = functions(unique_name("pre"))

    def behaviour(event):
        answers = []
        for record in event["records"]:
            # The source is "TICKER,PRICE" text; the function turns it into the JSON the
            # schema reads, drops DROP rows and fails FAIL rows.
            ticker, price = base64.b64decode(record["data"]).decode().split(",")
            if ticker == "DROP":
                answers.append({"recordId": record["recordId"], "result": "Dropped"})
            elif ticker == "FAIL":
                answers.append({"recordId": record["recordId"], "result": "ProcessingFailed"})
            else:
                data = json.dumps({"ticker": ticker, "price": float(price) * 2}).encode()
                answers.append({"recordId": record["recordId"], "result": "Ok",
                                "data": base64.b64encode(data).decode()})
        return {"records": answers}

    preprocessor.behaviour = behaviour
    source, dest, errors = unique_name("src"), unique_name("dst"), unique_name("err")
    for s in (source, dest, errors):
        create_active(kinesis, s)
    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[input_config(source, preprocessor_arn)],
                          Outputs=[stream_output("DESTINATION_SQL_STREAM", dest),
                                   stream_output("error_stream", errors)],
                          ApplicationCode=ECHO_SQL)
    processing = describe(ka, name)["InputDescriptions"][0]["InputProcessingConfigurationDescription"]
    assert processing["InputLambdaProcessorDescription"]["ResourceARN"] == preprocessor_arn
    start(ka, name)
    put(kinesis, source, [b"AMZN,1.5", b"DROP,1", b"FAIL,2", b"MSFT,3"])

    assert [json.loads(r) for r in wait_records(kinesis, dest, 2)] == [
        {"TICKER": "AMZN", "PRICE": 3.0}, {"TICKER": "MSFT", "PRICE": 6.0}]
    (error,) = [json.loads(r) for r in wait_records(kinesis, errors, 1)]
    assert error["ERROR_NAME"] == "SOURCE_DATA_ERROR"
    assert bytes.fromhex(error["DATA_ROW"]) == b"FAIL,2"

    events = preprocessor.snapshot()
    first = events[0]
    assert first["streamArn"] == stream_arn(source)
    assert first["applicationArn"] == describe(ka, name)["ApplicationARN"]
    metadata = first["records"][0]["kinesisStreamRecordMetadata"]
    assert metadata["shardId"].startswith("shardId-") and metadata["sequenceNumber"]
    assert metadata["partitionKey"] == "0" and metadata["approximateArrivalTimestamp"] > 0


def create_delivery_stream(firehose, delivery: str, bucket: str) -> str:
    """A DirectPut delivery stream into an embedded bucket (60 s buffers); its ARN."""
    firehose.create_delivery_stream(DeliveryStreamName=delivery, ExtendedS3DestinationConfiguration={
        "BucketARN": f"arn:aws:s3:::{bucket}", "RoleARN": ROLE,
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60}})
    wait_until(lambda: firehose.describe_delivery_stream(DeliveryStreamName=delivery)
               ["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE", TIMEOUT_S, "ACTIVE")
    return f"arn:aws:firehose:{REGION}:{ACCOUNT_ID}:deliverystream/{delivery}"


def advance_clock(endpoint: str, ms: int) -> None:
    request = urllib.request.Request(f"{endpoint}/millrace-api/advance-clock?ms={ms}",
                                     method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def wait_delivered(server, bucket: str, n: int) -> list[str]:
    """Moves the clock past the buffer interval until the bucket holds `n` lines."""
    folder = Path(server.data_dir) / "buckets" / bucket

    def delivered():
        advance_clock(server.endpoint, 61_000)
        files = [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")]
        lines = [line for f in files for line in f.read_bytes().decode().splitlines() if line]
        return lines if len(lines) >= n else None

    return wait_until(delivered, TIMEOUT_S, f"{n} lines in the bucket", interval_s=0.2)


def test_firehose_output_through_put_record_batch(server, endpoint):
    ka = analytics(endpoint)
    kinesis = client(endpoint)
    firehose = client(endpoint, service="firehose")
    bucket = f"analytics-{unique_name('b').lower()}"[:60]
    delivery_arn = create_delivery_stream(firehose, unique_name("ds"), bucket)
    source = unique_name("src")
    create_active(kinesis, source)
    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)], ApplicationCode=ECHO_SQL,
                          Outputs=[{"Name": "DESTINATION_SQL_STREAM",
                                    "KinesisFirehoseOutput": {"ResourceARN": delivery_arn, "RoleARN": ROLE},
                                    "DestinationSchema": {"RecordFormatType": "CSV"}}])
    start(ka, name)
    rows = [("AMZN", 1.5), ("MSFT", 2.5), ("NFLX", 3.5)]
    put(kinesis, source, [json.dumps({"ticker": t, "price": p}).encode() for t, p in rows])

    lines = wait_delivered(server, bucket, len(rows))
    assert sorted(lines) == sorted(f"{t},{p}" for t, p in rows)
    # The rows the delivery stream accepted count as the output's AWS/KinesisAnalytics
    # Records (before they reached the bucket).
    from test_metrics import counter_value, prometheus

    output_id = describe(ka, name)["OutputDescriptions"][0]["OutputId"]
    assert counter_value(prometheus(endpoint), "millrace_kinesisanalytics_records_total",
                         application=name, flow="Output", id=output_id) == len(rows)


def firehose_input_config(delivery_arn: str, preprocessor: str | None = None) -> dict:
    config = input_config("", preprocessor)
    del config["KinesisStreamsInput"]
    config["KinesisFirehoseInput"] = {"ResourceARN": delivery_arn, "RoleARN": ROLE}
    return config


def put_batch(firehose, delivery: str, rows: list[tuple[str, float]]) -> None:
    result = firehose.put_record_batch(DeliveryStreamName=delivery, Records=[
        {"Data": json.dumps({"ticker": t, "price": p}).encode() + b"\n"} for t, p in rows])
    assert result["FailedPutCount"] == 0


def test_firehose_input_is_read_and_held_across_a_stop_and_a_crash(make_server):
    """A delivery stream as the input: the application reads what the delivery stream
    accepted while delivery goes on to the bucket. Stopped, the application keeps a hold on
    what it has not read: delivery of later records (two hours later, in a new log segment)
    trims the log, but not the held records, and the hold survives a SIGKILL. Restarted from
    LAST_STOPPED_POINT, the application reads every record once."""
    server = make_server(SERVER_ARGS)
    ka, kinesis = analytics(server.endpoint), client(server.endpoint)
    firehose = client(server.endpoint, service="firehose")
    bucket = f"analytics-{unique_name('b').lower()}"[:60]
    delivery = unique_name("ds")
    delivery_arn = create_delivery_stream(firehose, delivery, bucket)
    dest = unique_name("dst")
    create_active(kinesis, dest)
    first, held, later = [("AMZN", 1.0), ("MSFT", 2.0)], [("NFLX", 3.0), ("AAPL", 4.0)], [("GOOG", 5.0)]
    put_batch(firehose, delivery, first)

    discovered = ka.discover_input_schema(ResourceARN=delivery_arn, RoleARN=ROLE, InputStartingPositionConfiguration={
        "InputStartingPosition": "TRIM_HORIZON"})
    assert sorted(c["Name"].upper() for c in discovered["InputSchema"]["RecordColumns"]) == ["PRICE", "TICKER"]

    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[firehose_input_config(delivery_arn)],
                          Outputs=[stream_output("DESTINATION_SQL_STREAM", dest)], ApplicationCode=ECHO_SQL)
    start(ka, name)
    wait_status(ka, name, "RUNNING")
    expected = [{"TICKER": t, "PRICE": p} for t, p in first]
    assert [json.loads(r) for r in wait_records(kinesis, dest, 2)] == expected
    ka.stop_application(ApplicationName=name)
    wait_status(ka, name, "READY")

    put_batch(firehose, delivery, held)
    server.kill()
    server.restart()
    ka, kinesis = analytics(server.endpoint), client(server.endpoint)
    firehose = client(server.endpoint, service="firehose")
    advance_clock(server.endpoint, 2 * 3_600_000)
    put_batch(firehose, delivery, later)
    lines = wait_delivered(server, bucket, 5)
    assert sorted(json.loads(line)["ticker"] for line in lines) == sorted(t for t, _ in first + held + later)

    input_id = describe(ka, name)["InputDescriptions"][0]["InputId"]
    ka.start_application(ApplicationName=name, InputConfigurations=[{
        "Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": "LAST_STOPPED_POINT"}}])
    expected += [{"TICKER": t, "PRICE": p} for t, p in held + later]
    assert [json.loads(r) for r in wait_records(kinesis, dest, 5)] == expected
    ka.stop_application(ApplicationName=name)
    wait_status(ka, name, "READY")
    assert len(read_all(kinesis, dest)) == 5


def test_firehose_input_through_a_preprocessing_function(server, endpoint, functions):
    ka, kinesis = analytics(endpoint), client(endpoint)
    firehose = client(endpoint, service="firehose")
    preprocessor, preprocessor_arn = functions(unique_name("pre"))

    def behaviour(event):
        answers = []
        for record in event["records"]:
            row = json.loads(base64.b64decode(record["data"]))
            data = json.dumps({"ticker": row["ticker"].lower(), "price": row["price"]}).encode()
            answers.append({"recordId": record["recordId"], "result": "Ok",
                            "data": base64.b64encode(data).decode()})
        return {"records": answers}

    preprocessor.behaviour = behaviour
    bucket = f"analytics-{unique_name('b').lower()}"[:60]
    delivery = unique_name("ds")
    delivery_arn = create_delivery_stream(firehose, delivery, bucket)
    dest = unique_name("dst")
    create_active(kinesis, dest)
    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[firehose_input_config(delivery_arn, preprocessor_arn)],
                          Outputs=[stream_output("DESTINATION_SQL_STREAM", dest)], ApplicationCode=ECHO_SQL)
    start(ka, name)
    put_batch(firehose, delivery, [("AMZN", 1.5)])
    assert [json.loads(r) for r in wait_records(kinesis, dest, 1)] == [{"TICKER": "amzn", "PRICE": 1.5}]
    first = preprocessor.snapshot()[0]
    assert first["streamArn"] == delivery_arn
    (record,) = first["records"]
    assert "kinesisStreamRecordMetadata" not in record
    assert record["kinesisFirehoseRecordMetadata"]["approximateArrivalTimestamp"] > 0

"""Kinesis Data Analytics SQL applications, driven with boto3's ``kinesisanalytics`` client.

The control plane: application lifecycle, versions (ConcurrentModificationException),
statuses, tags, CodeValidationException for bad SQL, DiscoverInputSchema. The data plane:
an application reads a Kinesis stream, runs a filter and a tumbling per-minute aggregation
(the documented STEP(ROWTIME BY INTERVAL '60' SECOND) pattern) and writes JSON records to
an output stream; the test computes the expected aggregates itself from the records'
ApproximateArrivalTimestamp (ROWTIME), and moves the server's clock
(``/millrace-api/advance-clock``) so windows close without waiting. Bad input rows go to
``error_stream``, routed to an output. A sliding window (``RANGE INTERVAL '1' MINUTE
PRECEDING``, partitioned by ticker) gives one row per input row, checked against the test's
own computation. A SIGKILL in the middle of an open window loses and
repeats nothing of the aggregate.

Every wait polls a condition under a deadline (``wait_until``).
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections import defaultdict

import pytest

from harness import wait_until
from kinesis_util import ACCOUNT_ID, REGION, client, create_active, error_of, stream_arn, unique_name

SERVER_ARGS = ["--shard-throughput", "unlimited", "--enable-clock-advance"]
ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/analytics"
OUTPUT_TIMEOUT_S = 30.0

SCHEMA = {
    "RecordFormat": {
        "RecordFormatType": "JSON",
        "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}},
    },
    "RecordEncoding": "UTF-8",
    "RecordColumns": [
        {"Name": "TICKER", "SqlType": "VARCHAR(4)", "Mapping": "$.ticker"},
        {"Name": "PRICE", "SqlType": "DOUBLE", "Mapping": "$.price"},
    ],
}

TUMBLING_SQL = """
-- per ticker and minute: trades above 10, their min, max and total
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    TICKER VARCHAR(4), TRADES INTEGER, MIN_PRICE REAL, MAX_PRICE REAL, TOTAL DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER, COUNT(*), MIN(PRICE), MAX(PRICE), SUM(PRICE)
    FROM "SOURCE_SQL_STREAM_001"
    WHERE PRICE > 10
    GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '{width}' SECOND);
"""


def analytics(endpoint: str):
    return client(endpoint, service="kinesisanalytics")


def advance_clock(endpoint: str, ms: int) -> None:
    request = urllib.request.Request(f"{endpoint}/millrace-api/advance-clock?ms={ms}", method="POST", data=b"")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200


def input_config(source: str) -> dict:
    return {
        "NamePrefix": "SOURCE_SQL_STREAM",
        "KinesisStreamsInput": {"ResourceARN": stream_arn(source), "RoleARN": ROLE},
        "InputParallelism": {"Count": 1},
        "InputSchema": SCHEMA,
    }


def output_config(name: str, stream: str) -> dict:
    return {
        "Name": name,
        "KinesisStreamsOutput": {"ResourceARN": stream_arn(stream), "RoleARN": ROLE},
        "DestinationSchema": {"RecordFormatType": "JSON"},
    }


def describe(ka, name: str) -> dict:
    return ka.describe_application(ApplicationName=name)["ApplicationDetail"]


def put(kinesis, stream: str, payloads: list[bytes]) -> None:
    for start in range(0, len(payloads), 500):
        chunk = payloads[start:start + 500]
        result = kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": p, "PartitionKey": str(i)} for i, p in enumerate(chunk)],
        )
        assert result["FailedRecordCount"] == 0


def read_all(kinesis, stream: str) -> list[dict]:
    """Every record of a one-shard stream so far."""
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    out: list[dict] = []
    while True:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        out.extend(page["Records"])
        iterator = page["NextShardIterator"]
        if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
            return out


def wait_records(kinesis, stream: str, n: int) -> list[dict]:
    def enough():
        records = read_all(kinesis, stream)
        return records if len(records) >= n else None
    return wait_until(enough, OUTPUT_TIMEOUT_S, f"{n} records in {stream}", interval_s=0.1)


def expected_aggregates(source_records: list[dict], width_ms: int) -> list[tuple]:
    """The tumbling aggregation computed from the input records and their arrival times."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for record in source_records:
        try:
            row = json.loads(record["Data"])
        except ValueError:
            continue
        arrival_ms = round(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
        if row["price"] > 10:
            groups[(arrival_ms // width_ms, row["ticker"])].append(row["price"])
    return sorted((t, len(p), min(p), max(p), round(sum(p), 6)) for (_, t), p in groups.items())


def actual_aggregates(output_records: list[dict]) -> list[tuple]:
    rows = [json.loads(r["Data"]) for r in output_records]
    return sorted((r["TICKER"], r["TRADES"], r["MIN_PRICE"], r["MAX_PRICE"], round(r["TOTAL"], 6)) for r in rows)


def assert_same(actual: list[tuple], expected: list[tuple]) -> None:
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        assert a[:2] == e[:2], (a, e)
        for x, y in zip(a[2:], e[2:]):
            assert math.isclose(x, y, rel_tol=1e-9), (a, e)


def test_lifecycle_versions_and_tags(endpoint):
    ka = analytics(endpoint)
    kinesis = client(endpoint)
    source, dest = unique_name("src"), unique_name("dst")
    create_active(kinesis, source)
    create_active(kinesis, dest)
    name = unique_name("app")
    summary = ka.create_application(
        ApplicationName=name, ApplicationDescription="per-minute counts",
        ApplicationCode=TUMBLING_SQL.format(width=60),
        Tags=[{"Key": "team", "Value": "data"}],
    )["ApplicationSummary"]
    assert summary == {
        "ApplicationName": name,
        "ApplicationARN": f"arn:aws:kinesisanalytics:{REGION}:{ACCOUNT_ID}:application/{name}",
        "ApplicationStatus": "READY",
    }
    with pytest.raises(ka.exceptions.ResourceInUseException):
        ka.create_application(ApplicationName=name)
    detail = describe(ka, name)
    assert detail["ApplicationVersionId"] == 1
    assert detail["ApplicationStatus"] == "READY"
    assert detail["ApplicationDescription"] == "per-minute counts"
    assert name in [a["ApplicationName"] for a in ka.list_applications()["ApplicationSummaries"]]

    # Optimistic concurrency: a stale version is refused, the current one moves it on.
    with pytest.raises(ka.exceptions.ConcurrentModificationException) as stale:
        ka.add_application_input(ApplicationName=name, CurrentApplicationVersionId=7, Input=input_config(source))
    assert "7" in error_of(stale)[1]
    ka.add_application_input(ApplicationName=name, CurrentApplicationVersionId=1, Input=input_config(source))
    ka.add_application_output(ApplicationName=name, CurrentApplicationVersionId=2,
                              Output=output_config("DESTINATION_SQL_STREAM", dest))
    detail = describe(ka, name)
    assert detail["ApplicationVersionId"] == 3
    (inp,) = detail["InputDescriptions"]
    assert inp["InAppStreamNames"] == ["SOURCE_SQL_STREAM_001"]
    assert inp["KinesisStreamsInputDescription"]["ResourceARN"] == stream_arn(source)
    assert inp["InputSchema"]["RecordColumns"][1]["Name"] == "PRICE"
    (out,) = detail["OutputDescriptions"]
    assert out["KinesisStreamsOutputDescription"]["ResourceARN"] == stream_arn(dest)

    ka.update_application(ApplicationName=name, CurrentApplicationVersionId=3,
                          ApplicationUpdate={"ApplicationCodeUpdate": TUMBLING_SQL.format(width=120)})
    detail = describe(ka, name)
    assert detail["ApplicationVersionId"] == 4
    assert "'120' SECOND" in detail["ApplicationCode"]

    arn = detail["ApplicationARN"]
    ka.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "test"}])
    ka.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert ka.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "test"}]

    ka.start_application(ApplicationName=name, InputConfigurations=[{
        "Id": inp["InputId"], "InputStartingPositionConfiguration": {"InputStartingPosition": "NOW"}}])
    assert describe(ka, name)["ApplicationStatus"] in ("STARTING", "RUNNING")
    wait_until(lambda: describe(ka, name)["ApplicationStatus"] == "RUNNING", OUTPUT_TIMEOUT_S, "RUNNING")
    with pytest.raises(ka.exceptions.ResourceInUseException):
        ka.start_application(ApplicationName=name, InputConfigurations=[{
            "Id": inp["InputId"], "InputStartingPositionConfiguration": {"InputStartingPosition": "NOW"}}])
    ka.stop_application(ApplicationName=name)
    wait_until(lambda: describe(ka, name)["ApplicationStatus"] == "READY", OUTPUT_TIMEOUT_S, "READY")

    ka.delete_application_output(ApplicationName=name, CurrentApplicationVersionId=4, OutputId=out["OutputId"])
    assert describe(ka, name)["OutputDescriptions"] == []

    with pytest.raises(ka.exceptions.InvalidArgumentException):
        ka.delete_application(ApplicationName=name, CreateTimestamp=detail["CreateTimestamp"].replace(year=2001))
    ka.delete_application(ApplicationName=name, CreateTimestamp=detail["CreateTimestamp"])
    with pytest.raises(ka.exceptions.ResourceNotFoundException):
        describe(ka, name)


def test_bad_sql_is_a_code_validation_exception(endpoint):
    ka = analytics(endpoint)
    with pytest.raises(ka.exceptions.CodeValidationException) as syntax:
        ka.create_application(ApplicationName=unique_name("bad"),
                              ApplicationCode='CREATE OR REPLACE STREAM "S" (A INTEGER);\nCREATE PUMP "P" AS INSERT INTO "S" SELEC STREAM A FROM "X";')
    message = error_of(syntax)[1]
    assert "expected SELECT" in message and "line 2" in message, message

    kinesis = client(endpoint)
    source = unique_name("src")
    create_active(kinesis, source)
    with pytest.raises(ka.exceptions.CodeValidationException) as column:
        ka.create_application(
            ApplicationName=unique_name("bad"), Inputs=[input_config(source)],
            ApplicationCode='CREATE OR REPLACE STREAM "D" (V DOUBLE);\n'
                            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D" SELECT STREAM VOLUME FROM "SOURCE_SQL_STREAM_001";')
    assert 'column "VOLUME" not found' in error_of(column)[1]

    with pytest.raises(ka.exceptions.CodeValidationException) as no_bucket:
        ka.create_application(
            ApplicationName=unique_name("bad"), Inputs=[input_config(source)],
            ApplicationCode='CREATE OR REPLACE STREAM "D" (T VARCHAR(4), N INTEGER);\n'
                            'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D" SELECT STREAM TICKER, COUNT(*) '
                            'FROM "SOURCE_SQL_STREAM_001" GROUP BY TICKER;')
    assert "ROWTIME bucket" in error_of(no_bucket)[1]


def test_discover_input_schema(endpoint):
    ka = analytics(endpoint)
    kinesis = client(endpoint)
    source = unique_name("src")
    create_active(kinesis, source)
    put(kinesis, source, [json.dumps({"ticker": "AMZN", "price": 12.5, "qty": 3}).encode(),
                          json.dumps({"ticker": "MSFT", "price": 40, "qty": 1}).encode()])
    found = ka.discover_input_schema(
        ResourceARN=stream_arn(source), RoleARN=ROLE,
        InputStartingPositionConfiguration={"InputStartingPosition": "TRIM_HORIZON"})
    columns = {c["Name"]: (c["SqlType"], c["Mapping"]) for c in found["InputSchema"]["RecordColumns"]}
    assert columns == {"TICKER": ("VARCHAR(64)", "$.ticker"), "PRICE": ("DOUBLE", "$.price"),
                       "QTY": ("INTEGER", "$.qty")}
    names = [c["Name"] for c in found["InputSchema"]["RecordColumns"]]
    assert dict(zip(names, found["ParsedInputRecords"][0])) == {"TICKER": "AMZN", "PRICE": "12.5", "QTY": "3"}

    empty = unique_name("empty")
    create_active(kinesis, empty)
    with pytest.raises(ka.exceptions.UnableToDetectSchemaException):
        ka.discover_input_schema(ResourceARN=stream_arn(empty), RoleARN=ROLE,
                                 InputStartingPositionConfiguration={"InputStartingPosition": "TRIM_HORIZON"})


ECHO_SQL = """
CREATE OR REPLACE STREAM "SEEN" (TICKER VARCHAR(4), PRICE DOUBLE);
CREATE OR REPLACE PUMP "ECHO_PUMP" AS INSERT INTO "SEEN"
    SELECT STREAM TICKER, PRICE FROM "SOURCE_SQL_STREAM_001";
"""


def create_running(ka, name: str, source: str, dest: str, errors: str | None, width_s: int,
                   position: str = "TRIM_HORIZON", echo: str | None = None) -> None:
    outputs = [output_config("DESTINATION_SQL_STREAM", dest)]
    if errors:
        outputs.append(output_config("error_stream", errors))
    code = TUMBLING_SQL.format(width=width_s)
    if echo:
        outputs.append(output_config("SEEN", echo))
        code += ECHO_SQL
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)], Outputs=outputs,
                          ApplicationCode=code)
    input_id = describe(ka, name)["InputDescriptions"][0]["InputId"]
    ka.start_application(ApplicationName=name, InputConfigurations=[{
        "Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": position}}])


def trades(n: int, seed: int) -> list[bytes]:
    tickers = ["AMZN", "MSFT", "NFLX"]
    return [json.dumps({"ticker": tickers[(i * 7 + seed) % 3], "price": round(5 + ((i * 37 + seed) % 400) / 10, 2)}).encode()
            for i in range(n)]


def test_tumbling_window_filter_end_to_end(endpoint):
    ka = analytics(endpoint)
    kinesis = client(endpoint)
    source, dest, errors = unique_name("src"), unique_name("dst"), unique_name("err")
    for s in (source, dest, errors):
        create_active(kinesis, s)
    create_running(ka, unique_name("app"), source, dest, errors, width_s=60)

    put(kinesis, source, trades(40, 1) + [b"this is not json"])
    advance_clock(endpoint, 60_000)
    put(kinesis, source, trades(25, 2))
    # Both minutes end before the watermark (the server's clock minus a little) passes.
    advance_clock(endpoint, 120_000)

    expected = expected_aggregates(read_all(kinesis, source), 60_000)
    assert len(expected) >= 4
    actual = actual_aggregates(wait_records(kinesis, dest, len(expected)))
    assert_same(actual, expected)

    (error,) = [json.loads(r["Data"]) for r in wait_records(kinesis, errors, 1)]
    assert error["ERROR_NAME"] == "SOURCE_DATA_ERROR"
    assert bytes.fromhex(error["DATA_ROW"]) == b"this is not json"
    assert "not JSON" in error["MESSAGE"]


def test_restart_in_the_middle_of_a_window(make_server):
    server = make_server(SERVER_ARGS)
    ka = analytics(server.endpoint)
    kinesis = client(server.endpoint)
    source, dest, echo = unique_name("src"), unique_name("dst"), unique_name("echo")
    for s in (source, dest, echo):
        create_active(kinesis, s)
    name = unique_name("app")
    # An hour-wide window: both halves of the input land in it (unless the hour turns in
    # between, which the expected values, computed from arrival times, also cover).
    create_running(ka, name, source, dest, None, width_s=3600, echo=echo)
    put(kinesis, source, trades(30, 3))
    # Wait until the application has taken the first half (a second pump echoes every row),
    # then SIGKILL it with the window open. Its checkpoint follows each round's outputs; if
    # the kill comes first, the round is read again, never counted twice.
    wait_records(kinesis, echo, 30)
    server.kill()
    server.restart()
    kinesis = client(server.endpoint)
    ka = analytics(server.endpoint)
    assert describe(ka, name)["ApplicationStatus"] == "RUNNING"
    put(kinesis, source, trades(20, 4))
    advance_clock(server.endpoint, 7_200_000)
    expected = expected_aggregates(read_all(kinesis, source), 3_600_000)
    actual = actual_aggregates(wait_records(kinesis, dest, len(expected)))
    assert_same(actual, expected)


SLIDING_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    ticker VARCHAR(4), n INTEGER, avg_price DOUBLE, max_price DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM ticker, COUNT(*) OVER W1, AVG(price) OVER W1, MAX(price) OVER W1
    FROM "SOURCE_SQL_STREAM_001"
    WINDOW W1 AS (PARTITION BY ticker RANGE INTERVAL '1' MINUTE PRECEDING);
"""


def test_sliding_window_end_to_end(endpoint):
    ka = analytics(endpoint)
    kinesis = client(endpoint)
    source, dest = unique_name("src"), unique_name("dst")
    create_active(kinesis, source)
    create_active(kinesis, dest)
    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)],
                          Outputs=[output_config("DESTINATION_SQL_STREAM", dest)], ApplicationCode=SLIDING_SQL)
    input_id = describe(ka, name)["InputDescriptions"][0]["InputId"]
    ka.start_application(ApplicationName=name, InputConfigurations=[{
        "Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"}}])
    put(kinesis, source, trades(20, 5))
    advance_clock(endpoint, 45_000)
    put(kinesis, source, trades(20, 6))
    advance_clock(endpoint, 45_000)
    put(kinesis, source, trades(20, 7))

    # One output row per input row, over the same ticker's rows of the last minute.
    seen: list[tuple[int, str, float]] = []
    expected = []
    for record in read_all(kinesis, source):
        row = json.loads(record["Data"])
        at = round(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
        seen.append((at, row["ticker"], row["price"]))
        window = [p for (t, k, p) in seen if k == row["ticker"] and t >= at - 60_000]
        expected.append((row["ticker"], len(window), sum(window) / len(window), max(window)))
    rows = [json.loads(r["Data"]) for r in wait_records(kinesis, dest, len(expected))]
    actual = [(r["TICKER"], r["N"], r["AVG_PRICE"], r["MAX_PRICE"]) for r in rows]
    assert len(actual) == len(expected) == 60
    for a, e in zip(actual, expected):
        assert a[:2] == e[:2], (a, e)
        assert math.isclose(a[2], e[2], rel_tol=1e-9) and a[3] == e[3], (a, e)

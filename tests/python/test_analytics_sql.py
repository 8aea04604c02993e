"""Kinesis Data Analytics SQL dialect, end to end with boto3: reference data joins (a CSV
object in an S3 server, s3s-fs), stagger windows, TOP_K_ITEMS_TUMBLING and
RANDOM_CUT_FOREST.

Every expected output is computed here from the records read back from the source stream
(their ApproximateArrivalTimestamp is ROWTIME). Time moves with the server's clock-advance
call, never by sleeping; every wait polls a condition under a deadline.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter

import pytest

from firehose_util import S3_ACCESS_KEY, S3_SECRET_KEY, S3Server
from harness import ServerProcess
from kinesis_util import client, create_active, error_of, unique_name
from test_analytics import (analytics, describe, input_config, output_config, put, read_all,
                            wait_records)

COMPANIES = {"AMZN": "Amazon", "MSFT": "Microsoft", "NFLX": "Netflix"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("analytics-sql")
    s3 = S3Server(base / "s3", base / "s3.log").start()
    config = f"""
[firehose]
s3_endpoint = "{s3.endpoint}"
s3_region = "us-east-1"
s3_access_key_id = "{S3_ACCESS_KEY}"
s3_secret_access_key = "{S3_SECRET_KEY}"
"""
    server = ServerProcess(base / "data", base / "server.log",
                           extra_args=["--enable-clock-advance", "--shard-throughput", "unlimited"],
                           config_text=config).start()
    yield server, s3
    server.close()
    s3.stop()


def advance_clock(endpoint: str, ms: int) -> None:
    request = urllib.request.Request(f"{endpoint}/millrace-api/advance-clock?ms={ms}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def start(ka, name: str) -> None:
    input_id = describe(ka, name)["InputDescriptions"][0]["InputId"]
    ka.start_application(ApplicationName=name, InputConfigurations=[{
        "Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"}}])


def arrivals(kinesis, stream: str) -> list[tuple[int, dict]]:
    return [(round(r["ApproximateArrivalTimestamp"].timestamp() * 1000), json.loads(r["Data"]))
            for r in read_all(kinesis, stream)]


JOIN_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    ticker_symbol VARCHAR(4), "Company" VARCHAR(20), price DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
   SELECT STREAM TICKER, "c"."Company", PRICE
   FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" AS "c"
   ON "SOURCE_SQL_STREAM_001".TICKER = "c"."Ticker";
"""


def test_reference_data_left_join_from_s3(env):
    server, s3 = env
    ka, kinesis = analytics(server.endpoint), client(server.endpoint)
    source, dest = unique_name("src"), unique_name("dst")
    for s in (source, dest):
        create_active(kinesis, s)
    bucket = unique_name("refs")
    s3.client().create_bucket(Bucket=bucket)
    csv = "".join(f"{t},{c}\n" for t, c in COMPANIES.items() if t != "NFLX")
    s3.client().put_object(Bucket=bucket, Key="ref/companies.csv", Body=csv.encode())

    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)],
                          Outputs=[output_config("DESTINATION_SQL_STREAM", dest)])
    # The code names a table the application does not have yet: refused.
    with pytest.raises(ka.exceptions.CodeValidationException) as missing:
        ka.update_application(ApplicationName=name, CurrentApplicationVersionId=1,
                              ApplicationUpdate={"ApplicationCodeUpdate": JOIN_SQL})
    assert "CompanyName" in error_of(missing)[1]
    ka.add_application_reference_data_source(
        ApplicationName=name, CurrentApplicationVersionId=1,
        ReferenceDataSource={
            "TableName": "CompanyName",
            "S3ReferenceDataSource": {"BucketARN": f"arn:aws:s3:::{bucket}", "FileKey": "ref/companies.csv",
                                      "ReferenceRoleARN": "arn:aws:iam::000000000000:role/ref"},
            "ReferenceSchema": {
                "RecordFormat": {"RecordFormatType": "CSV", "MappingParameters": {
                    "CSVMappingParameters": {"RecordColumnDelimiter": ",", "RecordRowDelimiter": "\n"}}},
                "RecordEncoding": "UTF-8",
                "RecordColumns": [{"Name": "Ticker", "SqlType": "VARCHAR(4)"},
                                  {"Name": "Company", "SqlType": "VARCHAR(20)"}],
            },
        })
    ka.update_application(ApplicationName=name, CurrentApplicationVersionId=2,
                          ApplicationUpdate={"ApplicationCodeUpdate": JOIN_SQL})
    start(ka, name)
    tickers = ["AMZN", "MSFT", "NFLX"]
    put(kinesis, source, [json.dumps({"ticker": tickers[i % 3], "price": 10 + i}).encode() for i in range(12)])

    expected = [(row["ticker"], COMPANIES[row["ticker"]] if row["ticker"] != "NFLX" else None, row["price"])
                for _, row in arrivals(kinesis, source)]
    rows = [json.loads(r["Data"]) for r in wait_records(kinesis, dest, len(expected))]
    assert [(r["TICKER_SYMBOL"], r["Company"], r["PRICE"]) for r in rows] == expected


STAGGER_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker VARCHAR(4), ticker_count INTEGER, total DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER, COUNT(*) AS ticker_count, SUM(PRICE)
    FROM "SOURCE_SQL_STREAM_001"
    WINDOWED BY STAGGER (PARTITION BY TICKER RANGE INTERVAL '1' MINUTE);
"""


def expected_stagger(records: list[tuple[int, dict]], range_ms: int) -> list[tuple]:
    """Per ticker: a window opens at the ticker's first row and takes rows until it closes."""
    open_windows: dict[str, list] = {}
    closed = []
    for at, row in records:
        window = open_windows.get(row["ticker"])
        if window is not None and at >= window[0] + range_ms:
            closed.append(window)
            window = None
        if window is None:
            window = open_windows[row["ticker"]] = [at, row["ticker"], 0, 0.0]
        window[2] += 1
        window[3] += row["price"]
    closed.extend(open_windows.values())
    return sorted((w[1], w[2], round(w[3], 6)) for w in closed)


def test_stagger_window_end_to_end(env):
    server, _ = env
    ka, kinesis = analytics(server.endpoint), client(server.endpoint)
    source, dest = unique_name("src"), unique_name("dst")
    for s in (source, dest):
        create_active(kinesis, s)
    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)],
                          Outputs=[output_config("DESTINATION_SQL_STREAM", dest)], ApplicationCode=STAGGER_SQL)
    start(ka, name)
    put(kinesis, source, [json.dumps({"ticker": t, "price": p}).encode() for t, p in [("AMZN", 1), ("MSFT", 2)]])
    advance_clock(server.endpoint, 40_000)
    put(kinesis, source, [json.dumps({"ticker": t, "price": p}).encode() for t, p in [("AMZN", 3), ("NFLX", 4)]])
    advance_clock(server.endpoint, 40_000)
    # AMZN's first window (opened 80 s ago) is closed: this row opens a second one.
    put(kinesis, source, [json.dumps({"ticker": t, "price": p}).encode() for t, p in [("AMZN", 5), ("NFLX", 6)]])
    advance_clock(server.endpoint, 120_000)

    expected = expected_stagger(arrivals(kinesis, source), 60_000)
    assert len(expected) == 4, expected
    rows = [json.loads(r["Data"]) for r in wait_records(kinesis, dest, len(expected))]
    assert sorted((r["TICKER"], r["TICKER_COUNT"], round(r["TOTAL"], 6)) for r in rows) == expected


TOP_K_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" ("TICKER" VARCHAR(4), "MOST_FREQUENT_VALUES" BIGINT);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING(
        CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"), 'TICKER', 2, 60));
"""


def test_top_k_items_tumbling_end_to_end(env):
    server, _ = env
    ka, kinesis = analytics(server.endpoint), client(server.endpoint)
    source, dest = unique_name("src"), unique_name("dst")
    for s in (source, dest):
        create_active(kinesis, s)
    name = unique_name("app")
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)],
                          Outputs=[output_config("DESTINATION_SQL_STREAM", dest)], ApplicationCode=TOP_K_SQL)
    start(ka, name)
    tickers = ["AMZN"] * 5 + ["MSFT"] * 3 + ["NFLX"] * 1 + ["AMZN", "MSFT", "MSFT", "MSFT"]
    put(kinesis, source, [json.dumps({"ticker": t, "price": 1}).encode() for t in tickers])
    advance_clock(server.endpoint, 180_000)

    # Exact counts per one-minute window of arrival time, the 2 most frequent of each.
    windows: dict[int, Counter] = {}
    for at, row in arrivals(kinesis, source):
        windows.setdefault(at // 60_000, Counter())[row["ticker"]] += 1
    expected = []
    for _, counts in sorted(windows.items()):
        expected.extend(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2])
    rows = [json.loads(r["Data"]) for r in wait_records(kinesis, dest, len(expected))]
    assert [(r["TICKER"], r["MOST_FREQUENT_VALUES"]) for r in rows] == expected


RCF_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" ("heartRate" INTEGER, "rateType" VARCHAR(20), ANOMALY_SCORE DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM "heartRate", "rateType", ANOMALY_SCORE
    FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001")));
"""

HEART_SCHEMA = {
    "RecordFormat": {"RecordFormatType": "JSON",
                     "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
    "RecordEncoding": "UTF-8",
    "RecordColumns": [{"Name": "heartRate", "SqlType": "INTEGER", "Mapping": "$.heartRate"},
                      {"Name": "rateType", "SqlType": "VARCHAR(20)", "Mapping": "$.rateType"}],
}


def test_random_cut_forest_scores_the_outlier_highest(env):
    server, _ = env
    ka, kinesis = analytics(server.endpoint), client(server.endpoint)
    source, dest = unique_name("src"), unique_name("dst")
    for s in (source, dest):
        create_active(kinesis, s)
    name = unique_name("app")
    inp = dict(input_config(source), InputSchema=HEART_SCHEMA)
    ka.create_application(ApplicationName=name, Inputs=[inp],
                          Outputs=[output_config("DESTINATION_SQL_STREAM", dest)], ApplicationCode=RCF_SQL)
    start(ka, name)
    # The documented example's data: normal heart rates 60 to 80, one at 150.
    normal = [60 + (i * 7) % 21 for i in range(300)]
    rates = normal + [150] + normal[:20]
    put(kinesis, source, [json.dumps({"heartRate": r, "rateType": "HIGH" if r > 100 else "NORMAL"}).encode()
                          for r in rates])
    rows = [json.loads(r["Data"]) for r in wait_records(kinesis, dest, len(rates))]
    assert [r["heartRate"] for r in rows] == rates
    scores = [r["ANOMALY_SCORE"] for r in rows]
    outlier = scores[300]
    later_normal = scores[200:300] + scores[301:]
    assert outlier > 3 * max(later_normal), (outlier, max(later_normal))

"""The checks AWS makes before an action, seen on the wire: raw HTTP for malformed bodies,
unknown operations and missing authentication, boto3 for validation messages; and that a
refused request changes nothing stored. Every response carries x-amzn-RequestId."""

from __future__ import annotations

import datetime
import http.client
import json
import re
import urllib.parse

import pytest
from botocore.exceptions import ClientError

from kinesis_util import (
    client, create_active, error_of, iterator, read_available, unique_name,
)

FAKE_AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kinesis/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
    "Signature=0000000000000000000000000000000000000000000000000000000000000000"
)


def raw(endpoint: str, target: str | None, body: bytes, authorization: str | None = FAKE_AUTHORIZATION,
        content_type: str = "application/x-amz-json-1.1", method: str = "POST", path: str = "/"):
    """One HTTP/1.1 request; returns (status, headers (lower-case names), parsed JSON body or raw bytes)."""
    url = urllib.parse.urlparse(endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = {"Content-Type": content_type,
               "X-Amz-Date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")}
    if target is not None:
        headers["X-Amz-Target"] = target
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        response_headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return response.status, response_headers, parsed
    finally:
        connection.close()


def error_type(body) -> str:
    assert isinstance(body, dict), f"error body is not JSON: {body!r}"
    return body["__type"].split("#")[-1]


def error_message(body) -> str | None:
    return body.get("message", body.get("Message"))


def assert_request_id(headers: dict) -> str:
    request_id = headers.get("x-amzn-requestid")
    assert request_id, f"no x-amzn-RequestId in {headers}"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", request_id), request_id
    assert headers.get("x-amz-id-2"), f"no x-amz-id-2 in {headers}"
    return request_id


def test_health(endpoint):
    status, headers, _ = raw(endpoint, None, b"", method="GET", path="/health")
    assert status == 200


def test_raw_json_request_succeeds(endpoint):
    status, headers, body = raw(endpoint, "Kinesis_20131202.ListStreams", b"{}")
    assert status == 200
    assert headers["content-type"].startswith("application/x-amz-json-1.1")
    assert body["StreamNames"] == []
    assert body["HasMoreStreams"] is False
    assert_request_id(headers)


def test_malformed_json_is_a_serialization_exception(endpoint, kinesis):
    status, headers, body = raw(endpoint, "Kinesis_20131202.CreateStream", b'{"StreamName": "half", "ShardCount": 1')
    assert status == 400
    assert error_type(body) == "SerializationException"
    assert_request_id(headers)
    assert kinesis.list_streams()["StreamNames"] == []


def test_wrong_json_types_are_a_serialization_exception(endpoint, kinesis):
    status, headers, body = raw(endpoint, "Kinesis_20131202.CreateStream", b'{"StreamName": 5, "ShardCount": 1}')
    assert status == 400
    assert error_type(body) == "SerializationException"
    status, headers, body = raw(endpoint, "Kinesis_20131202.CreateStream", b'{"StreamName": "s", "ShardCount": "one"}')
    assert status == 400
    assert error_type(body) == "SerializationException"
    assert_request_id(headers)
    assert kinesis.list_streams()["StreamNames"] == []


def test_unknown_operation(endpoint, kinesis):
    status, headers, body = raw(endpoint, "Kinesis_20131202.MakeCoffee", b"{}")
    assert status == 400
    assert error_type(body) == "UnknownOperationException"
    assert_request_id(headers)
    status, headers, body = raw(endpoint, "NotAService.CreateStream", b'{"StreamName": "x", "ShardCount": 1}')
    assert status == 400
    assert error_type(body) == "UnknownOperationException"
    assert kinesis.list_streams()["StreamNames"] == []


def test_missing_authentication_token(endpoint, kinesis):
    status, headers, body = raw(endpoint, "Kinesis_20131202.CreateStream",
                                b'{"StreamName": "unsigned", "ShardCount": 1}', authorization=None)
    assert status == 400
    assert error_type(body) == "MissingAuthenticationTokenException"
    assert error_message(body) == "Missing Authentication Token"
    assert_request_id(headers)
    assert kinesis.list_streams()["StreamNames"] == []


def test_refused_requests_leave_records_unchanged(endpoint, kinesis):
    name = unique_name("untouched")
    create_active(kinesis, name, 1)
    kept = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"kept")
    put_body = json.dumps({"StreamName": name, "PartitionKey": "k", "Data": "ZHJvcHBlZA=="}).encode()
    assert raw(endpoint, "Kinesis_20131202.PutRecord", put_body, authorization=None)[0] == 400
    assert raw(endpoint, "Kinesis_20131202.PutRecord", put_body[:-3])[0] == 400
    assert raw(endpoint, "Kinesis_20131202.PutRecordz", put_body)[0] == 400
    bad_key = json.dumps({"StreamName": name, "PartitionKey": "", "Data": "ZHJvcHBlZA=="}).encode()
    status, _, body = raw(endpoint, "Kinesis_20131202.PutRecord", bad_key)
    assert (status, error_type(body)) == (400, "ValidationException")
    bad_blob = json.dumps({"StreamName": name, "PartitionKey": "k", "Data": "not base64!"}).encode()
    status, _, body = raw(endpoint, "Kinesis_20131202.PutRecord", bad_blob)
    assert (status, error_type(body)) == (400, "SerializationException")
    batch = json.dumps({"StreamName": name, "Records": [{"PartitionKey": "k", "Data": "ZHJvcHBlZA=="},
                                                        {"PartitionKey": "", "Data": "ZHJvcHBlZA=="}]}).encode()
    status, _, body = raw(endpoint, "Kinesis_20131202.PutRecords", batch)
    assert (status, error_type(body)) == (400, "ValidationException")
    records = read_available(kinesis, iterator(kinesis, name, "shardId-000000000000"))
    assert [(r["SequenceNumber"], r["Data"]) for r in records] == [(kept["SequenceNumber"], b"kept")]


def test_validation_messages(endpoint):
    unchecked = client(endpoint, validate=False)  # let botocore send what it would refuse
    with pytest.raises(ClientError) as excinfo:
        unchecked.create_stream(StreamName="x y", ShardCount=1)
    assert error_of(excinfo) == (
        "ValidationException",
        "1 validation error detected: Value 'x y' at 'streamName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    with pytest.raises(ClientError) as excinfo:
        unchecked.create_stream(StreamName="ok", ShardCount=0)
    assert error_of(excinfo) == (
        "ValidationException",
        "1 validation error detected: Value '0' at 'shardCount' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1")

    long_name = "a" * 129
    with pytest.raises(ClientError) as excinfo:
        unchecked.describe_stream_summary(StreamName=long_name)
    assert error_of(excinfo) == (
        "ValidationException",
        f"1 validation error detected: Value '{long_name}' at 'streamName' failed to satisfy constraint: "
        "Member must have length less than or equal to 128")

    with pytest.raises(ClientError) as excinfo:
        unchecked.create_stream(StreamName="x y", ShardCount=0)
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    prefix = "2 validation errors detected: "
    assert message.startswith(prefix), message
    assert sorted(message[len(prefix):].split("; ")) == sorted([
        "Value 'x y' at 'streamName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
        "Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1",
    ])

    with pytest.raises(ClientError) as excinfo:
        unchecked.list_streams(Limit=0)
    assert error_of(excinfo) == (
        "ValidationException",
        "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1")
    with pytest.raises(ClientError) as excinfo:
        unchecked.get_records(ShardIterator="anything", Limit=10001)
    assert error_of(excinfo) == (
        "ValidationException",
        "1 validation error detected: Value '10001' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 10000")
    assert unchecked.list_streams()["StreamNames"] == []


def test_request_ids_on_success_and_error(kinesis):
    seen = set()
    response = kinesis.list_streams()
    seen.add(response["ResponseMetadata"]["RequestId"])
    assert response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-requestid") == response["ResponseMetadata"]["RequestId"]
    for _ in range(3):
        with pytest.raises(ClientError) as excinfo:
            kinesis.describe_stream_summary(StreamName=unique_name("none"))
        request_id = excinfo.value.response["ResponseMetadata"]["RequestId"]
        assert request_id
        seen.add(request_id)
    assert len(seen) == 4, "every response has its own request id"

"""Hostile input, table-driven from the service models: for every operation of Kinesis and
Firehose, bodies that are malformed, of the wrong type member by member, over the model's
limits, absurdly nested or not UTF-8, in JSON and in CBOR. Each must be refused with an
AWS-shaped error (4xx, ``__type``, a message, a request id), never a 5xx, a dropped
connection or a hang; the server stays up, and records stored before are untouched.

The expected error classes are AWS's: a body that does not parse, or a member of the wrong
type, is a ``SerializationException``; a well-typed member outside the model's constraints is
a ``ValidationException`` (or, for operations that look a resource up first, the lookup's
error). The tables come from ``model/*.json`` so a new operation is covered the day the model
is regenerated."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import socket
import time
import struct
import urllib.parse

import pytest

from kinesis_util import create_active, iterator, read_available, unique_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SERVICES = {
    "Kinesis_20131202": os.path.join(ROOT, "model", "kinesis-2013-12-02.json"),
    "Firehose_20150804": os.path.join(ROOT, "model", "firehose-2015-08-04.json"),
}

AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kinesis/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
    "Signature=0000000000000000000000000000000000000000000000000000000000000000"
)

JSON = "application/x-amz-json-1.1"
CBOR = "application/x-amz-cbor-1.1"


def load_model(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def operations():
    for prefix, path in SERVICES.items():
        model = load_model(path)
        for name in sorted(model["operations"]):
            yield prefix, name, model


# ---- a minimal CBOR encoder (RFC 8949 major types 0-5, 7), enough to send typed bodies ----

def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    if n < 0x100000000:
        return bytes([major << 5 | 26]) + struct.pack(">I", n)
    return bytes([major << 5 | 27]) + struct.pack(">Q", n)


def cbor(value) -> bytes:
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if value is None:
        return b"\xf6"
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, str):
        data = value.encode()
        return _head(3, len(data)) + data
    if isinstance(value, list):
        return _head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        return _head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(value)


def uncbor(data: bytes):
    """Decodes one CBOR item (the subset error bodies use); returns (value, rest)."""
    major, info, data = data[0] >> 5, data[0] & 31, data[1:]
    if major == 7:
        return {20: False, 21: True, 22: None}[info], data
    if info < 24:
        n = info
    else:
        size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        n, data = int.from_bytes(data[:size], "big"), data[size:]
    if major == 0:
        return n, data
    if major == 1:
        return -1 - n, data
    if major in (2, 3):
        raw_value, data = data[:n], data[n:]
        return (raw_value if major == 2 else raw_value.decode()), data
    if major == 4:
        items = []
        for _ in range(n):
            item, data = uncbor(data)
            items.append(item)
        return items, data
    if major == 5:
        entries = {}
        for _ in range(n):
            key, data = uncbor(data)
            entries[key], data = uncbor(data)
        return entries, data
    raise ValueError(f"unsupported CBOR major type {major}")


# ---- values of the wrong type for each shape type ----

WRONG = {
    "string": [12345, True, ["s"], {"a": "b"}],
    "blob": [12345, True, ["s"], {"a": "b"}],
    # AWS floors decimals and clamps integers to the Java type's range (kinesalite's
    # findings, kept by wire::typecheck), so those are checked as "no server error" below.
    "integer": ["12", True, [1], {"a": 1}],
    "long": ["12", True, [1], {"a": 1}],
    # AWS reads the strings true/yes/1 and false/no/0 as booleans; other strings are refused.
    "boolean": ["maybe", 1, [True], {"a": True}],
    "timestamp": [True, ["2026"], {"a": 1}, "not a time"],
    "list": ["s", 1, True, {"a": 1}],
    "map": ["s", 1, True, [1]],
    "structure": ["s", 1, True, [1]],
}


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened if the server closes it after an error."""

    def __init__(self, endpoint: str):
        url = urllib.parse.urlparse(endpoint)
        self.host, self.port = url.hostname, url.port
        self.conn = None

    def send(self, target: str, body: bytes, content_type: str = JSON):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        headers = {
            "Content-Type": content_type,
            "X-Amz-Target": target,
            "Authorization": AUTHORIZATION,
            "X-Amz-Date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        }
        try:
            self.conn.request("POST", "/", body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError) as error:
            self.close()
            raise AssertionError(f"{target}: the connection failed ({error!r}) for body {body[:200]!r}")
        headers = {k.lower(): v for k, v in response.getheaders()}
        if headers.get("connection", "").lower() == "close":
            self.close()
        return response.status, headers, data

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def parse_error(status: int, headers: dict, data: bytes, content_type: str) -> tuple[str, str]:
    assert headers.get("x-amzn-requestid"), f"no request id on a {status}: {headers}"
    if content_type == CBOR:
        assert headers.get("content-type", "").startswith(CBOR), headers
        body, rest = uncbor(data)
        assert rest == b"", f"trailing bytes after the CBOR error body: {data!r}"
    else:
        body = json.loads(data)
    assert isinstance(body, dict) and "__type" in body, f"not an AWS error body: {data[:300]!r}"
    kind = body["__type"].split("#")[-1]
    message = body.get("message", body.get("Message"))
    # AWS sends a body that does not parse back as a bare {"__type": "SerializationException"}.
    assert isinstance(message, str) or kind == "SerializationException", f"no message in {body}"
    return kind, message or ""


def refused(conn: Connection, target: str, body: bytes, content_type: str = JSON,
            expect: set[str] | None = None) -> str:
    status, headers, data = conn.send(target, body, content_type)
    assert 400 <= status < 500, f"{target}: status {status} for {body[:200]!r}: {data[:300]!r}"
    kind, _ = parse_error(status, headers, data, content_type)
    if expect is not None:
        assert kind in expect, f"{target}: {kind} for {body[:200]!r}, expected one of {expect}"
    return kind


def not_a_server_error(conn: Connection, target: str, body: bytes, content_type: str = JSON) -> int:
    status, headers, data = conn.send(target, body, content_type)
    assert status < 500, f"{target}: status {status} for {body[:200]!r}: {data[:300]!r}"
    if status >= 400:
        parse_error(status, headers, data, content_type)
    return status


def members(model: dict, operation: str) -> tuple[dict, list[str]]:
    input_ref = model["operations"][operation].get("input")
    if input_ref is None:
        return {}, []
    shape = model["shapes"][input_ref["shape"]]
    return shape.get("members", {}), shape.get("required", [])


def plausible(model: dict, shape_name: str, depth: int = 0):
    """A well-typed value for a shape (not necessarily valid), used to fill the other members."""
    shape = model["shapes"][shape_name]
    kind = shape["type"]
    if kind == "string":
        if "enum" in shape:
            return shape["enum"][0]
        return "a" * max(1, shape.get("min", 1))
    if kind == "blob":
        return "AAAA"
    if kind in ("integer", "long"):
        return int(shape.get("min", 1))
    if kind in ("double", "float"):
        return 1.0
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return 1_700_000_000
    if kind == "list":
        return [] if depth > 3 else [plausible(model, shape["member"]["shape"], depth + 1)]
    if kind == "map":
        return {}
    if kind == "structure":
        if depth > 3:
            return {}
        return {m: plausible(model, ref["shape"], depth + 1)
                for m, ref in shape.get("members", {}).items() if m in shape.get("required", [])}
    return None


@pytest.fixture(scope="module")
def conn(server):
    c = Connection(server.endpoint)
    yield c
    c.close()


@pytest.mark.parametrize("prefix,operation,model", list(operations()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_operation_refuses_hostile_bodies(endpoint, conn, prefix, operation, model):
    target = f"{prefix}.{operation}"
    serialization = {"SerializationException"}

    # Bodies that are not a JSON object at all.
    for body in (b"{", b"[]", b"\"s\"", b"12", b"null", b"{\"a\":", b"\xff\xfe\x00",
                 b"{" * 100_000, b"[" * 100_000, b"{\"StreamName\": \"\xff\xfe\"}"):
        refused(conn, target, body, expect=serialization)
    # Duplicate members and trailing garbage.
    refused(conn, target, b"{} {}", expect=serialization)
    # CBOR: garbage, truncation, a wrong top-level type, absurd lengths, nesting.
    for body in (b"\xff", b"\xa1\x61", cbor([1, 2]), cbor("s"), b"\xbb" + b"\xff" * 8,
                 b"\x5b" + b"\xff" * 8, b"\x81" * 100_000, b"\x9f" * 100_000):
        refused(conn, target, body, content_type=CBOR, expect=serialization)

    shapes, required = members(model, operation)
    base = {m: plausible(model, shapes[m]["shape"]) for m in required}
    for member, ref in shapes.items():
        shape = model["shapes"][ref["shape"]]
        for wrong in WRONG.get(shape["type"], []):
            if shape["type"] == "timestamp" and isinstance(wrong, str):
                # JSON 1.1 timestamps are epoch seconds; a string is a type error too, but
                # some SDKs send ISO strings that AWS accepts, so only check it is no 5xx.
                not_a_server_error(conn, target, json.dumps({**base, member: wrong}).encode())
                continue
            refused(conn, target, json.dumps({**base, member: wrong}).encode(), expect=serialization)
            refused(conn, target, cbor({**base, member: wrong}), content_type=CBOR, expect=serialization)
        # Over the model's limits: AWS validates before it acts.
        if shape["type"] == "string" and "max" in shape and shape["max"] <= 1_000_000:
            long_value = "a" * (shape["max"] + 1)
            not_a_server_error(conn, target, json.dumps({**base, member: long_value}).encode())
        if shape["type"] in ("integer", "long"):
            for number in (-(2 ** 63), 2 ** 63 - 1, 2 ** 64, 10 ** 30, -1, 0, 1.5, 1e308):
                not_a_server_error(conn, target, json.dumps({**base, member: number}).encode())
        if shape["type"] == "list" and "max" in shape and shape["max"] <= 10_000:
            item = plausible(model, shape["member"]["shape"])
            too_many = [item] * (shape["max"] + 1)
            not_a_server_error(conn, target, json.dumps({**base, member: too_many}).encode())
    # Unknown members are ignored as AWS does; the request must still not be a server error.
    not_a_server_error(conn, target, json.dumps({**base, "NoSuchMember": 1}).encode())
    if required:
        # A missing required member is refused before any lookup.
        missing = dict(base)
        missing.pop(required[0])
        refused(conn, target, json.dumps(missing).encode())

    status, _, _ = conn.send("Kinesis_20131202.ListStreams", b"{}")
    assert status == 200, "the server stopped answering"


def test_hostile_bodies_leave_stored_records_untouched(endpoint, conn, kinesis):
    name = unique_name("hostile")
    create_active(kinesis, name, 1)
    kept = [kinesis.put_record(StreamName=name, PartitionKey=f"k{i}", Data=f"kept-{i}".encode())
            for i in range(5)]
    model = load_model(SERVICES["Kinesis_20131202"])
    for operation in ("PutRecord", "PutRecords", "DeleteStream", "SplitShard", "MergeShards",
                      "DecreaseStreamRetentionPeriod", "UpdateShardCount", "StartStreamEncryption"):
        target = f"Kinesis_20131202.{operation}"
        shapes, _ = members(model, operation)
        for member, ref in shapes.items():
            if member in ("StreamName", "StreamARN", "StreamId"):
                continue
            for wrong in WRONG.get(model["shapes"][ref["shape"]]["type"], [])[:2]:
                refused(conn, target, json.dumps({"StreamName": name, member: wrong}).encode(),
                        expect={"SerializationException"})
        refused(conn, target, json.dumps({"StreamName": name}).encode()[:-1],
                expect={"SerializationException"})
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["OpenShardCount"] == 1
    assert summary["RetentionPeriodHours"] == 24
    records = read_available(kinesis, iterator(kinesis, name, "shardId-000000000000"))
    assert [(r["SequenceNumber"], r["Data"]) for r in records] == \
        [(k["SequenceNumber"], f"kept-{i}".encode()) for i, k in enumerate(kept)]


def _raw_socket_request(endpoint: str, body_len: int, target: str = "Kinesis_20131202.PutRecord"):
    url = urllib.parse.urlparse(endpoint)
    s = socket.create_connection((url.hostname, url.port), timeout=15)
    s.sendall(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
        b"X-Amz-Target: " + target.encode() + b"\r\nAuthorization: " + AUTHORIZATION.encode() +
        b"\r\nX-Amz-Date: 20260101T000000Z\r\nContent-Length: " + str(body_len).encode() + b"\r\n\r\n")
    return s


def test_unicode_oversized_truncated_and_slow_uploads(endpoint, conn, kinesis):
    name = unique_name("uploads")
    create_active(kinesis, name, 1)
    target = "Kinesis_20131202.PutRecord"
    # Control characters and unicode: refused where the model's patterns forbid them, stored
    # exactly where they are allowed (partition keys are any unicode).
    for bad_name in (name + "\u0000", name + "\u0007", name + "\u200b", "\U0001F600", name + "\n"):
        refused(conn, target, json.dumps({"StreamName": bad_name, "PartitionKey": "k", "Data": "AAAA"}).encode(),
                expect={"ValidationException"})
    key = "k\u0000\u0007\u200b\ud7ff\U0001F600"
    status, _, data = conn.send(target, json.dumps({"StreamName": name, "PartitionKey": key, "Data": "AAAA"}).encode())
    assert status == 200, data
    # Over the body limit: refused before it is read whole.
    status, headers, data = conn.send(target, b'{"StreamName":"' + name.encode() + b'","PartitionKey":"k","Data":"'
                                      + b"A" * (17 * 1024 * 1024) + b'"}')
    assert status == 413
    assert parse_error(status, headers, data, JSON)[0] == "RequestEntityTooLargeException"
    conn.close()
    # Truncated: the client promises 1,000 bytes, sends 20 and goes away.
    s = _raw_socket_request(endpoint, 1000)
    s.sendall(b'{"StreamName": "' + name.encode()[:4])
    s.close()
    # Slow: a body trickled in over a second and a half still counts once complete.
    body = json.dumps({"StreamName": name, "PartitionKey": "slow", "Data": "c2xvdw=="}).encode()
    s = _raw_socket_request(endpoint, len(body))
    for i in range(0, len(body), 8):
        s.sendall(body[i:i + 8])
        time.sleep(0.1)  # the pace of the upload itself, not a wait for the server
    reply = s.recv(65536)
    s.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    records = read_available(kinesis, iterator(kinesis, name, "shardId-000000000000"))
    assert [(r["PartitionKey"], r["Data"]) for r in records] == [(key, b"\x00\x00\x00"), ("slow", b"slow")]

"""Thousands of connections: idle ones, slow ones that never finish their headers, and many
clients sending at once. The server keeps serving everyone else, answers every complete
request with a response (success or an AWS-shaped error), keeps its memory bounded, and is
fine once they are gone."""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import socket
import urllib.parse

from harness import rss_bytes, wait_until
from kinesis_util import client, create_active, iterator, read_available, unique_name

# Connections held open at once (bounded by the hard open-files limit of this machine).
CONNECTIONS_WANTED = 3000
# Concurrent clients each sending one PutRecord on its own connection.
SENDERS = 1000
# What the server may use while holding them: a few KiB per connection plus its baseline.
RSS_MAX_BYTES = 400 * 1024 * 1024


def raise_own_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_open_files(pid: int) -> int:
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_thousands_of_idle_and_slow_connections(make_server):
    limit = raise_own_limit()
    # The server raises its own soft limit to the hard one at start (it inherits ours here).
    server = make_server()
    pid = server.process.pid
    count = min(CONNECTIONS_WANTED, limit - 300)
    assert count >= 500, f"the open-files limit ({limit}) is too low for this test"
    kinesis = client(server.endpoint)
    name = unique_name("crowd")
    create_active(kinesis, name, 1)

    url = urllib.parse.urlparse(server.endpoint)
    held: list[socket.socket] = []
    try:
        for i in range(count):
            s = socket.create_connection((url.hostname, url.port), timeout=10)
            if i % 2:
                # Slowloris: a request line and half a header, never finished.
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_2013")
            held.append(s)
        # The server has accepted them all (one descriptor each) ...
        wait_until(lambda: server_open_files(pid) >= count, 30, f"{count} accepted connections")
        # ... and still serves a normal client, writes and reads alike.
        put = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"through the crowd")
        records = read_available(kinesis, iterator(kinesis, name, "shardId-000000000000"))
        assert [r["SequenceNumber"] for r in records] == [put["SequenceNumber"]]
        rss = rss_bytes(pid)
        assert rss < RSS_MAX_BYTES, f"RSS {rss} bytes with {count} connections open"
    finally:
        for s in held:
            s.close()
    # Once they are gone, the descriptors are released and the server goes on.
    wait_until(lambda: server_open_files(pid) < 200, 30, "connections released")
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    assert server.process.poll() is None


async def _put_once(host: str, port: int, body: bytes) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = (
            b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-amz-json-1.1\r\n"
            b"X-Amz-Target: Kinesis_20131202.PutRecord\r\n"
            b"Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kinesis/aws4_request, "
            b"SignedHeaders=host, Signature=00\r\nX-Amz-Date: 20260101T000000Z\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (host.encode(), len(body))
        ) + body
        writer.write(request)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 60)
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = await asyncio.wait_for(reader.readline(), 60)
            if line in (b"\r\n", b""):
                break
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        data = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 60)
        return status, json.loads(data) if data else {}
    finally:
        writer.close()


def test_a_thousand_clients_at_once_all_get_answers(make_server):
    raise_own_limit()
    server = make_server()
    kinesis = client(server.endpoint)
    name = unique_name("stampede")
    create_active(kinesis, name, 4)
    url = urllib.parse.urlparse(server.endpoint)

    async def stampede():
        bodies = [json.dumps({"StreamName": name, "PartitionKey": f"key-{i}",
                              "Data": base64.b64encode(f"record-{i}".encode()).decode()}).encode()
                  for i in range(SENDERS)]
        return await asyncio.gather(*(_put_once(url.hostname, url.port, b) for b in bodies))

    answers = asyncio.run(stampede())
    accepted = 0
    for status, body in answers:
        if status == 200:
            accepted += 1
            assert body["ShardId"].startswith("shardId-")
        else:
            # Over the shards' write limits is AWS's answer, and the SDKs retry it.
            assert status == 400 and body["__type"] == "ProvisionedThroughputExceededException", (status, body)
    assert accepted > 0
    # Every accepted record is stored, exactly once.
    stored = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        stored += read_available(kinesis, iterator(kinesis, name, shard["ShardId"]))
    assert len(stored) == accepted
    assert len({r["Data"] for r in stored}) == accepted

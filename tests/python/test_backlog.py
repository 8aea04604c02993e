"""A big backlog read by many consumers at once: every consumer gets every record, the server
keeps its memory bounded (GetRecords answers in flight are budgeted, see
RESPONSE_BYTES_IN_FLIGHT_MAX in crates/server), and a consumer the server is too busy for
gets ServiceUnavailableException (which the AWS SDKs retry), never a 500 or a hang."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from harness import rss_bytes
from kinesis_util import client, create_active, list_all_shards, unique_name

SHARDS = 20
# Records of 1 MiB per shard: each GetRecords answer is up to 10 MiB of records, about
# 13 MiB of JSON.
RECORDS_PER_SHARD = 8
RECORD_BYTES = 1024 * 1024 - 64
# Consumers reading at once, several per shard: without the budget each held a whole
# answer in the server's memory while boto3 parsed it (about 13 MiB per consumer).
CONSUMERS = 200
# Baseline (about 50 MiB), the 128 MiB budget, and room for the allocator. Unbudgeted, this
# test took the server to 435 MiB; budgeted, 246 MiB.
RSS_MAX_BYTES = 320 * 1024 * 1024
# A consumer that has not read its backlog by then fails the test (a hang is a failure).
CONSUME_DEADLINE_S = 180


def test_many_consumers_of_a_big_backlog_keep_memory_bounded(make_server):
    server = make_server(["--shard-throughput", "unlimited"])
    pid = server.process.pid
    kinesis = client(server.endpoint, paced=False)
    name = unique_name("backlog")
    create_active(kinesis, name, SHARDS)
    shards = list_all_shards(kinesis, name)
    assert len(shards) == SHARDS

    # The backlog: RECORDS_PER_SHARD records on every shard, each distinct.
    def load(shard: dict) -> list[tuple[str, bytes]]:
        c = client(server.endpoint, paced=False)
        hash_key = shard["HashKeyRange"]["StartingHashKey"]
        written = []
        for first in range(0, RECORDS_PER_SHARD, 4):
            batch = [shard["ShardId"].encode() + b"/%d/" % i + os.urandom(16) * (RECORD_BYTES // 16)
                     for i in range(first, min(first + 4, RECORDS_PER_SHARD))]
            answer = c.put_records(StreamName=name, Records=[
                {"Data": data, "PartitionKey": "k", "ExplicitHashKey": hash_key} for data in batch])
            assert answer["FailedRecordCount"] == 0, answer
            assert {r["ShardId"] for r in answer["Records"]} == {shard["ShardId"]}
            written += [(r["SequenceNumber"], data) for r, data in zip(answer["Records"], batch)]
        return written

    with ThreadPoolExecutor(8) as pool:
        backlog = dict(zip((s["ShardId"] for s in shards), pool.map(load, shards)))

    peak = [rss_bytes(pid)]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(pid))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def consume(i: int) -> tuple[str, list[tuple[str, bytes]], int]:
        c = client(server.endpoint, paced=False)
        shard_id = shards[i % SHARDS]["ShardId"]
        it = c.get_shard_iterator(StreamName=name, ShardId=shard_id,
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        got: list[tuple[str, bytes]] = []
        busy = 0
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        while len(got) < RECORDS_PER_SHARD:
            assert time.monotonic() < deadline, f"{shard_id}: {len(got)} records, {busy} busy answers"
            try:
                answer = c.get_records(ShardIterator=it, Limit=10000)
            except Exception as e:  # noqa: BLE001 - only the server's busy answer is expected
                code, _ = error_of_exception(e)
                assert code == "ServiceUnavailableException", (code, e)
                busy += 1
                continue
            got += [(r["SequenceNumber"], r["Data"]) for r in answer["Records"]]
            it = answer["NextShardIterator"]
        return shard_id, got, busy

    try:
        with ThreadPoolExecutor(CONSUMERS) as pool:
            results = list(pool.map(consume, range(CONSUMERS)))
    finally:
        done.set()
        watcher.join()

    # Every consumer read its shard's backlog exactly, in order.
    for shard_id, got, _ in results:
        assert got == backlog[shard_id], f"{shard_id}: {len(got)} records differ from the backlog"
    assert peak[0] < RSS_MAX_BYTES, f"server peak RSS {peak[0] >> 20} MiB with {CONSUMERS} consumers"
    # The server still serves once they are gone.
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    assert server.process.poll() is None


def error_of_exception(e: Exception) -> tuple[str, str]:
    response = getattr(e, "response", None)
    if response is None:
        raise e
    error = response.get("Error", {})
    return error.get("Code", ""), error.get("Message", "")

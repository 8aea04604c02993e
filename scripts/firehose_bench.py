#!/usr/bin/env python3
"""Firehose load and latency measurement against a running millrace (embedded buckets).

    scripts/firehose_bench.py --endpoint http://127.0.0.1:4567 --data-dir ./millrace-data

1. Ingest throughput: N client threads send the same pre-encoded PutRecordBatch body
   (500 records x RECORD_BYTES) over keep-alive connections for DURATION seconds, so the
   client costs little more than the socket writes; reports records/s and MiB/s accepted
   (every record acknowledged after fsync), then how long delivery takes to catch up.
2. Ingest-to-object latency: with IntervalInSeconds 0 (zero buffering), one PutRecord at a
   time; the time from the answer to the object appearing under DATA_DIR/buckets, p50/p99.

Uses only the standard library. Any credentials are accepted in development mode; the
Authorization header below only has to be present.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import threading
import time
import urllib.parse
import uuid

TARGET = "Firehose_20150804."
AUTH = ("AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/firehose/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=0")


def call(conn: http.client.HTTPConnection, op: str, body: bytes) -> dict:
    conn.request("POST", "/", body=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET + op,
        "Authorization": AUTH, "X-Amz-Date": "20260101T000000Z"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{op}: {response.status} {data[:300]!r}")
    return json.loads(data) if data else {}


def create(conn, name: str, bucket: str, size_mb: int, interval_s: int) -> None:
    call(conn, "CreateDeliveryStream", json.dumps({
        "DeliveryStreamName": name,
        "ExtendedS3DestinationConfiguration": {
            "BucketARN": f"arn:aws:s3:::{bucket}", "RoleARN": "arn:aws:iam::000000000000:role/bench",
            "CompressionFormat": "UNCOMPRESSED",
            "BufferingHints": {"SizeInMBs": size_mb, "IntervalInSeconds": interval_s}}}).encode())


def files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        out.extend(os.path.join(dirpath, n) for n in names if not n.startswith(".millrace-"))
    return out


def throughput(host: str, port: int, data_dir: str, threads: int, duration_s: float, record_bytes: int) -> None:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    conn = http.client.HTTPConnection(host, port, timeout=60)
    create(conn, name, name, 128, 60)
    record = base64.b64encode(b"x" * (record_bytes - 1) + b"\n").decode()
    body = json.dumps({"DeliveryStreamName": name, "Records": [{"Data": record}] * 500}).encode()
    accepted = [0] * threads
    stop_at = time.monotonic() + duration_s

    def worker(idx: int) -> None:
        c = http.client.HTTPConnection(host, port, timeout=60)
        while time.monotonic() < stop_at:
            answer = call(c, "PutRecordBatch", body)
            accepted[idx] += 500 - answer["FailedPutCount"]

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    total = sum(accepted)
    print(f"ingest: {total} records of {record_bytes} B in {elapsed:.1f} s = {total / elapsed:,.0f} records/s, "
          f"{total * record_bytes / elapsed / 2**20:.1f} MiB/s ({threads} connections, PutRecordBatch x500)")
    # Delivery catches up: objects of 128 MiB (size hint), the rest when the interval passes.
    root = os.path.join(data_dir, "buckets", name)
    want = total * record_bytes
    caught_up = time.monotonic()
    while True:
        have = sum(os.path.getsize(f) for f in files(root)) if os.path.isdir(root) else 0
        if have >= want - 128 * 2**20:
            break
        if time.monotonic() - caught_up > 300:
            print(f"delivery did not catch up: {have} of {want} bytes")
            return
        time.sleep(0.1)
    print(f"delivery: all but the last (partial) 128 MiB buffer in objects {time.monotonic() - caught_up:.1f} s "
          f"after the load stopped")


def latency(host: str, port: int, data_dir: str, n: int) -> None:
    name = f"lat-{uuid.uuid4().hex[:8]}"
    conn = http.client.HTTPConnection(host, port, timeout=60)
    create(conn, name, name, 1, 0)
    root = os.path.join(data_dir, "buckets", name)
    samples = []
    for i in range(n):
        before = len(files(root)) if os.path.isdir(root) else 0
        body = json.dumps({"DeliveryStreamName": name,
                           "Record": {"Data": base64.b64encode(f"{i}\n".encode()).decode()}}).encode()
        sent = time.monotonic()
        call(conn, "PutRecord", body)
        answered = time.monotonic()
        while (len(files(root)) if os.path.isdir(root) else 0) <= before:
            time.sleep(0.0005)
        samples.append((time.monotonic() - answered) * 1000)
        _ = sent
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"ingest-to-object (IntervalInSeconds 0, embedded bucket): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"max {samples[-1]:.1f} ms over {n} records")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", default="http://127.0.0.1:4567")
    parser.add_argument("--data-dir", default="./millrace-data")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()
    url = urllib.parse.urlparse(args.endpoint)
    throughput(url.hostname, url.port, args.data_dir, args.threads, args.duration, args.record_bytes)
    latency(url.hostname, url.port, args.data_dir, args.latency_samples)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Records per second an event source mapping delivers to a function that answers at once.

Starts `millrace` (MILLRACE_BIN, default target/release/millrace) on a temporary data
directory with unlimited shard throughput, an HTTP function in this process that counts
records and answers `{}` immediately, preloads a stream, then creates a TRIM_HORIZON mapping
and times how long the backlog takes to reach the function.

    .venv/bin/python scripts/bench_functions.py [--records 200000] [--shards 4] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3

ARN = "arn:aws:lambda:us-east-1:000000000000:function:bench"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--record-bytes", type=int, default=100)
    args = parser.parse_args()

    count = [0]
    lock = threading.Lock()

    class Fn(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            event = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with lock:
                count[0] += len(event["Records"])
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    fn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fn)
    threading.Thread(target=fn.serve_forever, daemon=True).start()
    binary = os.environ.get("MILLRACE_BIN", "target/release/millrace")
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "millrace.toml")
        with open(config, "w") as f:
            f.write(f'[functions]\npoll_interval_ms = 100\n[[functions.function]]\narn = "{ARN}"\n'
                    f'url = "http://127.0.0.1:{fn.server_address[1]}/"\n')
        server = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                                   os.path.join(tmp, "data"), "--config", config,
                                   "--shard-throughput", "unlimited"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = server.stdout.readline()
            endpoint = "http://" + line.split()[-1]
            kw = dict(endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
            kinesis = boto3.client("kinesis", **kw)
            lam = boto3.client("lambda", **kw)
            kinesis.create_stream(StreamName="bench", ShardCount=args.shards)
            while kinesis.describe_stream_summary(StreamName="bench")["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
                time.sleep(0.05)
            payload = b"x" * args.record_bytes

            def put(start: int) -> None:
                client = boto3.client("kinesis", **kw)
                n = min(500, args.records - start)
                client.put_records(StreamName="bench", Records=[
                    {"PartitionKey": f"k{start + i}", "Data": payload} for i in range(n)])
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(put, range(0, args.records, 500)))
            started = time.monotonic()
            lam.create_event_source_mapping(
                FunctionName=ARN, StartingPosition="TRIM_HORIZON", BatchSize=args.batch_size,
                EventSourceArn="arn:aws:kinesis:us-east-1:000000000000:stream/bench")
            while count[0] < args.records:
                time.sleep(0.01)
                if time.monotonic() - started > 600:
                    sys.exit(f"timed out with {count[0]} of {args.records} records delivered")
            elapsed = time.monotonic() - started
            print(f"{args.records} records ({args.record_bytes} B, {args.shards} shards, BatchSize "
                  f"{args.batch_size}) delivered in {elapsed:.2f} s: {args.records / elapsed:,.0f} records/s")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Concurrent real-time 2 Mbit/s PutMedia uploads one Millrace node sustains.

Makes a 2 Mbit/s H.264 MKV with ffmpeg (a keyframe and a cluster every 2 s), starts
`millrace` (MILLRACE_BIN, default target/release/millrace) on a temporary data directory,
then for N = --start, 2N, ... runs N uploads at once, each to its own stream, each sending
every cluster at the moment its timecode says (real time, like a camera) with chunked
encoding on a raw socket while a second thread reads the acknowledgements. A round is
sustained when every fragment is PERSISTED, no ERROR comes, and the p99 time from a
cluster's last byte sent to its PERSISTED stays under --lag-ms. Prints one line a round and
the largest N sustained.

    .venv/bin/python scripts/bench_video.py [--seconds 20] [--start 4] [--max 256] [--lag-ms 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time

import boto3


def make_mkv(path: str, seconds: int) -> None:
    subprocess.run([
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M", "-maxrate", "2M",
        "-bufsize", "4M", "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50",
        "-sc_threshold", "0", "-bf", "0", "-f", "matroska", "-live", "1",
        "-cluster_time_limit", "10000", "-cluster_size_limit", "50000000", path,
    ], check=True)


def read_vint(data: bytes, at: int, strip: bool) -> tuple[int, int]:
    first = data[at]
    length = 8 - first.bit_length() + 1
    value = first & ((0xFF >> length) if strip else 0xFF)
    for b in data[at + 1:at + length]:
        value = (value << 8) | b
    return value, length


def split_clusters(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The header bytes and (timecode ms, cluster bytes) pairs of an ffmpeg live MKV."""
    at = data.find(b"\x1f\x43\xb6\x75")
    header, clusters = data[:at], []
    while at < len(data):
        id_, id_len = read_vint(data, at, strip=False)
        size, size_len = read_vint(data, at + id_len, strip=True)
        end = at + id_len + size_len + size
        if id_ == 0x1F43B675:
            body = data[at + id_len + size_len:end]
            pos = 0
            timecode = 0
            while pos < len(body):
                cid, cl = read_vint(body, pos, strip=False)
                csize, sl = read_vint(body, pos + cl, strip=True)
                if cid == 0xE7:
                    timecode = int.from_bytes(body[pos + cl + sl:pos + cl + sl + csize], "big")
                    break
                pos += cl + sl + csize
            clusters.append((timecode, data[at:end]))
        at = end
    return header, clusters


def upload(host: str, port: int, stream: str, header: bytes, clusters, result: dict) -> None:
    sock = socket.create_connection((host, port))
    sock.sendall((
        f"POST /putMedia HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
        f"x-amzn-stream-name: {stream}\r\nx-amzn-fragment-timecode-type: RELATIVE\r\n"
        f"x-amzn-producer-start-timestamp: {time.time():.3f}\r\n\r\n").encode())
    sent_at: dict[int, float] = {}
    lags: list[float] = []
    events: list[dict] = []

    def reader() -> None:
        buffer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buffer += chunk
            for match in re.finditer(rb"\{[^{}]*\}", buffer):
                ack = json.loads(match.group())
                events.append(ack)
                if ack.get("EventType") == "PERSISTED" and ack["FragmentTimecode"] in sent_at:
                    lags.append(time.monotonic() - sent_at[ack["FragmentTimecode"]])
            last = buffer.rfind(b"}")
            if last >= 0:
                buffer = buffer[last + 1:]

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()

    def chunk(data: bytes) -> None:
        sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    began = time.monotonic()
    chunk(header)
    for timecode, cluster in clusters:
        # A camera sends a cluster once its last frame exists: at its end time.
        due = began + (timecode + 2000) / 1000.0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        chunk(cluster)
        sent_at[timecode] = time.monotonic()
    sock.sendall(b"0\r\n\r\n")
    thread.join(timeout=60)
    sock.close()
    result["persisted"] = sum(1 for e in events if e.get("EventType") == "PERSISTED")
    result["errors"] = [e for e in events if e.get("EventType") == "ERROR"]
    result["lags"] = lags


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--start", type=int, default=4)
    parser.add_argument("--max", type=int, default=256)
    parser.add_argument("--lag-ms", type=float, default=1000.0)
    args = parser.parse_args()
    binary = os.environ.get("MILLRACE_BIN", "target/release/millrace")
    with tempfile.TemporaryDirectory() as tmp:
        mkv = os.path.join(tmp, "feed.mkv")
        make_mkv(mkv, args.seconds)
        data = open(mkv, "rb").read()
        header, clusters = split_clusters(data)
        mbits = len(data) * 8 / args.seconds / 1e6
        print(f"feed: {len(clusters)} clusters, {mbits:.2f} Mbit/s", flush=True)
        server = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(tmp, "data")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = server.stdout.readline()
            host, port = re.search(r"listening on (\S+):(\d+)", line).groups()
            port = int(port)
            endpoint = f"http://{host}:{port}"
            video = boto3.client("kinesisvideo", endpoint_url=endpoint, region_name="us-east-1",
                                 aws_access_key_id="x", aws_secret_access_key="x")
            best = 0
            n = args.start
            round_no = 0
            while n <= args.max:
                round_no += 1
                names = [f"bench-{round_no}-{i}" for i in range(n)]
                for name in names:
                    video.create_stream(StreamName=name, DataRetentionInHours=1)
                results = [dict() for _ in names]
                threads = [threading.Thread(target=upload,
                                            args=(host, port, name, header, clusters, result))
                           for name, result in zip(names, results)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                lags = sorted(l for r in results for l in r.get("lags", []))
                p99 = lags[int(len(lags) * 0.99) - 1] * 1000 if lags else float("inf")
                complete = all(r.get("persisted") == len(clusters) and not r.get("errors")
                               for r in results)
                ok = complete and p99 <= args.lag_ms
                print(f"{n} streams x {mbits:.2f} Mbit/s: persisted {'all' if complete else 'NOT all'}"
                      f", PERSISTED lag p50 {lags[len(lags) // 2] * 1000 if lags else 0:.0f} ms"
                      f" p99 {p99:.0f} ms -> {'sustained' if ok else 'NOT sustained'}", flush=True)
                if not ok:
                    break
                best = n
                n *= 2
            print(f"sustained: {best} concurrent {mbits:.2f} Mbit/s ingest streams")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

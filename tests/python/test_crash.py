"""Durability: an acknowledged write survives SIGKILL, and recovery survives a torn tail.

Writers record every record the server acknowledged; the server is SIGKILLed in the middle
of the load and restarted on the same data directory; every acknowledged record must come
back in order with the sequence number it was acknowledged with.

The torn-write tests cut the newest WAL file or log segment in the middle of its last
record, using the byte layouts documented in crates/log/src/format.rs:

    WAL frame       [len u32][crc32c u32][payload: len bytes]
    segment record  [len u32][crc32c u32][offset u64][timestamp_ms i64][payload: len bytes]
"""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from harness import wait_until
from kinesis_util import client, create_active, iterator, list_all_shards, read_available, unique_name

WRITERS_N = 4
BATCH_RECORDS_N = 50
ACKED_BEFORE_KILL_N = 10000
LOAD_TIMEOUT_S = 60.0
WAL_FRAME_HEADER_BYTES = 8
SEGMENT_RECORD_HEADER_BYTES = 24


class Writers:
    """Threads doing PutRecords in a loop until the connection fails; keeps what was acknowledged."""

    def __init__(self, endpoint: str, stream: str):
        self.endpoint = endpoint
        self.stream = stream
        self.lock = threading.Lock()
        self.acked: list[tuple[str, str, bytes]] = []  # (shard id, sequence number, data)
        self.connection_errors: list[str] = []
        self.server_errors: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(WRITERS_N)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def acked_n(self) -> int:
        with self.lock:
            return len(self.acked)

    def run(self, writer_idx: int) -> None:
        kinesis = client(self.endpoint)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        batch_idx = 0
        while time.monotonic() < deadline:
            entries = [{"PartitionKey": f"w{writer_idx}-{batch_idx}-{i}",
                        "Data": f"writer {writer_idx} batch {batch_idx} record {i} ".encode() + os.urandom(64)}
                       for i in range(BATCH_RECORDS_N)]
            try:
                response = kinesis.put_records(StreamName=self.stream, Records=entries)
            except ClientError as e:
                with self.lock:
                    self.server_errors.append(repr(e))
                return
            except Exception as e:  # the server went away: connection refused, reset, closed
                with self.lock:
                    self.connection_errors.append(repr(e))
                return
            with self.lock:
                for entry, result in zip(entries, response["Records"]):
                    if "ErrorCode" in result:
                        self.server_errors.append(f"{result['ErrorCode']}: {result.get('ErrorMessage')}")
                    else:
                        self.acked.append((result["ShardId"], result["SequenceNumber"], entry["Data"]))
            batch_idx += 1

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=LOAD_TIMEOUT_S)
            assert not t.is_alive(), "a writer did not stop after the server was killed"


def read_stream(kinesis, name: str) -> dict[str, list[dict]]:
    return {s["ShardId"]: read_available(kinesis, iterator(kinesis, name, s["ShardId"]), timeout_s=60)
            for s in list_all_shards(kinesis, name)}


def assert_all_acknowledged_present(acked: list[tuple[str, str, bytes]], stored: dict[str, list[dict]]) -> None:
    for shard_id, records in stored.items():
        seqs = [int(r["SequenceNumber"]) for r in records]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"{shard_id}: sequence numbers out of order"
    by_seq = {(shard_id, r["SequenceNumber"]): r["Data"] for shard_id, records in stored.items() for r in records}
    missing = [(shard, seq) for shard, seq, _ in acked if (shard, seq) not in by_seq]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged records are gone, e.g. {missing[:3]}"
    changed = [(shard, seq) for shard, seq, data in acked if by_seq[(shard, seq)] != data]
    assert not changed, f"{len(changed)} acknowledged records came back with other data, e.g. {changed[:3]}"


def test_acknowledged_records_survive_sigkill(make_server):
    server = make_server(["--shard-throughput", "unlimited"])
    name = unique_name("crash")
    create_active(client(server.endpoint), name, 4)

    writers = Writers(server.endpoint, name)
    writers.start()
    wait_until(lambda: writers.acked_n() >= ACKED_BEFORE_KILL_N or writers.server_errors, LOAD_TIMEOUT_S,
               f"{ACKED_BEFORE_KILL_N} acknowledged records")
    server.kill()
    writers.join()
    assert not writers.server_errors, f"the server refused writes under load: {writers.server_errors[:3]}"
    assert writers.connection_errors, "writers should have seen the server die"
    acked = list(writers.acked)
    assert len(acked) >= ACKED_BEFORE_KILL_N

    server.start()
    kinesis = client(server.endpoint)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["OpenShardCount"] == 4
    stored = read_stream(kinesis, name)
    assert_all_acknowledged_present(acked, stored)

    # New writes continue above everything stored, in every shard.
    starts = {s["ShardId"]: s["HashKeyRange"]["StartingHashKey"] for s in list_all_shards(kinesis, name)}
    for shard_id, records in stored.items():
        put = kinesis.put_record(StreamName=name, PartitionKey="after", ExplicitHashKey=starts[shard_id], Data=b"after")
        assert put["ShardId"] == shard_id
        if records:
            assert int(put["SequenceNumber"]) > int(records[-1]["SequenceNumber"])

    # A second crash with no load in flight loses nothing either.
    server.kill()
    server.start()
    again = read_stream(client(server.endpoint), name)
    assert_all_acknowledged_present(acked, again)
    assert sum(len(r) for r in again.values()) == sum(len(r) for r in stored.values()) + len(stored)


def test_clean_stop_exits_zero_and_keeps_everything(make_server):
    server = make_server()
    kinesis = client(server.endpoint)
    name = unique_name("clean")
    create_active(kinesis, name, 2, Tags={"kept": "yes"})
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=72)
    puts = [kinesis.put_record(StreamName=name, PartitionKey=f"k{i}", Data=f"v{i}".encode()) for i in range(50)]
    assert server.stop() == 0, f"SIGTERM should exit 0; log:\n{server.log_tail()}"
    server.start()
    kinesis = client(server.endpoint)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["RetentionPeriodHours"] == 72
    assert {t["Key"]: t["Value"] for t in kinesis.list_tags_for_stream(StreamName=name)["Tags"]} == {"kept": "yes"}
    stored = read_stream(kinesis, name)
    acked = [(p["ShardId"], p["SequenceNumber"], f"v{i}".encode()) for i, p in enumerate(puts)]
    assert_all_acknowledged_present(acked, stored)
    assert sum(len(r) for r in stored.values()) == 50


# ---- torn writes ----------------------------------------------------------------------

def newest(paths: list[Path]) -> Path:
    assert paths, "no files"
    return max(paths, key=lambda p: (p.parent.name, p.name))


def frame_starts(data: bytes, header_bytes: int) -> list[tuple[int, int]]:
    """(start, total length) of each complete frame from the start of ``data``."""
    frames = []
    pos = 0
    while pos + header_bytes <= len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        total = header_bytes + length
        if length == 0 or pos + total > len(data):
            break
        frames.append((pos, total))
        pos += total
    return frames


def tear_last_frame(path: Path, header_bytes: int) -> int:
    """Truncates ``path`` in the middle of its last frame; returns the number of frames before it."""
    data = path.read_bytes()
    frames = frame_starts(data, header_bytes)
    assert frames, f"{path} holds no complete frame ({len(data)} bytes)"
    start, total = frames[-1]
    cut = start + total // 2
    with open(path, "r+b") as f:
        f.truncate(cut)
    return len(frames) - 1


def read_checkpoint(log_dir: Path) -> tuple[int, dict[int, int]]:
    """(WAL position, {log id: active segment size}) of ``log/checkpoint``:
    [magic 8][wal_position u64][n_logs u64] n_logs x [log_id][end_offset][active_base_offset]
    [active_size_bytes][active_index_entries_n][last_timestamp_ms] (u64/i64 each) [crc32c u32]."""
    data = (log_dir / "checkpoint").read_bytes()
    assert data[:8] == b"MRLCKPT1", "unexpected checkpoint format"
    wal_position, n_logs = struct.unpack_from("<QQ", data, 8)
    sizes = {}
    for i in range(n_logs):
        log_id, _end, _base, active_size, _n_index, _ts = struct.unpack_from("<QQQQQq", data, 24 + 48 * i)
        sizes[log_id] = active_size
    return wal_position, sizes


def write_then(make_server, n: int, how: str):
    """Writes n records, one PutRecord (one WAL frame) each, then stops the server
    gracefully (``how="stop"``) or SIGKILLs it (``how="kill"``)."""
    server = make_server()
    kinesis = client(server.endpoint)
    name = unique_name("torn")
    create_active(kinesis, name, 1)
    puts = [kinesis.put_record(StreamName=name, PartitionKey="k", Data=f"record {i}".encode() * 10)
            for i in range(n)]
    if how == "stop":
        assert server.stop() == 0
    else:
        server.kill()
    return server, name, puts


def check_after_tear(server, name: str, puts: list[dict], intact_n: int) -> list:
    server.start()
    kinesis = client(server.endpoint)
    records = read_available(kinesis, iterator(kinesis, name, "shardId-000000000000"))
    served = [(r["SequenceNumber"], r["Data"]) for r in records]
    written = [(p["SequenceNumber"], f"record {i}".encode() * 10) for i, p in enumerate(puts)]
    assert served[:intact_n] == written[:intact_n], "every record before the tear is served unchanged"
    # The torn record is either recovered whole (from another copy) or gone; never garbled.
    assert served == written[:len(served)], "nothing after the tear is served unless it is intact"
    assert len(served) >= intact_n
    new = kinesis.put_record(StreamName=name, PartitionKey="k", Data=b"after the tear")
    assert int(new["SequenceNumber"]) > int(served[-1][0])
    again = read_available(kinesis, iterator(kinesis, name, "shardId-000000000000"))
    assert [(r["SequenceNumber"], r["Data"]) for r in again] == served + [(new["SequenceNumber"], b"after the tear")]
    return served


def newest_wal(server) -> Path:
    return newest(sorted((server.data_dir / "log" / "wal").glob("*.wal")))


def newest_segment(server) -> Path:
    segments = sorted((server.data_dir / "log" / "logs").glob("*/*.seg"))
    return newest([s for s in segments if s.stat().st_size > 0])


N_TORN = 20


def test_torn_wal_tail_after_clean_stop(make_server):
    server, name, puts = write_then(make_server, N_TORN, "stop")
    tear_last_frame(newest_wal(server), WAL_FRAME_HEADER_BYTES)
    check_after_tear(server, name, puts, N_TORN - 1)


def test_torn_segment_tail_after_clean_stop(make_server):
    """After a clean stop every segment byte was fsynced and checkpointed: a segment that
    is now shorter lost acknowledged data to the disk, not to a crash. Millrace refuses to
    start and names the file, rather than silently serving less than it acknowledged."""
    server, name, puts = write_then(make_server, N_TORN, "stop")
    segment = newest_segment(server)
    intact = tear_last_frame(segment, SEGMENT_RECORD_HEADER_BYTES)
    assert intact == N_TORN - 1, f"the newest segment should hold the {N_TORN} records"
    with pytest.raises(AssertionError, match="exited with 1 before it was ready"):
        server.start()
    log = server.log_tail()
    assert "corrupt data" in log and segment.name in log, log


def test_torn_wal_tail_after_sigkill(make_server):
    """The crash case: the WAL frame being written when the machine died is torn. Recovery
    replays every whole frame after the checkpoint and drops the torn one."""
    server, name, puts = write_then(make_server, N_TORN, "kill")
    wal_position, _ = read_checkpoint(server.data_dir / "log")
    wal = newest_wal(server)
    frames = frame_starts(wal.read_bytes(), WAL_FRAME_HEADER_BYTES)
    assert len(frames) >= N_TORN, f"{wal} should hold one frame per PutRecord"
    assert int(wal.stem) + frames[-1][0] >= wal_position, "the last frame should be past the checkpoint"
    tear_last_frame(wal, WAL_FRAME_HEADER_BYTES)
    served = check_after_tear(server, name, puts, N_TORN - 1)
    assert len(served) == N_TORN - 1, "the torn frame held the last record, and there is no other copy of it"


def test_torn_segment_tail_after_sigkill(make_server):
    """After a crash, segment bytes past the checkpoint are not trusted: recovery rebuilds
    them from the WAL, so a torn segment tail loses nothing."""
    server, name, puts = write_then(make_server, N_TORN, "kill")
    segment = newest_segment(server)
    _, active_sizes = read_checkpoint(server.data_dir / "log")
    checkpointed_bytes = active_sizes.get(int(segment.parent.name), 0)
    frames = frame_starts(segment.read_bytes(), SEGMENT_RECORD_HEADER_BYTES)
    assert frames and frames[-1][0] >= checkpointed_bytes, "the last record should be past the checkpoint"
    tear_last_frame(segment, SEGMENT_RECORD_HEADER_BYTES)
    served = check_after_tear(server, name, puts, N_TORN)
    assert len(served) == N_TORN

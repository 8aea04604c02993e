"""KCL 3 (the MultiLangDaemon from kclpy-ext) consuming a millrace stream through resharding.

Kinesis is millrace (HTTP/2 + CBOR, as KCL's async client speaks it), the lease table lives
in moto_server's DynamoDB, metrics are off. The Python record processor
(tests/kcl/record_processor.py) appends every record it processes to a file per shard.
The test puts records, splits a shard and then calls UpdateShardCount while the consumer
runs, puts more after each step, and waits until every record was processed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import ServerProcess, kcl_jars_dir, repo_root
from kinesis_util import client, create_active, is_open, list_all_shards, unique_name, wait_status

KCL_DIR = repo_root() / "tests" / "kcl"
FIRST_RECORDS_TIMEOUT_S = 180.0  # KCL creates its DynamoDB tables and takes leases first
ALL_RECORDS_TIMEOUT_S = 180.0
BATCH_N = 150
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves the machine


def processed(output_dir: Path) -> dict[str, dict]:
    """Every record the processor wrote, by sequence number (duplicates collapse)."""
    seen: dict[str, dict] = {}
    for path in output_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                seen[entry["seq"]] = entry
    return seen


def put_batch(kinesis, name: str, label: str) -> dict[str, dict]:
    entries = [{"PartitionKey": f"{label}-{i}", "Data": f"{label} record {i}".encode()} for i in range(BATCH_N)]
    response = kinesis.put_records(StreamName=name, Records=entries)
    assert response["FailedRecordCount"] == 0, response
    return {r["SequenceNumber"]: {"shard": r["ShardId"], "pk": e["PartitionKey"], "data": e["Data"].decode()}
            for e, r in zip(entries, response["Records"])}


def test_kcl_consumes_every_record_across_resharding(endpoint, tmp_path):
    kinesis = client(endpoint)
    name = unique_name("kcl")
    create_active(kinesis, name, 2)

    # moto serves the lease table's DynamoDB (whatever MILLRACE_TEST_TARGET says).
    dynamodb = ServerProcess(tmp_path / "moto-data", tmp_path / "moto.log", kind="moto")
    output_dir = tmp_path / "processed"
    output_dir.mkdir()
    daemon = None
    daemon_log = tmp_path / "kcl.log"
    try:
        dynamodb.start()
        properties = tmp_path / "app.properties"
        properties.write_text(
            (KCL_DIR / "app.properties.template").read_text()
            .replace("@PYTHON@", sys.executable)
            .replace("@PROCESSOR@", str(KCL_DIR / "record_processor.py"))
            .replace("@STREAM@", name)
            .replace("@APPLICATION@", f"app-{name}")
            .replace("@KINESIS_ENDPOINT@", endpoint)
            .replace("@DYNAMODB_ENDPOINT@", dynamodb.endpoint)
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "AWS_ACCESS_KEY_ID": "AKIDMILLRACEKCL",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            # Belt and braces: metrics are off, and any client KCL builds for another
            # service talks to a closed local port rather than to AWS.
            "AWS_ENDPOINT_URL_CLOUDWATCH": UNREACHABLE,
            "AWS_ENDPOINT_URL_STS": UNREACHABLE,
            "KCL_TEST_OUTPUT_DIR": str(output_dir),
        })
        expected: dict[str, dict] = put_batch(kinesis, name, "before")
        with open(daemon_log, "wb") as log:
            daemon = subprocess.Popen(
                ["java", "-cp", f"{kcl_jars_dir()}/*", "software.amazon.kinesis.multilang.MultiLangDaemon",
                 "--properties-file", str(properties)],
                cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

        def progress(want: dict[str, dict]):
            if daemon.poll() is not None:
                raise AssertionError(f"the MultiLangDaemon exited with {daemon.returncode}:\n{_tail(daemon_log)}")
            seen = processed(output_dir)
            missing = [seq for seq in want if seq not in seen]
            return not missing or None

        _wait(lambda: progress(expected), FIRST_RECORDS_TIMEOUT_S, "KCL to process the first batch", daemon_log,
              output_dir, expected)

        # Split shard 0 while the consumer runs, then put more.
        kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126))
        wait_status(kinesis, name, "ACTIVE")
        expected.update(put_batch(kinesis, name, "after-split"))
        # Three open shards now; scale to four.
        kinesis.update_shard_count(StreamName=name, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
        wait_status(kinesis, name, "ACTIVE")
        open_shards = [s for s in list_all_shards(kinesis, name) if is_open(s)]
        assert len(open_shards) == 4
        expected.update(put_batch(kinesis, name, "after-scaling"))

        _wait(lambda: progress(expected), ALL_RECORDS_TIMEOUT_S, "KCL to process every record", daemon_log,
              output_dir, expected)
        seen = processed(output_dir)
        for seq, want in expected.items():
            got = seen[seq]
            assert (got["shard"], got["pk"], got["data"]) == (want["shard"], want["pk"], want["data"]), seq
        shards_used = {want["shard"] for want in expected.values()}
        assert len(shards_used) >= 5, f"records should span parents and children, got {sorted(shards_used)}"
        assert len(expected) == 3 * BATCH_N
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=20)
        dynamodb.kill()


def _tail(path: Path, n_bytes: int = 6000) -> str:
    try:
        return path.read_bytes()[-n_bytes:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"


def _wait(condition, timeout_s: float, what: str, daemon_log: Path, output_dir: Path, expected: dict) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            seen = processed(output_dir)
            missing = [s for s in expected if s not in seen]
            by_shard: dict[str, int] = {}
            for seq in missing:
                by_shard[expected[seq]["shard"]] = by_shard.get(expected[seq]["shard"], 0) + 1
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}: {len(missing)} of {len(expected)} records "
                f"unprocessed, by shard {by_shard}; KCL log tail:\n{_tail(daemon_log)}")
        time.sleep(0.5)

"""KCL 3 (the MultiLangDaemon from kclpy-ext) against millrace alone: Kinesis (HTTP/2 + CBOR,
as KCL's async client speaks it), DynamoDB (the lease, coordinator-state and worker-metrics
tables) and CloudWatch (metrics on, DETAILED) all point at one millrace.

The Python record processor (tests/kcl/record_processor.py) appends every record it
processes, with the worker it ran in, to a file per shard, and checkpoints after every batch.

* ``test_kcl_reshard_and_millrace_restart``: one worker; records are put, KCL processes and
  checkpoints them, millrace is SIGKILLed and restarted on the same port and data directory
  (every checkpoint must still be there, and nothing is processed twice), then a shard is
  split and the stream scaled while the consumer runs; every record is processed, parents
  and children, and KCL's metrics are in millrace's CloudWatch.
* ``test_kcl_two_workers_one_killed``: two workers share a stream; once both hold leases and
  have checkpointed, the one that is not the leader is SIGKILLed (the leader's lock lasts two
  minutes in KCL 3, a lease ``failoverTimeMillis``), and the survivor takes its leases over
  and carries on from the last checkpoints: later records are processed, earlier ones not
  again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config

from harness import ServerProcess, free_port, kcl_jars_dir, repo_root
from kinesis_util import client, create_active, is_open, list_all_shards, unique_name, wait_status

KCL_DIR = repo_root() / "tests" / "kcl"
FIRST_RECORDS_TIMEOUT_S = 180.0  # KCL creates its DynamoDB tables and takes leases first
ALL_RECORDS_TIMEOUT_S = 180.0
BATCH_N = 150
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves the machine


class FixedPortServer(ServerProcess):
    """A millrace that listens on the same port after a restart, as KCL's endpoints are fixed."""

    def __init__(self, *args, port: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_port = port

    def command(self) -> list[str]:
        return [f"127.0.0.1:{self.fixed_port}" if arg == "127.0.0.1:0" else arg for arg in super().command()]


def aws(service: str, endpoint: str):
    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="AKIDMILLRACETEST", aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "total_max_attempts": 3}, connect_timeout=5, read_timeout=30),
    )


def processed(output_dir: Path) -> list[dict]:
    """Every line the processors wrote (duplicates kept)."""
    lines = []
    for path in output_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.append(json.loads(line))
    return lines


def put_batch(kinesis, name: str, label: str) -> dict[str, dict]:
    entries = [{"PartitionKey": f"{label}-{i}", "Data": f"{label} record {i}".encode()} for i in range(BATCH_N)]
    response = kinesis.put_records(StreamName=name, Records=entries)
    assert response["FailedRecordCount"] == 0, response
    return {r["SequenceNumber"]: {"shard": r["ShardId"], "pk": e["PartitionKey"], "data": e["Data"].decode()}
            for e, r in zip(entries, response["Records"])}


class Daemon:
    """One MultiLangDaemon worker."""

    def __init__(self, tmp_path: Path, endpoint: str, stream: str, application: str, worker: str,
                 output_dir: Path):
        self.log_path = tmp_path / f"kcl-{worker}.log"
        properties = tmp_path / f"app-{worker}.properties"
        properties.write_text(
            (KCL_DIR / "app.properties.template").read_text()
            .replace("@PYTHON@", sys.executable)
            .replace("@PROCESSOR@", str(KCL_DIR / "record_processor.py"))
            .replace("@STREAM@", stream)
            .replace("@APPLICATION@", application)
            .replace("@WORKER@", worker)
            .replace("@KINESIS_ENDPOINT@", endpoint)
            .replace("@DYNAMODB_ENDPOINT@", endpoint)
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "AWS_ACCESS_KEY_ID": "AKIDMILLRACEKCL",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            # The MultiLangDaemon has no CloudWatch endpoint property; the SDK reads this.
            "AWS_ENDPOINT_URL_CLOUDWATCH": endpoint,
            # Any client KCL builds for another service talks to a closed local port.
            "AWS_ENDPOINT_URL_STS": UNREACHABLE,
            "KCL_TEST_OUTPUT_DIR": str(output_dir),
            "KCL_TEST_WORKER": worker,
        })
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["java", "-cp", f"{kcl_jars_dir()}/*", "software.amazon.kinesis.multilang.MultiLangDaemon",
                 "--properties-file", str(properties)],
                cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the MultiLangDaemon exited with {self.process.returncode}:\n{_tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL to the daemon and its record processors (its process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def leases(ddb, application: str) -> dict[str, dict]:
    items, start = [], None
    while True:
        kwargs = {"ExclusiveStartKey": start} if start else {}
        page = ddb.scan(TableName=application, ConsistentRead=True, **kwargs)
        items += page["Items"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return {i["leaseKey"]["S"]: i for i in items}


def checkpointed_up_to(ddb, application: str, expected: dict[str, dict]) -> bool:
    """Every shard's lease checkpoint is at (or past) the last expected record of that shard."""
    last: dict[str, int] = {}
    for seq, want in expected.items():
        last[want["shard"]] = max(last.get(want["shard"], 0), int(seq))
    try:
        current = leases(ddb, application)
    except Exception:  # the lease table may not exist yet
        return False
    for shard, seq in last.items():
        checkpoint = current.get(shard, {}).get("checkpoint", {}).get("S", "")
        if checkpoint == "SHARD_END":
            continue
        if not checkpoint.isdigit() or int(checkpoint) < seq:
            return False
    return True


def wait_all(daemons: list[Daemon], output_dir: Path, expected: dict[str, dict], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for daemon in daemons:
            daemon.check_alive()
        seen = {line["seq"] for line in processed(output_dir)}
        missing = [seq for seq in expected if seq not in seen]
        if not missing:
            return
        if time.monotonic() >= deadline:
            by_shard: dict[str, int] = {}
            for seq in missing:
                by_shard[expected[seq]["shard"]] = by_shard.get(expected[seq]["shard"], 0) + 1
            tails = "\n".join(f"--- {d.log_path.name}:\n{_tail(d.log_path)}" for d in daemons)
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}: {len(missing)} of {len(expected)} records "
                f"unprocessed, by shard {by_shard}; KCL log tails:\n{tails}")
        time.sleep(0.5)


def wait_for(condition, timeout_s: float, what: str, daemons: list[Daemon]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for daemon in daemons:
            daemon.check_alive()
        if time.monotonic() >= deadline:
            tails = "\n".join(f"--- {d.log_path.name}:\n{_tail(d.log_path)}" for d in daemons)
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; KCL log tails:\n{tails}")
        time.sleep(0.5)


def test_kcl_reshard_and_millrace_restart(tmp_path):
    server = FixedPortServer(tmp_path / "data", tmp_path / "server.log", port=free_port())
    server.start()
    endpoint = server.endpoint
    kinesis = client(endpoint)
    ddb = aws("dynamodb", endpoint)
    name = unique_name("kcl")
    application = f"app-{name}"
    create_active(kinesis, name, 2)
    output_dir = tmp_path / "processed"
    output_dir.mkdir()
    daemon = None
    try:
        expected: dict[str, dict] = put_batch(kinesis, name, "before")
        daemon = Daemon(tmp_path, endpoint, name, application, "worker-1", output_dir)
        wait_all([daemon], output_dir, expected, FIRST_RECORDS_TIMEOUT_S, "KCL to process the first batch")
        wait_for(lambda: checkpointed_up_to(ddb, application, expected), 60, "the first batch's checkpoints",
                 [daemon])
        before = {k: v.get("checkpoint") for k, v in leases(ddb, application).items()}

        # SIGKILL millrace mid-run and bring it back on the same port and data directory.
        server.kill()
        time.sleep(1.0)
        server.start()
        after = {k: v.get("checkpoint") for k, v in leases(ddb, application).items()}
        for shard, checkpoint in before.items():
            assert after.get(shard) == checkpoint, f"checkpoint of {shard} lost: {checkpoint} -> {after.get(shard)}"

        expected.update(put_batch(kinesis, name, "after-restart"))
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

        wait_all([daemon], output_dir, expected, ALL_RECORDS_TIMEOUT_S, "KCL to process every record")
        lines = processed(output_dir)
        seen = {line["seq"]: line for line in lines}
        for seq, want in expected.items():
            got = seen[seq]
            assert (got["shard"], got["pk"], got["data"]) == (want["shard"], want["pk"], want["data"]), seq
        before_restart = [line for line in lines if line["pk"].startswith("before-")]
        assert len(before_restart) == BATCH_N, "records checkpointed before the restart were processed again"
        shards_used = {want["shard"] for want in expected.values()}
        assert len(shards_used) >= 5, f"records should span parents and children, got {sorted(shards_used)}"
        assert len(expected) == 4 * BATCH_N

        # KCL's own metrics reached millrace's CloudWatch (namespace: the application name).
        cloudwatch = aws("cloudwatch", endpoint)
        wait_for(lambda: any(m["MetricName"] == "RecordsProcessed"
                             for m in cloudwatch.list_metrics(Namespace=application)["Metrics"]),
                 60, "KCL's RecordsProcessed metric", [daemon])
    finally:
        if daemon is not None:
            daemon.stop()
        server.close()


def test_kcl_two_workers_one_killed(endpoint, tmp_path):
    kinesis = client(endpoint)
    ddb = aws("dynamodb", endpoint)
    name = unique_name("kcl2")
    application = f"app-{name}"
    create_active(kinesis, name, 4)
    output_dir = tmp_path / "processed"
    output_dir.mkdir()
    daemons: list[Daemon] = []
    try:
        daemons.append(Daemon(tmp_path, endpoint, name, application, "worker-a", output_dir))
        daemons.append(Daemon(tmp_path, endpoint, name, application, "worker-b", output_dir))
        expected = put_batch(kinesis, name, "first")

        def both_hold_leases() -> bool:
            try:
                owners = {i.get("leaseOwner", {}).get("S") for i in leases(ddb, application).values()}
            except Exception:
                return False
            return {"worker-a", "worker-b"} <= owners

        wait_all(daemons, output_dir, expected, FIRST_RECORDS_TIMEOUT_S, "both workers to process the first batch")
        wait_for(both_hold_leases, 120, "both workers to hold leases", daemons)
        expected.update(put_batch(kinesis, name, "second"))
        wait_all(daemons, output_dir, expected, ALL_RECORDS_TIMEOUT_S, "the second batch")
        wait_for(lambda: checkpointed_up_to(ddb, application, expected), 60, "the checkpoints", daemons)

        # Kill the worker that is not the leader (KCL 3's leader lock lasts two minutes).
        leader = leader_of(ddb, application)
        survivor_name = leader if leader in ("worker-a", "worker-b") else "worker-b"
        victim_name = "worker-a" if survivor_name == "worker-b" else "worker-b"
        victim = daemons[0] if victim_name == "worker-a" else daemons[1]
        survivor = daemons[1] if victim_name == "worker-a" else daemons[0]
        victim_shards = {k for k, v in leases(ddb, application).items() if v.get("leaseOwner", {}).get("S") == victim_name}
        assert victim_shards, "the victim held no leases"
        victim.kill()
        done_before = len(processed(output_dir))

        third = put_batch(kinesis, name, "third")
        expected.update(third)
        wait_all([survivor], output_dir, expected, ALL_RECORDS_TIMEOUT_S, "the survivor to take over")
        lines = processed(output_dir)
        later = [line for line in lines if line["pk"].startswith("third-")]
        assert {line["worker"] for line in later} == {survivor_name}
        assert {line["shard"] for line in later} >= victim_shards & {w["shard"] for w in third.values()}
        # It carried on from the last checkpoints: nothing checkpointed before was processed again.
        counts: dict[str, int] = {}
        for line in lines:
            counts[line["seq"]] = counts.get(line["seq"], 0) + 1
        again = [seq for seq, n in counts.items() if n > 1]
        assert not again, f"{len(again)} records processed twice"
        # (Lease ownership is not asserted: KCL 3's leader may still hand leases to the dead
        # worker, by graceful handoff, until its worker-metrics entry goes stale.)
        assert done_before >= 2 * BATCH_N
    finally:
        for daemon in daemons:
            daemon.stop()


def leader_of(ddb, application: str) -> str | None:
    """The worker holding KCL 3's leader lock (in the coordinator state table)."""
    try:
        items = ddb.scan(TableName=f"{application}-CoordinatorState", ConsistentRead=True)["Items"]
    except Exception:
        return None
    for item in items:
        owner = item.get("ownerName", {}).get("S")
        if owner:
            return owner
    return None


def _tail(path: Path, n_bytes: int = 6000) -> str:
    try:
        return path.read_bytes()[-n_bytes:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"

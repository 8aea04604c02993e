"""AWS CLI v2 (Debian's awscli 2.9.19 at /usr/bin/aws): the everyday commands, JSON output
parsed and checked.

Credentials come from the environment; no profile or config file is read.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess

from harness import wait_until
from kinesis_util import HASH_KEY_MAX, assert_tiles_hash_space, stream_arn, unique_name

AWS = os.environ.get("MILLRACE_AWS_CLI", "/usr/bin/aws")
CLI_TIMEOUT_S = 60


def aws(endpoint: str, *args: str, expect_ok: bool = True):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ACCESS_KEY_ID": "AKIDMILLRACECLI",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_PAGER": "",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }
    command = [AWS, "kinesis", *args, "--endpoint-url", endpoint, "--region", "us-east-1", "--output", "json"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    if not expect_ok:
        return result
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}): {result.stderr}"
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_cli_is_version_2():
    result = subprocess.run([AWS, "--version"], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("aws-cli/2."), result.stdout


def test_cli_stream_round_trip(endpoint):
    name = unique_name("cli")
    assert aws(endpoint, "create-stream", "--stream-name", name, "--shard-count", "2") is None

    def active():
        summary = aws(endpoint, "describe-stream-summary", "--stream-name", name)["StreamDescriptionSummary"]
        return summary if summary["StreamStatus"] == "ACTIVE" else None

    summary = wait_until(active, 30, f"{name} ACTIVE via the CLI", interval_s=0.2)
    assert summary["StreamName"] == name
    assert summary["StreamARN"] == stream_arn(name)
    assert summary["OpenShardCount"] == 2
    assert summary["RetentionPeriodHours"] == 24

    listed = aws(endpoint, "list-streams")
    assert name in listed["StreamNames"]

    shards = aws(endpoint, "list-shards", "--stream-name", name)["Shards"]
    assert [s["ShardId"] for s in shards] == ["shardId-000000000000", "shardId-000000000001"]
    assert_tiles_hash_space(shards)

    # raw-in-base64-out: --data is the raw text; without it CLI v2 wants base64.
    put = aws(endpoint, "put-record", "--stream-name", name, "--partition-key", "cli-key",
              "--data", "hello from the cli", "--explicit-hash-key", "0", "--cli-binary-format", "raw-in-base64-out")
    assert put["ShardId"] == "shardId-000000000000"
    base64_put = aws(endpoint, "put-record", "--stream-name", name, "--partition-key", "cli-key",
                     "--data", base64.b64encode(b"\x00\x01binary\xff").decode(), "--explicit-hash-key", "0")
    assert int(base64_put["SequenceNumber"]) > int(put["SequenceNumber"])

    batch_entries = [{"PartitionKey": f"p{i}", "Data": f"batch {i}", "ExplicitHashKey": str(HASH_KEY_MAX)}
                     for i in range(5)]
    batch = aws(endpoint, "put-records", "--stream-name", name, "--records", json.dumps(batch_entries),
                "--cli-binary-format", "raw-in-base64-out")
    assert batch["FailedRecordCount"] == 0
    assert [r["ShardId"] for r in batch["Records"]] == ["shardId-000000000001"] * 5

    iterator0 = aws(endpoint, "get-shard-iterator", "--stream-name", name, "--shard-id", "shardId-000000000000",
                    "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
    got0 = aws(endpoint, "get-records", "--shard-iterator", iterator0)
    assert [(r["SequenceNumber"], r["PartitionKey"], base64.b64decode(r["Data"])) for r in got0["Records"]] == [
        (put["SequenceNumber"], "cli-key", b"hello from the cli"),
        (base64_put["SequenceNumber"], "cli-key", b"\x00\x01binary\xff"),
    ]
    assert got0["NextShardIterator"]
    assert got0["MillisBehindLatest"] == 0

    iterator1 = aws(endpoint, "get-shard-iterator", "--stream-name", name, "--shard-id", "shardId-000000000001",
                    "--shard-iterator-type", "AT_SEQUENCE_NUMBER",
                    "--starting-sequence-number", batch["Records"][2]["SequenceNumber"])["ShardIterator"]
    got1 = aws(endpoint, "get-records", "--shard-iterator", iterator1, "--limit", "2")
    assert [base64.b64decode(r["Data"]) for r in got1["Records"]] == [b"batch 2", b"batch 3"]

    assert aws(endpoint, "delete-stream", "--stream-name", name) is None
    wait_until(lambda: name not in aws(endpoint, "list-streams")["StreamNames"], 30,
               f"{name} gone from list-streams", interval_s=0.2)


def test_cli_reports_aws_errors(endpoint):
    name = unique_name("cli-missing")
    result = aws(endpoint, "describe-stream-summary", "--stream-name", name, expect_ok=False)
    assert result.returncode == 254
    assert "ResourceNotFoundException" in result.stderr
    assert f"Stream {name} under account 000000000000 not found." in result.stderr

"""The AWS SDK for Java v2 suites (tests/java), compiled by scripts/test.sh against the jars
kclpy-ext ships, run with java against a fresh server.

SyncClientTest: KinesisClient on the Apache client (HTTP/1.1), CBOR 1.1 by default and
JSON 1.1 with -Daws.cborEnabled=false. AsyncClientTest: KinesisAsyncClient on Netty (HTTP/2
with prior knowledge, CBOR), including SubscribeToShard. DynamoDbClientTest: DynamoDbClient
against the DynamoDB subset (conditions, updates, Query paging, an index, errors).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from harness import java_classes_dir, kcl_jars_dir

JAVA_TIMEOUT_S = 180


def run_java(main_class: str, *args: str, properties: tuple[str, ...] = ()) -> None:
    classes = java_classes_dir()
    assert (classes / f"{main_class}.class").exists(), \
        f"{classes}/{main_class}.class is missing: run scripts/test.sh (it compiles tests/java)"
    classpath = f"{classes}{os.pathsep}{kcl_jars_dir()}/*"
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    command = ["java", *properties, "-cp", classpath, main_class, *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=JAVA_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{main_class} failed ({result.returncode}):\n{output}"
    assert " 0 failed" in result.stdout, output


@pytest.mark.parametrize("properties, content_type", [
    ((), "application/x-amz-cbor-1.1"),
    (("-Daws.cborEnabled=false",), "application/x-amz-json-1.1"),
], ids=["cbor", "json"])
def test_java_sync_client(endpoint, properties, content_type):
    run_java("SyncClientTest", endpoint, content_type, properties=properties)


def test_java_async_client_http2_and_subscribe_to_shard(endpoint):
    run_java("AsyncClientTest", endpoint)


def test_java_dynamodb_client(endpoint):
    run_java("DynamoDbClientTest", endpoint)

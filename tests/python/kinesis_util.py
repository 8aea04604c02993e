"""boto3 helpers shared by the suites: clients, waiting for stream states, reading shards.

boto3's own ``stream_exists`` waiter polls every 10 s; these poll every 100 ms under a
deadline instead (DescribeStreamSummary allows 20 calls/s on AWS).
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from harness import wait_until

ACCOUNT_ID = "000000000000"
REGION = "us-east-1"
HASH_KEY_MAX = 2**128 - 1
STATUS_TIMEOUT_S = 20.0
STATUS_POLL_S = 0.1
# GetRecords allows 5 calls per second per shard: polls of one shard stay under that.
GET_RECORDS_POLL_S = 0.25


class ShardCallPacer:
    """Keeps a client under AWS's per-shard call rates: at most ``CALLS_PER_SECOND_MAX``
    GetRecords and GetShardIterator calls per shard in any rolling second (AWS allows 5).

    Tests read a shard many times in a row; on AWS that gets ProvisionedThroughputExceeded,
    so the suites pace themselves instead of relying on retries. Shard iterators are
    opaque, so the pacer remembers which shard each iterator it saw belongs to.
    """

    CALLS_PER_SECOND_MAX = 4

    def __init__(self):
        self.lock = threading.Lock()
        self.shard_of_iterator: dict[str, tuple] = {}
        self.calls: dict[tuple, collections.deque] = collections.defaultdict(collections.deque)

    def register(self, events) -> None:
        events.register("before-parameter-build.kinesis.GetShardIterator", self.before_get_shard_iterator)
        events.register("before-parameter-build.kinesis.GetRecords", self.before_get_records)
        events.register("after-call.kinesis.GetShardIterator", self.after_call)
        events.register("after-call.kinesis.GetRecords", self.after_call)

    def _pace(self, key: tuple) -> None:
        with self.lock:
            window = self.calls[key]
            now = time.monotonic()
            while window and window[0] <= now - 1.0:
                window.popleft()
            wait_s = window[0] + 1.0 - now if len(window) >= self.CALLS_PER_SECOND_MAX else 0.0
            window.append(now + wait_s)
        if wait_s > 0:
            time.sleep(wait_s)  # a documented rate, not a condition: nothing to poll

    def before_get_shard_iterator(self, params, context, **kwargs) -> None:
        shard = (params.get("StreamName") or params.get("StreamARN"), params.get("ShardId"))
        context["millrace_shard"] = shard
        self._pace(("GetShardIterator",) + shard)

    def before_get_records(self, params, context, **kwargs) -> None:
        shard = self.shard_of_iterator.get(params.get("ShardIterator"))
        context["millrace_shard"] = shard
        if shard is not None:
            self._pace(("GetRecords",) + shard)

    def after_call(self, parsed, context, **kwargs) -> None:
        shard = context.get("millrace_shard")
        if shard is None:
            return
        for field in ("ShardIterator", "NextShardIterator"):
            if parsed.get(field):
                self.shard_of_iterator[parsed[field]] = shard


def client(endpoint: str, region: str = REGION, validate: bool = True, service: str = "kinesis",
           paced: bool = True):
    """A boto3 client that never retries, so a server error is never hidden by the SDK.

    ``paced``: stay under AWS's per-shard read call rates (see ShardCallPacer).
    """
    made = boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="AKIDMILLRACETEST",
        aws_secret_access_key="secret",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            parameter_validation=validate,
            connect_timeout=5,
            read_timeout=30,
        ),
    )
    if paced and service == "kinesis":
        ShardCallPacer().register(made.meta.events)
    return made


def unique_name(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def stream_arn(name: str, region: str = REGION, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:kinesis:{region}:{account}:stream/{name}"


def error_of(excinfo) -> tuple[str, str]:
    """(code, message) of a botocore ClientError caught by pytest.raises."""
    err = excinfo.value
    assert isinstance(err, ClientError), f"not a ClientError: {err!r}"
    return err.response["Error"]["Code"], err.response["Error"].get("Message", "")


def status_of(kinesis, name: str) -> str | None:
    try:
        return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def wait_status(kinesis, name: str, status: str | None, timeout_s: float = STATUS_TIMEOUT_S) -> None:
    """Waits until the stream has ``status`` (None: until it no longer exists)."""
    wait_until(lambda: status_of(kinesis, name) == status or None, timeout_s,
               f"stream {name} to be {status or 'gone'}", STATUS_POLL_S)


def create_active(kinesis, name: str, shard_count: int | None = 1, **kwargs) -> dict:
    """Creates a stream, waits until ACTIVE, returns its DescribeStreamSummary."""
    if shard_count is not None:
        kwargs["ShardCount"] = shard_count
    kinesis.create_stream(StreamName=name, **kwargs)
    wait_status(kinesis, name, "ACTIVE")
    return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]


def list_all_shards(kinesis, name: str, **kwargs) -> list[dict]:
    shards: list[dict] = []
    response = kinesis.list_shards(StreamName=name, **kwargs)
    shards += response["Shards"]
    while response.get("NextToken"):
        response = kinesis.list_shards(NextToken=response["NextToken"])
        shards += response["Shards"]
    return shards


def hash_range(shard: dict) -> tuple[int, int]:
    r = shard["HashKeyRange"]
    return int(r["StartingHashKey"]), int(r["EndingHashKey"])


def is_open(shard: dict) -> bool:
    return "EndingSequenceNumber" not in shard["SequenceNumberRange"]


def assert_tiles_hash_space(shards: list[dict]) -> None:
    """The shards' hash ranges cover 0..2^128-1 exactly, without gaps or overlaps."""
    ranges = sorted(hash_range(s) for s in shards)
    assert ranges, "no shards"
    assert ranges[0][0] == 0, f"first range starts at {ranges[0][0]}"
    assert ranges[-1][1] == HASH_KEY_MAX, f"last range ends at {ranges[-1][1]}"
    for (start_a, end_a), (start_b, end_b) in zip(ranges, ranges[1:]):
        assert start_a <= end_a, f"empty range {start_a}..{end_a}"
        assert start_b == end_a + 1, f"ranges {start_a}..{end_a} and {start_b}..{end_b} do not touch"


def partition_hash(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def shard_for_hash(shards: list[dict], hash_key: int) -> str:
    matches = [s["ShardId"] for s in shards if is_open(s) and hash_range(s)[0] <= hash_key <= hash_range(s)[1]]
    assert len(matches) == 1, f"hash {hash_key} falls in {matches}"
    return matches[0]


def iterator(kinesis, name: str, shard_id: str, kind: str = "TRIM_HORIZON", **kwargs) -> str:
    return kinesis.get_shard_iterator(StreamName=name, ShardId=shard_id, ShardIteratorType=kind,
                                      **kwargs)["ShardIterator"]


def read_until(kinesis, shard_iterator: str, want_n: int, timeout_s: float = 10.0) -> tuple[list[dict], dict]:
    """Calls GetRecords from ``shard_iterator`` until ``want_n`` records came back.

    Returns the records and the last response. Polls at most 4 times a second.
    """
    records: list[dict] = []
    last: dict = {}
    deadline = time.monotonic() + timeout_s
    while True:
        last = kinesis.get_records(ShardIterator=shard_iterator, Limit=10000)
        records += last["Records"]
        if len(records) >= want_n or last.get("NextShardIterator") is None:
            return records, last
        shard_iterator = last["NextShardIterator"]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s: read {len(records)} of {want_n} records")
        if not last["Records"]:
            time.sleep(GET_RECORDS_POLL_S)


def read_to_end(kinesis, shard_iterator: str, timeout_s: float = 10.0) -> tuple[list[dict], dict]:
    """Reads a closed shard until GetRecords stops returning NextShardIterator."""
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while True:
        last = kinesis.get_records(ShardIterator=shard_iterator, Limit=10000)
        records += last["Records"]
        if last.get("NextShardIterator") is None:
            return records, last
        shard_iterator = last["NextShardIterator"]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s: the closed shard never ended ({len(records)} records)")
        if not last["Records"]:
            time.sleep(GET_RECORDS_POLL_S)


def read_available(kinesis, shard_iterator: str, timeout_s: float = 10.0) -> list[dict]:
    """Reads an open shard from ``shard_iterator`` until a GetRecords call returns nothing
    and says it is at the tip (MillisBehindLatest 0)."""
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while True:
        last = kinesis.get_records(ShardIterator=shard_iterator, Limit=10000)
        records += last["Records"]
        if not last["Records"] and last.get("MillisBehindLatest") == 0:
            return records
        if last.get("NextShardIterator") is None:
            return records
        shard_iterator = last["NextShardIterator"]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s reading to the tip ({len(records)} records)")
        if not last["Records"]:
            time.sleep(GET_RECORDS_POLL_S)

"""boto3 against a server with authentication, policies, TLS and encryption at rest.

The module's server has credentials configured (SigV4 verified on every request) and
identity policies: an administrator, a producer that may only put to ``orders``, a consumer
that may only read it, and an auditor with no identity policy whom resource policies grant
access. TLS and encryption-at-rest tests start servers of their own.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import stat
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError

from harness import millrace_bin
from kinesis_util import error_of, stream_arn, unique_name, wait_status

ACCOUNT = "123456789012"
REGION = "us-east-1"
ADMIN = ("AKIDPYADMIN", "py-admin-secret")
PRODUCER = ("AKIDPYPRODUCER", "py-producer-secret")
CONSUMER = ("AKIDPYCONSUMER", "py-consumer-secret")
AUDITOR = ("AKIDPYAUDITOR", "py-auditor-secret")
# The JavaScript suites assert ARNs of the default account 000000000000.
JS_USER = ("AKIDPYJSUSER", "py-js-secret")


def user(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def arn(name: str) -> str:
    return stream_arn(name, account=ACCOUNT)


SERVER_CONFIG = f"""
[[credential]]
access_key_id = "{ADMIN[0]}"
secret_access_key = "{ADMIN[1]}"
principal = "{user('admin')}"

[[credential]]
access_key_id = "{PRODUCER[0]}"
secret_access_key = "{PRODUCER[1]}"
principal = "{user('producer')}"

[[credential]]
access_key_id = "{CONSUMER[0]}"
secret_access_key = "{CONSUMER[1]}"
principal = "{user('consumer')}"

[[credential]]
access_key_id = "{AUDITOR[0]}"
secret_access_key = "{AUDITOR[1]}"
principal = "{user('auditor')}"

[[credential]]
access_key_id = "{JS_USER[0]}"
secret_access_key = "{JS_USER[1]}"
principal = "arn:aws:iam::000000000000:user/js"

[[policy]]
name = "admin"
principals = ["{user('admin')}", "arn:aws:iam::000000000000:user/js"]
document = '{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}}]}}'

[[policy]]
name = "producer"
principals = ["{user('producer')}"]
document = '{{"Statement": [{{"Effect": "Allow", "Action": ["kinesis:PutRecord", "kinesis:PutRecords"], "Resource": "arn:aws:kinesis:*:{ACCOUNT}:stream/orders-*"}}]}}'

[[policy]]
name = "consumer"
principals = ["{user('consumer')}"]
document = '{{"Statement": [{{"Effect": "Allow", "NotAction": ["kinesis:Put*", "kinesis:Delete*", "kinesis:Create*"], "Resource": "arn:aws:kinesis:*:{ACCOUNT}:stream/orders-*"}}]}}'
"""


def make_client(endpoint: str, keys: tuple[str, str], token: str | None = None, verify=None):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        aws_session_token=token,
        verify=verify,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1},
                      connect_timeout=5, read_timeout=30),
    )


@pytest.fixture
def admin(endpoint):
    return make_client(endpoint, ADMIN)


def create(client, name: str) -> None:
    client.create_stream(StreamName=name, ShardCount=1)
    wait_status(client, name, "ACTIVE")


def trim_horizon(client, name: str) -> str:
    return client.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                     ShardIteratorType="TRIM_HORIZON")["ShardIterator"]


def test_right_wrong_and_unknown_credentials(endpoint, admin):
    admin.list_streams()
    with pytest.raises(ClientError) as wrong:
        make_client(endpoint, (ADMIN[0], "not-the-secret")).list_streams()
    code, message = error_of(wrong)
    assert code == "InvalidSignatureException"
    assert message.startswith(
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service documentation "
        "for details.")
    assert ADMIN[1] not in message
    with pytest.raises(ClientError) as unknown:
        make_client(endpoint, ("AKIDNOBODY", "x")).list_streams()
    assert error_of(unknown) == ("UnrecognizedClientException",
                                 "The security token included in the request is invalid.")
    with pytest.raises(ClientError) as token:
        make_client(endpoint, ADMIN, token="a-token-nobody-issued").list_streams()
    assert error_of(token) == ("UnrecognizedClientException",
                               "The security token included in the request is invalid")


def test_unsigned_request_is_refused(endpoint):
    body = b"{}"
    request = urllib.request.Request(endpoint + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Kinesis_20131202.ListStreams",
    })
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    answer = json.loads(refused.value.read())
    assert refused.value.code == 400
    assert answer["__type"].endswith("MissingAuthenticationTokenException")


def sign_presigned(endpoint: str, keys: tuple[str, str], target: str, body: bytes,
                   when: datetime.datetime, expires: int = 300) -> urllib.request.Request:
    """A presigned (query-string) SigV4 request, signed by this independent implementation."""
    host = endpoint.split("://", 1)[1]
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    scope = f"{day}/{REGION}/kinesis/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{keys[0]}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "content-type;host;x-amz-target",
    }
    quote = lambda s: urllib.parse.quote(s, safe="-_.~")  # noqa: E731
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(params.items()))
    canonical = "\n".join([
        "POST", "/", query,
        "content-type:application/x-amz-json-1.1", f"host:{host}", f"x-amz-target:{target}", "",
        "content-type;host;x-amz-target", hashlib.sha256(body).hexdigest(),
    ])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + keys[1]).encode()
    for part in (day, REGION, "kinesis", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return urllib.request.Request(f"{endpoint}/?{query}&X-Amz-Signature={signature}", data=body,
                                  method="POST", headers={
                                      "Content-Type": "application/x-amz-json-1.1",
                                      "X-Amz-Target": target,
                                  })


def test_presigned_query_string_requests(endpoint, admin):
    name = unique_name("presigned")
    create(admin, name)
    now = datetime.datetime.now(datetime.timezone.utc)
    body = json.dumps({"StreamName": name}).encode()
    request = sign_presigned(endpoint, ADMIN, "Kinesis_20131202.DescribeStreamSummary", body, now)
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.loads(answer.read())["StreamDescriptionSummary"]["StreamName"] == name
    # Another body under the same signature does not pass.
    tampered = sign_presigned(endpoint, ADMIN, "Kinesis_20131202.DescribeStreamSummary", body, now)
    tampered.data = json.dumps({"StreamName": name + "-x"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered, timeout=10)
    assert json.loads(refused.value.read())["__type"].endswith("InvalidSignatureException")
    # Past X-Amz-Expires.
    old = sign_presigned(endpoint, ADMIN, "Kinesis_20131202.DescribeStreamSummary", body,
                         now - datetime.timedelta(seconds=120), expires=60)
    with pytest.raises(urllib.error.HTTPError) as expired:
        urllib.request.urlopen(old, timeout=10)
    answer = json.loads(expired.value.read())
    assert answer["__type"].endswith("InvalidSignatureException")
    assert answer["message"].startswith("Signature expired: ")


def test_policy_matrix(endpoint, admin):
    orders, other = unique_name("orders"), unique_name("other")
    create(admin, orders)
    create(admin, other)
    producer = make_client(endpoint, PRODUCER)
    consumer = make_client(endpoint, CONSUMER)

    producer.put_record(StreamName=orders, PartitionKey="p", Data=b"one")
    producer.put_records(StreamName=orders, Records=[{"PartitionKey": "p", "Data": b"two"}])
    with pytest.raises(ClientError) as denied:
        producer.put_record(StreamName=other, PartitionKey="p", Data=b"x")
    assert error_of(denied) == (
        "AccessDeniedException",
        f"User: {user('producer')} is not authorized to perform: kinesis:PutRecord on resource: "
        f"{arn(other)} because no identity-based policy allows the kinesis:PutRecord action")
    for call in (lambda: producer.describe_stream_summary(StreamName=orders),
                 lambda: trim_horizon(producer, orders),
                 lambda: producer.list_streams(),
                 lambda: producer.delete_stream(StreamName=orders)):
        with pytest.raises(ClientError) as refused:
            call()
        assert error_of(refused)[0] == "AccessDeniedException"

    records = consumer.get_records(ShardIterator=trim_horizon(consumer, orders))["Records"]
    assert [r["Data"] for r in records] == [b"one", b"two"]
    consumer.list_shards(StreamName=orders)
    for call in (lambda: consumer.put_record(StreamName=orders, PartitionKey="p", Data=b"x"),
                 lambda: consumer.delete_stream(StreamName=orders),
                 lambda: consumer.describe_stream_summary(StreamName=other)):
        with pytest.raises(ClientError) as refused:
            call()
        assert error_of(refused)[0] == "AccessDeniedException"


def test_resource_policy_grants_and_denies(endpoint, admin):
    name = unique_name("orders")
    create(admin, name)
    auditor = make_client(endpoint, AUDITOR)
    producer = make_client(endpoint, PRODUCER)
    with pytest.raises(ClientError) as before:
        auditor.describe_stream_summary(StreamName=name)
    assert error_of(before)[0] == "AccessDeniedException"
    admin.put_resource_policy(ResourceARN=arn(name), Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": user("auditor")},
             "Action": ["kinesis:DescribeStreamSummary", "kinesis:GetShardIterator",
                        "kinesis:GetRecords"], "Resource": arn(name)},
            {"Effect": "Deny", "Principal": {"AWS": user("producer")},
             "Action": "kinesis:PutRecords", "Resource": arn(name)},
        ],
    }))
    assert auditor.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamName"] == name
    auditor.get_records(ShardIterator=trim_horizon(auditor, name))
    producer.put_record(StreamName=name, PartitionKey="p", Data=b"allowed")
    with pytest.raises(ClientError) as denied:
        producer.put_records(StreamName=name, Records=[{"PartitionKey": "p", "Data": b"x"}])
    code, message = error_of(denied)
    assert code == "AccessDeniedException"
    assert message.endswith("with an explicit deny in a resource-based policy")
    admin.delete_resource_policy(ResourceARN=arn(name))
    with pytest.raises(ClientError) as after:
        auditor.describe_stream_summary(StreamName=name)
    assert error_of(after)[0] == "AccessDeniedException"


def gen_cert(directory: Path) -> tuple[Path, Path]:
    subprocess.run([millrace_bin(), "gen-cert", "--out", str(directory)], check=True,
                   capture_output=True, timeout=60)
    return directory / "cert.pem", directory / "key.pem"


def test_tls_with_a_generated_certificate(make_server, tmp_path):
    cert, key = gen_cert(tmp_path / "certs")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    config = SERVER_CONFIG + f'\n[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    server = make_server(config_text=config)
    https = server.endpoint.replace("http://", "https://")
    client = make_client(https, ADMIN, verify=str(cert))
    name = unique_name("tls")
    create(client, name)
    client.put_record(StreamName=name, PartitionKey="p", Data=b"over tls")
    assert client.get_records(ShardIterator=trim_horizon(client, name))["Records"][0]["Data"] == b"over tls"
    other_cert, _ = gen_cert(tmp_path / "other")
    with pytest.raises(SSLError):
        make_client(https, ADMIN, verify=str(other_cert)).list_streams()


def files_containing(directory: Path, needle: bytes) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_encrypted_stream_leaves_no_plaintext_on_disk(make_server):
    server = make_server()
    client = make_client(server.endpoint, ("AKIDDEV", "dev"))
    secret_name, plain_name = unique_name("secret"), unique_name("plain")
    create(client, secret_name)
    create(client, plain_name)
    client.start_stream_encryption(StreamName=secret_name, EncryptionType="KMS",
                                   KeyId="alias/aws/kinesis")
    wait_status(client, secret_name, "ACTIVE")
    canary = b"PY-MILLRACE-CANARY-c0ffee-encrypted-payload"
    key_canary = "PY-KEY-CANARY-9d1f"
    control = b"PY-MILLRACE-CONTROL-plaintext-payload"
    client.put_record(StreamName=secret_name, PartitionKey=key_canary, Data=canary)
    client.put_records(StreamName=secret_name,
                       Records=[{"PartitionKey": key_canary, "Data": canary * 50}])
    client.put_record(StreamName=plain_name, PartitionKey="p", Data=control)
    records = client.get_records(ShardIterator=trim_horizon(client, secret_name))["Records"]
    assert [r["Data"] for r in records] == [canary, canary * 50]
    assert all(r["EncryptionType"] == "KMS" and r["PartitionKey"] == key_canary for r in records)
    assert server.stop() == 0
    assert files_containing(server.data_dir, control), "the scan must see the control record"
    assert files_containing(server.data_dir, canary) == []
    assert files_containing(server.data_dir, key_canary.encode()) == []
    assert stat.S_IMODE(os.stat(server.data_dir).st_mode) == 0o700
    key_file = server.data_dir.parent / f"{server.data_dir.name}.kms-keys.json"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    server.start()
    client = make_client(server.endpoint, ("AKIDDEV", "dev"))
    again = client.get_records(ShardIterator=trim_horizon(client, secret_name))["Records"]
    assert [r["Data"] for r in again] == [canary, canary * 50]


def test_unknown_kms_key(make_server):
    server = make_server()
    client = make_client(server.endpoint, ("AKIDDEV", "dev"))
    name = unique_name("kms")
    create(client, name)
    with pytest.raises(ClientError) as missing:
        client.start_stream_encryption(StreamName=name, EncryptionType="KMS",
                                       KeyId="alias/not-a-key")
    code, message = error_of(missing)
    assert code == "KMSNotFoundException"
    assert "alias/not-a-key" in message
    assert client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["EncryptionType"] == "NONE"


@pytest.mark.parametrize("script", ["round_trip.mjs", "subscribe_to_shard.mjs"])
def test_js_sdk_over_tls_http2_with_authentication(make_server, tmp_path, script):
    """The JavaScript SDK v3 negotiates HTTP/2 by ALPN and signs `:authority`; its suites
    (SubscribeToShard included) pass against a TLS server that verifies every signature."""
    js_dir = Path(__file__).resolve().parent.parent / "js"
    assert (js_dir / "node_modules" / "@aws-sdk" / "client-kinesis").is_dir(), \
        "tests/js/node_modules is missing: run scripts/test.sh (npm ci in tests/js)"
    cert, key = gen_cert(tmp_path / "certs")
    config = SERVER_CONFIG + f'\n[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    server = make_server(config_text=config)
    env = dict(os.environ)
    for var in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        env.pop(var, None)
    env.update({
        "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED": "true",
        "NODE_EXTRA_CA_CERTS": str(cert),
        "MILLRACE_ACCESS_KEY_ID": JS_USER[0],
        "MILLRACE_SECRET_ACCESS_KEY": JS_USER[1],
    })
    https = server.endpoint.replace("http://", "https://")
    result = subprocess.run(["node", script, https], cwd=js_dir, env=env, capture_output=True,
                            text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node {script} failed ({result.returncode}):\n{output}"
    assert " 0 failed" in result.stdout, output

#!/usr/bin/env bash
# Instructions the server spends per request, counted by valgrind's callgrind: a figure that
# does not depend on machine noise, so a change to the request path can be judged on a busy
# machine (docs/benchmarks.md, "Instructions per PutRecord").
#   scripts/callgrind_requests.sh [MILLRACE_BIN] [N]
# Runs the server under callgrind twice, with N and 3N sequential PutRecord calls of 100 bytes
# on one keep-alive connection (fsync on), and prints (Ir(3N) - Ir(N)) / 2N: start-up and
# stream creation cancel out. Keeps the profiles in $OUT (default target/callgrind) for
# callgrind_annotate.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/target/release/millrace}"
N="${2:-1000}"
OUT="${OUT:-$ROOT/target/callgrind}"
PORT="${PORT:-4791}"
mkdir -p "$OUT"

drive() {
    python3 - "$PORT" "$1" <<'PY'
import base64, http.client, json, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {
    "Content-Type": "application/x-amz-json-1.1",
    # Development mode: the signature is not checked, but the header is parsed as always.
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261127/us-east-1/kinesis/aws4_request, "
                     "SignedHeaders=host;x-amz-date, Signature=abc",
    "X-Amz-Date": "20261127T000000Z",
}
def call(op, body):
    conn.request("POST", "/", json.dumps(body), dict(headers, **{"X-Amz-Target": "Kinesis_20131202." + op}))
    answer = conn.getresponse()
    data = answer.read()
    assert answer.status == 200, (answer.status, data)
    return json.loads(data) if data else {}
call("CreateStream", {"StreamName": "cg", "ShardCount": 4})
deadline = time.monotonic() + 60
while call("DescribeStreamSummary", {"StreamName": "cg"})["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
    assert time.monotonic() < deadline, "stream never became ACTIVE"
    time.sleep(0.05)
data = base64.b64encode(b"x" * 100).decode()
for i in range(n):
    call("PutRecord", {"StreamName": "cg", "PartitionKey": "pk%d" % i, "Data": data})
PY
}

run() {
    local calls=$1 out="$OUT/put-record-$1.out" dir
    dir=$(mktemp -d)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" serve \
        --listen "127.0.0.1:$PORT" --data-dir "$dir" --shard-throughput unlimited \
        > "$out.log" 2>&1 &
    local pid=$!
    until curl -s -o /dev/null "http://127.0.0.1:$PORT/health"; do sleep 0.2; done
    drive "$calls"
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$dir"
    callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

small=$(run "$N")
large=$(run $((3 * N)))
echo "PutRecord: $(( (large - small) / (2 * N) )) instructions per call (Ir $small for $N calls, $large for $((3 * N)))"

#!/usr/bin/env bash
# Millrace against kinesalite, kinesis-mock and ferrokinesis, side by side, in one run.
#
#   scripts/compare.sh            # every workload, 10 s each (about 25 minutes)
#   scripts/compare.sh --quick    # smoke run: 2 s each, small backlog, 100/1,000 shards
#
# Options:
#   --duration S        seconds measured per workload (default 10; --quick: 2)
#   --servers LIST      comma-separated subset of millrace,kinesalite,kinesis-mock,ferrokinesis
#   --workloads LIST    comma-separated subset of put-records,put-record,put-record-wide,
#                       get-drain,e2e-poll,e2e-subscribe,many-shards (put-record-wide is
#                       put-record with 128 connections: 50k calls/s at p50 < 1 ms needs
#                       at least 50 requests in flight)
#   --soak-gib N        also write N GiB through Millrace (PutRecords) and report its peak RSS,
#                       then kill -9 it and time recovery of that data to healthy
#   --out DIR           where the JSON reports and the table go (default target/compare/<date>)
#   --millrace-bin PATH measure this millrace binary instead of building the working tree
#                       (e.g. one built from a clean checkout of a commit)
#
# What it does:
#   1. builds millrace and millrace-bench (release, CARGO_TARGET_DIR honoured);
#   2. installs the peers when missing, from their registries, under $TARGET/compare:
#      kinesalite 3.3.3 and kinesis-local 0.6.2 (kinesis-mock) from npm, ferrokinesis 0.7.0
#      from crates.io (cargo install --root); a peer that cannot be installed is marked so;
#   3. for every server and workload: starts the server fresh on loopback with its fastest
#      settings, times launch to first answered ListStreams (`millrace-bench ready`), runs `millrace-bench WORKLOAD
#      --json --server-pid PID`, stops the server. A failing peer or workload is recorded
#      and the run goes on;
#   4. prints the markdown table (scripts/compare/table.py) and writes it to OUT/table.md.
#
# Fastest settings: Millrace release build, --shard-throughput unlimited, fsync ON (the
# default durability), a fresh data dir; kinesalite in memory with 0 ms create/delete/update
# delays; kinesis-mock with SHOULD_PERSIST_DATA=false, 0 ms durations, LOG_LEVEL=ERROR;
# ferrokinesis in memory (no --state-dir) with 0 ms delays, logs off, retention reaper off.
# Every server gets a 20,000 shard limit for many-shards. kinesalite is bound to 127.0.0.1;
# kinesis-mock and ferrokinesis cannot be told an address and listen on all interfaces
# (traffic is still sent to 127.0.0.1 only).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CARGO_TARGET_DIR="$TARGET_DIR"
PEERS_DIR="$TARGET_DIR/compare"
NPM_DIR="$PEERS_DIR/npm"
CARGO_PEERS_DIR="$PEERS_DIR/cargo"
KINESALITE_VERSION=3.3.3
KINESIS_LOCAL_VERSION=0.6.2
FERROKINESIS_VERSION=0.7.0

COMMAND_LINE="scripts/compare.sh $*"
DURATION=10
QUICK=0
SERVERS="millrace,kinesalite,kinesis-mock,ferrokinesis"
WORKLOADS="put-records,put-record,put-record-wide,get-drain,e2e-poll,e2e-subscribe,many-shards"
SOAK_GIB=0
OUT=""
MILLRACE_BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; DURATION=2 ;;
        --duration) DURATION="$2"; shift ;;
        --servers) SERVERS="$2"; shift ;;
        --workloads) WORKLOADS="$2"; shift ;;
        --soak-gib) SOAK_GIB="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --millrace-bin) MILLRACE_BIN="$2"; shift ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
OUT="${OUT:-$PEERS_DIR/runs/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }

# ------------------------------------------------------------------------------------------
if [ -n "$MILLRACE_BIN" ]; then
    log "building millrace-bench (release, target $TARGET_DIR); millrace is $MILLRACE_BIN"
    cargo build --release -p millrace-bench >&2 || { log "build failed"; exit 1; }
    MILLRACE="$MILLRACE_BIN"
else
    log "building millrace and millrace-bench (release, target $TARGET_DIR)"
    cargo build --release -p millrace -p millrace-bench >&2 || { log "build failed"; exit 1; }
    MILLRACE="$TARGET_DIR/release/millrace"
fi
[ -x "$MILLRACE" ] || { log "no millrace binary at $MILLRACE"; exit 1; }
BENCH="$TARGET_DIR/release/millrace-bench"

# ------------------------------------------------------------------------------------------
# Peers. Each install writes its outcome to OUT/install-<peer>.txt (read by table.py).
install_npm_peers() {
    mkdir -p "$NPM_DIR"
    if [ -f "$NPM_DIR/node_modules/kinesalite/package.json" ] \
        && [ -f "$NPM_DIR/node_modules/kinesis-local/main.js" ]; then
        return 0
    fi
    command -v npm >/dev/null || { echo "npm not found"; return 1; }
    [ -f "$NPM_DIR/package.json" ] || echo '{"private": true}' > "$NPM_DIR/package.json"
    log "npm install kinesalite@$KINESALITE_VERSION kinesis-local@$KINESIS_LOCAL_VERSION"
    (cd "$NPM_DIR" && npm install --no-audit --no-fund \
        "kinesalite@$KINESALITE_VERSION" "kinesis-local@$KINESIS_LOCAL_VERSION") >&2
}
FERROKINESIS="$CARGO_PEERS_DIR/bin/ferrokinesis"
install_ferrokinesis() {
    [ -x "$FERROKINESIS" ] && return 0
    log "cargo install ferrokinesis $FERROKINESIS_VERSION (a few minutes on 2 cores)"
    cargo install --locked --version "$FERROKINESIS_VERSION" --root "$CARGO_PEERS_DIR" \
        ferrokinesis >&2
}
wants() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }
if wants "$SERVERS" kinesalite || wants "$SERVERS" kinesis-mock; then
    if install_npm_peers; then
        echo "installed" > "$OUT/install-kinesalite.txt"
        echo "installed" > "$OUT/install-kinesis-mock.txt"
    else
        echo "not installed: npm install failed" > "$OUT/install-kinesalite.txt"
        echo "not installed: npm install failed" > "$OUT/install-kinesis-mock.txt"
    fi
fi
if wants "$SERVERS" ferrokinesis; then
    if install_ferrokinesis; then
        echo "installed" > "$OUT/install-ferrokinesis.txt"
    else
        echo "not installed: cargo install failed" > "$OUT/install-ferrokinesis.txt"
    fi
fi

# ------------------------------------------------------------------------------------------
# Servers. start_server sets SERVER_PID, ENDPOINT, READY_MS (or returns 1).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
SERVER_PID=""
DATA_DIR=""
start_server() {
    local server="$1" log_file="$2" port since
    SERVER_PID="" ENDPOINT="" READY_MS=""
    port="$(free_port)"
    since="$(date +%s%N)"
    case "$server" in
        millrace)
            DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/millrace-compare.XXXXXX")"
            "$MILLRACE" serve --listen "127.0.0.1:$port" --data-dir "$DATA_DIR" \
                --shard-throughput unlimited --shard-limit 20000 >"$log_file" 2>&1 &
            ;;
        kinesalite)
            node "$ROOT/scripts/compare/kinesalite.js" "$NPM_DIR/node_modules" "$port" \
                >"$log_file" 2>&1 &
            ;;
        kinesis-mock)
            KINESIS_MOCK_PLAIN_PORT="$port" KINESIS_MOCK_TLS_PORT="$(free_port)" \
                SHOULD_PERSIST_DATA=false LOAD_DATA_IF_EXISTS=false \
                CREATE_STREAM_DURATION=0ms DELETE_STREAM_DURATION=0ms \
                REGISTER_STREAM_CONSUMER_DURATION=0ms DEREGISTER_STREAM_CONSUMER_DURATION=0ms \
                START_STREAM_ENCRYPTION_DURATION=0ms STOP_STREAM_ENCRYPTION_DURATION=0ms \
                MERGE_SHARDS_DURATION=0ms SPLIT_SHARD_DURATION=0ms \
                UPDATE_SHARD_COUNT_DURATION=0ms UPDATE_STREAM_MODE_DURATION=0ms \
                SHARD_LIMIT=20000 ON_DEMAND_STREAM_COUNT_LIMIT=1000 \
                LOG_LEVEL=ERROR ROOT_LOG_LEVEL=ERROR \
                KINESIS_MOCK_CERT_PATH="$NPM_DIR/node_modules/kinesis-local/server.json" \
                node "$NPM_DIR/node_modules/kinesis-local/main.js" >"$log_file" 2>&1 &
            ;;
        ferrokinesis)
            "$FERROKINESIS" --port "$port" --create-stream-ms 0 --delete-stream-ms 0 \
                --update-stream-ms 0 --shard-limit 20000 --log-level off \
                --retention-check-interval-secs 0 >"$log_file" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    ENDPOINT="http://127.0.0.1:$port"
    if ! READY_MS="$("$BENCH" --endpoint "$ENDPOINT" ready --since-ns "$since" --timeout 60)"; then
        log "$server did not answer within 60 s (log: $log_file)"
        stop_server
        return 1
    fi
}
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
    if [ -n "$DATA_DIR" ]; then rm -rf "$DATA_DIR"; DATA_DIR=""; fi
}
trap 'stop_server' EXIT
trap 'stop_server; exit 130' INT TERM

# ------------------------------------------------------------------------------------------
# Workloads: the same arguments for every server.
D="$DURATION"
if [ "$QUICK" = 1 ]; then
    DRAIN_ARGS=(--records 20000 --preload-timeout 10 --drain-timeout 10)
    MANY_ARGS=(--steps 100,1000 --shards-per-stream 500 --setup-timeout 60 --duration 1)
else
    DRAIN_ARGS=(--records 500000 --preload-timeout "$((D * 3))" --drain-timeout "$((D * 3))")
    MANY_ARGS=(--steps 1000,10000 --setup-timeout 180 --duration "$(( (D + 1) / 2 ))")
fi
workload_args() {
    case "$1" in
        put-records) echo --shards 4 --batch-size 500 --record-size 1024 --connections 16 --duration "$D" ;;
        put-record) echo --shards 4 --record-size 100 --connections 16 --duration "$D" ;;
        put-record-wide) echo --shards 4 --record-size 100 --connections 128 --duration "$D" ;;
        get-drain) echo --shards 4 --record-size 1024 "${DRAIN_ARGS[@]}" ;;
        e2e-poll) echo --shards 2 --rate 1000 --record-size 100 --duration "$D" ;;
        e2e-subscribe) echo --shards 2 --rate 1000 --record-size 100 --duration "$D" ;;
        many-shards) echo "${MANY_ARGS[@]}" ;;
    esac
}
# The millrace-bench subcommand of each workload.
subcommand() {
    case "$1" in
        put-record-wide) echo put-record ;;
        *) echo "$1" ;;
    esac
}
# A bound on each workload's wall time, so a stuck peer cannot stall the run.
workload_timeout() {
    case "$1" in
        get-drain) echo $((D * 8 + 60)) ;;
        many-shards) echo 900 ;;
        # Closed loops may run 60 s past their end when calls are slower than the whole
        # window (kinesis-mock), and a last call may take a while to answer.
        *) echo $((D * 3 + 180)) ;;
    esac
}

IFS=',' read -r -a SERVER_LIST <<<"$SERVERS"
IFS=',' read -r -a WORKLOAD_LIST <<<"$WORKLOADS"
for server in "${SERVER_LIST[@]}"; do
    mkdir -p "$OUT/$server"
    install_note="$(cat "$OUT/install-$server.txt" 2>/dev/null || echo installed)"
    if [ "$install_note" != installed ]; then
        log "$server: $install_note"
        continue
    fi
    for workload in "${WORKLOAD_LIST[@]}"; do
        report="$OUT/$server/$workload.json"
        log "$server: $workload"
        if ! start_server "$server" "$OUT/$server/$workload.server.log"; then
            printf '{"workload":"%s","failure":"server did not start","measurements":[]}\n' \
                "$workload" >"$report"
            continue
        fi
        echo "$READY_MS" >>"$OUT/$server/ready_ms.txt"
        # Other work on the machine skews every figure: keep the load next to them.
        echo "$server $workload $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
        # shellcheck disable=SC2046
        timeout --kill-after=10 "$(workload_timeout "$workload")" \
            "$BENCH" --endpoint "$ENDPOINT" --server-pid "$SERVER_PID" --json \
            "$(subcommand "$workload")" $(workload_args "$workload") >"$report" 2>"$OUT/$server/$workload.err"
        status=$?
        if ! python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$report" 2>/dev/null; then
            reason="millrace-bench exited $status"
            [ "$status" = 124 ] && reason="timed out after $(workload_timeout "$workload") s"
            printf '{"workload":"%s","failure":"%s","measurements":[]}\n' "$workload" "$reason" >"$report"
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "$server exited during $workload (log: $OUT/$server/$workload.server.log)"
        fi
        stop_server
    done
done

# ------------------------------------------------------------------------------------------
# Soak: N GiB through Millrace, its peak RSS, then recovery of that data after kill -9.
if [ "$SOAK_GIB" != 0 ] && wants "$SERVERS" millrace; then
    log "millrace: soak, $SOAK_GIB GiB through PutRecords"
    if start_server millrace "$OUT/millrace/soak.server.log"; then
        "$BENCH" --endpoint "$ENDPOINT" --server-pid "$SERVER_PID" --json --keep put-records \
            --shards 4 --connections 16 --max-mib "$((SOAK_GIB * 1024))" --duration 3600 \
            --warmup 0 >"$OUT/millrace/soak.json" 2>"$OUT/millrace/soak.err"
        du -sb "$DATA_DIR" | cut -f1 >"$OUT/millrace/soak_data_bytes.txt"
        kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null
        port="$(free_port)"
        since="$(date +%s%N)"
        "$MILLRACE" serve --listen "127.0.0.1:$port" --data-dir "$DATA_DIR" \
            --shard-throughput unlimited --shard-limit 20000 \
            >"$OUT/millrace/recovery.server.log" 2>&1 &
        SERVER_PID=$!
        "$BENCH" --endpoint "http://127.0.0.1:$port" ready --since-ns "$since" --timeout 600 \
            >"$OUT/millrace/recovery_ms.txt" || echo "failed" >"$OUT/millrace/recovery_ms.txt"
        stop_server
    fi
fi

# ------------------------------------------------------------------------------------------
python3 "$ROOT/scripts/compare/table.py" "$OUT" "$COMMAND_LINE" | tee "$OUT/table.md"
log "reports in $OUT"

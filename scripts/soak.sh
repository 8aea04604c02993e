#!/usr/bin/env bash
# The long reliability runs of docs/reliability.md (the test command runs short versions):
#   scripts/soak.sh [CRASH_CYCLES] [SIM_SEEDS]
# 1. the crash loop: a real millrace under mixed load, SIGKILLed CRASH_CYCLES times
#    (default 1000), every invariant checked after each restart;
# 2. the simulation (VOPR) of the log on the fault-injecting disk, SIM_SEEDS seeds
#    (default 20000) from a random base (printed, so a failure replays).
# Prints each run's summary; exits non-zero on the first failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CRASH_CYCLES="${1:-1000}"
SIM_SEEDS="${2:-20000}"
SEED_BASE="${MILLRACE_SIM_SEED_BASE:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"

cargo build --release -p millrace
echo "=== crash loop: $CRASH_CYCLES SIGKILL cycles"
start=$(date +%s)
MILLRACE_CRASH_CYCLES="$CRASH_CYCLES" cargo test --release -p millrace-sdk-tests \
    --test crash_loop -- --nocapture
echo "=== crash loop passed in $(( $(date +%s) - start )) s"

echo "=== simulation: $SIM_SEEDS seeds from base $SEED_BASE"
start=$(date +%s)
MILLRACE_SIM_SEEDS="$SIM_SEEDS" MILLRACE_SIM_SEED_BASE="$SEED_BASE" \
    cargo test --release -p millrace-log --test vopr -- --nocapture
echo "=== simulation passed in $(( $(date +%s) - start )) s"

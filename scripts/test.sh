#!/usr/bin/env bash
# The project's single test command (CI runs it through .ci/run).
#
# Installs what the black-box suites need when it is missing (Debian's AWS CLI v2 and
# PostgreSQL, a Python virtualenv at .venv, the npm packages of tests/js, the compiled Java
# test programs), then:
#   1. cargo build --release --workspace --bins --tests --examples (one build for all below)
#   2. millrace-codegen --check
#   3. cargo test --release --workspace (runs what step 1 built)
#   4. .venv/bin/pytest tests/python -q   (boto3, AWS CLI, crash, JavaScript, Java and KCL suites)
# and stops at the first step that fails. Every install step is skipped when its inputs
# have not changed since it last ran, so a second run goes straight to the build.
#
# Arguments are passed to pytest (e.g. `scripts/test.sh -k crash -x`).
# MILLRACE_SKIP_CARGO_TEST=1 skips step 3 (for iterating on the black-box suites).
# CARGO_TARGET_DIR is honoured (default: target/ in the repository).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
VENV="$ROOT/.venv"
AWS_CLI=/usr/bin/aws
JAVA_OUT="$TARGET_DIR/java-tests"
SCRIPT_STARTED=$SECONDS
SECTION_STARTED=$SECONDS
SECTION_NAME=""

section() {
    if [ -n "$SECTION_NAME" ]; then
        echo "--- done: $SECTION_NAME ($((SECONDS - SECTION_STARTED)) s)"
    fi
    SECTION_NAME="$1"
    SECTION_STARTED=$SECONDS
    echo
    echo "=================================================================="
    echo "=== $1"
    echo "=================================================================="
}

fail() {
    echo "scripts/test.sh: $*" >&2
    exit 1
}

on_exit() {
    local status=$?
    if [ $status -ne 0 ]; then
        echo >&2
        echo "scripts/test.sh: FAILED in step: ${SECTION_NAME:-setup} (exit $status)" >&2
    fi
}
trap on_exit EXIT

is_root() { [ "$(id -u)" -eq 0 ]; }

# apt-get install, running apt-get update only when the install fails without it.
apt_install() {
    is_root || fail "$* missing and not running as root: install the Debian packages $* yourself"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "$@" \
        || { apt-get update && apt-get install -y --no-install-recommends "$@"; }
}

sha_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ----------------------------------------------------------------------------------------
section "toolchains"
for tool in cargo python3 node npm java javac; do
    command -v "$tool" >/dev/null || fail "$tool not found on PATH (the CI machine has Rust, Python 3.11, Node 20, OpenJDK 17)"
done
cargo --version
python3 --version
echo "node $(node --version)"
java -version 2>&1 | head -1

# ----------------------------------------------------------------------------------------
section "AWS CLI v2 (Debian awscli at $AWS_CLI)"
if [ ! -x "$AWS_CLI" ]; then
    apt_install awscli
fi
"$AWS_CLI" --version

# ----------------------------------------------------------------------------------------
section "PostgreSQL (Debian postgresql, for the Firehose suite)"
# The suite starts a private cluster of its own (tests/python/firehose_util.py); only the
# binaries are needed here.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
fi
ls /usr/lib/postgresql/*/bin/initdb

# ----------------------------------------------------------------------------------------
section "Chromium and chromedriver (Debian, for the console suite)"
# tests/python/test_console.py drives headless Chromium with Selenium through
# /usr/bin/chromedriver, so Selenium Manager downloads nothing.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    apt_install chromium chromium-driver
fi
/usr/bin/chromedriver --version

# ----------------------------------------------------------------------------------------
section "ffmpeg (Debian, for the Video suite)"
# The Video suite makes H.264 MKV with ffmpeg and checks HLS and clips with ffprobe.
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    apt_install ffmpeg
fi
ffmpeg -version | sed -n 1p

# ----------------------------------------------------------------------------------------
section "Python virtualenv (.venv)"
REQUIREMENTS="$ROOT/tests/python/requirements.txt"
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    echo "the .venv is broken (its Python moved?): recreating it"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { apt_install python3-venv && rm -rf "$VENV" && python3 -m venv "$VENV"; }
fi
VENV_STAMP="$VENV/.millrace-requirements.sha256"
want="$(sha_of "$REQUIREMENTS")"
if [ "$(cat "$VENV_STAMP" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want" > "$VENV_STAMP"
else
    echo "requirements unchanged: nothing to install"
fi
KCL_JARS="$("$VENV/bin/python" -c 'import amazon_kclpy, os; print(os.path.join(os.path.dirname(amazon_kclpy.__file__), "jars"))')"
ls "$KCL_JARS"/kinesis-2.*.jar "$KCL_JARS"/amazon-kinesis-client-multilang-*.jar >/dev/null \
    || fail "kclpy-ext's jars are not in $KCL_JARS"
echo "KCL and AWS SDK for Java v2 jars: $KCL_JARS"

# ----------------------------------------------------------------------------------------
section "npm packages (tests/js)"
NPM_STAMP="$ROOT/tests/js/node_modules/.millrace-lock.sha256"
want="$(sha_of "$ROOT/tests/js/package.json" "$ROOT/tests/js/package-lock.json")"
if [ "$(cat "$NPM_STAMP" 2>/dev/null)" != "$want" ]; then
    (cd "$ROOT/tests/js" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$NPM_STAMP"
else
    echo "package-lock.json unchanged: nothing to install"
fi

# ----------------------------------------------------------------------------------------
section "Java test programs (tests/java -> ${JAVA_OUT#"$ROOT"/})"
JAVA_STAMP="$JAVA_OUT/.millrace-sources.sha256"
want="$( (sha_of "$ROOT"/tests/java/*.java; ls "$KCL_JARS"; echo "$KCL_JARS") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$JAVA_STAMP" 2>/dev/null)" != "$want" ] || [ ! -d "$JAVA_OUT/classes" ]; then
    rm -rf "$JAVA_OUT/classes"
    mkdir -p "$JAVA_OUT/classes"
    javac -nowarn -d "$JAVA_OUT/classes" -cp "$KCL_JARS/*" "$ROOT"/tests/java/*.java
    echo "$want" > "$JAVA_STAMP"
    echo "compiled tests/java into $JAVA_OUT/classes"
else
    echo "sources unchanged: nothing to compile"
fi
export MILLRACE_JAVA_CLASSES="$JAVA_OUT/classes"

# ----------------------------------------------------------------------------------------
section "cargo build --release --workspace --bins --tests --examples"
# One build for everything below: the server, the test S3 server (tools/s3-server: the s3s
# project's s3s-fs built with the workspace's dependencies), codegen, and every test binary
# `cargo test` runs. A single invocation resolves features once, so `cargo test` below
# compiles nothing again (separate `-p` builds each unified features differently and
# rebuilt arrow, parquet and friends twice).
cargo build --release --workspace --bins --tests --examples
export MILLRACE_BIN="$TARGET_DIR/release/millrace"
[ -x "$MILLRACE_BIN" ] || fail "the build did not produce $MILLRACE_BIN"
echo "MILLRACE_BIN=$MILLRACE_BIN"
export MILLRACE_S3S_FS="$TARGET_DIR/release/millrace-s3-server"
[ -x "$MILLRACE_S3S_FS" ] || fail "the build did not produce $MILLRACE_S3S_FS"
echo "MILLRACE_S3S_FS=$MILLRACE_S3S_FS"

# ----------------------------------------------------------------------------------------
section "millrace-codegen --check (generated code matches the service models)"
"$TARGET_DIR/release/millrace-codegen" --check

# ----------------------------------------------------------------------------------------
if [ "${MILLRACE_SKIP_CARGO_TEST:-0}" = "1" ]; then
    section "cargo test --release --workspace (SKIPPED: MILLRACE_SKIP_CARGO_TEST=1)"
else
    section "cargo test --release --workspace"
    cargo test --release --workspace
fi

# ----------------------------------------------------------------------------------------
section "black-box suites: .venv/bin/pytest tests/python"
"$VENV/bin/pytest" tests/python -q "$@"

echo "--- done: $SECTION_NAME ($((SECONDS - SECTION_STARTED)) s)"
echo
echo "=== all tests passed (total $((SECONDS - SCRIPT_STARTED)) s)"

#!/usr/bin/env bash
# The project's single test command (CI runs it through .ci/run): builds the server,
# checks the generated code is current, and runs every Rust test, including the AWS SDK
# for Rust suite against a real millrace process.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "=== build"
cargo build --release -p millrace
echo "=== generated code is current"
cargo run --release -p millrace-codegen -- --check
echo "=== cargo test"
cargo test --release --workspace

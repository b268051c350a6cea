#!/bin/bash
# Disk benchmark: builds the benchmark (release), then runs it. Usage: run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p bench-disk
exec "${CARGO_TARGET_DIR:-target}/release/bench-disk" "$@"

#!/bin/bash
# Snapshot benchmark: builds it (release), then runs it. Usage: run.sh [--quick] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p bench-snapshot
exec "${CARGO_TARGET_DIR:-target}/release/bench-snapshot" "$@"

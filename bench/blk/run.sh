#!/bin/bash
# virtio-blk benchmark: builds the benchmark (release), then runs it. Usage: run.sh [--quick] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p bench-blk
exec "${CARGO_TARGET_DIR:-target}/release/bench-blk" "$@"

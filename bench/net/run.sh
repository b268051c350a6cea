#!/bin/bash
# virtio-net benchmark: builds the benchmark (release), then runs it (as root: it makes a
# private network namespace and a tap). Usage: run.sh [--quick] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p bench-net
exec "${CARGO_TARGET_DIR:-target}/release/bench-net" "$@"

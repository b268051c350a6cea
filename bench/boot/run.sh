#!/bin/bash
# Boot benchmark: builds vmrun and the benchmark (release), then runs it. Usage: run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p vmrun -p bench-boot
exec "${CARGO_TARGET_DIR:-target}/release/bench-boot" "$@"

#!/bin/bash
# test.sh -- the whole test suite, as CI runs it: installs what it needs, checks formatting and
# lints, builds the Linux test guest (cached), runs every test, prints one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

VMD_LINUX_GUEST_DIR=$(scripts/linux-guest.sh) || {
    echo "[vmd] tiny Linux guest unavailable: its tests will be skipped" >&2
    VMD_LINUX_GUEST_DIR=""
}
export VMD_LINUX_GUEST_DIR

vmd_log "cargo fmt --check"
cargo fmt --all -- --check
vmd_log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

vmd_log "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "vmd tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"

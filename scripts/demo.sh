#!/bin/bash
# demo.sh -- the main job on a fresh Debian 12 machine (root): build vmd, start it with the
# example vm.conf, and show the console of the VM it boots (a bundled test guest with 2 vCPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
id _vmd >/dev/null 2>&1 || useradd -r -M -d /var/empty -s /usr/sbin/nologin _vmd
vmd_log "building (release)"
cargo build --release --quiet -p vmd -p vmctl -p vmrun -p testkit
tgt=${CARGO_TARGET_DIR:-target}
bin=$tgt/release
pvh=$(find "$tgt/release/build" -path '*testkit-*/out/pvh' | head -1)
sock=/run/vmd-demo.sock
log=/tmp/vmd-demo.log

vmd_log "vmd -n -D guest=$pvh -f examples/vm.conf"
"$bin/vmd" -n -D guest="$pvh" -f examples/vm.conf
vmd_log "starting vmd (log in $log)"
"$bin/vmd" -d -v -D guest="$pvh" -f examples/vm.conf -s "$sock" >"$log" 2>&1 &
vmd_pid=$!
trap 'kill $vmd_pid 2>/dev/null; wait $vmd_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
sleep 1
"$bin/vmctl" -s "$sock" status
if [ -t 0 ]; then
    vmd_log "attaching to the console of vm \"demo\": type a line for the guest; ~. leaves"
    "$bin/vmctl" -s "$sock" console demo || true
else
    tty=$("$bin/vmctl" -s "$sock" status --json | grep -o '"tty":"[^"]*"' | head -1 | cut -d\" -f4)
    vmd_log "console of vm \"demo\" ($tty):"
    timeout 5 cat "$tty" || true
fi
"$bin/vmctl" -s "$sock" stop -w demo || true
"$bin/vmctl" -s "$sock" status || true

# The tiny Linux guest only if scripts/test.sh already built it (the build takes minutes).
guest=$(ls -d "${VMD_LINUX_GUEST_CACHE:-/var/cache/vmd-linux-guest}"/out-* 2>/dev/null | head -1)
if [ -n "$guest" ] && [ -f "$guest/acpi/vmlinux" ] && [ -f "$guest/initramfs.cpio" ]; then
    vmd_log "booting the tiny Linux guest with vmrun (about a minute on an emulating /dev/kvm)"
    "$bin/vmrun" -b "$guest/acpi/vmlinux" -m 128M --initrd "$guest/initramfs.cpio" \
        --cmdline "$(cat crates/vmrun/tests/linux-cmdline.txt)" </dev/null
fi

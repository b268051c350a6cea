#!/bin/bash
# demo.sh -- the main job on a fresh Debian 12 machine (root): build vmd, check the example
# vm.conf, and boot a test guest in the foreground with its console on this terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
vmd_log "building (release)"
cargo build --release --quiet -p vmd -p vmrun -p testkit
tgt=${CARGO_TARGET_DIR:-target}
bin=$tgt/release
pvh=$(find "$tgt/release/build" -path '*testkit-*/out/pvh' | head -1)
vmd_log "vmd -n -D guest=$pvh -f examples/vm.conf"
"$bin/vmd" -n -D guest="$pvh" -f examples/vm.conf
vmd_log "booting the PVH test guest with 2 vCPUs (vmrun -b $pvh -m 64M -p 2)"
"$bin/vmrun" -b "$pvh" -m 64M -p 2 --cmdline "smp timer rtc"
# The tiny Linux guest only if scripts/test.sh already built it (the build takes minutes).
guest=${VMD_LINUX_GUEST_CACHE:-/var/cache/vmd-linux-guest}/out
if [ -f "$guest/acpi/vmlinux" ] && [ -f "$guest/initramfs.cpio" ]; then
    vmd_log "booting the tiny Linux guest through PVH (about a minute on an emulating /dev/kvm)"
    "$bin/vmrun" -b "$guest/acpi/vmlinux" -m 128M --initrd "$guest/initramfs.cpio" \
        --cmdline "$(cat crates/vmrun/tests/linux-cmdline.txt)"
fi

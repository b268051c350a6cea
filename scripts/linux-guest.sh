#!/bin/bash
# linux-guest.sh -- make sure the tiny Linux guest (shared/guest-linux kit) is built and cached
# outside the checkout; prints the output directory. The first build takes ~6-10 min on 2 cores.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
KIT=${VMD_GUEST_LINUX_KIT:-$HERE/../shared/guest-linux}
CACHE=${VMD_LINUX_GUEST_CACHE:-/var/cache/vmd-linux-guest}
OUT=$CACHE/out
if [ ! -f "$OUT/acpi/vmlinux" ] || [ ! -f "$OUT/acpi/bzImage" ] || [ ! -f "$OUT/initramfs.cpio" ]; then
    if [ ! -x "$KIT/build.sh" ]; then
        echo "linux-guest: kit not found at $KIT (set VMD_GUEST_LINUX_KIT)" >&2
        exit 1
    fi
    mkdir -p "$CACHE"
    echo "[vmd] building the tiny Linux guest into $CACHE (first time only)" >&2
    WORK=$CACHE OUT=$OUT "$KIT/build.sh" acpi >"$CACHE/build.log" 2>&1 || {
        tail -30 "$CACHE/build.log" >&2
        exit 1
    }
fi
echo "$OUT"

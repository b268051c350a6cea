#!/bin/bash
# linux-guest.sh -- make sure the tiny Linux guest (shared/guest-linux kit) is built and cached
# outside the checkout; prints the output directory. The first build takes ~6-10 min on 2 cores.
#
# The kit is read-only, so it is copied into the cache and our config fragment
# (scripts/linux-guest/extra.config) is appended to its tiny-guest.config. The output directory
# is named after a hash of the kit's configs and ours, so a change to either rebuilds.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
KIT=${VMD_GUEST_LINUX_KIT:-$HERE/../shared/guest-linux}
CACHE=${VMD_LINUX_GUEST_CACHE:-/var/cache/vmd-linux-guest}
EXTRA=$HERE/scripts/linux-guest/extra.config
if [ ! -x "$KIT/build.sh" ]; then
    echo "linux-guest: kit not found at $KIT (set VMD_GUEST_LINUX_KIT)" >&2
    exit 1
fi
KEY=$(cat "$KIT"/*.config "$KIT/build.sh" "$EXTRA" | sha256sum | cut -c1-12)
OUT=$CACHE/out-$KEY
if [ ! -f "$OUT/acpi/vmlinux" ] || [ ! -f "$OUT/acpi/bzImage" ] || [ ! -f "$OUT/initramfs.cpio" ]; then
    mkdir -p "$CACHE"
    rm -rf "$CACHE/kit"
    cp -r "$KIT" "$CACHE/kit"
    chmod -R u+w "$CACHE/kit"
    cat "$EXTRA" >> "$CACHE/kit/tiny-guest.config"
    echo "[vmd] building the tiny Linux guest into $OUT (first time only)" >&2
    WORK=$CACHE OUT=$OUT "$CACHE/kit/build.sh" acpi >"$CACHE/build.log" 2>&1 || {
        tail -30 "$CACHE/build.log" >&2
        exit 1
    }
    missing=$(grep '^CONFIG_' "$EXTRA" | grep -vxF -f "$OUT/acpi/config" || true)
    if [ -n "$missing" ]; then
        echo "linux-guest: these lines of $EXTRA did not apply: $missing" >&2
        rm -rf "$OUT"
        exit 1
    fi
fi
echo "$OUT"

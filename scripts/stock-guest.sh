#!/bin/bash
# stock-guest.sh -- fetch Debian's stock cloud kernel and build a busybox initramfs for it,
# cached outside the checkout; prints the directory holding `vmlinuz` and `initramfs.cpio`.
# Used only on hosts whose /dev/kvm runs guest ring 0 natively (see crates/vmrun/tests/stock.rs).
set -euo pipefail
CACHE=${VMD_STOCK_GUEST_CACHE:-/var/cache/vmd-stock-guest}
if [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initramfs.cpio" ]; then
    echo "$CACHE"; exit 0
fi
mkdir -p "$CACHE/deb" "$CACHE/root"
cd "$CACHE/deb"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq busybox-static cpio >/dev/null
# linux-image-cloud-amd64 is a metapackage: fetch the image package it depends on.
img=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
apt-get download "$img" >/dev/null
dpkg-deb -x ./*.deb "$CACHE/deb/x"
cp "$(ls "$CACHE"/deb/x/boot/vmlinuz-* | head -1)" "$CACHE/vmlinuz"
R=$CACHE/root
mkdir -p "$R/bin" "$R/dev" "$R/proc"
cp /bin/busybox "$R/bin/busybox"
for a in sh mount cat echo poweroff; do ln -sf busybox "$R/bin/$a"; done
cat > "$R/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
read online < /sys/devices/system/cpu/online 2>/dev/null || online=?
echo "STOCK-BOOT-OK cpus=$(grep -c ^processor /proc/cpuinfo)"
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet) > "$CACHE/initramfs.cpio"
echo "$CACHE"

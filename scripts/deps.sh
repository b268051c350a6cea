#!/bin/bash
# deps.sh -- install what building and testing vmd needs on a fresh Debian 12 machine (root).
# Sourced by demo.sh and test.sh; safe to run again (installs only what is missing).
set -euo pipefail

# Debian packages: gcc/binutils build the test guests; qemu-system-x86 (from backports,
# because these machines carry backports' qemu-utils) is the peer for tests and benchmarks;
# acpica-tools checks our ACPI tables; man-db renders the man pages.
VMD_PACKAGES=(build-essential pkg-config qemu-utils acpica-tools man-db groff-base
              iproute2 curl ca-certificates)
VMD_BACKPORTS_PACKAGES=(qemu-system-x86)

vmd_log() { printf '[vmd] %s\n' "$*" >&2; }

vmd_missing() {
    local p out=()
    for p in "$@"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || out+=("$p")
    done
    [ ${#out[@]} -eq 0 ] || printf '%s\n' "${out[@]}"
}

vmd_add_backports() {
    # Same mirror as the machine's own bookworm entry.
    if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return
    fi
    local uri
    uri=$(grep -rhs -m1 -oE 'https?://[^ ]+' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list || true)
    uri=${uri:-http://deb.debian.org/debian}
    vmd_log "adding bookworm-backports from $uri"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" > /etc/apt/sources.list.d/vmd-backports.sources
    VMD_APT_UPDATED=0
}

vmd_apt_install() {
    local -a missing backports
    mapfile -t missing < <(vmd_missing "${VMD_PACKAGES[@]}")
    mapfile -t backports < <(vmd_missing "${VMD_BACKPORTS_PACKAGES[@]}")
    [ ${#missing[@]} -eq 0 ] && [ ${#backports[@]} -eq 0 ] && return
    vmd_add_backports
    vmd_log "apt-get install ${missing[*]} ${backports[*]}"
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    [ ${#missing[@]} -eq 0 ] || apt-get install -y -qq "${missing[@]}" >/dev/null
    [ ${#backports[@]} -eq 0 ] || apt-get install -y -qq -t bookworm-backports "${backports[@]}" >/dev/null
}

vmd_rust() {
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    if command -v cargo >/dev/null 2>&1; then
        return
    fi
    # Debian 12's own rustc (1.63) is too old for our dependencies: use rustup.
    vmd_log "installing Rust with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy -c rustfmt
    . "$HOME/.cargo/env"
}

if [ "$(id -u)" != 0 ]; then
    echo "vmd: run this as root (it installs packages and uses /dev/kvm)" >&2
    exit 1
fi
vmd_apt_install
vmd_rust

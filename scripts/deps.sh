#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install everything the harness, the QEMU builds, the tests and the
# benchmarks need, from Debian's registries only.  Idempotent: a second run
# installs nothing and does not touch the network unless a package is missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SOURCES=/etc/apt/sources.list.d/debian.sources
OURS=/etc/apt/sources.list.d/qemu-reclaim.sources

# Packages from bookworm itself.
PKGS=(
    build-essential pkg-config git ninja-build bzip2 xz-utils
    # meson compiles through ccache when it is there: the prefix checks
    # go back and forth between the series' states
    ccache
    python3 python3-venv libglib2.0-dev libfdt-dev libpixman-1-dev zlib1g-dev
    # QEMU 10.2's +ds tarball has no .dtb blobs: with dtc, meson makes them
    device-tree-compiler
    libgoogle-perftools-dev libjemalloc-dev
    dpkg-dev python3-docutils python3-sphinx python3-sphinx-rtd-theme
    # the operator tool (tools/qemu-reclaim) and its tests
    libjson-glib-dev libsoup-3.0-dev prometheus clang-14 libclang-rt-14-dev man-db
    valgrind systemd
    # QEMU's test-io-channel-command (meson test, scripts/lib-tap.sh)
    socat
    qemu-system-x86
    # the firmware of the guest-capable builds (scripts/build.sh: --firmwarepath)
    seabios qemu-system-data
    # the Ceph tests and benchmarks (librbd for QEMU's rbd driver)
    librbd-dev ceph-mon ceph-mgr ceph-osd ceph-common
    # The i386 variant (scripts/build.sh): a 32-bit x86 host, built the way
    # QEMU's own i686 cross container does, with Debian's i686 cross compiler
    # (configure --cross-prefix=i686-linux-gnu-) against i386 multiarch
    # libraries; pkgconf:i386 is the i686-linux-gnu-pkg-config it asks for.
    # Only Multi-Arch: same -dev packages: libfdt-dev is not, and its :i386
    # would replace the libfdt-dev above (that build goes without fdt).
    gcc-i686-linux-gnu libc6-dev:i386 pkgconf:i386
    libglib2.0-dev:i386 zlib1g-dev:i386
)
# dpkg architectures the :arch packages above come from.
FOREIGN_ARCHS=(i386)
# Packages that bookworm has only in too old a version.
BACKPORTS=(meson python3-pycotap)

# Derive the deb-src and backports entries from the machine's own Debian
# entry, so that no mirror host name ever lives in this repository.
add_sources() {
    [ -r "$SOURCES" ] || die "$SOURCES not found: cannot derive apt entries"
    local uris signed
    uris=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' "$SOURCES")
    signed=$(awk '/^Signed-By:/ {print $2; exit}' "$SOURCES")
    [ -n "$uris" ] || die "no Debian archive URI in $SOURCES"
    local want
    want=$(cat <<SRC
Types: deb deb-src
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: $signed

Types: deb-src
URIs: $uris
Suites: bookworm bookworm-updates
Components: main
Signed-By: $signed

# QEMU's source: sid's list names the pinned version (scripts/lib.sh);
# source entries only, no binary package ever comes from sid.
Types: deb-src
URIs: $uris
Suites: sid
Components: main
Signed-By: $signed
SRC
)
    [ -f "$OURS" ] && [ "$(cat "$OURS")" = "$want" ] && return 1
    info "adding bookworm-backports and deb-src entries ($OURS)"
    printf '%s\n' "$want" >"$OURS"
    return 0
}

# Enable the foreign dpkg architectures; true if one was added (the apt
# lists then lack its packages).
add_archs() {
    local a added=1 have
    have=" $(dpkg --print-foreign-architectures | tr '\n' ' ') "
    for a in "${FOREIGN_ARCHS[@]}"; do
        case "$have" in *" $a "*) continue ;; esac
        info "adding dpkg architecture $a"
        dpkg --add-architecture "$a" || die "dpkg --add-architecture $a failed"
        added=0
    done
    return $added
}

# True if the apt lists have no binary packages of a foreign architecture.
lists_lack_archs() {
    local a
    for a in "${FOREIGN_ARCHS[@]}"; do
        ls /var/lib/apt/lists/*_bookworm_main_binary-"$a"_Packages* >/dev/null 2>&1 || return 0
    done
    return 1
}

missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
            echo "$p"
    done
}

step "Checking packages"
need_root
updated=0
changed=0
add_sources && changed=1
add_archs && changed=1
if [ $changed = 1 ] || [ ! -e /var/lib/apt/lists/partial ] || lists_lack_archs ||
   ! ls /var/lib/apt/lists/*bookworm-backports*Packages* >/dev/null 2>&1 ||
   ! ls /var/lib/apt/lists/*_sid_*Sources* >/dev/null 2>&1; then
    info "apt-get update"
    apt-get update -q >/dev/null || die "apt-get update failed"
    updated=1
fi
mapfile -t need < <(missing "${PKGS[@]}" "${EXTRA_PKGS[@]+"${EXTRA_PKGS[@]}"}")
mapfile -t needbp < <(missing "${BACKPORTS[@]}")
# meson from bookworm (1.0) is too old for QEMU 10: insist on >= 1.5.
if [ ${#needbp[@]} -eq 0 ] &&
   ! dpkg --compare-versions "$(dpkg-query -W -f='${Version}' meson)" ge 1.5; then
    needbp=(meson)
fi
if [ ${#need[@]} -gt 0 ] || [ ${#needbp[@]} -gt 0 ]; then
    [ $updated = 1 ] || apt-get update -q >/dev/null || die "apt-get update failed"
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#need[@]} -gt 0 ]; then
        info "installing: ${need[*]}"
        apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
            die "apt-get install ${need[*]} failed"
    fi
    if [ ${#needbp[@]} -gt 0 ]; then
        info "installing from bookworm-backports: ${needbp[*]}"
        apt-get install -y -q --no-install-recommends -t bookworm-backports \
            "${needbp[@]}" >/dev/null ||
            die "apt-get install -t bookworm-backports ${needbp[*]} failed"
    fi
else
    info "all packages present"
fi

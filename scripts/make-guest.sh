#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Make the test guest (tests/guest/README.md) from Debian's packages:
#
#     scripts/make-guest.sh OUTDIR     -> OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz
#
# The kernel of linux-image-cloud-amd64 and the busybox of busybox-static
# are fetched with "apt-get download" into $QR_CACHE/guest-debs and
# unpacked, not installed: installing a kernel package here would run
# initramfs-tools and, through udev, upgrade the host's systemd.  The
# initramfs holds busybox, the virtio modules (and their dependencies from
# modules.dep), tests/guest/init and guestwork, compiled static.
#
# A second run with the same inputs (package versions, our sources, the
# compiler) does nothing; OUTDIR/stamp records them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# = 1 ] || die "usage: $0 OUTDIR"
OUT=$1
GUEST_SRC=$QR_TOP/tests/guest
DEBS=$QR_CACHE/guest-debs
# virtio_pci and virtio_blk are modules in Debian's cloud kernel; its 8250
# serial port and console are built in (CONFIG_SERIAL_8250_CONSOLE=y)
MODULES=(virtio_pci virtio_blk)

step "Making the test guest in $OUT"

# The compiler: gcc -static links against libc6-dev's libc.a.
need=()
for p in gcc libc6-dev; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    need_root
    info "apt-get install ${need[*]}"
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
        die "apt-get install ${need[*]} failed"
fi

# Our own inputs, and a fingerprint of apt's state: while neither changes,
# the packages apt would pick are the same and apt-cache (seconds on a busy
# machine) need not run.
local_stamp=$(
    echo "modules ${MODULES[*]}"
    echo "gcc $(gcc -dumpfullversion) libc $(dpkg-query -W -f '${Version}' libc6-dev:amd64)"
    sha256sum "$GUEST_SRC/guestwork.c" "$GUEST_SRC/init" \
        "$GUEST_SRC/mkinitramfs.py" "$QR_TOP/scripts/make-guest.sh" | sed "s|$QR_TOP/||"
    echo "apt $(ls -l --time-style=+%s /var/lib/apt/lists/*_Packages* /etc/apt/sources.list* \
        /etc/apt/preferences* 2>/dev/null | sha256sum | cut -c1-16)"
)
if [ -f "$OUT/stamp" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.gz" ] &&
   [ "$(grep -v '^package ' "$OUT/stamp")" = "$local_stamp" ]; then
    info "up to date ($(grep '^package ' "$OUT/stamp" | cut -d' ' -f2- | paste -sd, -))"
    exit 0
fi

# The versions apt would install today (its candidates).
candidates() {
    apt-cache policy linux-image-cloud-amd64 busybox-static 2>/dev/null |
        awk '/^[^ ]/ {p = $1} /Candidate:/ && $2 != "(none)" {print p, $2}'
}
cands=$(candidates)
if [ "$(wc -l <<<"$cands")" != 2 ]; then
    need_root
    info "apt-get update (apt has no candidate for the guest's packages)"
    apt-get update -q >/dev/null || die "apt-get update failed"
    cands=$(candidates)
fi
kmeta_ver=$(awk '$1 == "linux-image-cloud-amd64:" {print $2}' <<<"$cands")
bver=$(awk '$1 == "busybox-static:" {print $2}' <<<"$cands")
[ -n "$kmeta_ver" ] && [ -n "$bver" ] ||
    die "apt knows no linux-image-cloud-amd64 or busybox-static (is this Debian amd64?)"
# The metapackage depends on exactly one version of the kernel package.
read -r kpkg kver < <(apt-cache show "linux-image-cloud-amd64=$kmeta_ver" |
    sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -n 1)
[ -n "${kver:-}" ] || die "cannot find the kernel package linux-image-cloud-amd64 depends on"

# apt-get download names files pkg_version_arch.deb, ':' escaped as %3a.
deb_path() {
    echo "$DEBS/${1}_${2//:/%3a}_amd64.deb"
}
kdeb=$(deb_path "$kpkg" "$kver")
bdeb=$(deb_path busybox-static "$bver")
stamp=$(
    echo "$local_stamp"
    echo "package $kpkg $kver"
    echo "package busybox-static $bver"
)

# Fetch what is not in the cache yet.  A 404 means stale lists: update once.
fetch() {
    local pkg=$1 ver=$2 file=$3
    [ -f "$file" ] && return 0
    need_root
    mkdir -p "$DEBS"
    local tmp
    tmp=$(mktemp -d "$DEBS/dl.XXXXXX")
    # apt-get download fetches as the _apt user: let it write here.
    chmod 0777 "$tmp"
    info "apt-get download $pkg=$ver"
    if ! (cd "$tmp" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1); then
        info "download failed; apt-get update and retry"
        apt-get update -q >/dev/null || { rm -rf "$tmp"; die "apt-get update failed"; }
        (cd "$tmp" && apt-get download -q "$pkg=$ver" >/dev/null) ||
            { rm -rf "$tmp"; die "apt-get download $pkg=$ver failed"; }
    fi
    mv "$tmp"/*.deb "$file" || { rm -rf "$tmp"; die "apt-get download gave no .deb"; }
    rm -rf "$tmp"
}
fetch "$kpkg" "$kver" "$kdeb"
fetch busybox-static "$bver" "$bdeb"

mkdir -p "$OUT"
work=$OUT/work
rm -rf "$work"
mkdir -p "$work"
dpkg-deb -x "$kdeb" "$work/kernel" || die "cannot unpack $kdeb"
dpkg-deb -x "$bdeb" "$work/busybox" || die "cannot unpack $bdeb"
moddir=$(echo "$work"/kernel/lib/modules/*)
[ -d "$moddir" ] || die "no /lib/modules in $kdeb"
# The package's postinst runs depmod: we do it with busybox's, so that
# the modules' dependencies come from the kernel's own modinfo.
"$work/busybox/bin/busybox" depmod -b "$work/kernel" "$(basename "$moddir")" ||
    die "depmod failed"

info "compiling guestwork (static)"
nice -n 19 gcc -std=c11 -O2 -Wall -Wextra -Werror -static -pthread \
    -o "$work/guestwork" "$GUEST_SRC/guestwork.c" || die "compiling guestwork.c failed"

mods=$("$QR_PYTHON" "$GUEST_SRC/mkinitramfs.py" "$OUT/initramfs.cpio.gz" \
    "$work/busybox/bin/busybox" "$GUEST_SRC/init" "$work/guestwork" \
    "$moddir" "${MODULES[@]}") || die "writing the initramfs failed"
cp "$work/kernel/boot/vmlinuz-$(basename "$moddir")" "$OUT/vmlinuz.tmp"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
rm -rf "$work"
printf '%s\n' "$stamp" >"$OUT/stamp"
info "kernel $kpkg $kver; modules: $mods"
info "$(du -h "$OUT/vmlinuz" | cut -f1) vmlinuz, $(du -h "$OUT/initramfs.cpio.gz" | cut -f1) initramfs.cpio.gz"

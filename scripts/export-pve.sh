#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Export everything pve-qemu needs, in pve-qemu's own layout, to
# build/pve-export/ (or the directory given):
#   debian/patches/pve/00NN-PVE-*.patch   the series, then pve-backup.c's patch
#   series.add                            the lines for debian/patches/series
#   README                                the d/rules and d/control changes
# Numbering continues after pve-qemu 10.0.2-4's last pve/ patch (0060).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out=${1:-$QR_WORK/pve-export}
first=${QR_PVE_FIRST:-61}
step "Exporting the series for pve-qemu to $out"
rm -rf "$out"
mkdir -p "$out/debian/patches/pve"
n=$first
add() {
    local src=$1 subject name
    subject=$(sed -n 's/^Subject: \[PATCH[^]]*\] //p' "$src" | head -n 1)
    # pve-qemu names its own patches "PVE-..."; keep the upstream subject
    case "$subject" in PVE*) subject=${subject#PVE-} ;; esac
    name=$(printf '%04d-PVE-%s' "$n" "$subject" |
           sed 's/[^A-Za-z0-9._-]/-/g; s/--*/-/g' | cut -c1-64 | sed 's/-$//')
    cp "$src" "$out/debian/patches/pve/$name.patch"
    echo "pve/$name.patch" >>"$out/series.add"
    n=$((n + 1))
}
: >"$out/series.add"
while read -r p; do
    add "$QR_PATCHES/$p"
done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$QR_PATCHES/series")
while read -r p; do
    add "$QR_PATCHES/pve/$p"
done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$QR_PATCHES/pve/series")
cat >"$out/README" <<'TXT'
For pve-qemu-kvm 10.0.2-4:

1. Copy debian/patches/pve/*.patch into pve-qemu's debian/patches/pve/ and
   append series.add to debian/patches/series.
2. debian/control: add to Build-Depends
       libgoogle-perftools-dev (>= 2.10),
   (gperftools 2.16 is what Proxmox VE 9 ships; 2.10 is the oldest tested.)
3. debian/rules: add to the ./configure call
       --enable-malloc=tcmalloc \
   (or keep glibc: the series works with every allocator, and the automatic
   release after backups replaces pve-backup.c's malloc_trim(4 MiB).)
4. Operators can set the policy per VM with
       -object allocator-policy,id=policy,release-after-backup=on,min-releasable=64M
   and read the figures with "info allocator" in "qm monitor".
TXT
info "$((n - first)) patches, numbered $first..$((n - 1))"

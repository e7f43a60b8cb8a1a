#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Export everything pve-qemu needs, in pve-qemu's layout, into DIR:
#   debian/patches/pve/00NN-*.patch   the series, then qemu-patches/pve/
#   series.add                        the lines for debian/patches/series
#   README                            the debian/control and debian/rules changes
# Numbering continues after pve-qemu-kvm 10.2.1-2's last pve/ patch (0047).
#   scripts/export-pve.sh DIR
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-export.sh"

[ $# -eq 1 ] || die "usage: scripts/export-pve.sh DIR"
out=$1
first=48
ident=$(export_identity)
date=$(export_date)
head=$(export_commits "$ident" "$date")
step "Exporting the series for pve-qemu to $out"
rm -rf "$out"
mkdir -p "$out/debian/patches/pve"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$QR_TREE" format-patch -q --zero-commit --no-signature --no-numbered \
    -o "$tmp/upstream" "baseline..$head"
"$QR_PYTHON" "$QR_TOP/scripts/series.py" mbox "$QR_PATCHES/pve/series" "$tmp/pve" \
    --ident "$ident" --date "$date" || die "cannot write qemu-patches/pve/ as mails"

n=$first
: >"$out/series.add"
add() {
    local src=$1 subject name
    subject=$(sed -n 's/^Subject: \[PATCH[^]]*\] //p' "$src" | head -n 1)
    name=$(printf '%04d-%s' "$n" "$subject" |
           sed 's/[^A-Za-z0-9._-]/-/g; s/--*/-/g' | cut -c1-57 | sed 's/-$//')
    cp "$src" "$out/debian/patches/pve/$name.patch"
    echo "pve/$name.patch" >>"$out/series.add"
    n=$((n + 1))
}
for p in "$tmp"/upstream/*.patch; do add "$p"; done
while read -r p; do
    add "$tmp/pve/$p"
done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e 's/^\([^[:space:]]*\).*/\1/' "$QR_PATCHES/pve/series")

cat >"$out/README" <<TXT
For pve-qemu-kvm 10.2.1-2 (QEMU $QEMU_VERSION):

1. Copy debian/patches/pve/*.patch into pve-qemu's debian/patches/pve/ and
   append series.add to debian/patches/series.  The series comes first,
   then the pve-backup.c patches: the release replacing malloc_trim(), and
   a fix for the VMA writer that every VMA backup leaked (4.2 MiB).
2. debian/control: add to Build-Depends
       libgoogle-perftools-dev (>= 2.10),
   (gperftools 2.16 is what Proxmox VE 9 ships; 2.10 is the oldest tested.)
3. debian/rules: add to the ./configure call
       --enable-malloc=tcmalloc \\
   (or keep glibc: the series works with every allocator, and the automatic
   release after backups replaces pve-backup.c's malloc_trim(4 MiB).)
TXT
info "$((n - first)) patches, numbered $(printf %04d $first)..$(printf %04d $((n - 1))), from $ident"

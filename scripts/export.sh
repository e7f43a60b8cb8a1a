#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Export the commits of the generated QEMU tree back to qemu-patches/: one
# git format-patch file per commit, and the series file.  The output is
# deterministic (zero commit ids, no version signature), so exporting an
# unchanged tree changes nothing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

step "Exporting $QR_TREE to qemu-patches/"
[ -d "$QR_TREE/.git" ] || die "no QEMU tree at $QR_TREE: run scripts/tree.sh first"
cd "$QR_TREE"
dirty=$(git status --porcelain --untracked-files=no)
[ -z "$dirty" ] || die "uncommitted edits in $QR_TREE; commit them first:
$dirty"
count=$(git rev-list --count baseline..HEAD)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git format-patch -q --zero-commit --no-signature --no-numbered \
    -o "$tmp" baseline..HEAD >/dev/null

mkdir -p "$QR_PATCHES"
rm -f "$QR_PATCHES"/*.patch
{
    echo "# QEMU $QEMU_VERSION: the series, in the order git am applies it."
    echo "# Made by scripts/export.sh from the generated tree."
} >"$QR_PATCHES/series"
for f in "$tmp"/*.patch; do
    [ -e "$f" ] || continue
    cp "$f" "$QR_PATCHES/"
    basename "$f" >>"$QR_PATCHES/series"
done
info "$count patches exported"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Take edits made by hand in the generated tree back to their source:
# files the series adds are copied to the top level; edits to QEMU's own
# files are folded into the named patch of qemu-patches/series, and the
# patch files' diffs are rewritten (later patches' context moves with it).
#   scripts/fixup.sh PATCH        e.g. scripts/fixup.sh rcu.patch
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -le 1 ] || die "usage: scripts/fixup.sh [PATCH]"
cd "$QR_TREE"
mapfile -t adds < <("$QR_PYTHON" "$QR_TOP/scripts/series.py" adds)
mapfile -t changed < <(git diff --name-only HEAD)
[ ${#changed[@]} -gt 0 ] || die "no edits in $QR_TREE"
own=()
for f in "${changed[@]}"; do
    if printf '%s\n' "${adds[@]}" | grep -qxF "$f"; then
        cp "$f" "$QR_TOP/$f"
        git checkout -q HEAD -- "$f"
        info "copied $f to the top level"
    else
        own+=("$f")
    fi
done
[ ${#own[@]} -gt 0 ] || exit 0
[ $# -eq 1 ] || die "edits to QEMU's files (${own[*]}): name the patch they belong to"
n=$("$QR_PYTHON" "$QR_TOP/scripts/series.py" index "$1") || exit 1
target=$(git rev-list --reverse baseline..HEAD | sed -n "${n}p")
git add -- "${own[@]}"
git commit -q --fixup "$target"
GIT_SEQUENCE_EDITOR=: git rebase -q -i --autosquash baseline ||
    die "rebase stopped (conflict?): finish it in $QR_TREE, then run scripts/series.py refresh $QR_TREE baseline HEAD"
"$QR_PYTHON" "$QR_TOP/scripts/series.py" refresh "$QR_TREE" baseline HEAD
info "folded ${own[*]} into $1; qemu-patches/ rewritten"

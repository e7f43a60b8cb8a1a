#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Fold the uncommitted edits of the generated tree into the patch whose
# subject starts with the given text, then export the series:
#   scripts/fixup.sh "util: add an allocator"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: scripts/fixup.sh SUBJECT-PREFIX"
cd "$QR_TREE"
target=$(git log --format='%h %s' baseline..HEAD | awk -v p="$1" 'index(substr($0, index($0, " ") + 1), p) == 1 {print $1}')
[ -n "$target" ] || die "no patch whose subject starts with '$1'"
[ "$(wc -w <<<"$target")" -eq 1 ] || die "'$1' names more than one patch: $target"
git add -u
git diff --cached --quiet && die "nothing to fold in"
git commit -q --fixup "$target"
GIT_SEQUENCE_EDITOR=: git rebase -q -i --autosquash baseline ||
    die "rebase stopped (conflict?): finish it in $QR_TREE"
"$QR_TOP/scripts/export.sh"

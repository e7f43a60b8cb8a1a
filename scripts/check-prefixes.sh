#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Check that every prefix of the series builds (one logical change per
# patch, bisectable): check out each patch's commit in the generated tree
# and build one variant incrementally, then return to the full series.
#   scripts/check-prefixes.sh [variant]     (default: tcmalloc)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variant=${1:-tcmalloc}
"$QR_TOP/scripts/tree.sh"
cd "$QR_TREE"
branch=$(git symbolic-ref -q --short HEAD) || die "the tree is not on a branch"
trap 'git -C "$QR_TREE" checkout -q "$branch" 2>/dev/null || true' EXIT
n=0
for c in $(git rev-list --reverse baseline..HEAD); do
    n=$((n + 1))
    git checkout -q "$c"
    step "Prefix $n: $(git log -1 --format=%s "$c")"
    QR_TARGETS="qemu-system-x86_64 qemu-img" "$QR_TOP/scripts/build.sh" "$variant" ||
        die "the series does not build after patch $n"
done
git checkout -q "$branch"
info "all $n prefixes build ($variant)"

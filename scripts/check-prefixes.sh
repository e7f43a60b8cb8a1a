#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Check that every prefix of the series builds, tests included (one logical
# change per patch, bisectable), and end with the whole series built in
# every variant: check out each patch's commit in the generated tree, from
# the first to the last, and build each variant incrementally in its own
# build directory.  Walking forward, every prefix compiles only what its
# patch touches (and relinks); the first prefix is each variant's full
# build, so the walk costs little more than building the series once.
#
# The asan build joins at the series itself: it compiles the sources of
# the system build, with the allocator-system.c backend that the tcmalloc
# and jemalloc builds compile at the first prefix (a file the series adds
# is added whole by one patch and never edited later: scripts/series.py).
# Its prefixes would find nothing the others do not, at the price of the
# slowest compiler runs of all.
#   scripts/check-prefixes.sh [variant...]     (default: all)
# Exits non-zero if a prefix does not build in a variant (after trying the
# others and the series itself).  In a checkout whose builds already hold
# the series, the walk first goes back to patch 1: a fresh clone's walk
# (CI's) pays only the way forward.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variants=("$@")
[ ${#variants[@]} -gt 0 ] || read -r -a variants <<<"$QR_VARIANTS_ALL"
walkers=()
for v in "${variants[@]}"; do
    [ "$v" = asan ] || walkers+=("$v")
done

"$QR_TOP/scripts/tree.sh"
cd "$QR_TREE"
# tree.sh left the series checked out on master.  Edits by hand would
# be carried into every prefix (or stop a checkout): fold them in first.
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
    die "edits by hand in $QR_TREE: fold them in with scripts/fixup.sh PATCH first"
trap 'git -C "$QR_TREE" checkout -q master' EXIT
total=$(git rev-list --count baseline..master)
n=0
broken=()
if [ ${#walkers[@]} -gt 0 ]; then
    for c in $(git rev-list --reverse baseline..master); do
        n=$((n + 1))
        # The last prefix is the series itself: built below.
        [ "$n" -lt "$total" ] || break
        git checkout -q "$c"
        step "Prefix $n/$total: $(git log -1 --format=%s "$c")"
        start=$SECONDS
        # A prefix that does not build is reported; the walk goes on.
        for v in "${walkers[@]}"; do
            QR_TARGETS='' "$QR_TOP/scripts/build.sh" "$v" ||
                broken+=("patch $n ($(git log -1 --format=%s "$c")) in $v")
        done
        info "prefix $n: $((SECONDS - start)) s"
    done
fi
git checkout -q master
step "Prefix $total/$total: the series"
start=$SECONDS
QR_TARGETS='' "$QR_TOP/scripts/build.sh" "${variants[@]}" ||
    die "the series itself does not build"
info "prefix $total: $((SECONDS - start)) s"
if [ ${#broken[@]} -gt 0 ]; then
    printf -v list '\n  %s' "${broken[@]}"
    die "the series does not build after:$list"
fi
if [ ${#walkers[@]} -eq 0 ]; then
    info "the series builds, all targets (${variants[*]}); no variant walked its prefixes"
else
    info "all $total prefixes build, all targets (${walkers[*]}; ${variants[*]} at the last)"
fi

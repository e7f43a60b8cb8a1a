#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Check that every prefix of the series builds, tests included, in every
# variant (one logical change per patch, bisectable): check out each
# patch's commit in the generated tree and build each variant
# incrementally, in its own build directory, then return to the full
# series.  Patches change config-host.h only where they define a symbol
# (CONFIG_TCMALLOC, CONFIG_JEMALLOC in their own variant), so most prefixes
# recompile only what the patch touches and relink.
#   scripts/check-prefixes.sh [variant...]     (default: all)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variants=("$@")
[ ${#variants[@]} -gt 0 ] || read -r -a variants <<<"$QR_VARIANTS_ALL"
"$QR_TOP/scripts/tree.sh"
cd "$QR_TREE"
head=$(git rev-parse HEAD)
trap 'git -C "$QR_TREE" checkout -q "$head" 2>/dev/null; git -C "$QR_TREE" checkout -q master 2>/dev/null || true' EXIT
n=0
total=$(git rev-list --count baseline..HEAD)
for c in $(git rev-list --reverse baseline.."$head"); do
    n=$((n + 1))
    # The last prefix is the series itself: built after the loop.
    [ "$n" -lt "$total" ] || break
    git checkout -q "$c"
    step "Prefix $n/$total: $(git log -1 --format=%s "$c")"
    QR_TARGETS= "$QR_TOP/scripts/build.sh" "${variants[@]}" ||
        die "the series does not build after patch $n ($(git log -1 --format=%s "$c"))"
done
git checkout -q master
QR_TARGETS= "$QR_TOP/scripts/build.sh" "${variants[@]}" >/dev/null 2>&1 ||
    die "the full series no longer builds after the prefix checks"
info "all $total prefixes build, all targets (${variants[*]})"

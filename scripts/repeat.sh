#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Repeatability, measured: run the project's unit test and qtest N times
# in every variant, with one CPU hog per core running beside them (a busy
# host: a race that needs a slow thread shows up here), and count every
# case of every round.
#   scripts/repeat.sh N [VARIANT...]
# Builds incrementally first, like the test command.  Ends with one line
# "repeat: N rounds x VARIANTS: P passed, F failed" and exits non-zero if
# anything failed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-tap.sh"

[ $# -ge 1 ] && [[ $1 =~ ^[1-9][0-9]*$ ]] ||
    die "usage: scripts/repeat.sh N [VARIANT...] (N: rounds, at least 1)"
rounds=$1
shift
if [ $# -gt 0 ]; then
    variants=("$@")
else
    read -r -a variants <<<"${QR_VARIANTS:-$QR_VARIANTS_ALL}"
fi
LOGS=$QR_WORK/repeat-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"

trap stop_hogs EXIT

main() {
    local v r start=$SECONDS
    "$QR_TOP/scripts/deps.sh"
    "$QR_TOP/scripts/tree.sh"
    "$QR_TOP/scripts/build.sh" "${variants[@]}"

    step "CPU hogs: $(nproc), one per core"
    start_hogs
    for ((r = 1; r <= rounds; r++)); do
        step "Round $r of $rounds"
        for v in "${variants[@]}"; do
            run_project_tests "round-$r" "$v"
        done
    done
    stop_hogs

    if [ ${#failures[@]} -gt 0 ]; then
        info "failed: ${failures[*]}"
    fi
    for s in "${skips[@]+"${skips[@]}"}"; do
        info "skipped: $s"
    done
    echo "repeat: $rounds rounds x ${variants[*]} in $((SECONDS - start)) s," \
         "beside $(nproc) CPU hogs: $passed passed, $failed failed," \
         "$skipped skipped"
    [ "$failed" -eq 0 ]
}

main

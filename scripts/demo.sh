#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The main job: build the patched QEMU (tcmalloc) and show the feature on a
# booted VM.  Installs what it needs; a second run only rebuilds what changed.
#   scripts/demo.sh [VARIANT...]    (tcmalloc; or system, jemalloc: each
#                                    allocator's figures on request)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(tcmalloc)
for v in "${variants[@]}"; do
    case $v in
    system|tcmalloc|jemalloc) ;;
    *) die "'$v' cannot boot the guest: system, tcmalloc or jemalloc" ;;
    esac
done
"$QR_TOP/scripts/deps.sh"
"$QR_TOP/scripts/tree.sh"
"$QR_TOP/scripts/build.sh" "${variants[@]}"
"$QR_TOP/scripts/make-guest.sh" "$QR_WORK/guest"

for v in "${variants[@]}"; do
    b=$QR_WORK/build-$v
    step "The allocator API in the '$v' build: unit test on a heap left fragmented by 4 threads"
    "$b/tests/unit/test-allocator" --tap -p /allocator/release/reclaims 2>&1 |
        sed -n 's/^# \(freed\|returned\)/  \1/p'

    step "A VM on the '$v' build: guest I/O, a backup while it writes, info allocator, releases"
    "$QR_PYTHON" "$QR_TOP/scripts/demo-session.py" "$b/qemu-system-x86_64" \
        "$QR_WORK/guest" "$QR_WORK/demo-$v"
done

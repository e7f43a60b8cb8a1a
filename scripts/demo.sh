#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The main job: build the patched QEMU with tcmalloc and show the feature
# working.  Installs what it needs; a second run only rebuilds what changed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variant=${QR_DEMO_VARIANT:-tcmalloc}
"$QR_TOP/scripts/deps.sh"
"$QR_TOP/scripts/tree.sh"
"$QR_TOP/scripts/build.sh" "$variant"

b=$QR_WORK/build-$variant
step "The allocator API in the '$variant' build: unit test on a heap left fragmented by 4 threads"
"$b/tests/unit/test-allocator" --tap -p /allocator/release/reclaims 2>&1 |
    sed -n 's/^# \(freed\|returned\)/  \1/p'

step "A live QEMU ('$variant' build): workload, statistics, release, over QMP and HMP"
"$QR_PYTHON" "$QR_TOP/scripts/demo-session.py" "$b/qemu-system-x86_64" "$QR_WORK/demo"

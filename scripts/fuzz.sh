#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run the QMP parser's libFuzzer target for SECONDS (default 60) from the
# committed seed corpus, in a scratch corpus directory under build/.
# Prints libFuzzer's last status line: runs, coverage, corpus size.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

secs=${1:-60}
"$QR_TOP/scripts/build-tool.sh" fuzz
corpus=$QR_WORK/fuzz-corpus
mkdir -p "$corpus"
cp -n "$QR_TOP"/tools/qemu-reclaim/fuzz-corpus/* "$corpus/"
step "Fuzzing the QMP parser for $secs s"
log=$QR_WORK/fuzz.log
# Crashes land in build/ as crash-*; the exit status says whether one did
if ! "$QR_WORK/fuzz/tools/qemu-reclaim/fuzz-qmp-parser" \
        -max_total_time="$secs" -max_len=8192 -print_final_stats=1 \
        -artifact_prefix="$QR_WORK/" "$corpus" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "the fuzzer found a failure (input saved in $QR_WORK/crash-*)"
fi
runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
echo "fuzz-qmp-parser: $runs runs in $secs s, $cov, corpus $(ls "$corpus" | wc -l) inputs, no failure"

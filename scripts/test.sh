#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The test command: install what is needed, make the patched QEMU tree,
# build every allocator variant, run every test.  Ends with one line
# "tests: N passed, N failed" and exits non-zero if anything failed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

read -r -a variants <<<"${QR_VARIANTS:-$QR_VARIANTS_ALL}"
LOGS=$QR_WORK/test-logs
passed=0
failed=0
skipped=0
failures=()

"$QR_TOP/scripts/deps.sh"
"$QR_TOP/scripts/tree.sh"
"$QR_TOP/scripts/build.sh" "${variants[@]}"
mkdir -p "$LOGS"

# Run a TAP-speaking test program; count its test cases.
run_tap() {
    local name=$1; shift
    local log=$LOGS/$name.log ok nok rc=0
    mkdir -p "$(dirname "$log")"
    info "$name"
    "$@" --tap -k >"$log" 2>&1 || rc=$?
    ok=$(grep '^ok ' "$log" | grep -vc '# SKIP' || true)
    skipped=$((skipped + $(grep '^ok ' "$log" | grep -c '# SKIP' || true)))
    nok=$(grep -c '^not ok ' "$log" || true)
    if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then
        nok=1   # died without saying which case
    fi
    passed=$((passed + ok))
    failed=$((failed + nok))
    grep -E '^(ok|not ok) ' "$log" | sed 's/^/      /' >&2
    if [ "$nok" -gt 0 ]; then
        failures+=("$name")
        info "FAILED: $name (exit $rc); last lines of $log:"
        tail -n 20 "$log" | sed 's/^/      | /' >&2
    fi
}

# The harness itself: exporting the generated tree reproduces qemu-patches/
# byte for byte, so nothing in the tree can be lost or silently reformatted.
check_export_roundtrip() {
    local tmp rc=0
    step "Checking that qemu-patches/ round-trips through the tree"
    tmp=$(mktemp -d)
    cp -a "$QR_PATCHES/." "$tmp/"
    "$QR_TOP/scripts/export.sh" 2>/dev/null
    if diff -r "$tmp" "$QR_PATCHES" >/dev/null; then
        passed=$((passed + 1))
        info "ok: export is identical to the committed series"
    else
        failed=$((failed + 1))
        failures+=("export-roundtrip")
        info "FAILED: export differs from the committed series:"
        diff -r "$tmp" "$QR_PATCHES" | head -n 30 >&2 || true
        cp -a "$tmp/." "$QR_PATCHES/"
    fi
    rm -rf "$tmp"
}

# Every patch as upstream and pve-qemu receive it: checkpatch.pl clean,
# no error and no warning.
check_checkpatch() {
    local p out
    step "checkpatch.pl on every patch"
    for p in "$QR_PATCHES"/*.patch "$QR_PATCHES"/pve/*.patch; do
        [ -e "$p" ] || continue
        out=$(cd "$QR_TREE" && ./scripts/checkpatch.pl --no-color "$p" 2>&1 || true)
        if grep -q '^total: 0 errors, 0 warnings' <<<"$out" ||
           grep -q 'has no obvious style problems' <<<"$out"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            failures+=("checkpatch:$(basename "$p")")
            info "FAILED: checkpatch on $(basename "$p"):"
            grep -E -A3 '^(ERROR|WARNING)' <<<"$out" | head -n 20 >&2
        fi
    done
    info "checked $(ls "$QR_PATCHES"/*.patch "$QR_PATCHES"/pve/*.patch 2>/dev/null | wc -l) patches"
}

# Run a check that is one test: NAME, then the command.
run_check() {
    local name=$1; shift
    if "$@" >"$LOGS/$name.log" 2>&1; then
        passed=$((passed + 1))
        info "ok: $(tail -n 1 "$LOGS/$name.log" | sed 's/^ *//')"
    else
        failed=$((failed + 1))
        failures+=("$name")
        info "FAILED: $name; last lines of $LOGS/$name.log:"
        tail -n 20 "$LOGS/$name.log" | sed 's/^/      | /' >&2
        return 1
    fi
}

check_export_roundtrip
check_checkpatch

for v in "${variants[@]}"; do
    step "Unit tests, variant '$v'"
    b=$QR_WORK/build-$v
    # Sanitizer findings fail the test; leaks are checked in the unit test,
    # not in QEMU processes (QEMU does not free everything at exit).
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    export ASAN_OPTIONS=detect_leaks=1
    run_tap "$v/test-allocator" "$b/tests/unit/test-allocator"
    export ASAN_OPTIONS=detect_leaks=0
    step "QTests, variant '$v' (real QEMU processes over QMP)"
    export QTEST_QEMU_BINARY=$b/qemu-system-x86_64
    export QTEST_QEMU_IMG=$b/qemu-img
    for t in allocator-test allocator-backup-test allocator-torture-test \
             qmp-test qmp-cmd-test test-hmp; do
        run_tap "$v/$t" "$b/tests/qtest/$t"
    done
    # Not under the sanitizers: their allocator keeps freed memory in a
    # quarantine, which is what this test must not be about.
    if [ "$v" != asan ]; then
        step "Memory pressure, variant '$v' (a memory cgroup made by the test)"
        run_tap "$v/memory-pressure" "$QR_PYTHON" "$QR_TOP/tests/memory-pressure.py"
    fi
done


# The operator tool: its unit tests, then the tool against real QEMU
# processes of every build plus Debian's unpatched QEMU, hostile peers,
# promtool and a real Prometheus server, then a short fuzzing run.
step "The operator tool (tools/qemu-reclaim)"
if run_check tool-build "$QR_TOP/scripts/build-tool.sh" fuzz; then
    export QR_TOOL=$QR_WORK/tool/tools/qemu-reclaim/qemu-reclaim
    for t in test-qmp-parser test-units; do
        run_tap "tool/$t" "$QR_WORK/tool/tools/qemu-reclaim/$t"
    done
    run_check tool-install "$QR_TOP/tests/tool/check-install.sh" || true
    for t in test-tool test-faults test-prometheus; do
        run_tap "tool/$t" "$QR_PYTHON" "$QR_TOP/tests/tool/$t.py"
    done
    run_check fuzz "$QR_TOP/scripts/fuzz.sh" "${QR_FUZZ_SECONDS:-30}" || true
fi

# Real Ceph: a one-OSD cluster on 127.0.0.1 (scripts/ceph-cluster.sh) and
# an rbd image backed up by each allocator build, once for all builds.
step "Backups from Ceph RBD (tests/rbd-backup.py, every allocator build)"
run_tap rbd-backup env -u QTEST_QEMU_BINARY \
    QR_TOOL="$QR_WORK/tool/tools/qemu-reclaim/qemu-reclaim" \
    "$QR_PYTHON" "$QR_TOP/tests/rbd-backup.py"

# The series' docs page and QAPI doc comments render in QEMU's manual.
step "QEMU's manual with the series"
run_check docs "$QR_TOP/scripts/check-docs.sh" || true

# Last, as it checks out older commits: every prefix of the series builds.
if [ -z "${QR_SKIP_PREFIXES:-}" ]; then
    step "Every prefix of the series builds (tcmalloc)"
    run_check prefixes "$QR_TOP/scripts/check-prefixes.sh" tcmalloc || true
fi

step "Summary"
if [ ${#failures[@]} -gt 0 ]; then
    info "failed: ${failures[*]} (logs in $LOGS)"
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

# SPDX-License-Identifier: GPL-2.0-or-later
# Counting test programs, for scripts/test.sh and scripts/repeat.sh.  The
# caller sets LOGS.
passed=0
failed=0
skipped=0
failures=()
skips=()

# Add what scripts/tapcount.py printed ("P F S", then reasons) for the
# run NAME whose log is LOG, exit RC.
add_counts() {
    local name=$1 log=$2 rc=$3 counts=$4 p f s reason
    read -r p f s <<<"$(head -n 1 <<<"$counts")"
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    while IFS= read -r reason; do
        case "$reason" in
        skip:*) skips+=("$name: ${reason#skip: }") ;;
        fail:*) info "  $name: ${reason#fail: }" ;;
        esac
    done < <(tail -n +2 <<<"$counts")
    if [ "$f" -gt 0 ]; then
        failures+=("$name")
        info "FAILED: $name (exit $rc); last lines of $log:"
        tail -n 20 "$log" | sed 's/^/      | /' >&2
    fi
}

# Run a TAP-speaking test program and count its cases with
# scripts/tapcount.py: an unmet plan, a crash or a whole-file skip are
# counted, never lost (tests/test-tapcount.py checks that).
run_tap() {
    local name=$1; shift
    local log=$LOGS/$name.log rc=0
    mkdir -p "$(dirname "$log")"
    info "$name"
    "$@" --tap -k >"$log" 2>&1 </dev/null || rc=$?
    { grep -E '^(ok|not ok) ' "$log" || true; } | sed 's/^/      /' >&2
    add_counts "$name" "$log" "$rc" \
        "$("$QR_PYTHON" "$QR_TOP/scripts/tapcount.py" "$log" "$rc")"
}

# QEMU's tests that cannot run in these builds although QEMU registers
# them, "NAME|why": counted as skipped, with the reason.
MESON_EXCLUDED=(
    "cxl-test|needs the q35 machine, which these builds do not have; QEMU registers it wherever CXL is built, and CXL is built here only so that the pc machine links (scripts/build.sh)"
)

# QEMU's own harness on a build: `meson test --suite unit --suite qtest`,
# parallel as meson runs it (and with its random MALLOC_PERTURB_), each
# meson test counted once by scripts/tapcount.py --meson.
run_meson() {
    local name=$1 build=$2 log=$LOGS/$1.log rc=0 line ex
    local -a tests=()
    mkdir -p "$(dirname "$log")"
    while IFS= read -r line; do
        for ex in "${MESON_EXCLUDED[@]}"; do
            if [ "${line##*/}" = "${ex%%|*}" ]; then
                skipped=$((skipped + 1))
                skips+=("$name: ${line##* / }: ${ex#*|}")
                continue 2
            fi
        done
        tests+=("${line##* / }")
    done < <(cd "$build" && meson test --no-rebuild --list --suite unit --suite qtest 2>/dev/null)
    if [ ${#tests[@]} -eq 0 ]; then
        add_counts "$name" /dev/null 1 "0 1 0
fail: meson lists no test in $build"
        return
    fi
    info "$name: meson test, ${#tests[@]} tests of the unit and qtest suites ($(nproc) at a time)"
    rm -f "$build/meson-logs/testlog.json"
    (cd "$build" && meson test --no-rebuild --num-processes "$(nproc)" \
        --print-errorlogs "${tests[@]}") >"$log" 2>&1 </dev/null || rc=$?
    grep -E '^ *(Ok|Fail|Skipped|Timeout): ' "$log" |
        tr -s ' ' | paste -sd' ' | sed 's/^/      /' >&2 || true
    add_counts "$name" "$log" "$rc" \
        "$("$QR_PYTHON" "$QR_TOP/scripts/tapcount.py" --meson "$build/meson-logs/testlog.json" "$rc")"
}

# The project's own unit test and qtest on one variant's build, counted
# under ROUND/VARIANT/...
run_project_tests() {
    local round=$1 v=$2 b=$QR_WORK/build-$2
    # Sanitizer findings fail the test; leaks are checked in the unit test,
    # not in QEMU processes (QEMU does not free everything at exit).
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    export ASAN_OPTIONS=detect_leaks=1
    run_tap "$round/$v/test-allocator" "$b/tests/unit/test-allocator"
    export ASAN_OPTIONS=detect_leaks=0
    qtest_env "$v"
    run_tap "$round/$v/allocator-test" "$b/tests/qtest/allocator-test"
}

# What QEMU's qtests need to find the variant's binaries.  The i386 build
# (a 32-bit host) has only the 32-bit target.
qtest_env() {
    local b=$QR_WORK/build-$1
    if [ "$1" = i386 ]; then
        export QTEST_QEMU_BINARY=$b/qemu-system-i386
    else
        export QTEST_QEMU_BINARY=$b/qemu-system-x86_64
    fi
    export QTEST_QEMU_IMG=$b/qemu-img
}

# One busy loop per core beside the tests: a race that needs a slow
# thread shows up then.  stop_hogs is safe to call twice (and on EXIT).
hogs=()
start_hogs() {
    local _
    for _ in $(seq "$(nproc)"); do
        "$QR_PYTHON" -c 'while True: pass' &
        hogs+=($!)
    done
}
stop_hogs() {
    [ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null || true
    hogs=()
}

# SPDX-License-Identifier: GPL-2.0-or-later
# Counting TAP-speaking test programs, for scripts/test.sh and
# scripts/repeat.sh.  The caller sets LOGS.
passed=0
failed=0
skipped=0
failures=()
skips=()

# Run a TAP-speaking test program and count its cases with
# scripts/tapcount.py: an unmet plan, a crash or a whole-file skip are
# counted, never lost (tests/test-tapcount.py checks that).
run_tap() {
    local name=$1; shift
    local log=$LOGS/$name.log rc=0 counts p f s reason
    mkdir -p "$(dirname "$log")"
    info "$name"
    "$@" --tap -k >"$log" 2>&1 </dev/null || rc=$?
    counts=$("$QR_PYTHON" "$QR_TOP/scripts/tapcount.py" "$log" "$rc")
    read -r p f s <<<"$(head -n 1 <<<"$counts")"
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    { grep -E '^(ok|not ok) ' "$log" || true; } | sed 's/^/      /' >&2
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


#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The test command: install what is needed, make the patched QEMU tree,
# build every allocator variant, run every test.  Ends with one line
# "tests: N passed, N failed" and exits non-zero if anything failed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-tap.sh"

read -r -a variants <<<"${QR_VARIANTS:-$QR_VARIANTS_ALL}"
LOGS=$QR_WORK/test-logs
trap stop_hogs EXIT


# Count one check: NAME, then whether it held (0) and what to print.
count() {
    local name=$1 rc=$2 msg=$3
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        info "ok: $name${msg:+: $msg}"
    else
        failed=$((failed + 1))
        failures+=("$name")
        info "FAILED: $name${msg:+: $msg}"
    fi
}

# Every prefix of the series applied in AM is the built tree's prefix, but
# for the name in MAINTAINERS (the exporter's, not the harness's).
same_prefixes() {
    local -a mine built
    local i
    mapfile -t mine < <(git -C "$1" rev-list --reverse baseline..HEAD)
    mapfile -t built < <(git -C "$QR_TREE" rev-list --reverse baseline..HEAD)
    [ ${#mine[@]} -eq ${#built[@]} ] || {
        echo "${#mine[@]} commits applied, ${#built[@]} in the tree" >>"$LOGS/git-am.log"
        return 1
    }
    for i in "${!mine[@]}"; do
        git -C "$1" diff --stat "${mine[$i]}" "${built[$i]}" -- . ':!MAINTAINERS' \
            >>"$LOGS/git-am.log" || return 1
        git -C "$1" diff --quiet "${mine[$i]}" "${built[$i]}" -- . ':!MAINTAINERS' || {
            echo "prefix $((i + 1)) differs" >>"$LOGS/git-am.log"
            return 1
        }
    done
}

# The series as qemu-devel and pve-qemu receive it.  The exports are made
# with a fixed test identity (the exporter's own one is not ours to use).
check_series() {
    local a=$QR_WORK/export-a b=$QR_WORK/export-b am=$QR_WORK/am-check out rc p
    local -a ident=(GIT_CONFIG_COUNT=2 GIT_CONFIG_KEY_0=user.name
                    GIT_CONFIG_VALUE_0="QEMU Reclaim Test" GIT_CONFIG_KEY_1=user.email
                    GIT_CONFIG_VALUE_1=test@qemu-reclaim.invalid)
    step "The series: one source of truth, exported, applied, checkpatch-clean"
    rc=0; out=$("$QR_PYTHON" "$QR_TOP/scripts/series.py" check 2>&1) || rc=$?
    count series-consistent $rc "$out"

    rc=0
    { env "${ident[@]}" "$QR_TOP/scripts/export-upstream.sh" "$a" >"$LOGS/export-a.log" 2>&1 &&
      env "${ident[@]}" "$QR_TOP/scripts/export-upstream.sh" "$b" >"$LOGS/export-b.log" 2>&1 &&
      env "${ident[@]}" "$QR_TOP/scripts/export-pve.sh" "$a-pve" >"$LOGS/export-pve.log" 2>&1 &&
      env "${ident[@]}" "$QR_TOP/scripts/export-pve.sh" "$b-pve" >>"$LOGS/export-pve.log" 2>&1; } || rc=$?
    count exports-run $rc "$(tail -n 1 "$LOGS/export-a.log")"
    [ $rc -eq 0 ] || return 0
    rc=0; out=$(diff -r "$a" "$b" 2>&1 && diff -r "$a-pve" "$b-pve" 2>&1) || rc=$?
    count export-deterministic $rc "$(ls "$a" | wc -l) + $(ls "$a-pve/debian/patches/pve" | wc -l) files byte-identical in two exports${out:+
$out}"

    # Whoever exports must be someone: without an identity it refuses.
    if [ -n "$(git -C "$QR_TOP" config --local user.name || true)" ]; then
        skipped=$((skipped + 1))
        skips+=("export-needs-identity: this checkout's own git config names someone")
    else
        rc=0
        out=$(HOME=/nonexistent GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
              "$QR_TOP/scripts/export-upstream.sh" "$QR_WORK/export-noone" 2>&1) || rc=$?
        if [ $rc -ne 0 ] && grep -q 'user.name and user.email are not set' <<<"$out"; then
            count export-needs-identity 0 "refused, as it should: git user.name and user.email are not set"
        else
            count export-needs-identity 1 "exit $rc: $out"
        fi
    fi

    # git am on pristine QEMU gives, patch by patch, the tree the builds use.
    rm -rf "$am"
    git -C "$QR_TREE" worktree prune
    rc=0
    { git -C "$QR_TREE" worktree add -q --detach "$am" baseline >"$LOGS/git-am.log" 2>&1 &&
      git -C "$am" -c user.name=t -c user.email=t@t am -q \
          $(ls "$a"/0*-*.patch | grep -v cover-letter) >>"$LOGS/git-am.log" 2>&1 &&
      same_prefixes "$am"; } || rc=$?
    count git-am-pristine $rc "$(ls "$a"/0*-*.patch | grep -vc cover-letter) patches on pristine $QEMU_VERSION, every prefix identical to the built tree but for the MAINTAINERS name"
    git -C "$QR_TREE" worktree remove --force "$am" 2>/dev/null || true

    # The upstream patches, and those only pve-qemu gets (the last ones).
    local -a mine
    mapfile -t mine < <(ls "$a"/0*-*.patch | grep -v cover-letter
                        ls "$a-pve"/debian/patches/pve/*.patch |
                            tail -n +"$(($(ls "$a"/0*-*.patch | grep -vc cover-letter) + 1))")
    for p in "${mine[@]}"; do
        out=$(cd "$QR_TREE" && ./scripts/checkpatch.pl --no-color "$p" 2>&1 || true)
        rc=0; grep -q '^total: 0 errors, 0 warnings' <<<"$out" || rc=1
        count "checkpatch:$(basename "$p")" $rc "$(grep -m1 '^total:' <<<"$out")"
        [ $rc -eq 0 ] || grep -E -A3 '^(ERROR|WARNING)' <<<"$out" | head -n 20 >&2
    done
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

# Where the time goes: each stage's seconds, printed in the summary.
stage_names=()
stage_secs=()
stage() {
    stage_names+=("$1")
    stage_secs+=("$SECONDS")
}

# All of it in one function: bash has read the whole of it before it runs,
# so editing this file during a run cannot change the run.
main() {
    # A variant left out with QR_VARIANTS (for a quick local run) is
    # counted as a skip, never silently.
    local all
    for all in $QR_VARIANTS_ALL; do
        case " ${variants[*]} " in
        *" $all "*) ;;
        *) skipped=$((skipped + 1))
           skips+=("variant $all: QR_VARIANTS is set (\"${variants[*]}\")") ;;
        esac
    done
    stage "packages"
    "$QR_TOP/scripts/deps.sh"
    stage "tree, every prefix and the builds"
    "$QR_TOP/scripts/tree.sh"
    mkdir -p "$LOGS"
    # Every prefix of the series builds, all targets, walking forward to
    # the series itself in every variant (scripts/check-prefixes.sh): the
    # walk is the builds.  QR_SKIP_PREFIXES=1 (for a quick local run) is
    # counted as a skip, never silently.
    if [ -n "${QR_SKIP_PREFIXES:-}" ]; then
        skipped=$((skipped + 1))
        skips+=("prefixes: QR_SKIP_PREFIXES is set")
    elif [ "${variants[*]}" = asan ]; then
        skipped=$((skipped + 1))
        skips+=("prefixes: QR_VARIANTS has only asan, which builds the series itself")
    else
        step "Every prefix of the series builds (${variants[*]})"
        # Shown as it goes (a long stage), and kept in the log
        if "$QR_TOP/scripts/check-prefixes.sh" "${variants[@]}" 2>&1 |
                tee "$LOGS/prefixes.log" >&2; then
            count prefixes 0 "$(tail -n 1 "$LOGS/prefixes.log" | sed 's/^ *//')"
        else
            count prefixes 1 "see $LOGS/prefixes.log"
        fi
    fi
    # The series itself, whatever the walk found (nothing left to do if
    # it got there): the tests need every variant built.
    "$QR_TOP/scripts/build.sh" "${variants[@]}"
    stage "runner self-test and series checks"
    step "The test command's own TAP counting"
    run_tap runner-selftest "$QR_PYTHON" "$QR_TOP/tests/test-tapcount.py"
    check_series

    # The test guest (tests/guest), for the builds that can boot it
    step "The test guest (scripts/make-guest.sh)"
    run_check make-guest "$QR_TOP/scripts/make-guest.sh" "$QR_WORK/guest" || true

    for v in "${variants[@]}"; do
        stage "tests, $v"
        step "The project's unit test and qtest, variant '$v' (round 1 of 2)"
        run_project_tests round-1 "$v"
        step "QEMU's own unit tests and qtests, variant '$v' (the series' among them)"
        run_meson "$v/meson" "$QR_WORK/build-$v"
        # A backup and releases with a booted guest: the allocator builds
        # (the asan and i386 ones have no TCG, see scripts/build.sh)
        case $v in
        system|tcmalloc|jemalloc)
            step "A real guest, variant '$v' (tests/guest/test-guest.py)"
            run_tap "$v/test-guest" env QR_GUEST_DIR="$QR_WORK/guest" \
                "$QR_PYTHON" "$QR_TOP/tests/guest/test-guest.py" ;;
        esac
        # Not under the sanitizers: their allocator keeps freed memory in a
        # quarantine, which is what this test must not be about.
        if [ "$v" != asan ]; then
            step "Memory pressure, variant '$v' (a memory cgroup made by the test)"
            run_tap "$v/memory-pressure" "$QR_PYTHON" "$QR_TOP/tests/memory-pressure.py"
        fi
    done


    # The second round, on a busy machine: one CPU hog per core
    stage "round 2 beside CPU hogs"
    step "The project's unit test and qtest, every variant (round 2 of 2, $(nproc) CPU hogs)"
    start_hogs
    for v in "${variants[@]}"; do
        run_project_tests round-2 "$v"
    done
    stop_hogs

    # The operator tool: its unit tests, then the tool against real QEMU
    # processes of every build plus Debian's unpatched QEMU, hostile peers,
    # promtool and a real Prometheus server, then a short fuzzing run.
    stage "operator tool"
    step "The operator tool (tools/qemu-reclaim)"
    if run_check tool-build "$QR_TOP/scripts/build-tool.sh" fuzz; then
        export QR_TOOL=$QR_WORK/tool/tools/qemu-reclaim/qemu-reclaim
        for t in test-qmp-parser test-units; do
            run_tap "tool/$t" "$QR_WORK/tool/tools/qemu-reclaim/$t"
        done
        # The QMP client against a fake monitor, and the targets, under
        # valgrind: what one request leaves behind, the exporter leaks on
        # every scrape; a use after free may pass unseen without it
        for t in test-qmp-client test-targets; do
            run_tap "tool/$t" env G_SLICE=always-malloc \
                valgrind --leak-check=full --errors-for-leak-kinds=definite \
                --show-leak-kinds=definite --error-exitcode=1 \
                "$QR_WORK/tool/tools/qemu-reclaim/$t"
        done
        run_check tool-install "$QR_TOP/tests/tool/check-install.sh" || true
        run_check tool-rules "$QR_TOP/tests/tool/check-rules.sh" || true
        for t in test-tool test-faults test-prometheus; do
            run_tap "tool/$t" "$QR_PYTHON" "$QR_TOP/tests/tool/$t.py"
        done
        run_check fuzz "$QR_TOP/scripts/fuzz.sh" "${QR_FUZZ_SECONDS:-30}" || true
    fi

    # Real Ceph: a one-OSD cluster on 127.0.0.1 (scripts/ceph-cluster.sh) and
    # an rbd image backed up by each allocator build, once for all builds.
    stage "Ceph RBD"
    step "Backups from Ceph RBD (tests/rbd-backup.py, every allocator build)"
    run_tap rbd-backup env -u QTEST_QEMU_BINARY \
        QR_TOOL="$QR_WORK/tool/tools/qemu-reclaim/qemu-reclaim" \
        "$QR_PYTHON" "$QR_TOP/tests/rbd-backup.py"

    # The series' docs page and QAPI doc comments render in QEMU's manual.
    stage "QEMU's manual"
    step "QEMU's manual with the series"
    run_check docs "$QR_TOP/scripts/check-docs.sh" || true

    stage "end"
    step "Summary"
    local i
    for ((i = 0; i + 1 < ${#stage_names[@]}; i++)); do
        info "$(printf '%5d s  %s' $((stage_secs[i + 1] - stage_secs[i])) "${stage_names[$i]}")"
    done
    info "$(printf '%5d s  in all' "$SECONDS")"
    for r in "${skips[@]+"${skips[@]}"}"; do
        info "skipped: $r"
    done
    if [ ${#failures[@]} -gt 0 ]; then
        info "failed: ${failures[*]} (logs in $LOGS)"
    fi
    echo "tests: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
}

main "$@"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A maintainer's check of the pve-qemu export (not run by the CI, which has
# no pve-qemu checkout):
#   scripts/pve-check.sh PVE_QEMU_DIR PBS_QEMU_DIR
# PVE_QEMU_DIR  a checkout of proxmox/pve-qemu at "bump version to 10.2.1-2"
#               (its qemu/ submodule is not used)
# PBS_QEMU_DIR  a checkout of proxmox/proxmox-backup-qemu (for current-api.h)
# It makes pve-qemu's tree on pristine QEMU 10.2.2 (pve's debian/patches/series,
# minus the extra/ backports 10.2.2 already has), applies this project's v2
# series and pve patches as exported by scripts/export-pve.sh with git am, builds
# it with tcmalloc and with the system allocator, linked against the PBS
# stand-in (tools/pbs-standin), and runs tests/pve/pve-backup-test.py and
# QEMU's unit tests and qtests in each build.  Nothing of Proxmox's is copied
# into this repository: the tree and the builds live in $QR_PVE_WORK.
# Environment: QR_PVE_WORK (default build/pve), QR_PVE_VARIANTS
# (default "tcmalloc system"), QR_PVE_SKIP_MESON_TESTS=1 skips QEMU's suites.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 2 ] || die "usage: scripts/pve-check.sh PVE_QEMU_DIR PBS_QEMU_DIR"
PVE=$(cd "$1" && pwd) || die "no directory $1"
PBS=$(cd "$2" && pwd) || die "no directory $2"
W=${QR_PVE_WORK:-$QR_WORK/pve}
read -r -a VARIANTS <<<"${QR_PVE_VARIANTS:-tcmalloc system}"
T=$W/qemu
SUMMARY=$W/summary.txt
t_start=$(date +%s)

[ -f "$PVE/debian/patches/series" ] || die "$PVE has no debian/patches/series: not a pve-qemu checkout"
grep -q '^pve-qemu-kvm (10\.2\.1-2)' "$PVE/debian/changelog" ||
    die "$PVE is not pve-qemu-kvm 10.2.1-2 (debian/changelog: $(head -n 1 "$PVE/debian/changelog"))"
HDR=$PBS/current-api.h
[ -f "$HDR" ] || die "$PBS has no current-api.h: not a proxmox-backup-qemu checkout"

# What this check needs beyond scripts/deps.sh (which the CI runs): pve-qemu's
# meson.build requires libuuid and libsystemd; the test names the callers
# of the release with gdb.
PVE_PKGS=(uuid-dev libsystemd-dev gdb)
need=()
for p in "${PVE_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    step "Installing ${need[*]}"
    need_root
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
        die "apt-get install ${need[*]} failed"
fi

mkdir -p "$W"
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY" >&2; }

# ---------------------------------------------------------------- the tree
step "Pristine QEMU $QEMU_VERSION + pve-qemu 10.2.1-2's patches in $T"
g() { git -C "$T" -c user.name="$QR_AUTHOR_NAME" -c user.email="$QR_AUTHOR_EMAIL" "$@"; }
if [ "$(g log -1 --format=%s baseline 2>/dev/null)" = "QEMU $QEMU_VERSION (pristine)" ] &&
   g diff --quiet baseline -- VERSION 2>/dev/null; then
    # a tree of an earlier run: back to pristine (much faster than a new one)
    g am --abort >/dev/null 2>&1 || true
    g reset -q --hard baseline
    g clean -q -f -d -x
    g tag -d pve-10.2.1-2 >/dev/null 2>&1 || true
    info "reusing $T, reset to pristine $QEMU_VERSION"
else
    "$QR_TOP/scripts/fetch-qemu.sh"
    rm -rf "$T" "$W/src"
    mkdir -p "$W/src"
    tar --no-same-owner -xJf "$QR_CACHE/$QEMU_ORIG" -C "$W/src"
    mv "$W/src/qemu-$QEMU_VERSION" "$T"
    rmdir "$W/src"
    g init -q
    g add -A -f
    GIT_AUTHOR_DATE=$QR_BASE_DATE GIT_COMMITTER_DATE=$QR_BASE_DATE \
        g commit -q --author="$QR_BASE_AUTHOR" -m "QEMU $QEMU_VERSION (pristine)"
    g tag baseline
fi

applied=0; skipped=0; noapply=()
while read -r p; do
    f=$PVE/debian/patches/$p
    [ -f "$f" ] || die "debian/patches/series names $p, which does not exist"
    case "$p" in
    extra/*)
        if g apply -R --check "$f" 2>/dev/null; then
            skipped=$((skipped + 1)); continue
        fi
        if ! g apply --check "$f" 2>/dev/null; then
            noapply+=("$p"); continue
        fi
        ;;
    esac
    g am -q --keep-cr "$f" >/dev/null 2>"$W/am.err" || {
        g am --abort 2>/dev/null || true
        die "git am $p failed: $(head -n 5 "$W/am.err")"
    }
    applied=$((applied + 1))
done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$PVE/debian/patches/series")
g tag pve-10.2.1-2
say "pve-qemu 10.2.1-2 on QEMU $QEMU_VERSION: $applied patches applied with git am, $skipped extra/ backports skipped (already in $QEMU_VERSION), ${#noapply[@]} do not apply:"
for p in "${noapply[@]}"; do say "    $p"; done
[ ${#noapply[@]} -eq 2 ] || die "expected the 2 unrelated extra/ patches not to apply, got ${#noapply[@]}"

step "The v2 series and the pve patch (scripts/export-pve.sh) with git am"
"$QR_TOP/scripts/export-pve.sh" "$W/export" >"$W/export.log" 2>&1 ||
    die "export-pve.sh failed: $(tail -n 5 "$W/export.log")"
n=0
while read -r p; do
    g am -q "$W/export/debian/patches/$p" >/dev/null 2>"$W/am.err" || {
        g am --abort 2>/dev/null || true
        die "git am $p failed: $(head -n 5 "$W/am.err")"
    }
    n=$((n + 1))
done <"$W/export/series.add"
say "export-pve.sh: $n patches ($(head -n 1 "$W/export/series.add" | sed 's|.*/||') .. $(tail -n 1 "$W/export/series.add" | sed 's|.*/||')) applied with git am"

# ---------------------------------------------------------- the stand-in
step "The libproxmox_backup_qemu stand-in (tools/pbs-standin), against $HDR"
SI=$W/pbs-standin
rm -rf "$SI"
make -s -C "$QR_TOP/tools/pbs-standin" O="$SI" HEADER="$HDR" >&2 ||
    die "the stand-in does not build against $HDR"
missing=()
for f in $(git -C "$T" grep -h -o -w -E 'proxmox_(backup|restore|export|import|free)_[a-z0-9_]* *\(' -- '*.c' |
           tr -d ' (' | sort -u); do
    grep -q -w "$f" "$SI/include/proxmox-backup-qemu.h" || continue   # a QEMU-side wrapper
    nm -D --defined-only "$SI/lib/libproxmox_backup_qemu.so" | grep -q " T $f\$" || missing+=("$f")
done
[ ${#missing[@]} -eq 0 ] || die "the stand-in lacks functions pve-qemu calls: ${missing[*]}"
say "stand-in: $(nm -D --defined-only "$SI/lib/libproxmox_backup_qemu.so" | grep -c ' T ') functions, every one of current-api.h that pve-qemu calls"

# ------------------------------------------------------------- the builds
# Like debian/rules where it matters for the backup path (tools for vma,
# malloc_trim with glibc, tcmalloc as the export's README proposes), and
# otherwise the project's minimal configuration: one target, no TCG, no
# default devices (pve's backup takes block nodes, no guest device needed).
# The "+ds" tarball has no edk2 firmware: empty stand-ins, see build.sh.
for f in $(sed -n "s/^ *'\(edk2-[a-z0-9_-]*\.fd\)',\$/\1/p" "$T/pc-bios/meson.build"); do
    [ -e "$T/pc-bios/$f.bz2" ] || bzip2 -c </dev/null >"$T/pc-bios/$f.bz2"
done
echo '/pc-bios/edk2-*.fd.bz2' >>"$T/.git/info/exclude"

COMMON=(
    --python="$QR_PYTHON"
    --target-list=x86_64-softmmu
    --disable-tcg --enable-kvm
    --without-default-features --without-default-devices
    --disable-docs --disable-install-blobs
    --enable-tools
    --extra-cflags="-I$SI/include"
    --extra-ldflags="-L$SI/lib -Wl,-rpath,$SI/lib"
)
variant_flags() {
    case "$1" in
    tcmalloc) echo --enable-malloc=tcmalloc ;;
    system)   echo --enable-malloc-trim ;;
    *) die "unknown pve variant '$1' (known: tcmalloc system)" ;;
    esac
}
for v in "${VARIANTS[@]}"; do
    step "Building pve-qemu + the series, allocator '$v'"
    dir=$W/build-$v
    rm -rf "$dir"; mkdir -p "$dir"
    # shellcheck disable=SC2046
    (cd "$dir" && "$T/configure" "${COMMON[@]}" $(variant_flags "$v")) >"$dir/configure.log" 2>&1 ||
        die "configure ($v) failed; last lines of $dir/configure.log:
$(tail -n 25 "$dir/configure.log")"
    start=$(date +%s)
    ninja -C "$dir" >"$dir/ninja.log" 2>&1 ||
        die "build ($v) failed; errors from $dir/ninja.log:
$(grep -E -A6 'error:|FAILED' "$dir/ninja.log" | head -n 60)"
    # the library functions the binaries need are the stand-in's, all of them
    used=$(for b in qemu-system-x86_64 vma pbs-restore qemu-img; do
               nm -D --undefined-only "$dir/$b"; done | awk '$2 ~ /^proxmox_/ {print $2}' | sort -u)
    defined=$(nm -D --defined-only "$SI/lib/libproxmox_backup_qemu.so" | awk '$3 ~ /^proxmox_/ {print $3}' | sort -u)
    [ "$used" = "$defined" ] || die "the binaries use: $(tr '\n' ' ' <<<"$used"); the stand-in defines: $(tr '\n' ' ' <<<"$defined")"
    say "build $v: $(( $(date +%s) - start )) s, $(grep -c '^\[' "$dir/ninja.log" || true) ninja steps ($(grep -E 'malloc trim support|^ *malloc' "$dir/configure.log" | tr -s ' ' | tr '\n' ';'))"
done

# ------------------------------------------------------------- the tests
# QEMU's own tests that pve-qemu's deliberate changes break (they fail in
# pve-qemu 10.2.1-2 without the series as well; Proxmox's package build
# does not run QEMU's tests):
PVE_EXPECTED_FAILS=(qtest-x86_64/qmp-test test-image-locking)
declare -A PVE_FAIL_WHY=(
    [qtest-x86_64/qmp-test]="test_qmp_oob asserts the 'oob' QMP capability, which pve/0023 (monitor: disable oob capability) removes"
    [test-image-locking]="asserts image locks held by default, which pve/0001 ([Config] block/file: change locking default to off) turns off"
)
fail=0
for v in "${VARIANTS[@]}"; do
    dir=$W/build-$v
    case "$v" in tcmalloc) alloc=tcmalloc ;; system) alloc=glibc ;; esac
    step "pve's backup path with the series, allocator '$v' (tests/pve/pve-backup-test.py)"
    start=$(date +%s)
    "$QR_PYTHON" "$QR_TOP/tests/pve/pve-backup-test.py" "$dir" "$alloc" -k |
        tee "$W/pve-backup-$v.tap" >&2 || true
    ok=$(grep -c '^ok ' "$W/pve-backup-$v.tap" || true)
    nok=$(grep -c '^not ok ' "$W/pve-backup-$v.tap" || true)
    plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$W/pve-backup-$v.tap")
    say "pve-backup-test $v: $ok ok, $nok not ok (plan ${plan:-missing}) in $(( $(date +%s) - start )) s"
    grep '^# figures' "$W/pve-backup-$v.tap" | sed 's/^# /    /' | tee -a "$SUMMARY" >&2 || true
    grep -A3 '^not ok' "$W/pve-backup-$v.tap" | sed 's/^/    /' | tee -a "$SUMMARY" >&2 || true
    [ "$nok" = 0 ] && [ -n "$plan" ] && [ "$plan" = "$ok" ] || fail=1

    if [ -n "${QR_PVE_SKIP_MESON_TESTS:-}" ]; then
        say "meson test $v: skipped (QR_PVE_SKIP_MESON_TESTS)"
        continue
    fi
    step "QEMU's unit tests and qtests in the pve build, allocator '$v'"
    start=$(date +%s)
    (cd "$dir" && "$dir/pyvenv/bin/meson" test --no-rebuild --print-errorlogs \
        --suite unit --suite qtest --num-processes 2 -t 4) >"$dir/meson-test.log" 2>&1 || true
    res=$(grep -E '^(Ok|Expected Fail|Fail|Unexpected Pass|Skipped|Timeout): ' "$dir/meson-test.log" |
          tr -s ' ' | tr '\n' ' ')
    say "meson test --suite unit --suite qtest $v: $res in $(( $(date +%s) - start )) s"
    for t in test-allocator qtest-x86_64/allocator-test qtest-x86_64/qmp-cmd-test qtest-x86_64/test-hmp; do
        say "    $(grep -E "^ *[0-9]+/[0-9]+ .* / $t +[A-Z]" "$dir/meson-test.log" | sed 's/^ *[0-9]*\/[0-9]* //' | tr -s ' ' | head -n 1)"
    done
    # Tests that fail because of what pve-qemu changes on purpose, with or
    # without the series: nothing else may fail.
    unexpected=()
    while read -r t; do
        case " ${PVE_EXPECTED_FAILS[*]} " in
        *" $t "*) say "    $t fails as expected: ${PVE_FAIL_WHY[$t]}" ;;
        *) unexpected+=("$t") ;;
        esac
    done < <(grep -E '^ *[0-9]+/[0-9]+ .* (FAIL|ERROR|TIMEOUT) ' "$dir/meson-test.log" |
             sed -E 's|^.* / ([^ ]+) .*$|\1|' | sort -u)
    for t in "${unexpected[@]}"; do say "    FAILED: $t"; done
    [ ${#unexpected[@]} -eq 0 ] && grep -qE '^Ok: +[1-9]' "$dir/meson-test.log" || fail=1
done

step "Summary ($W/summary.txt)"
say "total: $(( $(date +%s) - t_start )) s"
cat "$SUMMARY"
[ "$fail" = 0 ] || die "some checks failed (see above and $W/*.tap, $W/build-*/meson-test.log)"
echo "PASS: pve-qemu 10.2.1-2 + the v2 series + the pve patches, allocators: ${VARIANTS[*]}"

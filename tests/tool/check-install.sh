#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What `meson install` puts on a host: the binary, which runs; the man
# page, which renders without a groff warning; the systemd units, which
# systemd-analyze accepts, which start the installed binary and which
# `systemd-analyze security` rates OK or better (exposure 4.9 at most).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
prefix=$(mktemp -d)
build=$top/build/tool-install
trap 'rm -rf "$prefix"' EXIT

rm -rf "$build"
meson setup "$build" "$top" --prefix="$prefix" >/dev/null
ninja -C "$build" >/dev/null
meson install -C "$build" >/dev/null

bin=$prefix/bin/qemu-reclaim
"$bin" --version | grep -q '^qemu-reclaim [0-9]' || { echo "installed binary does not run"; exit 1; }

man=$prefix/share/man/man1/qemu-reclaim.1
warnings=$(MANWIDTH=80 man --warnings -l "$man" 2>&1 >/dev/null || true)
[ -z "$warnings" ] || { echo "man page warnings: $warnings"; exit 1; }
for cmd in stats release export auto; do
    MANWIDTH=80 man -l "$man" 2>/dev/null | grep -q "^       $cmd" ||
        { echo "man page does not describe $cmd"; exit 1; }
done

# systemd-analyze (Debian package systemd) checks the units: without it
# they would go unchecked, which is no pass
command -v systemd-analyze >/dev/null ||
    { echo "systemd-analyze not found (Debian package systemd)"; exit 1; }

n=0
scores=()
for unit in "$prefix"/lib/systemd/system/qemu-reclaim-*.service; do
    name=$(basename "$unit" .service)
    grep -q "^ExecStart=$bin " "$unit" || { echo "$unit does not start $bin"; exit 1; }
    # The man: reference cannot resolve for a scratch prefix; all else must
    out=$(systemd-analyze verify --man=no "$unit" 2>&1 || true)
    [ -z "$out" ] || { echo "systemd-analyze verify $unit: $out"; exit 1; }
    # "→ Overall exposure level for NAME.service: 1.5 OK 🙂"; the threshold
    # is in tenths: above 49 is MEDIUM, EXPOSED, UNSAFE or DANGEROUS
    rc=0
    out=$(systemd-analyze security --offline=true --threshold=49 --no-pager \
          "$unit" 2>&1) || rc=$?
    level=$(sed -n 's/.*Overall exposure level for [^ ]*: \([0-9.]* [A-Z]*\).*/\1/p' \
            <<<"$out")
    case "$rc:$level" in
    0:*" OK" | 0:*" SAFE" | 0:*" PERFECT") ;;
    *) echo "systemd-analyze security $unit: rated ${level:-?}, OK or better" \
            "wanted (exit $rc)"
       grep -E '^(✗|- )' <<<"$out" || printf '%s\n' "$out"
       exit 1 ;;
    esac
    scores+=("${name#qemu-reclaim-} $level")
    n=$((n + 1))
done
[ "$n" = 2 ] || { echo "expected 2 units, found $n"; exit 1; }
security=$(IFS=,; echo "${scores[*]}" | sed 's/,/, /g')
echo "install: binary runs, man page renders cleanly, $n systemd units" \
     "verified, security $security"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the project's own programs (tools/) from the top-level meson.build:
# build/tool with gcc, and with "fuzz" also build/fuzz with clang and the
# libFuzzer targets.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

step "Building tools/ (build/tool)"
if [ ! -f "$QR_WORK/tool/build.ninja" ]; then
    meson setup "$QR_WORK/tool" "$QR_TOP" >"$QR_WORK/tool-setup.log" 2>&1 ||
        die "meson setup failed; see $QR_WORK/tool-setup.log"
fi
ninja -C "$QR_WORK/tool" >/dev/null || die "building tools/ failed"
info "built $QR_WORK/tool/tools/qemu-reclaim/qemu-reclaim"

# clang warns where gcc does not (a missing field initializer, a bad
# cast): every target built with clang too, warnings as errors
step "Building tools/ with clang (build/tool-clang)"
if [ ! -f "$QR_WORK/tool-clang/build.ninja" ]; then
    CC=clang-14 meson setup "$QR_WORK/tool-clang" "$QR_TOP" -Dwerror=true \
        >"$QR_WORK/tool-clang-setup.log" 2>&1 ||
        die "meson setup (clang) failed; see $QR_WORK/tool-clang-setup.log"
fi
ninja -C "$QR_WORK/tool-clang" >"$QR_WORK/tool-clang.log" 2>&1 || {
    grep -E 'error|warning' "$QR_WORK/tool-clang.log" | head -20 >&2
    die "building tools/ with clang failed; see $QR_WORK/tool-clang.log"
}

if [ "${1:-}" = fuzz ]; then
    step "Building the fuzz targets (build/fuzz, clang)"
    if [ ! -f "$QR_WORK/fuzz/build.ninja" ]; then
        CC=clang-14 meson setup "$QR_WORK/fuzz" "$QR_TOP" -Dfuzzing=true \
            >"$QR_WORK/fuzz-setup.log" 2>&1 ||
            die "meson setup (fuzzing) failed; see $QR_WORK/fuzz-setup.log"
    fi
    ninja -C "$QR_WORK/fuzz" tools/qemu-reclaim/fuzz-qmp-parser >/dev/null ||
        die "building the fuzz target failed"
fi
echo "built: qemu-reclaim (gcc and clang)$( [ "${1:-}" = fuzz ] && echo ", fuzz-qmp-parser")"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build QEMU's manual (Sphinx, warnings are errors) from the patched tree,
# so that the series' docs page and QAPI doc comments render.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

dir=$QR_WORK/build-docs
step "Building the QEMU manual with the series"
mkdir -p "$dir"
if [ ! -f "$dir/build.ninja" ]; then
    (cd "$dir" && "$QR_TREE/configure" --python="$QR_PYTHON" \
        --target-list=x86_64-softmmu --disable-tcg --enable-kvm \
        --without-default-features --without-default-devices \
        --disable-install-blobs --enable-docs) >"$dir/configure.log" 2>&1 ||
        die "configure --enable-docs failed; see $dir/configure.log:
$(tail -n 15 "$dir/configure.log")"
fi
ninja -C "$dir" html >"$dir/docs.log" 2>&1 ||
    die "the manual does not build; see $dir/docs.log:
$(grep -E -i 'error|warning' "$dir/docs.log" | head -n 20)"
page=$dir/docs/manual/system/allocator.html
[ -f "$page" ] || die "the manual has no system/allocator.html"
grep -q 'x-release-free-memory' "$dir/docs/manual/interop/qemu-qmp-ref.html" ||
    die "the QMP reference does not document x-release-free-memory"
info "manual built: $page"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Fetch the pristine QEMU 10.2.2 tarball once, verify it, keep it in the cache.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

step "Fetching $QEMU_ORIG"
mkdir -p "$QR_CACHE"
tarball=$QR_CACHE/$QEMU_ORIG

verify() {
    echo "$QEMU_ORIG_SHA256  $1" | sha256sum --check --status
}

if [ -f "$tarball" ] && verify "$tarball"; then
    info "cached: $tarball"
    exit 0
fi
[ -f "$tarball" ] && info "cached copy has the wrong digest; fetching again" && rm -f "$tarball"

tmp=$(mktemp -d "$QR_CACHE/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get source runs as the _apt user for the download: let it write here.
chmod 0777 "$tmp"
(cd "$tmp" && apt-get source -q --download-only --tar-only "qemu=$QEMU_DEB_VERSION") >&2 ||
    die "apt-get source qemu=$QEMU_DEB_VERSION failed (is the deb-src entry there? run scripts/deps.sh)"
[ -f "$tmp/$QEMU_ORIG" ] || die "apt-get source did not produce $QEMU_ORIG: $(ls "$tmp")"
verify "$tmp/$QEMU_ORIG" ||
    die "sha256 of $QEMU_ORIG is $(sha256sum "$tmp/$QEMU_ORIG" | cut -d' ' -f1), expected $QEMU_ORIG_SHA256"
mv "$tmp/$QEMU_ORIG" "$tarball"
info "verified and cached: $tarball"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Export the series as qemu-devel would receive it: numbered patches with
# a cover letter (subject and text from qemu-patches/cover-letter.txt),
# against QEMU 10.0.2, in build/upstream/ (or the directory given).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out=${1:-$QR_WORK/upstream}
"$QR_TOP/scripts/tree.sh"
step "Exporting the series for upstream to $out"
rm -rf "$out"
mkdir -p "$out"
git -C "$QR_TREE" format-patch -q --cover-letter --numbered --zero-commit \
    --no-signature -o "$out" baseline..HEAD
cover=$(ls "$out"/0000-cover-letter.patch)
subject=$(head -n 1 "$QR_PATCHES/cover-letter.txt")
"$QR_PYTHON" - "$cover" "$subject" "$QR_PATCHES/cover-letter.txt" <<'PY'
import sys
path, subject, blurb_file = sys.argv[1:]
blurb = open(blurb_file).read().split("\n", 2)[2].rstrip() + "\n"
text = open(path).read()
text = text.replace("*** SUBJECT HERE ***", subject)
text = text.replace("*** BLURB HERE ***", blurb)
open(path, "w").write(text)
PY
info "$(ls "$out" | wc -l) files: cover letter + $(git -C "$QR_TREE" rev-list --count baseline..HEAD) patches"

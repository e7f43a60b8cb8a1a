#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Export the series as qemu-devel receives it: numbered patches and a cover
# letter (qemu-patches/cover-letter.txt), against pristine QEMU, authored
# and signed off by your git identity, into DIR:
#   scripts/export-upstream.sh DIR
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-export.sh"

# The version of the series on qemu-devel; the cover letter says what
# changed since the one before
SERIES_VERSION=2

[ $# -eq 1 ] || die "usage: scripts/export-upstream.sh DIR"
out=$1
ident=$(export_identity)
date=$(export_date)
head=$(export_commits "$ident" "$date")
step "Exporting the series for qemu-devel to $out"
rm -rf "$out"
mkdir -p "$out"
# The cover letter is dated and signed by the committer: the same person.
GIT_COMMITTER_NAME="${ident% <*}" GIT_COMMITTER_EMAIL="$(sed 's/.*<\(.*\)>/\1/' <<<"$ident")" \
GIT_COMMITTER_DATE="$date" \
    git -C "$QR_TREE" format-patch -q --cover-letter --numbered --zero-commit \
        --subject-prefix="PATCH v$SERIES_VERSION" \
        --no-signature -o "$(realpath "$out")" "baseline..$head"
"$QR_PYTHON" - "$out/0000-cover-letter.patch" "$QR_PATCHES/cover-letter.txt" <<'PY'
import sys
path, blurb_file = sys.argv[1:]
subject, _, blurb = open(blurb_file).read().partition("\n\n")
text = open(path).read()
text = text.replace("*** SUBJECT HERE ***", subject.strip())
text = text.replace("*** BLURB HERE ***", blurb.rstrip() + "\n")
open(path, "w").write(text)
PY
info "cover letter + $(git -C "$QR_TREE" rev-list --count "baseline..$head") patches, from $ident"

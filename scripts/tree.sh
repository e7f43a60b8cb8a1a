#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Make (or bring up to date) the generated QEMU git tree build/qemu: a
# baseline commit of pristine QEMU, then one commit per patch of
# qemu-patches/series, made by scripts/series.py from the patch files and
# the top-level sources.  Nothing lives only here: delete it at will.
#
# The commits are made with a private index, and the work tree is then
# moved to them with "git reset --hard", which rewrites only the files
# whose content changed: the builds stay incremental.  Edits made by hand
# in the tree are never thrown away (see scripts/fixup.sh).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

create_baseline() {
    step "Creating the baseline tree from $QEMU_ORIG"
    "$QR_TOP/scripts/fetch-qemu.sh"
    mkdir -p "$QR_WORK"
    rm -rf "$QR_WORK/qemu-$QEMU_VERSION" "$QR_TREE"
    # As root, tar would keep the archive's owners and git would then refuse
    # the tree as "dubious ownership".
    tar -C "$QR_WORK" --no-same-owner -xJf "$QR_CACHE/$QEMU_ORIG" ||
        die "cannot extract $QEMU_ORIG"
    mv "$QR_WORK/qemu-$QEMU_VERSION" "$QR_TREE"
    cd "$QR_TREE"
    git init -q -b master
    git config user.name "$QR_AUTHOR_NAME"
    git config user.email "$QR_AUTHOR_EMAIL"
    git config core.autocrlf false
    # QEMU's own .gitignore files hide tarball content (subprojects/...):
    # the baseline must hold every file, so add with -f.
    git add -A -f
    GIT_AUTHOR_NAME="${QR_BASE_AUTHOR% <*}" GIT_AUTHOR_EMAIL=qemu-devel@nongnu.org \
    GIT_COMMITTER_NAME="${QR_BASE_AUTHOR% <*}" GIT_COMMITTER_EMAIL=qemu-devel@nongnu.org \
    GIT_AUTHOR_DATE=$QR_BASE_DATE GIT_COMMITTER_DATE=$QR_BASE_DATE \
        git commit -q -m "QEMU $QEMU_VERSION (pristine, from $QEMU_ORIG)"
    git tag -f baseline >/dev/null
    info "baseline $(git rev-parse --short HEAD)"
}

# A baseline of another QEMU version (an older checkout of this project)
# is replaced, never built on.
if [ -d "$QR_TREE/.git" ] &&
   ! git -C "$QR_TREE" log -1 --format=%s baseline 2>/dev/null |
     grep -qF "QEMU $QEMU_VERSION (pristine"; then
    info "$QR_TREE is not based on QEMU $QEMU_VERSION: making it anew"
    rm -rf "$QR_TREE"
fi
[ -d "$QR_TREE/.git" ] || create_baseline

cd "$QR_TREE"
head=$("$QR_PYTHON" "$QR_TOP/scripts/series.py" commit "$QR_TREE" baseline \
       --ident "$QR_AUTHOR_NAME <$QR_AUTHOR_EMAIL>") ||
    die "cannot make the series' commits (see above)"
# Edits by hand are never thrown away, nor carried into another commit.
refuse_edits() {
    local dirty
    dirty=$(git status --porcelain --untracked-files=no)
    [ -z "$dirty" ] ||
        die "edits by hand in $QR_TREE: fold them in with scripts/fixup.sh PATCH
(or drop them with 'git -C $QR_TREE checkout -- .'):
$dirty"
}
# The series lives on master: a prefix walk that was stopped midway
# (scripts/check-prefixes.sh) leaves the tree on one of its commits.
if ! git symbolic-ref -q HEAD >/dev/null; then
    refuse_edits
    info "back from $(git log -1 --format='"%s"') to master"
    git checkout -q master
fi
if [ "$(git rev-parse HEAD)" = "$head" ]; then
    info "tree up to date: $(git rev-list --count baseline..HEAD) patches"
    exit 0
fi
refuse_edits
step "Moving $QR_TREE to the series ($(git rev-list --count baseline.."$head") patches)"
git reset -q --hard "$head"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Make (or bring up to date) the generated QEMU git tree: a baseline commit
# of pristine QEMU 10.0.2, then one commit per patch of qemu-patches/series.
#
# An existing tree is updated in place: commits that still match their patch
# are kept and only the rest is re-applied, so file times of untouched files
# survive and the builds stay incremental.  Work that exists only in the tree
# (uncommitted edits, commits not exported) is never thrown away.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

series_patches() {
    [ -f "$QR_PATCHES/series" ] || return 0
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$QR_PATCHES/series" | grep -v '^$' || true
}

patch_id_of_file() {
    git patch-id --stable < "$1" | awk '{print $1}'
}

patch_id_of_commit() {
    git -C "$QR_TREE" show "$1" | git patch-id --stable | awk '{print $1}'
}

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

apply_series() {
    cd "$QR_TREE"
    local dirty
    dirty=$(git status --porcelain --untracked-files=no)
    [ -z "$dirty" ] ||
        die "uncommitted edits in $QR_TREE; commit them and run scripts/export.sh (or 'git -C $QR_TREE stash'):
$dirty"

    mapfile -t patches < <(series_patches)
    mapfile -t commits < <(git rev-list --reverse baseline..HEAD)

    # Every commit in the tree must be known to the series, or it is work
    # that was never exported: refuse to throw it away.
    local c known=" "
    for p in "${patches[@]+"${patches[@]}"}"; do
        [ -f "$QR_PATCHES/$p" ] || die "series names $p, which does not exist"
        known+="$(patch_id_of_file "$QR_PATCHES/$p") "
    done
    for c in "${commits[@]+"${commits[@]}"}"; do
        case "$known" in
        *" $(patch_id_of_commit "$c") "*) ;;
        *) die "commit '$(git log -1 --format=%s "$c")' in $QR_TREE is not in qemu-patches/; run scripts/export.sh first" ;;
        esac
    done

    # Keep the longest prefix that matches the series, re-apply the rest.
    local keep=0
    while [ $keep -lt ${#patches[@]} ] && [ $keep -lt ${#commits[@]} ] &&
          [ "$(patch_id_of_file "$QR_PATCHES/${patches[$keep]}")" = \
            "$(patch_id_of_commit "${commits[$keep]}")" ]; do
        keep=$((keep + 1))
    done
    if [ $keep -lt ${#commits[@]} ]; then
        local to=baseline
        [ $keep -gt 0 ] && to=${commits[$((keep - 1))]}
        info "rewinding to $(git log -1 --format='%h %s' "$to")"
        git reset -q --hard "$to"
    fi
    if [ $keep -eq ${#patches[@]} ]; then
        info "tree up to date: ${#patches[@]} patches applied"
        return
    fi
    step "Applying qemu-patches/series (${#patches[@]} patches, ${keep} already applied)"
    local i out
    for ((i = keep; i < ${#patches[@]}; i++)); do
        p=${patches[$i]}
        info "applying $p"
        if ! out=$(git am -q --keep-cr --committer-date-is-author-date \
                   "$QR_PATCHES/$p" 2>&1); then
            git am --abort >/dev/null 2>&1 || true
            die "patch $p does not apply:
$out"
        fi
    done
}

[ -d "$QR_TREE/.git" ] && git -C "$QR_TREE" rev-parse -q --verify baseline >/dev/null ||
    create_baseline
apply_series

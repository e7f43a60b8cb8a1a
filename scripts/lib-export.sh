# SPDX-License-Identifier: GPL-2.0-or-later
# Shared by the two exports: who sends the series, and when.  Sourced.

# The DCO needs the person who sends the series: their own git identity,
# never a group alias or the harness's.
export_identity() {
    local name mail
    name=$(git -C "$QR_TOP" config user.name || true)
    mail=$(git -C "$QR_TOP" config user.email || true)
    [ -n "$name" ] && [ -n "$mail" ] ||
        die "git user.name and user.email are not set: the series is authored and
signed off by the person who exports it (git config --global user.name 'Your Name';
git config --global user.email you@example.org)"
    printf '%s <%s>\n' "$name" "$mail"
}

# The date of the project's last commit: two exports of one checkout are
# byte-identical.
export_date() {
    git -C "$QR_TOP" log -1 --format=%aI 2>/dev/null || echo 2026-01-01T00:00:00Z
}

# Make the series' commits as IDENT on DATE in the generated tree's
# repository (its work tree is not touched); print the last one.
export_commits() {
    "$QR_TOP/scripts/tree.sh" >&2
    "$QR_PYTHON" "$QR_TOP/scripts/series.py" commit "$QR_TREE" baseline \
        --ident "$1" --date "$2" || die "cannot make the series' commits"
}

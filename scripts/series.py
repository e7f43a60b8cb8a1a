#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The upstream series, made from its one source of truth.

qemu-patches/series lists the series' patches in order.  A line names a
file in qemu-patches/ that holds the patch's message and its edits to
files QEMU already has; the indented lines below it name the top-level
files (at their QEMU paths) that the patch adds, whole:

    util-allocator.patch
        include/qemu/allocator.h
        util/allocator.c

A patch file is "Subject: ...", a blank line, the body, a line "---" and
the unified diff of the edits (possibly empty).  Nobody's name is in it:
whoever makes the commits (the harness, or the person who exports the
series) is their author, signs them off and is named for @IDENT@ (the
MAINTAINERS entry).

    series.py check                    one source of truth, or say what is wrong
    series.py commit REPO BASE         make the commits on BASE in REPO with a
        [--ident "Name <mail>"] [--date D]   private index, print the last id
    series.py refresh REPO BASE HEAD   rewrite the patch files' diffs from
                                       BASE..HEAD (after a fixup in the tree)
    series.py adds                     print every top-level file the series adds
    series.py index PATCH              print PATCH's position in the series (1..)
    series.py mbox SERIES OUTDIR       write SERIES's patches as mails (git am),
        [--ident ...] [--date D]           named as in SERIES: for patches to a
                                       tree that is not QEMU's (pve-qemu)
"""

import argparse
import datetime
import email.utils
import os
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCHES = os.path.join(TOP, "qemu-patches")
SERIES = os.path.join(PATCHES, "series")
# Top-level folders that hold files at QEMU paths: everything in them must
# be added by exactly one patch of the series.
QEMU_DIRS = ["qapi", "include", "util", "system", "docs/system",
             "tests/qtest", "tests/unit"]


class SeriesError(Exception):
    pass


def parse_series(path=SERIES):
    """[(patch file name, [added paths])] in series order."""
    entries = []
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            if line[0].isspace():
                if not entries:
                    raise SeriesError(f"{path}:{n}: an added file before any patch")
                entries[-1][1].append(line.strip())
            else:
                entries.append((line.strip(), []))
    return entries


def read_patch(name, folder=PATCHES):
    """(subject, body, diff) of a patch file."""
    path = os.path.join(folder, name)
    with open(path) as f:
        text = f.read()
    head, sep, diff = text.partition("\n---\n")
    if not sep:
        raise SeriesError(f"{name}: no '---' line between message and diff")
    lines = head.split("\n")
    if not lines[0].startswith("Subject: "):
        raise SeriesError(f"{name}: the first line must be 'Subject: ...'")
    subject = lines[0][len("Subject: "):].strip()
    if len(lines) > 1 and lines[1] != "":
        raise SeriesError(f"{name}: a blank line must follow the subject")
    body = "\n".join(lines[2:]).strip("\n")
    return subject, body, diff


def write_patch(name, subject, body, diff):
    with open(os.path.join(PATCHES, name), "w") as f:
        f.write(f"Subject: {subject}\n\n{body}\n---\n{diff}")


def edited_paths(diff):
    paths = set()
    for line in diff.split("\n"):
        if line.startswith("diff --git a/"):
            paths.add(line.split(" b/", 1)[1])
    return paths


def check():
    """Problems with the series as a list of sentences (empty: fine)."""
    problems = []
    try:
        entries = parse_series()
    except (OSError, SeriesError) as e:
        return [str(e)]
    added = {}
    for name, adds in entries:
        try:
            _, _, diff = read_patch(name)
        except (OSError, SeriesError) as e:
            problems.append(str(e))
            continue
        for path in adds:
            if path in added:
                problems.append(f"{path} is added by {added[path]} and {name}")
            added[path] = name
            if not os.path.isfile(os.path.join(TOP, path)):
                problems.append(f"{name} adds {path}, which does not exist")
        for path in edited_paths(diff) & set(adds):
            problems.append(f"{name} both adds and edits {path}")
    for name, _ in entries:
        for path in edited_paths(read_patch(name)[2]) & set(added):
            problems.append(f"{name} edits {path}, which the series adds: "
                            "change the top-level file instead")
    listed = {n for n, _ in entries}
    for f in os.listdir(PATCHES):
        if f.endswith(".patch") and f not in listed:
            problems.append(f"qemu-patches/{f} is not in the series")
    for d in QEMU_DIRS:
        for root, _, files in os.walk(os.path.join(TOP, d)):
            for f in files:
                rel = os.path.relpath(os.path.join(root, f), TOP)
                if rel not in added:
                    problems.append(f"{rel} is at a QEMU path but no patch adds it")
    return problems


def git(repo, *args, env=None, stdin=None):
    r = subprocess.run(["git", "-C", repo, *args], input=stdin, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise SeriesError(f"git {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def parse_ident(ident):
    if "<" not in ident or not ident.endswith(">"):
        raise SeriesError(f"identity '{ident}' is not 'Name <mail>'")
    name, mail = ident[:-1].split("<", 1)
    if not name.strip() or "@" not in mail:
        raise SeriesError(f"identity '{ident}' is not 'Name <mail>'")
    return name.strip(), mail.strip()


def commit(repo, base, ident, date):
    """Make one commit per patch on BASE; return the ids."""
    problems = check()
    if problems:
        raise SeriesError("the series is inconsistent:\n  " + "\n  ".join(problems))
    name, mail = parse_ident(ident)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GIT_INDEX_FILE=os.path.join(tmp, "index"),
                   GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=mail,
                   GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=mail,
                   GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        parent = git(repo, "rev-parse", "--verify", base + "^{commit}").strip()
        git(repo, "read-tree", parent, env=env)
        ids = []
        for pname, adds in parse_series():
            subject, body, diff = read_patch(pname)
            for path in adds:
                if subprocess.run(["git", "-C", repo, "cat-file", "-e",
                                   f"{base}:{path}"],
                                  capture_output=True).returncode == 0:
                    raise SeriesError(f"{pname} adds {path}, which QEMU already has")
            # The MAINTAINERS entry names whoever sends the series.
            diff = diff.replace("@IDENT@", f"{name} <{mail}>")
            if diff.strip():
                try:
                    git(repo, "apply", "--cached", "--whitespace=nowarn", "-",
                        env=env, stdin=diff)
                except SeriesError as e:
                    raise SeriesError(f"{pname} does not apply: {e}") from None
            for path in adds:
                blob = git(repo, "hash-object", "-w", "--path", path,
                           os.path.join(TOP, path)).strip()
                mode = "100755" if os.access(os.path.join(TOP, path), os.X_OK) \
                    else "100644"
                git(repo, "update-index", "--add", "--cacheinfo",
                    f"{mode},{blob},{path}", env=env)
            tree = git(repo, "write-tree", env=env).strip()
            msg = subject + "\n\n" + (body + "\n\n" if body else "") + \
                f"Signed-off-by: {name} <{mail}>\n"
            parent = git(repo, "commit-tree", tree, "-p", parent, "-F", "-",
                         env=env, stdin=msg).strip()
            ids.append(parent)
    return ids


def refresh(repo, base, head):
    """Rewrite each patch file's diff from the commits BASE..HEAD."""
    entries = parse_series()
    commits = git(repo, "rev-list", "--reverse", f"{base}..{head}").split()
    if len(commits) != len(entries):
        raise SeriesError(f"{len(commits)} commits in {base}..{head}, "
                          f"{len(entries)} patches in the series")
    all_adds = [p for _, adds in entries for p in adds]
    excludes = [f":(exclude){p}" for p in all_adds]
    for (pname, _), c in zip(entries, commits):
        subject, body, _ = read_patch(pname)
        diff = git(repo, "diff", "--no-color", "--no-ext-diff", "--no-renames",
                   f"{c}^", c, "--", ".", *excludes)
        diff = "".join(l + "\n" for l in diff.split("\n")[:-1]
                       if not l.startswith("index "))
        # Whoever made the commits goes back to being a placeholder
        ident = git(repo, "log", "-1", "--format=%an <%ae>", c).strip()
        diff = diff.replace(ident, "@IDENT@")
        write_patch(pname, subject, body, diff)


def mbox(series, outdir, ident, date):
    """Write each patch of SERIES to OUTDIR as a mail that git am takes."""
    name, mail = parse_ident(ident)
    folder = os.path.dirname(os.path.abspath(series))
    stamp = email.utils.format_datetime(
        datetime.datetime.fromisoformat(date.replace("Z", "+00:00")))
    os.makedirs(outdir, exist_ok=True)
    for pname, adds in parse_series(series):
        if adds:
            raise SeriesError(f"{pname}: a mail series cannot add top-level files")
        subject, body, diff = read_patch(pname, folder)
        diff = diff.replace("@IDENT@", f"{name} <{mail}>")
        with open(os.path.join(outdir, pname), "w") as f:
            f.write("From 0000000000000000000000000000000000000000 "
                    "Mon Sep 17 00:00:00 2001\n"
                    f"From: {name} <{mail}>\nDate: {stamp}\n"
                    f"Subject: [PATCH] {subject}\n\n"
                    + (body + "\n\n" if body else "") +
                    f"Signed-off-by: {name} <{mail}>\n---\n{diff}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check")
    sub.add_parser("adds")
    ix = sub.add_parser("index")
    ix.add_argument("patch")
    c = sub.add_parser("commit")
    c.add_argument("repo")
    c.add_argument("base")
    c.add_argument("--ident", default="QEMU reclaim harness <harness@localhost>")
    c.add_argument("--date", default="2026-01-01T00:00:00Z")
    m = sub.add_parser("mbox")
    m.add_argument("series")
    m.add_argument("outdir")
    m.add_argument("--ident", default="QEMU reclaim harness <harness@localhost>")
    m.add_argument("--date", default="2026-01-01T00:00:00Z")
    r = sub.add_parser("refresh")
    r.add_argument("repo")
    r.add_argument("base")
    r.add_argument("head")
    a = ap.parse_args()
    try:
        if a.cmd == "check":
            problems = check()
            for p in problems:
                print(p, file=sys.stderr)
            return 1 if problems else 0
        if a.cmd == "adds":
            for _, adds in parse_series():
                for p in adds:
                    print(p)
        elif a.cmd == "commit":
            print(commit(a.repo, a.base, a.ident, a.date)[-1])
        elif a.cmd == "index":
            names = [p for p, _ in parse_series()]
            if a.patch not in names:
                raise SeriesError(f"no patch named '{a.patch}' in qemu-patches/series")
            print(names.index(a.patch) + 1)
        elif a.cmd == "mbox":
            mbox(a.series, a.outdir, a.ident, a.date)
        elif a.cmd == "refresh":
            refresh(a.repo, a.base, a.head)
    except SeriesError as e:
        print(f"series: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

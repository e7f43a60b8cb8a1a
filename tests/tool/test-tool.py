#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-reclaim against real QEMU processes, several at once.

One QEMU of each patched build (101 glibc, 102 tcmalloc, 103 jemalloc)
and Debian's unpatched QEMU (104), sockets <dir>/<vmid>.qmp.  101 and 102
run a backup first, after which QEMU releases by itself (one automatic
release, a last-release to show); 103 stays fresh.  Every figure the tool
prints is compared with what the QEMU itself says through
x-query-allocator-stats right before and after (or /proc for RSS), never
with constants; a figure QEMU does not tell (glibc: releasable, returned)
must be shown as unknown, never as 0.

QEMU returns freed memory by itself within about a second (after a
backup, and when its RCU thread is idle), so no real VM keeps much
releasable memory: where a test needs a VM above a threshold, a proxy in
front of its socket says so (toollib.ReleasableProxy), and the releases
stay real, counted by the QEMU behind it.

Checks: the command line (help, version, bad options exit 2 with a clear
message, the removed --max-bytes refused); `stats` as a table, with
--bytes, --json and --sort, with the targets given as a directory, a glob,
explicit paths and tcp:HOST:PORT; an allocator without statistics
("system"); `release` with --min-releasable, --dry-run and --json (each
release counted once by QEMU, the tool's figures equal to QEMU's
last-release); `export --textfile --once`; `auto` releasing once, leaving
glibc alone, keeping to --rate, and stopping on SIGTERM.

Usage: test-tool.py [--tap] [-k]    (QR_TOOL=path overrides the binary)
"""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toollib as T  # noqa: E402

DEADLINE = 120      # per tool run; the test fails if it is exceeded


def slack(v):
    """Tolerance between the tool's figure and QEMU's own: QMP traffic
    allocates a little, RSS moves a little."""
    return (1 << 20) + 0.02 * v


def within(value, a, b, extra=0):
    lo, hi = min(a, b), max(a, b)
    return T.close_to(value, lo, hi, slack(hi) + extra)


def main():
    return T.main(run, need_builds=True)


def cli_checks(tap, lab, vmdir):
    r = T.run_tool(["--help"], DEADLINE)
    text = r.out + r.err
    tap.ok(r.rc == 0 and all(c in text for c in
                             ("stats", "release", "export", "auto")),
           "--help exits 0 and lists the commands stats, release, export, "
           "auto", r.describe())
    r = T.run_tool(["--version"], DEADLINE)
    tap.ok(r.rc == 0 and any(ch.isdigit() for ch in r.out + r.err),
           "--version exits 0 and prints a version", r.describe())

    bad = [
        (["frobnicate", vmdir], "an unknown command", ["frobnicate"]),
        (["--jobs", "0", "stats", vmdir], "--jobs 0", ["jobs"]),
        (["stats", "--jobs=0", vmdir], "--jobs=0 after the command",
         ["jobs"]),
        (["release", "--min-releasable", "12Q", "--dry-run", vmdir],
         "--min-releasable 12Q", ["12Q"]),
        # QEMU's x-release-free-memory takes no limit any more
        (["release", "--max-bytes", "64M", vmdir],
         "--max-bytes (removed)", ["max-bytes", "no longer"]),
        (["--timeout", "-1", "stats", vmdir], "--timeout -1", ["timeout"]),
        (["stats", "--sort=colour", vmdir], "--sort=colour", ["colour"]),
        (["stats", "--no-such-option", vmdir], "an unknown option",
         ["no-such-option"]),
    ]
    for argv, what, words in bad:
        r = T.run_tool(argv, DEADLINE)
        # the message, not the usage text that may follow it
        first = (r.err.strip().splitlines() or [""])[0].lower()
        tap.ok(r.rc == 2 and all(w.lower() in first for w in words)
               and not r.signalled,
               "%s: exit 2, the message on stderr names %s" % (
                   what, ", ".join(repr(w) for w in words)), r.describe())
    # global options are taken anywhere, "--opt VALUE" as "--opt=VALUE"
    for argv in (["--timeout", "3000", "stats", vmdir],
                 ["-t", "3000", "stats", vmdir],
                 ["--jobs", "4", "stats", vmdir],
                 ["-j", "4", "-v", "stats", vmdir]):
        r = T.run_tool(argv, DEADLINE)
        tap.ok(r.rc == 0 and "VM" in r.out,
               "'%s' before the command is accepted (exit 0, a table)"
               % " ".join(argv[:-2]), r.describe())
    if os.path.exists("/var/run/qemu-server"):
        tap.skip("no targets: exit 2 'no targets'",
                 "/var/run/qemu-server exists on this machine")
    else:
        r = T.run_tool(["stats"], DEADLINE)
        tap.ok(r.rc == 2 and "no targets" in r.err.lower(),
               "no targets (and no /var/run/qemu-server): exit 2 and "
               "'no targets' on stderr", r.describe())
    r = T.run_tool(["stats", os.path.join(lab.dir, "empty-dir-*.qmp")],
                   DEADLINE)
    tap.ok(r.rc in (1, 2) and r.err.strip() != "" and not r.signalled,
           "a glob that matches nothing: fails (exit 1 or 2) with a message",
           r.describe())


def snapshot(vms):
    """{vmid: x-query-allocator-stats or None} plus /proc RSS."""
    return {v.vmid: (v.info(), v.rss()) for v in vms}


def figure(info, k):
    """QEMU's own figure `k` of x-query-allocator-stats, None if QEMU does
    not tell it; held is allocated + free, as the tool derives it."""
    st = (info or {}).get("stats")
    if st is None:
        return None
    if k == "held":
        return st["allocated"] + st["free"]
    return st.get(k)


def releases(info):
    return info["manual-releases"] + info["automatic-releases"]


def last_release(info):
    """QEMU's last-release as the tool names its members."""
    last = info.get("last-release")
    if last is None:
        return None
    names = {"trigger": "trigger", "returned": "returned",
             "process-rss-before": "rss-before",
             "process-rss-after": "rss-after", "duration-us": "duration-us"}
    return {names[k]: x for k, x in last.items()}


def check_stats_json(tap, r, vms, before, after, label):
    """--json output against the QEMUs' own figures."""
    doc = r.json()
    if not tap.ok(r.rc == 0 and isinstance(doc, dict) and "vms" in doc,
                  "%s: exit 0 and JSON with 'vms'" % label, r.describe()):
        return
    by = {e.get("vm"): e for e in doc["vms"]}
    tap.ok(sorted(by) == sorted(v.vmid for v in vms)
           and len(doc["vms"]) == len(vms),
           "%s: each VM listed once" % label,
           "listed %s" % [e.get("vm") for e in doc["vms"]])
    problems = []
    for v in vms:
        e = by.get(v.vmid, {})
        ib, rb = before[v.vmid]
        ia, ra = after[v.vmid]
        if e.get("address") != v.sock:
            problems.append("%s: address %r, not %r" % (v.vmid,
                            e.get("address"), v.sock))
        if e.get("pid") != v.pid:
            problems.append("%s: pid %r, QEMU is %d" % (v.vmid, e.get("pid"),
                                                       v.pid))
        # the RSS comes from /proc of the socket's peer, for every QEMU
        if not within(e.get("rss"), rb, ra, 2 << 20):
            problems.append("%s: rss %r, /proc says %d then %d"
                            % (v.vmid, e.get("rss"), rb, ra))
        if v.patched:
            if e.get("status") != "ok" or e.get("backend") != v.backend:
                problems.append("%s: status %r backend %r, expected ok %s"
                                % (v.vmid, e.get("status"), e.get("backend"),
                                   v.backend))
            for k in ("allocated", "held", "free", "releasable", "returned"):
                qb, qa = figure(ib, k), figure(ia, k)
                if qb is None or qa is None:
                    if k in e:
                        problems.append("%s: %s %r, but QEMU does not tell "
                                        "it: it must be left out" % (
                                            v.vmid, k, e[k]))
                elif not within(e.get(k), qb, qa):
                    problems.append("%s: %s %r, QEMU said %d then %d" % (
                        v.vmid, k, e.get(k), qb, qa))
            rel = e.get("releases") or {}
            if sorted(rel) != ["automatic", "manual"]:
                problems.append("%s: releases %r, expected manual and "
                                "automatic" % (v.vmid, rel))
            for k in ("manual", "automatic"):
                q = k + "-releases"
                if not (ib[q] <= (rel.get(k) if isinstance(
                        rel.get(k), int) else -1) <= ia[q]):
                    problems.append("%s: releases.%s %r, QEMU says %d" % (
                        v.vmid, k, rel.get(k), ia[q]))
            if e.get("last-release") != last_release(ia):
                problems.append("%s: last-release %r, QEMU's %r" % (
                    v.vmid, e.get("last-release"), last_release(ia)))
        else:
            if e.get("status") != "unpatched":
                problems.append("%s: status %r, expected unpatched"
                                % (v.vmid, e.get("status")))
            if not e.get("error"):
                problems.append("%s: no 'error' saying why" % v.vmid)
    tap.ok(not problems, "%s: status, backend, pid, address, figures and "
           "last release equal the QEMUs' own (x-query-allocator-stats, "
           "/proc); what glibc does not tell is left out" % label,
           "\n".join(problems))
    tot = doc.get("total", {})
    rel = [e["releasable"] for e in doc["vms"] if "releasable" in e]
    want = {"vms": len(vms), "ok": sum(v.patched for v in vms),
            "unpatched": sum(not v.patched for v in vms), "failed": 0,
            "releasable": sum(rel),
            "rss": sum(e.get("rss", 0) for e in doc["vms"])}
    tap.ok(rel and all(tot.get(k) == x for k, x in want.items()),
           "%s: total adds up (vms, ok, unpatched, failed, releasable, rss)"
           % label, "total %s, expected %s" % (tot, want))


def check_stats_table(tap, r, vms, before, after, label, exact):
    names = {v.vmid for v in vms}
    rows = T.parse_stats_table(r.out, names)
    tap.ok(r.rc == 0 and set(rows) == names and
           all("unparsed" not in x for x in rows.values()),
           "%s: exit 0, one parsable row per VM" % label, r.describe())
    problems = []
    for v in vms:
        row = rows.get(v.vmid)
        if not row or "unparsed" in row:
            problems.append("%s: no row" % v.vmid)
            continue
        ib, rb = before[v.vmid]
        ia, ra = after[v.vmid]
        # without --bytes the table rounds to 0.1 of a unit
        extra = 0 if exact else 0.06 * (1 << 20) + 0.001 * max(rb, ra)
        if not within(row["rss"], rb, ra, 2 * extra + (2 << 20)):
            problems.append("%s: RSS %r, /proc says %d then %d" % (
                v.vmid, row["rss"], rb, ra))
        if v.patched:
            if row["backend"] != v.backend or row["status"] != "ok":
                problems.append("%s: backend %s status %r" % (
                    v.vmid, row["backend"], row["status"]))
            for k in ("allocated", "held", "releasable"):
                qb, qa = figure(ib, k), figure(ia, k)
                if qb is None or qa is None:
                    if row[k] is not None:
                        problems.append("%s: %s %r, but QEMU does not tell "
                                        "it: '-' expected" % (v.vmid, k,
                                                              row[k]))
                elif not within(row[k], qb, qa, extra):
                    problems.append("%s: %s %r, QEMU said %d then %d" % (
                        v.vmid, k, row[k], qb, qa))
            if not (releases(ib) <= (row["releases"] if row["releases"]
                                     is not None else -1) <= releases(ia)):
                problems.append("%s: releases %r, QEMU counts %d" % (
                    v.vmid, row["releases"], releases(ia)))
            if exact and any(row[k] is not None and row[k] != int(row[k])
                             for k in ("allocated", "held", "rss")):
                problems.append("%s: --bytes figures are not whole bytes"
                                % v.vmid)
        else:
            if not row["status"].startswith("unpatched"):
                problems.append("%s: status %r, expected unpatched..." % (
                    v.vmid, row["status"]))
    tap.ok(not problems, "%s: backend, status, figures and releases equal "
           "the QEMUs' own, '-' where QEMU does not tell; RSS from /proc"
           % label, "\n".join(problems) + "\n" + r.out)
    tap.ok(any(line.split()[:1] == ["total"] for line in r.out.splitlines()),
           "%s: has a total line" % label, r.out)
    return rows


def sorted_ok(rows, order, key, desc=True):
    """order (list of names) respects key among rows that have the key."""
    keyed = [(rows[n][key], n) for n in order
             if n in rows and rows[n].get(key) is not None]
    want = sorted(keyed, key=lambda x: ((-x[0] if desc else x[0]), x[1]))
    return [n for _, n in keyed] == [n for _, n in want]


def release_on_terminal(args):
    """The tool's stderr when it is a terminal (a pty), as text."""
    import pty
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([T.TOOL] + args, stdout=subprocess.DEVNULL,
                                stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:     # EIO: the tool closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=DEADLINE)
    finally:
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def run(tap, lab):
    vmdir = lab.vmdir
    cli_checks(tap, lab, vmdir)

    vms = lab.start_many([("101", "system"), ("102", "tcmalloc"),
                          ("103", "jemalloc"), ("104", "unpatched")])
    by = {v.vmid: v for v in vms}
    for vmid in ("101", "102"):
        by[vmid].fill()
    names = set(by)
    patched = [v for v in vms if v.patched]

    # -- stats, table with --bytes, targets as a directory
    b = snapshot(vms)
    r = T.run_tool(["stats", "--bytes", vmdir], DEADLINE)
    a = snapshot(vms)
    rows = check_stats_table(tap, r, vms, b, a, "stats --bytes DIR", True)
    order = T.row_order(r.out, names)
    known = [n for n in order if rows.get(n, {}).get("releasable")
             is not None]
    tap.ok(sorted_ok(rows, order, "releasable") and
           sorted(known) == ["102", "103"] and
           order == known + ["101", "104"],
           "stats: default order is releasable descending, the VMs that do "
           "not tell it (glibc, then unpatched) last",
           "order %s; releasable %s" % (order, {n: rows[n].get("releasable")
                                              for n in rows}))

    # -- human units
    b = snapshot(vms)
    r = T.run_tool(["stats", vmdir], DEADLINE)
    a = snapshot(vms)
    check_stats_table(tap, r, vms, b, a, "stats DIR (human units)", False)

    # -- --sort
    r = T.run_tool(["stats", "--bytes", "--sort=name", vmdir], DEADLINE)
    order = T.row_order(r.out, names)
    tap.ok(r.rc == 0 and order == sorted(names),
           "stats --sort=name: rows in name order", r.describe())
    r = T.run_tool(["stats", "--bytes", "--sort", "rss", vmdir], DEADLINE)
    rows = T.parse_stats_table(r.out, names)
    order = T.row_order(r.out, names)
    tap.ok(r.rc == 0 and len(order) == 4 and
           all(rows[n].get("rss") for n in order) and
           sorted_ok(rows, order, "rss"),
           "stats --sort rss: every VM has its RSS, rows by RSS descending",
           r.describe())

    # -- --json, directory
    b = snapshot(vms)
    r = T.run_tool(["stats", "--json", vmdir], DEADLINE)
    a = snapshot(vms)
    check_stats_json(tap, r, vms, b, a, "stats --json DIR")

    # -- a glob, quoted (the tool expands it)
    b = snapshot(vms)
    r = T.run_tool(["stats", "--json", os.path.join(vmdir, "*.qmp")],
                   DEADLINE)
    a = snapshot(vms)
    check_stats_json(tap, r, vms, b, a, "stats --json 'DIR/*.qmp'")
    r = T.run_tool(["stats", "--json", os.path.join(vmdir, "10[24].qmp")],
                   DEADLINE)
    doc = r.json() or {}
    got = sorted(e.get("vm") for e in doc.get("vms", []))
    tap.ok(r.rc == 0 and got == ["102", "104"],
           "stats 'DIR/10[24].qmp': exactly the VMs the glob matches",
           r.describe())

    # -- explicit paths, with global options after the command
    r = T.run_tool(["stats", "--json", "-t", "3000", "-j", "1",
                    by["103"].sock, by["101"].sock], DEADLINE)
    doc = r.json() or {}
    got = sorted(e.get("vm") for e in doc.get("vms", []))
    ok = {e.get("vm"): e.get("status") for e in doc.get("vms", [])}
    tap.ok(r.rc == 0 and got == ["101", "103"] and
           set(ok.values()) == {"ok"},
           "stats with two explicit paths (and -t/-j after the command): "
           "those two VMs, ok", r.describe())

    # -- a tcp:HOST:PORT target (its own QEMU, outside the directory): no
    # peer credentials on TCP, so no pid and no RSS, rather than a wrong one
    other = lab.path("tcp")
    os.mkdir(other)
    port = T.free_port()
    tv = lab.start("105", "jemalloc", directory=other,
                   extra=["-qmp", "tcp:127.0.0.1:%d,server=on,wait=off"
                          % port])
    addr = "127.0.0.1:%d" % port
    ib = tv.info()
    r = T.run_tool(["stats", "--json", "tcp:" + addr], DEADLINE)
    ia = tv.info()
    doc = r.json() or {}
    e = (doc.get("vms") or [{}])[0]
    tap.ok(r.rc == 0 and len(doc.get("vms", [])) == 1 and
           e.get("vm") == addr and e.get("status") == "ok" and
           e.get("backend") == "jemalloc" and
           within(e.get("allocated"), ib["stats"]["allocated"],
                  ia["stats"]["allocated"]) and
           "rss" not in e and "pid" not in e and
           "rss" not in doc.get("total", {}),
           "stats tcp:%s: the VM is named HOST:PORT, ok, its backend and "
           "figures; RSS unknown (no pid over TCP), not 0" % addr,
           r.describe())
    r = T.run_tool(["stats", "tcp:" + addr], DEADLINE)
    row = T.parse_stats_table(r.out, {addr}).get(addr, {})
    tot = T.table_rows(r.out).get("total", "")
    tap.ok(r.rc == 0 and row.get("rss", 0) is None and
           re.match(r"total\s+(?:%s|-)\s+-\s+1 VMs: 1 ok" % T._SIZE, tot),
           "stats tcp:%s table: RSS '-' in the row and in the total"
           % addr, r.describe())

    # -- an allocator without statistics or release ("system"): a stand-in
    # QMP server, as no build here has one
    check_system_allocator(tap, lab)
    check_hostile_peers(tap, lab)

    # -- release --dry-run changes nothing
    b = snapshot(vms)
    r = T.run_tool(["release", "--dry-run", "--json", vmdir], DEADLINE)
    a = snapshot(vms)
    doc = r.json() or {}
    st = {e.get("vm"): e.get("status") for e in doc.get("vms", [])}
    want = {v.vmid: ("would-release" if v.patched else "skipped")
            for v in vms}
    tap.ok(r.rc == 0 and st == want,
           "release --dry-run --json: every patched VM would-release (glibc "
           "too: no --min-releasable), the unpatched one skipped",
           "%s\nexpected %s" % (r.describe(), want))
    counters = ("manual-releases", "automatic-releases", "last-release")
    tap.ok(all(b[v.vmid][0].get(k) == a[v.vmid][0].get(k)
               for v in patched for k in counters),
           "release --dry-run: no QEMU released anything (counters and "
           "last release unchanged)",
           "before %s\nafter %s" % (
               {v.vmid: [b[v.vmid][0].get(k) for k in counters]
                for v in patched},
               {v.vmid: [a[v.vmid][0].get(k) for k in counters]
                for v in patched}))

    # -- on a terminal, release shows progress on stderr and clears it
    progress = release_on_terminal(["release", "--dry-run", vmdir])
    n = len(vms)
    tap.ok(re.search(r"\[%d/%d\] 0 running" % (n, n), progress) and
           progress.endswith("\r\033[K"),
           "release on a terminal: a progress line up to [%d/%d], cleared "
           "at the end" % (n, n), repr(progress[-300:]))

    # -- release --min-releasable above what any VM holds: all skipped,
    # each with its reason; glibc's releasable is unknown, never "0 B"
    b = snapshot(vms)
    r = T.run_tool(["release", "--min-releasable", "1T", vmdir], DEADLINE)
    a = snapshot(vms)
    rows = T.parse_release_table(r.out, names)
    reasons = {
        "101": lambda s: "unknown" in s and "glibc" in s,
        "102": lambda s: "below 1.0 TiB" in s,
        "103": lambda s: "below 1.0 TiB" in s,
        "104": lambda s: "unpatched" in s,
    }
    bad = {n: rows.get(n, {}).get("status") for n, f in reasons.items()
           if not (rows.get(n, {}).get("status", "").startswith("skipped")
                   and f(rows[n]["status"]))}
    tap.ok(r.rc == 0 and set(rows) == names and not bad and
           rows["101"]["releasable"] is None,
           "release --min-releasable 1T: each VM skipped with its reason "
           "(below 1.0 TiB; glibc: releasable unknown, shown '-'; "
           "unpatched)", "%s\n%s" % (bad, r.describe()))
    tap.ok(all(a[v.vmid][0]["manual-releases"] ==
               b[v.vmid][0]["manual-releases"] for v in patched),
           "release --min-releasable 1T: no QEMU counts a manual release")

    # -- release, table: every patched VM, each once
    b = snapshot(vms)
    r = T.run_tool(["release", vmdir], DEADLINE)
    a = snapshot(vms)
    rows = T.parse_release_table(r.out, names)
    tap.ok(r.rc == 0 and set(rows) == names,
           "release DIR: exit 0, one row per VM", r.describe())
    counts = {v.vmid: a[v.vmid][0]["manual-releases"] -
              b[v.vmid][0]["manual-releases"] for v in patched}
    tap.ok(counts == {v.vmid: 1 for v in patched},
           "release: QEMU counts exactly one manual release on each patched "
           "VM", "manual deltas %s" % counts)
    problems = []
    for v in vms:
        row = rows.get(v.vmid, {"status": "(no row)", "returned": None})
        if not v.patched:
            if not (row["status"].startswith("skipped") and
                    "unpatched" in row["status"]):
                problems.append("%s: %r, expected skipped: unpatched" % (
                    v.vmid, row["status"]))
            continue
        last = a[v.vmid][0].get("last-release") or {}
        if not row["status"].startswith("released"):
            problems.append("%s: %r, expected released" % (v.vmid,
                                                           row["status"]))
            continue
        if last.get("trigger") != "manual":
            problems.append("%s: QEMU's last release is %r" % (v.vmid, last))
        for col, k in (("returned", "returned"),
                       ("rss_before", "process-rss-before"),
                       ("rss_after", "process-rss-after")):
            q = last.get(k)
            if q is None:
                if row[col] is not None:
                    problems.append("%s: %s %r, QEMU does not tell it: '-' "
                                    "expected" % (v.vmid, col, row[col]))
            elif not T.close_to(row[col], q, q, 0.06 * (1 << 20) +
                                0.001 * q):
                problems.append("%s: %s %r, QEMU says %r" % (
                    v.vmid, col, row[col], q))
    tap.ok(not problems, "release: each patched VM released, RETURNED and "
           "RSS BEFORE/AFTER equal to QEMU's last-release ('-' for what "
           "glibc does not count); unpatched skipped",
           "\n".join(problems) + "\n" + r.out)
    tap.ok("returned" not in a["101"][0]["last-release"] and
           rows.get("101", {}).get("returned", 0) is None,
           "release: glibc's release, which QEMU does not count, shows "
           "RETURNED '-'", r.out)
    hdr = " ".join(T.release_header(r.out))
    tap.ok(re.search(r"\bVM\b.*\bRELEASABLE\b.*\bRETURNED\b.*"
                     r"\bRSS BEFORE\b.*\bRSS AFTER\b.*\bTIME\b.*"
                     r"\bSTATUS$", hdr),
           "release: the table has its documented columns, in order",
           "header: %r" % hdr)
    counted = [v for v in patched if "returned" in a[v.vmid][0][
        "last-release"]]
    total = T.table_rows(r.out).get("total:", "")
    tap.ok(re.match(r"total: .* returned by %d VMs? \(and 1 VM released "
                    r"without a count\); 1 skipped; 0 failed$"
                    % len(counted), total),
           "release: summary line (counted VMs, glibc's apart, skipped, "
           "failed)", r.out)

    # -- release --json: exact figures
    b = snapshot(vms)
    r = T.run_tool(["release", "--json", vmdir], DEADLINE)
    a = snapshot(vms)
    doc = r.json() or {}
    ents = {e.get("vm"): e for e in doc.get("vms", [])}
    tap.ok(r.rc == 0 and sorted(ents) == sorted(names),
           "release --json: exit 0, every VM listed", r.describe())
    mism = {}
    for v in patched:
        e = ents.get(v.vmid, {})
        last = last_release(a[v.vmid][0]) or {}
        last.pop("trigger", None)
        got = {k: e[k] for k in ("returned", "rss-before", "rss-after",
                                 "duration-us") if k in e}
        if e.get("status") != "released" or e.get("address") != v.sock or \
                got != last:
            mism[v.vmid] = (e, last)
    tap.ok(not mism,
           "release --json: each patched VM released; returned, rss-before, "
           "rss-after, duration-us equal QEMU's last-release, 'returned' "
           "left out where QEMU does not tell it (glibc)",
           "\n".join("%s: entry %s, QEMU %s" % (k, x[0], x[1])
                     for k, x in mism.items()))
    tap.ok(ents.get("104", {}).get("status") == "skipped" and
           ents["104"].get("reason"),
           "release --json: the unpatched VM is skipped with a reason",
           str(ents.get("104")))
    tot = doc.get("total", {})
    want = {"returned": sum(x.get("returned", 0) for x in ents.values()
                            if x.get("status") == "released"),
            "released": 3, "uncounted": 1, "skipped": 1, "failed": 0}
    tap.ok(all(tot.get(k) == x for k, x in want.items()),
           "release --json: total adds up (glibc's release uncounted)",
           "total %s, expected %s" % (tot, want))
    d = {v.vmid: a[v.vmid][0]["manual-releases"] -
         b[v.vmid][0]["manual-releases"] for v in patched}
    tap.ok(d == {v.vmid: 1 for v in patched},
           "release --json: QEMU counts exactly one more manual release on "
           "each", "deltas %s" % d)

    # -- export --textfile --once
    outdir = lab.path("textfile")
    os.mkdir(outdir)
    prom = os.path.join(outdir, "qemu-reclaim.prom")
    b = snapshot(vms)
    r = T.run_tool(["export", "--textfile", prom, "--once", vmdir], DEADLINE)
    a = snapshot(vms)
    tap.ok(r.rc == 0 and os.path.exists(prom),
           "export --textfile PATH --once: exit 0, file written",
           r.describe())
    text = open(prom).read() if os.path.exists(prom) else ""
    s = T.parse_metrics(text)
    problems = [x[1]["line"] for x in s if x[0] == "__unparsable__"]
    for v in vms:
        ib, rb = b[v.vmid]
        ia, ra = a[v.vmid]
        if T.metric(s, "qemu_reclaim_up", vmid=v.vmid) != 1:
            problems.append("%s: qemu_reclaim_up not 1" % v.vmid)
        sup = T.metric(s, "qemu_reclaim_supported", vmid=v.vmid)
        if sup != (1 if v.patched else 0):
            problems.append("%s: qemu_reclaim_supported %r" % (v.vmid, sup))
        res = T.metric(s, "qemu_reclaim_resident_memory_bytes", vmid=v.vmid)
        if not within(res, rb, ra, 2 << 20):
            problems.append("%s: resident %r, /proc %d..%d" % (v.vmid, res,
                                                              rb, ra))
        if not v.patched:
            continue
        if T.metric(s, "qemu_reclaim_allocator_info", vmid=v.vmid,
                    backend=v.backend) != 1:
            problems.append("%s: no allocator_info backend=%s" % (v.vmid,
                                                                  v.backend))
        for k in ("allocated", "held", "free", "releasable", "returned"):
            name = "qemu_reclaim_%s_bytes" % k
            val = T.metric(s, name, vmid=v.vmid)
            qb, qa = figure(ib, k), figure(ia, k)
            if qb is None or qa is None:
                if any(n == name and lab_.get("vmid") == v.vmid
                       for n, lab_, _ in s):
                    problems.append("%s: a %s sample, but QEMU does not "
                                    "tell it" % (v.vmid, name))
            elif not within(val, qb, qa):
                problems.append("%s: %s %r, QEMU %d..%d" % (
                    v.vmid, name, val, qb, qa))
        for trig in ("manual", "automatic"):
            val = T.metric(s, "qemu_reclaim_releases_total", vmid=v.vmid,
                           trigger=trig)
            if val != ia[trig + "-releases"]:
                problems.append("%s: releases_total{%s} %r, QEMU %d" % (
                    v.vmid, trig, val, ia[trig + "-releases"]))
        last = ia["last-release"]
        val = T.metric(s, "qemu_reclaim_last_release_returned_bytes",
                       vmid=v.vmid)
        if val != last.get("returned"):
            problems.append("%s: last_release_returned_bytes %r, QEMU %r" % (
                v.vmid, val, last.get("returned")))
        val = T.metric(s, "qemu_reclaim_last_release_duration_seconds",
                       vmid=v.vmid)
        if val is None or abs(val - last["duration-us"] / 1e6) > 1e-6:
            problems.append("%s: last_release_duration_seconds %r, QEMU %d "
                            "us" % (v.vmid, val, last["duration-us"]))
    if T.metric(s, "qemu_reclaim_vms") != len(vms):
        problems.append("qemu_reclaim_vms %r" % T.metric(s,
                                                         "qemu_reclaim_vms"))
    gone = {n for n, lab_, _ in s if n in (
        "qemu_reclaim_released_bytes_total",
        "qemu_reclaim_release_seconds_total",
        "qemu_reclaim_automatic_skipped_total")} | {
        "releases_total{trigger=idle}" for n, lab_, _ in s
        if lab_.get("trigger") == "idle"}
    if gone:
        problems.append("figures QEMU no longer has: %s" % sorted(gone))
    tap.ok(not problems, "export --textfile: up, supported, backend, sizes, "
           "counters and last release equal the QEMUs' own; no sample of "
           "what QEMU does not tell", "\n".join(problems) + "\n" + text)
    left = sorted(os.listdir(outdir))
    tap.ok(left == ["qemu-reclaim.prom"],
           "export --textfile: no temporary file left next to it",
           "directory holds %s" % left)

    check_auto(tap, lab, by)


def check_hostile_peers(tap, lab):
    """Sockets the tool must not trust, and a peer whose text would drive
    the operator's terminal."""
    d = lab.path("hostile")
    os.mkdir(d)
    evil = "\x1b]0;pwned\x07\x1b[2Jsys\u009b31m"
    fake = T.FakeQEMU(os.path.join(d, "107.qmp"),
                      {"backend": evil, "manual-releases": 0,
                       "automatic-releases": 0})
    try:
        outs = []
        for argv in (["stats", fake.path], ["release", fake.path],
                     ["--verbose", "stats", "--json", fake.path]):
            r = T.run_tool(argv, DEADLINE)
            outs.append((argv, r))
        # JSON escapes C0 itself and may carry C1 as it is: for programs
        raw = [(" ".join(a), r.describe()) for a, r in outs
               if any(c in r.out + r.err for c in "\x1b\x07") or
               ("--json" not in a and "\u009b" in r.out + r.err)]
        tap.ok(not raw and "\\x1b" in outs[0][1].out,
               "a QEMU's text reaches the terminal with its control "
               "characters escaped (stats, release; JSON escapes them)",
               "%s\n%s" % (raw, outs[0][1].describe()))

        huge = T.FakeQEMU(os.path.join(d, "109.qmp"),
                          {"backend": "jemalloc", "manual-releases": 0,
                           "automatic-releases": 0,
                           "stats": {"allocated": 1e20, "free": 1e19,
                                     "releasable": 1e300}})
        try:
            r = T.run_tool(["stats", "--json", huge.path], DEADLINE)
        finally:
            huge.close()
        e = ((r.json() or {}).get("vms") or [{}])[0]
        figs = [e.get(k) for k in ("allocated", "held", "free", "releasable")]
        tap.ok(r.rc == 0 and all(isinstance(f, (int, float)) and
                                 f == 2 ** 63 - 1 for f in figs),
               "figures beyond 2^63 from a peer: clamped to 2^63 - 1 in "
               "JSON, never wrapped or printed negative", r.describe())
        os.unlink(huge.path)

        n = len(fake.commands)
        os.symlink(fake.path, os.path.join(d, "108.qmp"))
        r = T.run_tool(["stats", "--json", d], DEADLINE)
        vms = {e.get("vm"): e for e in (r.json() or {}).get("vms", [])}
        link = vms.get("108", {})
        tap.ok(link.get("status") == "error" and
               "symbolic link" in (link.get("error") or "") and
               vms.get("107", {}).get("status") == "ok" and
               len(fake.commands) - n == 2,
               "a symlinked socket is refused (an error naming the link), "
               "never connected; the real one is read",
               "%s\ncommands %s" % (r.describe(), fake.commands[n:]))

        os.unlink(os.path.join(d, "108.qmp"))
        n = len(fake.commands)
        os.chown(fake.path, 65534, 65534)
        r = T.run_tool(["stats", "--json", fake.path], DEADLINE)
        e = ((r.json() or {}).get("vms") or [{}])[0]
        tap.ok(r.rc == 1 and e.get("status") == "error" and
               "uid 65534" in (e.get("error") or "") and
               len(fake.commands) == n,
               "a socket owned by another user is refused, never connected",
               "%s\ncommands %s" % (r.describe(), fake.commands[n:]))
    finally:
        fake.close()


def check_system_allocator(tap, lab):
    """A QEMU whose allocator is "system": no statistics, no release."""
    d = lab.path("system")
    os.mkdir(d)
    fake = T.FakeQEMU(os.path.join(d, "106.qmp"),
                      {"backend": "system", "manual-releases": 0,
                       "automatic-releases": 0})
    try:
        r = T.run_tool(["stats", "--json", fake.path], DEADLINE)
        e = ((r.json() or {}).get("vms") or [{}])[0]
        figures = ("allocated", "held", "free", "releasable", "returned")
        tap.ok(r.rc == 0 and e.get("status") == "ok" and
               e.get("backend") == "system" and
               not any(k in e for k in figures) and
               e.get("releases") == {"manual": 0, "automatic": 0} and
               e.get("pid") == os.getpid(),
               "stats --json, allocator 'system': ok, its backend, no "
               "figures at all (not 0), the pid of the socket's peer",
               r.describe())
        r = T.run_tool(["stats", fake.path], DEADLINE)
        row = T.parse_stats_table(r.out, {"106"}).get("106", {})
        tap.ok(r.rc == 0 and row.get("backend") == "system" and
               row.get("status") == "ok" and
               all(row.get(k, 0) is None for k in ("allocated", "held",
                                                   "releasable")),
               "stats, allocator 'system': '-' for its figures", r.describe())
        r = T.run_tool(["release", "--json", fake.path], DEADLINE)
        e = ((r.json() or {}).get("vms") or [{}])[0]
        tap.ok(r.rc == 0 and e.get("status") == "skipped" and
               "cannot release" in (e.get("reason") or "") and
               fake.commands.count("x-release-free-memory") == 0,
               "release, allocator 'system': skipped, 'cannot release', "
               "nothing asked of QEMU", "%s\ncommands %s" % (
                   r.describe(), fake.commands))
    finally:
        fake.close()


def stop_daemon(p):
    """SIGTERM, as systemd stops the daemon; its exit status, or a note
    that it hung (then it is killed)."""
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        return "hung after SIGTERM"


def check_auto(tap, lab, by):
    """auto over real QEMUs; the tcmalloc one (102) behind a proxy that
    says it holds 512 MiB releasable, above the default --threshold."""
    os.mkdir(lab.path("auto"))
    real = [by[n] for n in ("101", "102", "103")]
    proxy = T.ReleasableProxy(lab.path("auto", "102.qmp"), by["102"].sock,
                              512 << 20)
    targets = [proxy.path] + [by[n].sock for n in ("101", "103", "104")]
    b = snapshot(real)
    log = open(lab.path("auto.log"), "w+")
    p = lab.spawn([T.TOOL, "auto", "--threshold", "256M", "--hold", "0",
                   "--interval", "1", "--min-interval", "60"] + targets,
                  stdout=log, stderr=log)

    def manual(vmid):
        return by[vmid].info()["manual-releases"] - \
            b[vmid][0]["manual-releases"]

    t0 = time.monotonic()
    got = T.wait_for(lambda: manual("102") >= 1, 30, 0.5)
    took = time.monotonic() - t0
    tap.ok(got, "auto --threshold 256M --hold 0 --interval 1: the VM above "
           "the threshold is released within 30 s", "waited %.1f s" % took)
    time.sleep(4)     # four more looks: no second release (min-interval)
    alive = p.poll() is None
    rc = stop_daemon(p)
    proxy.close()
    log.seek(0)
    text = log.read()
    dm = {n: manual(n) for n in ("101", "102", "103")}
    tap.ok(dm["102"] == 1 and proxy.releases == 1,
           "auto: exactly one release of that VM (min-interval 60 s), "
           "counted by its QEMU", "manual deltas %s, through the proxy %d\n%s"
           % (dm, proxy.releases, text))
    tap.ok(dm["101"] == 0 and dm["103"] == 0,
           "auto: no release of the VMs below the threshold (jemalloc) or "
           "that do not tell it (glibc)", "manual deltas %s\n%s" % (dm, text))

    def about(vmid, *words):
        """Log lines about `vmid` (after the time stamp, if any)."""
        return [line for line in text.splitlines()
                if re.search(r"(^|\s)%s: " % vmid, line) and
                all(w in line for w in words)]

    tap.ok(about("102", "released"),
           "auto: logs the release naming the VM", text)
    tap.ok(len(about("101", "left alone", "glibc")) == 1 and
           not about("103"),
           "auto: says once (not at every look) that glibc's VM is left "
           "alone, and nothing of the jemalloc one below the threshold",
           text)
    tap.ok(alive and rc == 0, "auto: keeps running, exits 0 on SIGTERM",
           "running before SIGTERM: %s, exit %s\n%s" % (alive, rc, text))

    # -- auto's host-wide rate limit: two VMs due at once, --rate 1
    due = [by["102"], by["103"]]
    os.mkdir(lab.path("rate"))
    proxies = [T.ReleasableProxy(lab.path("rate", "%s.qmp" % v.vmid),
                                 v.sock, 512 << 20) for v in due]
    b = snapshot(due)
    log = open(lab.path("auto-rate.log"), "w+")
    p = lab.spawn([T.TOOL, "auto", "--threshold", "256M", "--hold", "0",
                   "--interval", "1", "--min-interval", "60", "--rate", "1"]
                  + [x.path for x in proxies], stdout=log, stderr=log)

    def deltas():
        a = snapshot(due)
        return {v.vmid: a[v.vmid][0]["manual-releases"] -
                b[v.vmid][0]["manual-releases"] for v in due}

    T.wait_for(lambda: sum(deltas().values()) >= 1, 30, 0.5)
    time.sleep(4)     # four more looks, all inside the same minute
    dd = deltas()
    stop_daemon(p)
    for x in proxies:
        x.close()
    log.seek(0)
    text = log.read()
    tap.ok(sorted(dd.values()) == [0, 1] and
           "host-wide limit reached (--rate 1 per minute)" in text,
           "auto --rate 1: one of two due VMs released within the minute, "
           "the other waits and the log says why",
           "manual deltas %s\n%s" % (dd, text))

    # -- a release slower than --interval: the looks in between queue
    # neither the VM being released nor the one waiting behind it again
    os.mkdir(lab.path("slow"))
    slow = [T.ReleasableProxy(lab.path("slow", "102.qmp"), by["102"].sock,
                              512 << 20, delay=4),
            T.ReleasableProxy(lab.path("slow", "103.qmp"), by["103"].sock,
                              512 << 20)]
    log = open(lab.path("auto-slow.log"), "w+")
    p = lab.spawn([T.TOOL, "--timeout", "1500", "auto", "--threshold",
                   "256M", "--hold", "0", "--interval", "1",
                   "--min-interval", "60", "--rate", "100"]
                  + [x.path for x in slow], stdout=log, stderr=log)
    T.wait_for(lambda: slow[1].releases >= 1, 30, 0.5)
    time.sleep(4)     # four more looks: time for a second release, if any
    got = [x.releases for x in slow]
    stop_daemon(p)
    for x in slow:
        x.close()
    log.seek(0)
    text = log.read()
    tap.ok(got == [1, 1],
           "auto, a release (4 s) slower than --interval (1 s): each of two "
           "due VMs released exactly once (--min-interval 60)",
           "releases through the proxies %s\n%s" % (got, text))

    # -- a new process behind a VM's socket starts fresh: its --min-interval
    # is not the old process's.  The socket's peer is a proxy in a process
    # of its own, restarted in between (the QEMU behind it stays, so its
    # counter shows both releases).
    os.mkdir(lab.path("restart"))
    path = lab.path("restart", "102.qmp")
    here = os.path.dirname(os.path.abspath(__file__))

    def proxy_process():
        return lab.spawn([sys.executable, "-c",
                          "import signal, sys; sys.path.insert(0, %r); "
                          "import toollib; toollib.ReleasableProxy(%r, %r, "
                          "512 << 20); signal.pause()"
                          % (here, path, by["102"].sock)])

    def released():
        return by["102"].info()["manual-releases"] - b0

    b0 = by["102"].info()["manual-releases"]
    first = proxy_process()
    T.wait_for(lambda: os.path.exists(path), 10)
    log = open(lab.path("auto-restart.log"), "w+")
    p = lab.spawn([T.TOOL, "auto", "--threshold", "256M", "--hold", "0",
                   "--interval", "1", "--min-interval", "600", path],
                  stdout=log, stderr=log)
    once = T.wait_for(lambda: released() >= 1, 30, 0.5)
    first.kill()
    first.wait()
    os.unlink(path)
    second = proxy_process()
    twice = T.wait_for(lambda: released() >= 2, 30, 0.5)
    time.sleep(3)     # and no third
    n = released()
    stop_daemon(p)
    second.kill()
    second.wait()
    log.seek(0)
    text = log.read()
    tap.ok(once and twice and n == 2,
           "auto --min-interval 600: released once, and once more when a new "
           "process answers on the VM's socket (a restarted QEMU starts "
           "fresh)", "releases counted by the QEMU: %d\n%s" % (n, text))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-reclaim against real QEMU processes, several at once.

One QEMU of each patched build (101 glibc, 102 tcmalloc, 103 jemalloc)
and Debian's unpatched QEMU (104), sockets <dir>/<vmid>.qmp.  101 and 102
get a backup workload that leaves ~80-120 MiB in their allocators; 103
stays fresh.  Every figure the tool prints is compared with what the
QEMU itself says through x-query-allocator-stats right before and after
(or /proc for RSS), never with constants.

Checks: the command line (help, version, bad options exit 2 with a clear
message); `stats` as a table, with --bytes, --json and --sort, with the
targets given as a directory, a glob and explicit paths; `release` with
--min-releasable, --dry-run and --json (releases counted by QEMU, RSS
down); `export --textfile --once`; `auto` releasing once and stopping on
SIGTERM.

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
        if v.patched:
            if e.get("status") != "ok" or e.get("backend") != v.backend:
                problems.append("%s: status %r backend %r, expected ok %s"
                                % (v.vmid, e.get("status"), e.get("backend"),
                                   v.backend))
            for k in ("allocated", "held", "free", "releasable", "rss"):
                if not within(e.get(k), ib["stats"][k], ia["stats"][k]):
                    problems.append("%s: %s %r, QEMU said %d then %d" % (
                        v.vmid, k, e.get(k), ib["stats"][k], ia["stats"][k]))
            rel = e.get("releases") or {}
            for k in ("manual", "automatic", "returned"):
                if not (ib["releases"][k] <= (rel.get(k) if isinstance(
                        rel.get(k), int) else -1) <= ia["releases"][k]):
                    problems.append("%s: releases.%s %r, QEMU says %d" % (
                        v.vmid, k, rel.get(k), ia["releases"][k]))
            if not isinstance(rel.get("idle"), int):
                problems.append("%s: releases.idle missing" % v.vmid)
        else:
            if e.get("status") != "unpatched":
                problems.append("%s: status %r, expected unpatched"
                                % (v.vmid, e.get("status")))
            if not within(e.get("rss"), rb, ra, 2 << 20):
                problems.append("%s: rss %r, /proc says %d then %d"
                                % (v.vmid, e.get("rss"), rb, ra))
            if not e.get("error"):
                problems.append("%s: no 'error' saying why" % v.vmid)
    tap.ok(not problems, "%s: status, backend, pid, address and figures "
           "equal the QEMUs' own (x-query-allocator-stats, /proc)" % label,
           "\n".join(problems))
    tot = doc.get("total", {})
    oks = [e for e in doc["vms"] if e.get("status") == "ok"]
    want = {"vms": len(vms), "ok": sum(v.patched for v in vms),
            "unpatched": sum(not v.patched for v in vms), "failed": 0,
            "releasable": sum(e.get("releasable", 0) for e in oks),
            "rss": sum(e.get("rss", 0) for e in doc["vms"])}
    tap.ok(all(tot.get(k) == x for k, x in want.items()),
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
        if v.patched:
            if row["backend"] != v.backend or row["status"] != "ok":
                problems.append("%s: backend %s status %r" % (
                    v.vmid, row["backend"], row["status"]))
            for k in ("allocated", "held", "releasable", "rss"):
                if not within(row[k], ib["stats"][k], ia["stats"][k], extra):
                    problems.append("%s: %s %r, QEMU said %d then %d" % (
                        v.vmid, k, row[k], ib["stats"][k], ia["stats"][k]))
            if exact and any(row[k] is not None and row[k] != int(row[k])
                             for k in ("allocated", "held", "rss")):
                problems.append("%s: --bytes figures are not whole bytes"
                                % v.vmid)
        else:
            if not row["status"].startswith("unpatched"):
                problems.append("%s: status %r, expected unpatched..." % (
                    v.vmid, row["status"]))
            if not within(row["rss"], rb, ra, 2 * extra + (2 << 20)):
                problems.append("%s: RSS %r, /proc says %d then %d" % (
                    v.vmid, row["rss"], rb, ra))
    tap.ok(not problems, "%s: backend, status and figures equal the "
           "QEMUs' own; unpatched shows its RSS" % label,
           "\n".join(problems) + "\n" + r.out)
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

    # -- stats, table with --bytes, targets as a directory
    b = snapshot(vms)
    r = T.run_tool(["stats", "--bytes", vmdir], DEADLINE)
    a = snapshot(vms)
    rows = check_stats_table(tap, r, vms, b, a, "stats --bytes DIR", True)
    order = T.row_order(r.out, names)
    tap.ok(sorted_ok(rows, order, "releasable") and
           [n for n in order if n in ("101", "102", "103")][-1:] == ["103"],
           "stats: default order is releasable descending",
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
    tap.ok(r.rc == 0 and len(order) == 4 and sorted_ok(rows, order, "rss"),
           "stats --sort rss: rows by RSS descending", r.describe())

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

    # -- a tcp:HOST:PORT target (its own QEMU, outside the directory)
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
                  ia["stats"]["allocated"]),
           "stats tcp:%s: the VM is named HOST:PORT, ok, its backend and "
           "figures" % addr, r.describe())

    # -- release --dry-run changes nothing
    b = snapshot(vms)
    unfilled = [v for v in vms if v.patched and not v.filled]
    filled = [v for v in vms if v.filled]
    low = max(b[v.vmid][0]["stats"]["releasable"] for v in unfilled)
    high = min(b[v.vmid][0]["stats"]["releasable"] for v in filled)
    threshold = 16 << 20
    tap.ok(low < threshold < high,
           "setup: the filled VMs hold more than %s releasable, the fresh "
           "one less" % T.mib(threshold),
           "fresh max %s, filled min %s" % (T.mib(low), T.mib(high)))
    thr = "%dM" % (threshold >> 20)
    r = T.run_tool(["release", "--dry-run", "--json", "--min-releasable",
                    thr, vmdir], DEADLINE)
    a = snapshot(vms)
    doc = r.json() or {}
    st = {e.get("vm"): e.get("status") for e in doc.get("vms", [])}
    want = {v.vmid: ("would-release" if v.filled else "skipped")
            for v in vms}
    tap.ok(r.rc == 0 and st == want,
           "release --dry-run --json: filled VMs would-release, the others "
           "skipped", "%s\nexpected %s" % (r.describe(), want))
    unchanged = all(
        b[v.vmid][0]["releases"] == a[v.vmid][0]["releases"] and
        a[v.vmid][0]["stats"]["releasable"] >=
        b[v.vmid][0]["stats"]["releasable"] - slack(
            b[v.vmid][0]["stats"]["releasable"])
        for v in vms if v.patched)
    tap.ok(unchanged, "release --dry-run: no QEMU released anything "
           "(counters and releasable unchanged)",
           "before %s\nafter %s" % (
               {k: x[0] and x[0]["releases"] for k, x in b.items()},
               {k: x[0] and x[0]["releases"] for k, x in a.items()}))

    # -- on a terminal, release shows progress on stderr and clears it
    progress = release_on_terminal(["release", "--dry-run", vmdir])
    n = len(vms)
    tap.ok(re.search(r"\[%d/%d\] 0 running" % (n, n), progress) and
           progress.endswith("\r\033[K"),
           "release on a terminal: a progress line up to [%d/%d], cleared "
           "at the end" % (n, n), repr(progress[-300:]))

    # -- release --min-releasable, table
    b = snapshot(vms)
    r = T.run_tool(["release", "--min-releasable", thr, vmdir], DEADLINE)
    a = snapshot(vms)
    rows = T.parse_release_table(r.out, names)
    tap.ok(r.rc == 0 and set(rows) == names,
           "release --min-releasable %s DIR: exit 0, one row per VM" % thr,
           r.describe())
    problems = []
    for v in vms:
        row = rows.get(v.vmid, {"status": "(no row)", "returned": None})
        if v.filled:
            last = a[v.vmid][0].get("last-release", {})
            if not row["status"].startswith("released"):
                problems.append("%s: %r, expected released" % (v.vmid,
                                                               row["status"]))
            elif not T.close_to(row["returned"], last.get("returned", -1),
                                last.get("returned", -1),
                                0.06 * (1 << 20) + 0.001 * last.get(
                                    "returned", 0)):
                problems.append("%s: returned %r, QEMU says %r" % (
                    v.vmid, row["returned"], last.get("returned")))
        elif v.patched:
            if not (row["status"].startswith("skipped") and
                    ("below" in row["status"] or thr in row["status"] or
                     "16.0 MiB" in row["status"])):
                problems.append("%s: %r, expected skipped: ... below ..."
                                % (v.vmid, row["status"]))
        else:
            if not (row["status"].startswith("skipped") and
                    "unpatched" in row["status"]):
                problems.append("%s: %r, expected skipped: unpatched" % (
                    v.vmid, row["status"]))
    tap.ok(not problems, "release: filled VMs released (returned = QEMU's "
           "last-release), fresh one skipped below the threshold, unpatched "
           "skipped", "\n".join(problems) + "\n" + r.out)
    counts = {v.vmid: a[v.vmid][0]["releases"]["manual"] -
              b[v.vmid][0]["releases"]["manual"] for v in vms if v.patched}
    tap.ok(counts == {v.vmid: int(v.filled) for v in vms if v.patched},
           "release: QEMU counts exactly one manual release on each filled "
           "VM and none on the skipped one", "manual deltas %s" % counts)
    drops = {v.vmid: (b[v.vmid][1], a[v.vmid][1]) for v in filled}
    rets = {v.vmid: (a[v.vmid][0].get("last-release") or {}).get(
        "returned", 0) for v in filled}
    tap.ok(all(bb > aa for bb, aa in drops.values()) and
           all(x > 0 for x in rets.values()),
           "release: returned > 0 and RSS (/proc) lower after, on each "
           "filled VM", "RSS %s, returned %s" % (drops, rets))
    hdr = " ".join(T.release_header(r.out))
    tap.ok(re.search(r"\bVM\b.*\bRELEASABLE\b.*\bRETURNED\b.*"
                     r"\bRSS BEFORE\b.*\bRSS AFTER\b.*\bTIME\b.*"
                     r"\bSTATUS$", hdr),
           "release: the table has its documented columns, in order",
           "header: %r" % hdr)
    tap.ok(any(line.split()[:1] == ["total:"] or line.startswith("total")
               for line in r.out.splitlines()) and "returned" in r.out,
           "release: summary line", r.out)

    # -- release --json (refill one VM)
    by["102"].fill()
    b = snapshot(vms)
    r = T.run_tool(["release", "--json", "--min-releasable", thr, vmdir],
                   DEADLINE)
    a = snapshot(vms)
    doc = r.json() or {}
    ents = {e.get("vm"): e for e in doc.get("vms", [])}
    tap.ok(r.rc == 0 and sorted(ents) == sorted(names),
           "release --json: exit 0, every VM listed", r.describe())
    e = ents.get("102", {})
    last = a["102"][0].get("last-release") or {}
    fields = {"returned": "returned", "rss-before": "rss-before",
              "rss-after": "rss-after", "duration-us": "duration-us"}
    mism = {k: (e.get(k), last.get(q)) for k, q in fields.items()
            if e.get(k) != last.get(q)}
    tap.ok(e.get("status") == "released" and e.get("address") ==
           by["102"].sock and not mism and e.get("returned", 0) > 0,
           "release --json: the refilled VM is released; returned, "
           "rss-before, rss-after, duration-us equal QEMU's last-release",
           "entry %s\nQEMU last-release %s\nmismatch %s" % (e, last, mism))
    skipped = [v for v in vms if v.vmid != "102"]
    tap.ok(all(ents.get(v.vmid, {}).get("status") == "skipped" and
               ents[v.vmid].get("reason") for v in skipped),
           "release --json: the others are skipped with a reason",
           str({v.vmid: ents.get(v.vmid) for v in skipped}))
    tot = doc.get("total", {})
    want = {"returned": sum(x.get("returned") or 0 for x in ents.values()
                            if x.get("status") == "released"),
            "released": 1, "skipped": 3, "failed": 0}
    tap.ok(all(tot.get(k) == x for k, x in want.items()),
           "release --json: total adds up", "total %s, expected %s" % (
               tot, want))
    d = a["102"][0]["releases"]["manual"] - b["102"][0]["releases"]["manual"]
    tap.ok(d == 1, "release --json: QEMU counts exactly one more manual "
           "release", "delta %d" % d)

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
        for k in ("allocated", "held", "free", "releasable"):
            val = T.metric(s, "qemu_reclaim_%s_bytes" % k, vmid=v.vmid)
            if not within(val, ib["stats"][k], ia["stats"][k]):
                problems.append("%s: %s_bytes %r, QEMU %d..%d" % (
                    v.vmid, k, val, ib["stats"][k], ia["stats"][k]))
        for trig in ("manual", "automatic", "idle"):
            val = T.metric(s, "qemu_reclaim_releases_total", vmid=v.vmid,
                           trigger=trig)
            if val != ia["releases"][trig]:
                problems.append("%s: releases_total{%s} %r, QEMU %d" % (
                    v.vmid, trig, val, ia["releases"][trig]))
        val = T.metric(s, "qemu_reclaim_released_bytes_total", vmid=v.vmid)
        if val != ia["releases"]["returned"]:
            problems.append("%s: released_bytes_total %r, QEMU %d" % (
                v.vmid, val, ia["releases"]["returned"]))
    if T.metric(s, "qemu_reclaim_vms") != len(vms):
        problems.append("qemu_reclaim_vms %r" % T.metric(s,
                                                         "qemu_reclaim_vms"))
    tap.ok(not problems, "export --textfile: up, supported, backend, sizes "
           "and counters equal the QEMUs' own",
           "\n".join(problems) + "\n" + text)
    left = sorted(os.listdir(outdir))
    tap.ok(left == ["qemu-reclaim.prom"],
           "export --textfile: no temporary file left next to it",
           "directory holds %s" % left)

    # -- auto
    by["102"].fill()
    b = snapshot(vms)
    thr_auto = 16 << 20
    quiet = [v for v in vms if v.patched and v.vmid != "102" and
             b[v.vmid][0]["stats"]["releasable"] < thr_auto // 2]
    log = open(lab.path("auto.log"), "w+")
    p = lab.spawn([T.TOOL, "auto", "--threshold", "16M", "--hold", "0",
                   "--interval", "1", "--min-interval", "60", vmdir],
                  stdout=log, stderr=log)

    def released():
        i = by["102"].info()
        return i["releases"]["manual"] > b["102"][0]["releases"]["manual"]

    t0 = time.monotonic()
    got = T.wait_for(released, 30, 0.5)
    took = time.monotonic() - t0
    tap.ok(got, "auto --threshold 16M --hold 0 --interval 1: the filled VM "
           "is released within 30 s", "waited %.1f s" % took)
    time.sleep(4)     # four more polls: no second release (min-interval)
    alive = p.poll() is None
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=20)
    except Exception:
        p.kill()
        rc = "hung after SIGTERM"
    a = snapshot(vms)
    log.seek(0)
    text = log.read()
    d = a["102"][0]["releases"]["manual"] - b["102"][0]["releases"]["manual"]
    tap.ok(d == 1, "auto: exactly one release of the filled VM (min-interval "
           "60 s)", "manual delta %d\n%s" % (d, text))
    dq = {v.vmid: a[v.vmid][0]["releases"]["manual"] -
          b[v.vmid][0]["releases"]["manual"] for v in quiet}
    tap.ok(quiet and not any(dq.values()),
           "auto: no release of the VMs below the threshold",
           "deltas %s\n%s" % (dq, text))
    tap.ok(a["102"][1] < b["102"][1],
           "auto: RSS of the released VM went down",
           "%s -> %s" % (T.mib(b["102"][1]), T.mib(a["102"][1])))
    tap.ok(any("102" in line and "released" in line
               for line in text.splitlines()),
           "auto: logs the release naming the VM", text)
    tap.ok(alive and rc == 0, "auto: keeps running, exits 0 on SIGTERM",
           "running before SIGTERM: %s, exit %s\n%s" % (alive, rc, text))

    # -- auto's host-wide rate limit: two VMs due at once, --rate 1
    due = [by["101"], by["102"]]
    for v in due:
        v.fill()
    b = snapshot(vms)
    log = open(lab.path("auto-rate.log"), "w+")
    p = lab.spawn([T.TOOL, "auto", "--threshold", "16M", "--hold", "0",
                   "--interval", "1", "--min-interval", "60", "--rate", "1",
                   vmdir], stdout=log, stderr=log)

    def deltas():
        a = snapshot(due)
        return {v.vmid: a[v.vmid][0]["releases"]["manual"] -
                b[v.vmid][0]["releases"]["manual"] for v in due}

    T.wait_for(lambda: sum(deltas().values()) >= 1, 30, 0.5)
    time.sleep(4)     # four more looks, all inside the same minute
    d = deltas()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except Exception:
        p.kill()
    log.seek(0)
    text = log.read()
    tap.ok(sorted(d.values()) == [0, 1] and
           "host-wide limit reached (--rate 1 per minute)" in text,
           "auto --rate 1: one of two due VMs released within the minute, "
           "the other waits and the log says why",
           "manual deltas %s\n%s" % (d, text))


if __name__ == "__main__":
    sys.exit(main())

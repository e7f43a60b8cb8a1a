#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-reclaim against hostile or broken QMP peers.

Peers served by this script on real Unix sockets (one thread each):
  silent        accepts and never speaks
  closes        sends the QMP greeting and closes
  badjson       sends a greeting that is not JSON
  badanswer     a valid greeting, then garbage as the answer
  hugeline      streams a 100 MB line without a newline (in 1 MiB chunks)
  stale         a socket file nobody listens on (connection refused)
  dies          answers the statistics, then dies during
                x-release-free-memory
  killed        a real patched QEMU behind a forwarding proxy that
                SIGKILLs it as soon as x-release-free-memory goes through,
                and lets no answer through after it
  perm          a socket with mode 000, the tool run as user nobody
                (root ignores file permissions)

Each peer is put next to two real, healthy patched QEMUs and the tool runs
`stats --bytes` (and `release` where the peer matters for it) on the
three.  For each: the tool ends before our own deadline (no hang), is
not killed by a signal (no crash), exits 1, prints a message on the
peer's row that names it and says what went wrong, and still serves the
healthy QEMUs with their right figures.  Finally all peers at once.

Usage: test-faults.py [--tap] [-k]
"""
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toollib as T  # noqa: E402

DEADLINE = 60         # our own limit per tool run; the tool's is 2 s
TOOL_TIMEOUT_MS = 2000
GREETING = {"QMP": {"version": {"qemu": {"micro": 2, "minor": 0,
                                         "major": 10},
                                "package": "fake"},
                    "capabilities": []}}

# what a user should read in the message (any of these words, lower case)
EXPECT = {
    "silent": ["timeout", "timed out", "did not answer", "no answer",
               "no greeting"],
    "closes": ["closed", "eof", "end of", "hung up", "disconnect",
               "broken pipe", "reset"],
    "badjson": ["json", "invalid", "parse", "malformed", "unexpected"],
    "badanswer": ["json", "invalid", "parse", "malformed", "unexpected"],
    "hugeline": ["too long", "too large", "too big", "exceeds", "limit",
                 "timeout", "timed out", "mib", "bytes"],
    "stale": ["refused", "not running", "no qemu", "stale"],
    "dies": ["closed", "eof", "end of", "hung up", "disconnect", "reset",
             "broken"],
    "killed": ["closed", "eof", "end of", "hung up", "disconnect", "reset",
               "broken"],
    "perm": ["permission", "denied", "access"],
}
STATS_FAULTS = ["silent", "closes", "badjson", "badanswer", "hugeline",
                "stale", "perm"]
RELEASE_FAULTS = ["silent", "closes", "badjson", "stale", "dies", "killed"]


class Peer:
    """A hostile QMP peer listening on `path`."""

    def __init__(self, kind, path, lab=None):
        self.kind = kind
        self.path = path
        self.conns = []
        self.stop = threading.Event()
        self.lab = lab
        self.qemu = None
        self.sent = 0
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        if kind == "stale":          # the file stays, nobody listens
            self.sock.close()
            return
        self.sock.listen(16)
        os.chmod(path, 0o000 if kind == "perm" else 0o666)
        if kind == "killed":
            # each proxy needs its own real QEMU to kill
            self.qemu = lab.start("killed-%d" % id(self),
                                  "tcmalloc", directory=lab.path("backing"))
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.handle, args=(c,),
                             daemon=True).start()

    def handle(self, c):
        try:
            getattr(self, "do_" + self.kind)(c)
        except OSError:
            pass

    def do_silent(self, c):
        self.stop.wait()

    def do_perm(self, c):      # only reached if permissions were ignored
        self.do_qmp(c)

    def do_closes(self, c):
        c.sendall((json.dumps(GREETING) + "\n").encode())
        c.close()

    def do_badjson(self, c):
        c.sendall(b'{"QMP": {"version": nonsense, ]]\n')
        self.stop.wait()

    def do_badanswer(self, c):
        c.sendall((json.dumps(GREETING) + "\n").encode())
        c.recv(65536)
        c.sendall(b'{"return": {}, "id": \x01\xff garbage}}}\n')
        self.stop.wait()

    def do_hugeline(self, c):
        """A greeting that starts as valid JSON and never ends: a 100 MB
        string, no newline, streamed 1 MiB at a time."""
        chunk = b"x" * (1 << 20)
        c.settimeout(30)
        try:
            c.sendall(b'{"QMP": {"version": {"package": "')
            for _ in range(100):
                if self.stop.is_set():
                    return
                c.sendall(chunk)
                self.sent += len(chunk)
        except (OSError, socket.timeout):
            return
        self.stop.wait()

    def do_dies(self, c):
        self.do_qmp(c, die_on_release=True)

    def do_qmp(self, c, die_on_release=False):
        """Enough QMP to pass for a patched QEMU with 512 MiB releasable."""
        f = c.makefile("rwb")
        f.write((json.dumps(GREETING) + "\n").encode())
        f.flush()
        info = {"backend": "tcmalloc",
                "stats": {"allocated": 20 << 20, "free": 512 << 20,
                          "releasable": 512 << 20, "returned": 0},
                "manual-releases": 0, "automatic-releases": 0}
        while True:
            line = f.readline()
            if not line:
                return
            msg = json.loads(line)
            name = msg.get("execute")
            if name == "x-release-free-memory" and die_on_release:
                time.sleep(0.5)     # "during" the release
                c.shutdown(socket.SHUT_RDWR)
                c.close()
                return
            if name == "qmp_capabilities":
                ans = {"return": {}}
            elif name == "x-query-allocator-stats":
                ans = {"return": info}
            else:
                ans = {"error": {"class": "CommandNotFound",
                                 "desc": "The command %s has not been found"
                                 % name}}
            if "id" in msg:
                ans["id"] = msg["id"]
            f.write((json.dumps(ans) + "\n").encode())
            f.flush()

    def do_killed(self, c):
        """Forward to the real QEMU; SIGKILL it right after forwarding
        x-release-free-memory.  A release with little to return ends in
        microseconds, before the kill: nothing QEMU sends after the
        command is let through, so that to the tool it dies during the
        release, every time.  The tool's connection is closed only once
        QEMU is dead: the test checks that it is as soon as the tool
        exits."""
        up = socket.socket(socket.AF_UNIX)
        up.connect(self.qemu.sock)
        self.conns.append(up)
        releasing = threading.Event()
        killed = threading.Event()

        def down():
            try:
                while True:
                    data = up.recv(65536)
                    if not data or releasing.is_set():
                        break
                    c.sendall(data)
            except OSError:
                pass
            if releasing.is_set():
                killed.wait()
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        threading.Thread(target=down, daemon=True).start()
        while True:
            data = c.recv(65536)
            if not data:
                up.close()
                return
            if b"x-release-free-memory" in data:
                releasing.set()
            up.sendall(data)
            if releasing.is_set():
                time.sleep(0.002)
                os.kill(self.qemu.pid, signal.SIGKILL)
                self.qemu.proc.wait()
                killed.set()


def snapshot(vms):
    return {v.vmid: (v.info(), v.rss()) for v in vms}


def figures(info, rss):
    """QEMU's own figures as the tool shows them: held is allocated +
    free, RSS is /proc's, None where QEMU does not tell (glibc)."""
    st = info["stats"]
    return {"allocated": st["allocated"],
            "held": st["allocated"] + st["free"],
            "releasable": st.get("releasable"), "rss": rss}


def healthy_ok(rows, healthy, b, a):
    """Problems with the healthy VMs' rows of `stats --bytes`."""
    problems = []
    for v in healthy:
        row = rows.get(v.vmid)
        if not row or "unparsed" in row:
            problems.append("%s: no row" % v.vmid)
            continue
        fb, fa = figures(*b[v.vmid]), figures(*a[v.vmid])
        if row["status"] != "ok" or row["backend"] != v.backend:
            problems.append("%s: status %r backend %r" % (
                v.vmid, row["status"], row["backend"]))
        for k in ("allocated", "held", "releasable", "rss"):
            if fb[k] is None or fa[k] is None:
                if row[k] is not None:
                    problems.append("%s: %s %r, QEMU does not tell it" % (
                        v.vmid, k, row[k]))
                continue
            lo, hi = min(fb[k], fa[k]), max(fb[k], fa[k])
            if not T.close_to(row[k], lo, hi, (2 << 20) + 0.02 * hi):
                problems.append("%s: %s %r, QEMU %d..%d" % (v.vmid, k,
                                                           row[k], lo, hi))
    return problems


def message_ok(kind, vm, status, prefix):
    s = status.lower()
    return s.startswith(prefix) and any(w in s for w in EXPECT[kind])


def check_run(tap, r, what, kinds, names):
    """Common assertions: no hang, no crash, exit 1."""
    tap.ok(not r.timed_out and not r.signalled,
           "%s: ends within %d s, no signal (took %.1f s, exit %s)" % (
               what, DEADLINE, r.wall, r.rc), r.describe())
    tap.ok(r.rc == 1, "%s: exit code 1" % what, r.describe())


def main():
    return T.main(run, prefix='qemu-reclaim-faults-')


def run(tap, lab):
    os.mkdir(lab.path("backing"))
    healthy = lab.start_many([("201", "tcmalloc"), ("202", "system")])
    user = T.nobody_ids()
    can_nobody = False
    if user:
        r = T.run_tool(["--version"], 30, user=user)
        can_nobody = r.rc == 0
    no_nobody = ("cannot run the tool as an unprivileged user (nobody): "
                 "root would ignore the socket's mode 000")

    def fault_dir(kind):
        d = lab.path("fault-" + kind)
        if not os.path.exists(d):
            os.mkdir(d)
            os.chmod(d, 0o755)
        return d

    def against_peer(kind, vmid, args, as_user=None):
        """Run the tool with args over a `kind` peer and the healthy QEMUs;
        the healthy QEMUs' own figures before and after."""
        peer = Peer(kind, os.path.join(fault_dir(kind), vmid + ".qmp"), lab)
        try:
            b = snapshot(healthy)
            r = T.run_tool(args + ["--timeout", str(TOOL_TIMEOUT_MS),
                                   peer.path] + [v.sock for v in healthy],
                           DEADLINE, user=as_user)
            a = snapshot(healthy)
        finally:
            peer.close()
        return peer, r, b, a

    # -- stats, one peer at a time
    for kind in STATS_FAULTS:
        what = "stats with a '%s' peer" % kind
        if kind == "perm" and not can_nobody:
            for n in ("no hang", "exit 1", "message", "healthy served"):
                tap.skip("%s: %s" % (what, n), no_nobody)
            continue
        vmid = "9%02d" % STATS_FAULTS.index(kind)
        peer, r, b, a = against_peer(kind, vmid, ["stats", "--bytes"],
                                     user if kind == "perm" else None)
        check_run(tap, r, what, [kind], None)
        rows = T.parse_stats_table(r.out, {vmid} | {v.vmid for v in healthy})
        st = rows.get(vmid, {}).get("status") or rows.get(vmid, {}).get(
            "unparsed", "(no row)")
        tap.ok(message_ok(kind, vmid, st, "error"),
               "%s: its row says 'error: ...' with a clear reason" % what,
               "row: %r\nexpected one of %s\n%s" % (st, EXPECT[kind],
                                                    r.describe()))
        probs = healthy_ok(rows, healthy, b, a)
        tap.ok(not probs, "%s: the healthy QEMUs are served with their "
               "figures" % what, "\n".join(probs) + "\n" + r.out)
        if kind == "hugeline":
            tap.ok(r.maxrss_kib < 64 * 1024,
                   "%s: the tool does not buffer the line (peak RSS %.1f "
                   "MiB, the peer sent %.0f MB)" % (
                       what, r.maxrss_kib / 1024, peer.sent / 1e6))

    # -- release, one peer at a time
    for kind in RELEASE_FAULTS:
        what = "release with a '%s' peer" % kind
        vmid = "8%02d" % RELEASE_FAULTS.index(kind)
        peer, r, b, a = against_peer(kind, vmid, ["release", "--json"])
        check_run(tap, r, what, [kind], None)
        doc = r.json() or {}
        ents = {e.get("vm"): e for e in doc.get("vms", [])}
        e = ents.get(vmid, {})
        tap.ok(e.get("status") == "failed" and
               any(w in (e.get("error") or "").lower()
                   for w in EXPECT[kind]),
               "%s: its entry is 'failed' with a clear error" % what,
               "entry %r\nexpected one of %s\n%s" % (e, EXPECT[kind],
                                                     r.describe()))
        if kind == "killed":
            tap.ok(not peer.qemu.alive(),
                   "%s: the QEMU was indeed killed during the release" % what)
        probs = []
        for v in healthy:
            he = ents.get(v.vmid, {})
            d = (a[v.vmid][0]["manual-releases"] -
                 b[v.vmid][0]["manual-releases"])
            last = a[v.vmid][0].get("last-release") or {}
            if he.get("status") != "released":
                probs.append("%s: %r" % (v.vmid, he))
            elif d != 1 or he.get("returned") != last.get("returned"):
                # glibc does not count: "returned" absent on both sides
                probs.append("%s: released, QEMU counted %d, returned "
                             "%r vs QEMU %r" % (v.vmid, d,
                                                he.get("returned"),
                                                last.get("returned")))
        tap.ok(not probs, "%s: the healthy QEMUs are released, once each "
               "as QEMU counts it, with QEMU's figures" % what,
               "\n".join(probs) + "\n" + r.out)

    # -- all at once (but perm, which needs another user), table and JSON
    peers = []
    names = {}
    d = lab.path("all")
    os.mkdir(d)
    for i, kind in enumerate(k for k in STATS_FAULTS if k != "perm"):
        vmid = "7%02d" % i
        names[vmid] = kind
        peers.append(Peer(kind, os.path.join(d, vmid + ".qmp"), lab))
    try:
        b = snapshot(healthy)
        r = T.run_tool(["stats", "--timeout", str(TOOL_TIMEOUT_MS),
                        "--bytes", d] + [v.sock for v in healthy], DEADLINE)
        a = snapshot(healthy)
        rj = T.run_tool(["stats", "--timeout", str(TOOL_TIMEOUT_MS),
                         "--json", d] + [v.sock for v in healthy], DEADLINE)
    finally:
        for p in peers:
            p.close()
    what = "stats with all %d peers at once" % len(peers)
    check_run(tap, r, what, list(names.values()), None)
    tap.ok(r.wall < DEADLINE / 2,
           "%s: bounded by the timeout, not by the number of peers "
           "(%.1f s)" % (what, r.wall))
    rows = T.parse_stats_table(r.out, set(names) | {v.vmid for v in healthy})
    bad = {vmid: rows.get(vmid, {}).get("status") for vmid, kind in
           names.items() if not message_ok(kind, vmid, rows.get(
               vmid, {}).get("status") or "", "error")}
    tap.ok(not bad, "%s: each peer's row says error with its reason" % what,
           "%s\n%s" % (bad, r.out))
    probs = healthy_ok(rows, healthy, b, a)
    tap.ok(not probs, "%s: the healthy QEMUs are served" % what,
           "\n".join(probs) + "\n" + r.out)
    doc = rj.json() or {}
    tot = doc.get("total", {})
    st = {e.get("vm"): e.get("status") for e in doc.get("vms", [])}
    want = dict({k: "error" for k in names},
                **{v.vmid: "ok" for v in healthy})
    tap.ok(rj.rc == 1 and st == want and tot.get("failed") == len(names)
           and tot.get("ok") == len(healthy),
           "%s --json: statuses and total (failed %d, ok %d)" % (
               what, len(names), len(healthy)), rj.describe())
    tap.ok(all(v.alive() for v in healthy),
           "the healthy QEMUs are still running")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""pve-qemu's own backup path with the series, against one pve build.

Run by scripts/pve-check.sh for each allocator build of pve-qemu 10.2.1-2
+ the v2 series + the pve patch (linked against the PBS stand-in,
tools/pbs-standin):

  tests/pve/pve-backup-test.py BUILD_DIR ALLOCATOR [-k]

BUILD_DIR has qemu-system-x86_64 and pve's vma tool; ALLOCATOR is the
backend x-query-allocator-stats must report (tcmalloc, glibc).  QEMU runs
with machine none and a 256 MiB raw disk (a pattern in which every 4 KiB
block differs, with a 16 MiB hole of zeroes) added with blockdev-add as
node "drive-scsi0", the way qemu-server names drives; pve's `backup`
finds it by node name (get_single_device_info() falls back to
bdrv_find_node() when there is no BlockBackend).  Everything goes over a
real QMP Unix socket; HMP goes through human-monitor-command, which is
how `qm monitor` talks to QEMU.  Speaks TAP; -k keeps going after a
failure.

Five backups in one QEMU: a full VMA backup (archive checked with pve's
`vma verify` and `vma extract`; gdb, if installed, names the callers of
qemu_allocator_release_soon() meanwhile), one canceled with backup-cancel
in the middle, a full one, one to a PBS repository (fails with the
stand-in's error), a full one.  Each is followed by exactly one automatic
release; RSS after it stays within 25 MiB of RSS before the first backup,
and the allocator's `allocated` within 1 MiB of its value after the first.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "scripts"))
from qmplib import QMP, rss, start_qemu  # noqa: E402

SIZE = 256 << 20
HOLE = (64 << 20, 16 << 20)          # offset, length of the zero region
RSS_KEPT_MAX = 25 << 20
# What a finished backup may leave allocated (QEMU's caches); pve-qemu
# 10.2.1-2 itself leaves 4.2 MiB per VMA backup (the VMA writer, freed by
# qemu-patches/pve/vma-writer-destroy.patch)
ALLOC_SLACK = 1 << 20
DEV = "drive-scsi0"
STANDIN_ERROR = "Proxmox Backup Server support is not part of this build"
CONFIG = "name: pve-check\nmemory: 512\nscsi0: local:100/vm-100-disk-0.raw\n"
EVENT = "ALLOCATOR_MEMORY_RELEASED"


class TAP:
    def __init__(self, keep_going):
        self.n = 0
        self.failed = 0
        self.keep_going = keep_going

    def ok(self, cond, name, diag=None):
        self.n += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, name))
        for line in (diag or "").splitlines():
            print("# " + line)
        sys.stdout.flush()
        if not cond:
            self.failed += 1
            if not self.keep_going:
                print("Bail out! %s (run with -k to keep going)" % name,
                      flush=True)
                raise SystemExit(1)
        return cond

    def skip(self, name, reason):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, name, reason), flush=True)


def write_disk(path):
    """The known data: block i of 4 KiB is its number and a hash of it,
    repeated; HOLE is zeroes (VMA stores zero clusters without data)."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for mib in range(SIZE >> 20):
            off = mib << 20
            if HOLE[0] <= off < HOLE[0] + HOLE[1]:
                chunk = bytes(1 << 20)
            else:
                chunk = b"".join(
                    (b"%016x" % (off + i)
                     + hashlib.md5(b"%d" % (off + i)).digest()) * 128
                    for i in range(0, 1 << 20, 4096))
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def wait_for(what, cond, timeout):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out after %d s waiting for %s"
                               % (timeout, what))
        time.sleep(0.05)


def mibs(n):
    return "(not counted)" if n is None else "%.1f MiB" % (n / 2**20)


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Session:
    def __init__(self, build, work):
        self.build = build
        self.work = work
        self.sock = os.path.join(work, "qmp.sock")
        self.proc = start_qemu(os.path.join(build, "qemu-system-x86_64"),
                               self.sock, deadline_s=60,
                               log=os.path.join(work, "qemu.log"))
        self.qmp = QMP(self.sock, timeout=120)

    def releases(self):
        return [e["data"] for e in self.qmp.events if e["event"] == EVENT]

    def pump(self, seconds):
        """Read events for a while (the QMP class reads them only while
        it waits for an answer)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.qmp.cmd("query-status")
            time.sleep(0.05)

    def wait_release(self, count, timeout=30):
        """Wait until `count` release events arrived in total."""
        def arrived():
            self.qmp.cmd("query-status")
            return len(self.releases()) >= count
        wait_for("ALLOCATOR_MEMORY_RELEASED #%d" % count, arrived, timeout)

    def backup_done(self, timeout=300):
        """Poll query-backup until the backup has ended (pve's cleanup,
        pvebackup_co_cleanup(), has run: end-time set, finishing false)."""
        def ended():
            st = self.qmp.cmd("query-backup")
            if st.get("status") in ("done", "error") and "end-time" in st \
                    and not st["finishing"]:
                return st
            time.sleep(0.05)
            return None
        return wait_for("the backup's end (query-backup)", ended, timeout)

    def nodes(self):
        return sorted(n["node-name"]
                      for n in self.qmp.cmd("query-named-block-nodes"))

    def quit(self):
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit")
            except (RuntimeError, OSError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def gdb_callers(pid, out):
    """Attach gdb to QEMU: every call of qemu_allocator_release_soon()
    prints its caller.  Returns the gdb process (it ends when QEMU does)."""
    script = os.path.join(os.path.dirname(out), "callers.gdb")
    with open(script, "w") as f:
        f.write("set pagination off\nset confirm off\n"
                "handle all nostop noprint pass\n"
                "break qemu_allocator_release_soon\n"
                "commands\nsilent\nprintf \"CALLER \"\nbt 2\ncontinue\nend\n"
                "continue\n")
    g = subprocess.Popen(["gdb", "-q", "-batch", "-p", str(pid),
                          "-x", script],
                         stdout=open(out, "w"), stderr=subprocess.STDOUT)
    # gdb stops QEMU while it attaches; it is ready when the breakpoint
    # is set and QEMU runs again
    wait_for("gdb to attach", lambda: "Breakpoint 1 at" in open(out).read()
             or g.poll() is not None, 120)
    time.sleep(1)
    return g


def callers(out):
    """The functions that called qemu_allocator_release_soon()."""
    found = []
    lines = open(out).read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("CALLER") and i + 1 < len(lines):
            m = re.search(r"#1 .* in (\w+)|#1 +(\w+)", lines[i + 1])
            if m:
                found.append(m.group(1) or m.group(2))
    return found


def vma_backup(s, t, name, target, disk_sha, before_rss, n_release):
    """One full VMA backup with pve's `backup`; checks the archive, the
    one release that follows and RSS.  Returns the release figures."""
    t0 = time.monotonic()
    uuid = s.qmp.cmd("backup", **{"backup-file": target, "format": "vma",
                                  "devlist": DEV,
                                  "config-file": os.path.join(
                                      s.work, "qemu-server.conf")})["UUID"]
    st = s.backup_done()
    secs = time.monotonic() - t0
    t.ok(st["status"] == "done" and st.get("uuid") == uuid and
         st.get("total") == SIZE and "errmsg" not in st,
         "%s: VMA backup of the 256 MiB disk done" % name,
         "%.1f s; query-backup: %s" % (secs, st))
    s.wait_release(n_release)
    time.sleep(1.5)         # a second release would come 1 s after the first
    s.pump(0.5)
    info = s.qmp.cmd("x-query-allocator-stats")
    after = rss(s.proc.pid)
    evs = s.releases()
    new = evs[n_release - 1:]
    last = info.get("last-release", {})
    t.ok(len(new) == 1 and new[0]["trigger"] == "automatic" and
         info["automatic-releases"] == n_release and
         info["manual-releases"] == 0 and
         {k: v for k, v in last.items()} == new[0],
         "%s: exactly one automatic release after the backup, the event "
         "equal to x-query-allocator-stats' last-release" % name,
         "events %s; automatic-releases %d; event %s"
         % ([e["trigger"] for e in new], info["automatic-releases"],
            new[0] if new else None))
    t.ok(after <= before_rss + RSS_KEPT_MAX,
         "%s: RSS after the release within %d MiB of before the backup"
         % (name, RSS_KEPT_MAX >> 20),
         "RSS before %.1f MiB, after %.1f MiB (%+.1f MiB); release returned "
         "%s in %.1f ms (RSS %s -> %s)"
         % (before_rss / 2**20, after / 2**20, (after - before_rss) / 2**20,
            "%.1f MiB" % (new[0]["returned"] / 2**20)
            if new and "returned" in new[0] else "(not counted)",
            new[0]["duration-us"] / 1e3 if new else 0,
            "%.1f MiB" % (new[0].get("process-rss-before", 0) / 2**20)
            if new else "-",
            "%.1f MiB" % (new[0].get("process-rss-after", 0) / 2**20)
            if new else "-"))
    # pve's own vma tool, from the same tree
    vma = os.path.join(s.build, "vma")
    out = os.path.join(s.work, "extract-%d" % n_release)
    r = subprocess.run([vma, "verify", target], capture_output=True,
                       text=True)
    r2 = subprocess.run([vma, "extract", target, out], capture_output=True,
                        text=True)
    raw = os.path.join(out, "disk-%s.raw" % DEV)
    got = sha256_file(raw) if os.path.exists(raw) else None
    conf = os.path.join(out, "qemu-server.conf")
    conf_ok = os.path.exists(conf) and open(conf).read() == CONFIG
    t.ok(r.returncode == 0 and r2.returncode == 0 and got == disk_sha and
         conf_ok,
         "%s: `vma verify` and `vma extract` of the archive give bytes "
         "identical to the disk (and the config)" % name,
         "archive %.1f MiB; vma verify exit %d, extract exit %d %s; "
         "sha256 disk %s, extracted %s; config %s"
         % (os.path.getsize(target) / 2**20, r.returncode, r2.returncode,
            (r.stderr + r2.stderr).strip()[-300:], disk_sha[:16],
            (got or "missing")[:16], "identical" if conf_ok else "differs"))
    shutil.rmtree(out, ignore_errors=True)
    os.unlink(target)
    return {"secs": secs, "before": before_rss, "after": after,
            "allocated": info.get("stats", {}).get("allocated"),
            "release": new[0] if new else None}


def run(build, allocator, keep_going):
    t = TAP(keep_going)
    name = "%s" % allocator
    work = tempfile.mkdtemp(prefix="pve-backup-%s-" % allocator)
    disk = os.path.join(work, "vm-100-disk-0.raw")
    disk_sha = write_disk(disk)
    with open(os.path.join(work, "qemu-server.conf"), "w") as f:
        f.write(CONFIG)
    s = Session(build, work)
    figures = {}
    try:
        sup = s.qmp.cmd("query-proxmox-support")
        info = s.qmp.cmd("x-query-allocator-stats")
        t.ok(info["backend"] == allocator and
             info["automatic-releases"] == 0 and
             STANDIN_ERROR in sup.get("pbs-library-version", ""),
             "%s: pve QEMU up, allocator %s, PBS library is the stand-in"
             % (name, allocator),
             "backend %s; pbs-library-version %r"
             % (info["backend"], sup.get("pbs-library-version")))
        s.qmp.cmd("blockdev-add", driver="raw", **{"node-name": DEV},
                  file={"driver": "file", "filename": disk})
        time.sleep(0.5)
        nodes0 = s.nodes()
        fds0 = fds(s.proc.pid)
        before = rss(s.proc.pid)

        # 1. a full VMA backup; gdb names who asked for the release
        gdb_out = os.path.join(work, "gdb.out")
        g = gdb_callers(s.proc.pid, gdb_out) if shutil.which("gdb") else None
        fig = vma_backup(s, t, name, os.path.join(work, "b1.vma"),
                         disk_sha, before, 1)
        figures["backup"] = fig
        if g:
            # detach: stop gdb (QEMU goes on)
            g.send_signal(2)
            try:
                g.wait(timeout=30)
            except subprocess.TimeoutExpired:
                g.kill()
                g.wait()
            who = callers(gdb_out)
            t.ok("pvebackup_co_cleanup" in who and s.proc.poll() is None,
                 "%s: the release was asked for by pvebackup_co_cleanup() "
                 "(and the jobs' .clean), coalesced into the one release"
                 % name, "callers of qemu_allocator_release_soon(): %s" % who)
        else:
            t.skip("%s: callers of qemu_allocator_release_soon()" % name,
                   "gdb is not installed")

        # 2. query-backup and HMP, as qm monitor sees them
        st = s.qmp.cmd("query-backup")
        hb = s.qmp.hmp("info backup")
        t.ok(st["status"] == "done" and st["total"] == SIZE and
             st["transferred"] + st.get("zero-bytes", 0) >= SIZE and
             st.get("zero-bytes", 0) >= HOLE[1] and
             st["backup-file"].endswith("b1.vma") and
             "Backup status: done" in hb and "b1.vma" in hb,
             "%s: query-backup and HMP 'info backup' describe the finished "
             "backup" % name, "query-backup: %s\ninfo backup:\n%s" % (st, hb))
        ha = s.qmp.hmp("info allocator")
        # Statistics where they are cheap; glibc's walk the heap
        stats = "x-query-allocator-stats" if allocator == "glibc" \
            else "allocated:"
        t.ok(("allocator: %s" % allocator) in ha and
             "releases: 0 manual, 1 automatic" in ha and
             "last release: automatic" in ha and stats in ha,
             "%s: human-monitor-command 'info allocator' (qm monitor) shows "
             "the allocator and the one automatic release" % name, ha)

        # 3. backup-cancel in the middle, then a backup that works
        target = os.path.join(work, "b2.vma")
        s.qmp.cmd("backup", **{"backup-file": target, "format": "vma",
                               "devlist": DEV, "speed": 32 << 20})
        wait_for("the backup to be under way",
                 lambda: s.qmp.cmd("query-backup").get("transferred", 0)
                 > (16 << 20), 60)
        mid = s.qmp.cmd("query-backup")
        s.qmp.cmd("backup-cancel")
        st = s.backup_done(60)
        s.wait_release(2)
        time.sleep(1.5)
        s.pump(0.5)
        info = s.qmp.cmd("x-query-allocator-stats")
        jobs = s.qmp.cmd("query-block-jobs")
        t.ok(st["status"] == "error" and "cancel" in st.get("errmsg", "") and
             len(s.releases()) == 2 and info["automatic-releases"] == 2 and
             s.releases()[1]["trigger"] == "automatic",
             "%s: backup-cancel at %d of %d MiB: backup ended canceled, one "
             "automatic release" % (name, mid["transferred"] >> 20,
                                    SIZE >> 20),
             "query-backup: %s; releases %s" % (st, info["automatic-releases"]))
        alloc0 = figures["backup"]["allocated"]
        alloc = info.get("stats", {}).get("allocated")
        t.ok(jobs == [] and s.nodes() == nodes0 and
             fds(s.proc.pid) == fds0 and
             alloc is not None and alloc0 is not None and
             alloc <= alloc0 + ALLOC_SLACK,
             "%s: no backup state left after the cancel: no block job, the "
             "same block nodes and file descriptors, allocated within %d MiB "
             "of after the first backup" % (name, ALLOC_SLACK >> 20),
             "jobs %s; nodes %s (before %s); fds %d (before %d); allocated "
             "%s (after the first backup %s)"
             % (jobs, s.nodes(), nodes0, fds(s.proc.pid), fds0, mibs(alloc),
                mibs(alloc0)))
        if os.path.exists(target):
            os.unlink(target)       # vzdump removes a canceled archive
        fig = vma_backup(s, t, name + " (after the cancel)",
                         os.path.join(work, "b3.vma"), disk_sha, before, 3)
        figures["after-cancel"] = fig

        # 4. a backup to a PBS repository: the stand-in's error
        err = None
        try:
            s.qmp.cmd("backup", **{
                "backup-file": "root@pam@pbs.invalid:8007:store1",
                "format": "pbs", "password": "secret", "backup-id": "100",
                "backup-time": int(time.time()), "devlist": DEV,
                "config-file": os.path.join(work, "qemu-server.conf")})
        except RuntimeError as e:
            err = str(e)
        s.wait_release(4)
        time.sleep(1.5)
        s.pump(0.5)
        info = s.qmp.cmd("x-query-allocator-stats")
        st = s.qmp.cmd("query-backup")
        jobs = s.qmp.cmd("query-block-jobs")
        t.ok(err is not None and STANDIN_ERROR in err,
             "%s: a backup to a PBS repository fails with the stand-in's "
             "error" % name, "error: %r" % err)
        t.ok(jobs == [] and s.nodes() == nodes0 and fds(s.proc.pid) == fds0
             and len(s.releases()) == 4 and
             info["automatic-releases"] == 4 and
             s.releases()[3]["trigger"] == "automatic",
             "%s: the failed PBS backup cleaned up (no job, same nodes and "
             "file descriptors) and released once" % name,
             "jobs %s; nodes %s; fds %d (before %d); automatic-releases %d; "
             "query-backup %s" % (jobs, s.nodes(), fds(s.proc.pid), fds0,
                                  info["automatic-releases"], st))
        fig = vma_backup(s, t, name + " (after the PBS failure)",
                         os.path.join(work, "b4.vma"), disk_sha, before, 5)
        figures["after-pbs"] = fig
        a = [figures[k]["allocated"] for k in
             ("backup", "after-cancel", "after-pbs")]
        t.ok(None not in a and max(a) <= a[0] + ALLOC_SLACK,
             "%s: five backups (one canceled, one a PBS failure) leave no "
             "memory allocated: allocated after each within %d MiB of after "
             "the first" % (name, ALLOC_SLACK >> 20),
             "allocated after backups 1, 3 and 5: %s"
             % ", ".join(mibs(x) for x in a))
    finally:
        s.quit()
        shutil.rmtree(work, ignore_errors=True)
    print("1..%d" % t.n)
    for k, fig in figures.items():
        r = fig["release"] or {}
        print("# figures %s %s: backup %.1f s; RSS before %.1f MiB, after "
              "release %.1f MiB (%+.1f), allocated %s; release returned %s "
              "in %.1f ms"
              % (allocator, k, fig["secs"], fig["before"] / 2**20,
                 fig["after"] / 2**20, (fig["after"] - fig["before"]) / 2**20,
                 "%.1f MiB" % (fig["allocated"] / 2**20)
                 if fig["allocated"] is not None else "(not counted)",
                 "%.1f MiB" % (r["returned"] / 2**20) if "returned" in r
                 else "(not counted)", r.get("duration-us", 0) / 1e3))
    return 1 if t.failed else 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a not in ("-k", "--keep-going")]
    if len(args) != 2:
        sys.exit("usage: pve-backup-test.py BUILD_DIR ALLOCATOR [-k]")
    sys.exit(run(args[0], args[1], len(args) != len(sys.argv) - 1))

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A backup from Ceph RBD is released automatically, once, for every build.

Starts a one-OSD Ceph cluster with scripts/ceph-cluster.sh, imports a
256 MiB image with a pattern in which every 4 KiB block differs, then for
each QEMU build: an rbd node (librbd, the cluster's conf) is the source of
a full blockdev-backup to a raw file, with 2048 workers of 64 KiB so that
QEMU's and librbd's buffers fill the allocator.  Checks: the job ends
without error; the target is byte-identical to the pattern; exactly one
automatic release happened (ALLOCATOR_MEMORY_RELEASED with trigger
automatic, and automatic-releases == 1 in x-query-allocator-stats); RSS
after it is within 25 MiB of RSS before the backup (with the rbd image
already open); the operator tool's `stats` over that QEMU (on a second
QMP socket) reports the build's allocator, the one automatic release and
its RSS.  The cluster is stopped by pid at the end.

The builds: $QTEST_QEMU_BINARY if set (what scripts/test.sh gives each
variant), else build/build-{system,tcmalloc,jemalloc}/qemu-system-x86_64
that exist.  Speaks TAP; skips with the reason where Ceph cannot start;
a build without the rbd driver fails (scripts/build.sh configures it).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from qmplib import QMP, rss, start_qemu  # noqa: E402
from taplib import results, tap  # noqa: E402
import cephlib  # noqa: E402

SIZE = 256 << 20
IMAGE = "backup-src"
RSS_KEPT_MAX = 25 << 20
VARIANTS = ("system", "tcmalloc", "jemalloc")
CASES = 5           # per build
TOOL = os.environ.get("QR_TOOL") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "build", "tool",
    "tools", "qemu-reclaim", "qemu-reclaim")
def builds():
    """[(name, qemu-system binary)]"""
    env = os.environ.get("QTEST_QEMU_BINARY")
    if env:
        return [(os.path.basename(os.path.dirname(os.path.abspath(env)))
                 .replace("build-", ""), env)]
    found = []
    for v in VARIANTS:
        b = os.path.join(cephlib.TOP, "build", "build-" + v,
                         "qemu-system-x86_64")
        if os.access(b, os.X_OK):
            found.append((v, b))
    return found


def wait_for(qmp, what, cond, deadline_s):
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("%s did not happen in %d s" % (what, deadline_s))
        qmp.cmd("query-status")    # lets events arrive
        time.sleep(0.02)


def check_tool_stats(name, sock, pid, info):
    """qemu-reclaim stats over the QEMU with librbd in it: it answers with
    the build's allocator and the release the backup caused."""
    if not os.access(TOOL, os.X_OK):
        tap(False, "%s: qemu-reclaim stats over the rbd QEMU" % name,
            "the tool is not built at %s (scripts/build-tool.sh)" % TOOL)
        return
    r = subprocess.run([TOOL, "stats", "--json", sock], capture_output=True,
                       text=True, timeout=60)
    vm = (json.loads(r.stdout)["vms"] or [{}])[0] if r.returncode == 0 \
        else {}
    now = rss(pid)
    ok = (vm.get("status") == "ok" and
          vm.get("backend") == info["backend"] and
          vm.get("releases", {}).get("automatic") == 1 and
          vm.get("pid") == pid and
          abs(vm.get("rss", 0) - now) <= max(now // 10, 4 << 20))
    tap(ok, "%s: qemu-reclaim stats over the rbd QEMU: %s, one automatic "
        "release, its RSS" % (name, info["backend"]),
        "exit %d; %s; /proc RSS %.1f MiB%s" % (
            r.returncode, json.dumps(vm), now / 2**20,
            "; stderr: " + r.stderr if r.stderr else ""))


def one_build(name, qemu, work, conf, pattern):
    target = os.path.join(work, "target-%s.raw" % name)
    with open(target, "wb") as f:
        f.truncate(SIZE)
    sock = os.path.join(work, "qmp-%s.sock" % name)
    # A second QMP socket for the operator tool: QEMU serves one client
    # per socket, and the test holds the first one.
    tool_sock = os.path.join(work, "%s.qmp" % name)
    proc = start_qemu(qemu, sock, deadline_s=60,
                      log=os.path.join(work, "qemu-%s.log" % name),
                      extra=["-qmp", "unix:%s,server=on,wait=off" % tool_sock])
    try:
        qmp = QMP(sock, timeout=120)
        qmp.cmd("blockdev-add", driver="rbd", pool="rbd", image=IMAGE,
                conf=conf, **{"node-name": "src"})
        qmp.cmd("blockdev-add", driver="raw", **{"node-name": "dst"},
                file={"driver": "file", "filename": target})
        time.sleep(0.5)     # librbd's threads settle after the open
        before = rss(proc.pid)
        peak = [before]
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                peak[0] = max(peak[0], rss(proc.pid))
                time.sleep(0.005)

        th = threading.Thread(target=sampler)
        th.start()
        t0 = time.monotonic()
        try:
            qmp.cmd("blockdev-backup", device="src", target="dst",
                    sync="full", **{"job-id": "job0",
                                    "x-perf": {"use-copy-range": False,
                                               "max-workers": 2048,
                                               "max-chunk": 65536}})
            wait_for(qmp, "the backup's BLOCK_JOB_COMPLETED",
                     lambda: qmp.count_events("BLOCK_JOB_COMPLETED"), 300)
            secs = time.monotonic() - t0
            done = [e for e in qmp.events
                    if e["event"] == "BLOCK_JOB_COMPLETED"][0]["data"]
            tap("error" not in done and done["offset"] == SIZE,
                "%s: backup of rbd/%s to a file completed" % (name, IMAGE),
                "%d MiB in %.1f s; %s" % (done["offset"] >> 20, secs,
                                          done.get("error", "no error")))
            # The event is sent once the release has ended
            wait_for(qmp, "an automatic ALLOCATOR_MEMORY_RELEASED",
                     lambda: qmp.count_events("ALLOCATOR_MEMORY_RELEASED"),
                     30)
        finally:
            stop.set()
            th.join()
        info = qmp.cmd("x-query-allocator-stats")
        after = rss(proc.pid)
        check_tool_stats(name, tool_sock, proc.pid, info)
        qmp.cmd("blockdev-del", **{"node-name": "dst"})
        qmp.cmd("blockdev-del", **{"node-name": "src"})
        qmp.cmd("quit")
        proc.wait(timeout=30)

        equal, where = cephlib.files_equal(pattern, target)
        tap(equal, "%s: target is byte-identical to the image's pattern"
            % name, None if equal else "first difference at byte %d" % where)
        evs = [e["data"] for e in qmp.events
               if e["event"] == "ALLOCATOR_MEMORY_RELEASED"]
        auto = [e for e in evs if e["trigger"] == "automatic"]
        tap(len(auto) == 1 and len(evs) == 1 and
            info["automatic-releases"] == 1 and info["manual-releases"] == 0,
            "%s: exactly one automatic release after the backup" % name,
            "events: %s; releases: automatic %d, manual %d; backend %s, "
            "returned %s MiB in %.1f ms"
            % ([e["trigger"] for e in evs], info["automatic-releases"],
               info["manual-releases"], info["backend"],
               "%.1f" % (auto[0]["returned"] / 2**20)
               if auto and "returned" in auto[0] else "(not counted)",
               (auto[0]["duration-us"] if auto else 0) / 1e3))
        tap(after <= before + RSS_KEPT_MAX,
            "%s: RSS after the release within %d MiB of before the backup"
            % (name, RSS_KEPT_MAX >> 20),
            "RSS before %.1f MiB, peak %.1f MiB, after %.1f MiB "
            "(after - before %+.1f MiB)"
            % (before / 2**20, peak[0] / 2**20, after / 2**20,
               (after - before) / 2**20))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.unlink(target)


def main():
    todo = builds()
    if not todo:
        print("1..0 # SKIP no QEMU build: set QTEST_QEMU_BINARY or run "
              "scripts/build.sh")
        return 0
    if os.geteuid() != 0:
        print("1..0 # SKIP the Ceph cluster needs root")
        return 0
    for b in ("ceph-mon", "ceph-osd", "ceph-mgr", "rbd"):
        if not any(os.access(os.path.join(d, b), os.X_OK)
                   for d in os.environ.get("PATH", "").split(":") + ["/usr/bin"]):
            print("1..0 # SKIP %s is not installed (scripts/deps.sh)" % b)
            return 0
    work = tempfile.mkdtemp(prefix="rbd-backup-")
    cluster = cephlib.Cluster(os.path.join(work, "ceph"))
    try:
        try:
            secs = cluster.start()
        except RuntimeError as e:
            print("1..0 # SKIP Ceph cannot start here: %s" % e)
            return 0
        print("1..%d" % (1 + CASES * len(todo)))
        pattern = os.path.join(work, "pattern.raw")
        cephlib.write_pattern(pattern, SIZE)
        cluster.run("rbd", "import", "--no-progress", pattern,
                    "rbd/" + IMAGE)
        size = json.loads(cluster.run(
            "rbd", "info", "rbd/" + IMAGE, "--format", "json",
            stdout=subprocess.PIPE).stdout)["size"]
        tap(size == SIZE, "Ceph cluster up, rbd/%s imported" % IMAGE,
            "cluster ready in %.1f s; image %d MiB" % (secs, size >> 20))
        for name, qemu in todo:
            # scripts/build.sh configures these builds --enable-rbd: one
            # without the driver is a broken build, not a reason to skip
            if not cephlib.has_rbd(os.path.join(os.path.dirname(qemu),
                                                "qemu-img")):
                for what in ("backup", "byte-identical", "one automatic "
                             "release", "RSS back", "qemu-reclaim stats"):
                    tap(False, "%s: %s" % (name, what), "this build has no "
                        "rbd driver, but scripts/build.sh configures "
                        "--enable-rbd")
                continue
            first = len(results)
            try:
                one_build(name, qemu, work, cluster.conf, pattern)
            except Exception as e:  # report, never hang
                tap(False, "%s: test aborted: %s" % (name, e))
            while len(results) < first + CASES:   # keep the plan
                tap(False, "%s: not reached" % name)
    finally:
        cluster.stop(purge=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

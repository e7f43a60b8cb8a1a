#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""RSS around a backup from Ceph RBD, before and after the automatic release.

Like bench/backup-bench.py, with librbd in the data path: starts a
one-OSD cluster with scripts/ceph-cluster.sh, imports three 256 MiB
images (a pattern in which every 4 KiB block differs), then for each
QEMU build, one fresh QEMU per round: three concurrent backups of the rbd
images (2048 workers of 64 KiB each) to slow null-co targets, next to
512 MiB of preallocated memory that stands for the guest's RAM.  RSS is
sampled from /proc every 5 ms.

v2 has no switch for the automatic release, so v1's "off" arm
(allocator-policy release-after-backup=off) is gone.  In its place,
"RSS when the last automatic release started" is that release's own
process-rss-before: what the process held ~1 s after the last job with
everything but that release.  Not quite v1's "off": jobs that end more
than 1 s apart get one release each, so earlier jobs' buffers may already
have been returned by theirs; and the RCU thread's idle-time releases,
which cannot be switched off either, had their chance (counted where HMP
"info allocator" prints their number, as the first v2 builds did; QMP
has no such counter, nor do the current v2 sources: then "-").  An
unpatched QEMU with the rbd driver can be given as a build: its release
columns are "-".

Prints RSS before (rbd images open), at the peak, when the last
automatic release started, and 2 s after the last job ended; after -
before (target: at most 25 MiB); the automatic releases, their RSS drop
and what they returned where the allocator counts it (not glibc); the
idle-time releases; the machine's busy CPUs during the round.
Log: bench/out/rbd-backup-bench.log.

Usage: rbd-backup-bench.py [--rounds N] [--idle CPUS] [NAME=QEMU_BINARY ...]
       (default: build/build-{system,tcmalloc,jemalloc}/qemu-system-x86_64)
"""
import argparse
import json
import os
import shutil
import subprocess
import statistics
import sys
import tempfile
import threading
import time

import cephbench

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import rss  # noqa: E402

cephlib = cephbench.cephlib
SIZE = 256 << 20
IMAGES = ["bench-src%d" % i for i in range(3)]
TARGET_MIB = 25


def is_auto(e):
    return (e["event"] == "ALLOCATOR_MEMORY_RELEASED"
            and e["data"]["trigger"] == "automatic")


def one_round(qemu, work, conf):
    sock = os.path.join(work, "qmp.sock")
    counter = benchlib.IdleCounter(os.path.join(work, "idle-counter"))
    with counter.preloaded():
        proc = benchlib.start_qemu(qemu, sock, [
            "-accel", "tcg",    # an unpatched Debian QEMU has no qtest
            # stands for the guest's RAM, which dominates a VM's RSS
            "-object", "memory-backend-ram,id=ram0,size=512M,prealloc=on"],
            deadline_s=60, log=os.path.join(work, "qemu.log"))
    try:
        qmp = benchlib.SyncQMP(sock, timeout=120)
        patched = benchlib.allocator_info(qmp) is not None
        idle0 = benchlib.idle_releases(counter)
        for j, img in enumerate(IMAGES):
            qmp.cmd("blockdev-add", driver="rbd", pool="rbd", image=img,
                    conf=conf, **{"node-name": "src%d" % j})
            qmp.cmd("blockdev-add", driver="null-co", size=SIZE,
                    **{"node-name": "dst%d" % j, "latency-ns": 50000000})
        time.sleep(0.5)     # librbd's threads settle after the opens
        m0, _ = cephlib.machine_cpu_s()
        w0 = time.monotonic()
        before = rss(proc.pid)
        samples = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                samples.append((time.monotonic(), rss(proc.pid)))
                time.sleep(0.005)

        th = threading.Thread(target=sampler)
        th.start()
        try:
            for j in range(len(IMAGES)):
                qmp.cmd("blockdev-backup", device="src%d" % j,
                        target="dst%d" % j, sync="full",
                        **{"job-id": "job%d" % j,
                           "x-perf": {"use-copy-range": False,
                                      "max-workers": 2048,
                                      "max-chunk": 65536}})
            while qmp.count_events("BLOCK_JOB_COMPLETED") < len(IMAGES):
                if time.monotonic() > w0 + 300:
                    raise RuntimeError("backups did not end in 300 s")
                qmp.cmd("query-status")
                time.sleep(0.005)
            t_end = time.monotonic()
            time.sleep(2.0)
        finally:
            stop.set()
            th.join()
        after = rss(proc.pid)
        m1, _ = cephlib.machine_cpu_s()
        w1 = time.monotonic()
        info = None
        if patched:
            # the automatic release comes ~1 s after a job: wait a little
            # more for it if the machine is slow
            end = time.monotonic() + 5
            while (not any(is_auto(e) for e in qmp.events)
                   and time.monotonic() < end):
                qmp.cmd("query-status")
                time.sleep(0.05)
            info = benchlib.allocator_info(qmp)
        # an unpatched QEMU's RCU thread trims too: counted the same way
        idle1 = benchlib.idle_releases(counter)
        errors = [e["data"]["error"] for e in qmp.events
                  if e["event"] == "BLOCK_JOB_COMPLETED"
                  and "error" in e["data"]]
        if errors:
            raise RuntimeError("backup failed: %s" % errors)
        autos = [e["data"] for e in qmp.events if is_auto(e)]
        peak = max([before] + [r for _, r in samples])
        back = [t for t, r in samples if t >= t_end and r <= before * 1.05]
        qmp.cmd("quit")
        # the one after the last job; with jobs that ended more than 1 s
        # apart, earlier ones ran for the earlier jobs
        last = autos[-1] if autos else {}
        return {
            "backend": info["backend"] if info else "unpatched",
            "before_mib": before / 2**20,
            "peak_mib": peak / 2**20,
            "at_auto_start_mib": last["process-rss-before"] / 2**20
            if "process-rss-before" in last else None,
            "after_mib": after / 2**20,
            "above_before_mib": (after - before) / 2**20,
            "back_within_5pct_ms": (back[0] - t_end) * 1e3 if back
            else float("inf"),
            "backup_s": t_end - w0,
            "automatic_releases": info["automatic-releases"]
            if info else None,
            "automatic_events": len(autos) if patched else None,
            "automatic_rss_drop_mib": sum(
                a["process-rss-before"] - a["process-rss-after"]
                for a in autos) / 2**20
            if autos and all("process-rss-after" in a for a in autos)
            else None,
            # glibc does not count what it returns
            "automatic_returned_mib": sum(a["returned"] for a in autos)
            / 2**20 if autos and all("returned" in a for a in autos)
            else None,
            "idle_releases": idle1 - idle0
            if idle0 is not None and idle1 is not None else None,
            "machine_busy_cpus": (m1 - m0) / (w1 - w0),
        }
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()


def fmt(v, f):
    return benchlib.fmt(v, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=float, default=0.15,
                    help="busy CPUs below which the machine counts as idle "
                    "before a round (waited for, 600 s at most)")
    ap.add_argument("builds", nargs="*", metavar="NAME=QEMU_BINARY")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds] or [
        (v, os.path.join(cephlib.TOP, "build", "build-" + v,
                         "qemu-system-x86_64"))
        for v in ("system", "tcmalloc", "jemalloc")]
    os.makedirs(cephbench.OUT, exist_ok=True)
    log = cephbench.log_to(os.path.join(cephbench.OUT,
                                        "rbd-backup-bench.log"))
    work = tempfile.mkdtemp(prefix="rbd-backup-bench-")
    cluster = cephlib.Cluster(os.path.join(work, "ceph"))
    rows = {}
    try:
        secs = cluster.start()
        log("cluster ready in %.1f s (%s)" % (secs, work))
        pattern = os.path.join(work, "pattern.raw")
        cephlib.write_pattern(pattern, SIZE)
        for img in IMAGES:
            cluster.run("rbd", "import", "--no-progress", pattern,
                        "rbd/" + img)
        os.unlink(pattern)
        log("builds: " + ", ".join("%s=%s" % b for b in builds))
        for r in range(args.rounds):
            for name, qemu in builds:
                busy = cephlib.wait_idle(args.idle, log=log)
                res = one_round(qemu, work, cluster.conf)
                res["busy_before_cpus"] = busy
                rows.setdefault(name, []).append(res)
                log("round %d %s: %s" % (
                    r + 1, name, json.dumps(
                        {k: round(v, 2) if isinstance(v, float) else v
                         for k, v in res.items()})))
    finally:
        cluster.stop(purge=True)
        shutil.rmtree(work, ignore_errors=True)
    cols = [("before_mib", "RSS before MiB"), ("peak_mib", "peak MiB"),
            ("at_auto_start_mib", "RSS when the last automatic release "
             "started MiB"),
            ("after_mib", "2 s after MiB"),
            ("above_before_mib", "after - before MiB"),
            ("back_within_5pct_ms", "back within 5% after ms"),
            ("automatic_releases", "automatic releases"),
            ("automatic_rss_drop_mib", "their RSS drop MiB"),
            ("automatic_returned_mib", "returned (counted) MiB"),
            ("idle_releases", "idle releases"),
            ("backup_s", "backups s"),
            ("machine_busy_cpus", "machine busy CPUs")]
    log("")
    log("Medians (min - max) over %d rounds; target: after - before <= "
        "%d MiB; \"-\": the build does not tell" % (args.rounds, TARGET_MIB))
    log("")
    log("| build | backend | " + " | ".join(c[1] for c in cols)
        + " | target met |")
    log("|---|---|" + "---|" * len(cols) + "---|")
    for name, res in rows.items():
        cells = []
        for k, _ in cols:
            xs = [x[k] for x in res if x[k] is not None]
            f = "%.2f" if k == "machine_busy_cpus" else "%.1f"
            if not xs:
                cells.append("-")
                continue
            cells.append(fmt(statistics.median(xs), f) +
                         (" (%s - %s)" % (fmt(min(xs), f), fmt(max(xs), f))
                          if k in ("above_before_mib", "after_mib") else ""))
        met = sum(1 for x in res if x["above_before_mib"] <= TARGET_MIB)
        log("| %s | %s | %s | %d of %d |" % (name, res[0]["backend"],
                                             " | ".join(cells), met,
                                             len(res)))


if __name__ == "__main__":
    main()

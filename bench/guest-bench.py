#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A backup and a release with a booted guest, per allocator build.

Each round boots the test guest (tests/guest; 1 GiB, 2 vCPUs, so that its
clock reads go through QEMU and its stall loop sees QEMU's main loop), in
a fresh QEMU:
  1. the guest writes its 256 MiB disk and touches 512 MiB of its RAM;
     RSS then is "before";
  2. a backup of the disk (to a 64 MiB/s target, 64 workers of 2 MiB)
     while the guest overwrites half of it; QEMU's automatic release
     follows.  "off": RSS when that release started (its own
     process-rss-before, about 1 s after the job: what stays without it;
     glibc's own trims and the RCU thread's idle release had their
     chance, and there is no switch for them); "on": RSS after it.
     "idle calls": how often the RCU thread's idle hook ran between the
     job's end and that release's start (malloc_trim(4 MiB) in glibc
     builds, arena decays in jemalloc builds, none in tcmalloc builds),
     counted by benchlib's LD_PRELOAD shim (IdleCounter, read every
     5 ms): where it is not 0, "off" was helped by idle trims;
  3. two more backups, each followed by a 2 s window in the guest (order
     alternating by round): one right after its backup with a manual
     release 0.5 s in, one after the backup's automatic release with no
     release: on one vCPU the stall loop (longest gap between two clock
     reads), on the other 4 KiB random reads of its disk (p99 latency,
     or the max where a window had fewer than 100 reads: a p99 of fewer
     is the max anyway); meanwhile an HMP monitor on its own socket is
     asked "info version" back to back (the main loop's longest round
     trip in the window), and the idle calls in each window are counted.

Prints per build the medians over the rounds.  Usage:
  guest-bench.py [--rounds N] [NAME=QEMU_BINARY ...]
  (default: build/build-{system,tcmalloc,jemalloc}/qemu-system-x86_64)
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "guest"))
from guestlib import Guest, kvm_usable  # noqa: E402
from benchlib import (HMP, GLIBC_NO_TRIM, IdleCounter,  # noqa: E402
                      IdleSampler, rss)

MiB = 1 << 20
DISK_MIB = 256
# Below this many reads in a window, its p99 is its max: report the max
MIN_READS_P99 = 100
X_PERF = {"use-copy-range": False, "max-workers": 64, "max-chunk": 2 * MiB}


class Pinger(threading.Thread):
    """Round trips of HMP "info version", back to back, with their start."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.hmp = HMP(path)
        self.samples = []
        self.stop = False

    def run(self):
        while not self.stop:
            t = time.monotonic()
            self.hmp.cmd("info version")
            self.samples.append((t, time.monotonic() - t))

    def worst(self, t0, t1):
        return max((rtt for t, rtt in self.samples if t0 <= t < t1),
                   default=None)


def event_time(msg):
    """When QEMU sent the event (CLOCK_REALTIME, as time.time())."""
    ts = msg["timestamp"]
    return ts["seconds"] + ts["microseconds"] / 1e6


def backup(qmp, job):
    qmp.cmd("blockdev-backup", device="disk0", target="slow1", sync="full",
            **{"job-id": job, "x-perf": X_PERF})


def window(g, qmp, pinger, idle, release):
    """Stall loop and disk reads for 2 s; a release 0.5 s in if asked."""
    t0, t0_wall = time.monotonic(), time.time()
    stall = g.start_job("stall 2")
    reads = g.start_job("io-latency vda 2")
    rel = None
    if release:
        time.sleep(0.5)
        rel = qmp.cmd("x-release-free-memory")
    s, r = g.wait(stall), g.wait(reads)
    n = r["count"]
    return {"stall_ms": s["max_gap_us"] / 1000,
            "reads": n,
            # the guest sends no p99 or max without a read
            "p99_ms": r["p99_us"] / 1000 if n >= MIN_READS_P99 else None,
            "read_max_ms": r["max_us"] / 1000 if n else None,
            "rtt_ms": (pinger.worst(t0, time.monotonic()) or 0) * 1000,
            "idle_calls": idle.between(t0_wall, time.time()),
            "release_ms": rel["duration-us"] / 1000 if rel else None,
            "returned_mib": rel["returned"] / MiB
            if rel and "returned" in rel else None}


def one_round(qemu, guest_dir, work, rnd, accel):
    disks = [os.path.join(work, n) for n in ("vda.raw", "vdb.raw")]
    for p in disks:
        with open(p, "wb") as f:
            f.truncate(DISK_MIB * MiB)
    hmp_path = os.path.join(work, "hmp.sock")
    counter = IdleCounter(os.path.join(work, "idle-counter"))
    g = Guest(qemu, guest_dir, disks=disks, smp=2, accel=accel,
              extra=["-monitor", "unix:%s,server=on,wait=off" % hmp_path])
    idle = IdleSampler(counter)
    try:
        # only QEMU's start sees the shim (accel is resolved: no KVM probe)
        with counter.preloaded():
            g.start()
        idle.start()
        qmp = g.qmp
        backend = qmp.cmd("x-query-allocator-stats")["backend"]
        g.cmd("write vda A")
        g.cmd("touch 512")
        before = rss(g.proc.pid)
        qmp.cmd("object-add", **{"qom-type": "throttle-group", "id": "slow",
                                 "limits": {"bps-write": 64 * MiB}})
        qmp.cmd("blockdev-add", driver="throttle", file="disk1",
                **{"node-name": "slow1", "throttle-group": "slow"})
        backup(qmp, "bk1")
        g.cmd("write vda B %d" % (DISK_MIB // 2))
        done = qmp.wait_event("BLOCK_JOB_COMPLETED", 1)
        auto = qmp.wait_event("ALLOCATOR_MEMORY_RELEASED", 1)
        on = rss(g.proc.pid)
        auto_start = event_time(auto) - auto["data"]["duration-us"] / 1e6
        auto = auto["data"]
        out = {"backend": backend, "accel": g.accel_used,
               "before": before / MiB,
               "off": (auto["process-rss-before"] - before) / MiB,
               "on": (on - before) / MiB,
               "idle_before_auto": idle.between(event_time(done),
                                                auto_start)}

        # Each window follows a backup of its own: the one with a release
        # starts right after it (the manual release 0.5 s in comes before
        # the automatic one), the one without after the automatic release
        pinger = Pinger(hmp_path)
        pinger.start()
        order = (True, False) if rnd % 2 == 0 else (False, True)
        for n, release in enumerate(order):
            backup(qmp, "bk%d" % (n + 2))
            qmp.wait_event("BLOCK_JOB_COMPLETED", n + 2)
            if not release:
                qmp.wait_event("ALLOCATOR_MEMORY_RELEASED",
                           len([e for e in qmp.events if e["event"] ==
                                "ALLOCATOR_MEMORY_RELEASED"]) + 1)
            w = window(g, qmp, pinger, idle, release)
            out.update({("with_" if release else "without_") + k: v
                        for k, v in w.items()})
        pinger.stop = True
        pinger.join()
        idle.stop()
        counts = counter.read()
        out["idle_round"] = counts["idle"] if counts else None
        g.poweroff()
    finally:
        if idle.is_alive():
            idle.stop()
        g.close()
    return out


def med(rows, key):
    xs = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def f(v, fmt="%.1f"):
    return "-" if v is None else fmt % v


def disk_cell(rows):
    """"p99 A / B (n N / M)": the windows without / with a release; "max"
    instead of "p99" on a side where a round had fewer than
    MIN_READS_P99 reads."""
    sides = []
    for side in ("without_", "with_"):
        if all(r[side + "reads"] >= MIN_READS_P99 for r in rows):
            sides.append("p99 " + f(med(rows, side + "p99_ms")))
        else:
            sides.append("max " + f(med(rows, side + "read_max_ms")))
    return "%s / %s (n %s / %s)" % (
        sides[0], sides[1], f(med(rows, "without_reads"), "%.0f"),
        f(med(rows, "with_reads"), "%.0f"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--guest",
                    default=os.path.join(HERE, "..", "build", "guest"))
    ap.add_argument("builds", nargs="*")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds] or [
        (v, os.path.join(HERE, "..", "build", "build-%s" % v,
                         "qemu-system-x86_64"))
        for v in ("system", "tcmalloc", "jemalloc")]
    os.environ["GLIBC_TUNABLES"] = GLIBC_NO_TRIM
    table = []
    for name, qemu in builds:
        # The KVM probe boots a QEMU of its own: not one to count in
        accel = "kvm" if kvm_usable(qemu, args.guest) else "tcg"
        rows = []
        for rnd in range(args.rounds):
            work = tempfile.mkdtemp(prefix="guest-bench-")
            try:
                rows.append(one_round(qemu, args.guest, work, rnd, accel))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            r = rows[-1]
            print("# %s round %d: %s" % (name, rnd + 1, " ".join(
                "%s=%s" % (k, f(v) if not isinstance(v, str) else v)
                for k, v in sorted(r.items()))), flush=True)
        table.append((name, rows))

    print("\nMedians of %d rounds per build (RSS in MiB against before the "
          "backup, with 512 MiB of guest RAM touched; times in ms):\n"
          % args.rounds)
    print("| build | accel | RSS before | after the backup, release off | on "
          "| idle calls from the job's end to the automatic release | "
          "guest's longest stall without / with a release | disk reads "
          "without / with (p99, or max where a window had < %d reads; n) | "
          "main loop round trip without / with | idle calls in the windows "
          "without / with | the manual release: ms, MiB returned |"
          % MIN_READS_P99)
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in table:
        print("| %s (%s) | %s | %s | %+.1f | %+.1f | %s | %s / %s | %s | "
              "%s / %s | %s / %s | %s, %s |" % (
                  name, rows[0]["backend"], rows[0]["accel"],
                  f(med(rows, "before")), med(rows, "off"), med(rows, "on"),
                  f(med(rows, "idle_before_auto"), "%.0f"),
                  f(med(rows, "without_stall_ms")),
                  f(med(rows, "with_stall_ms")), disk_cell(rows),
                  f(med(rows, "without_rtt_ms")), f(med(rows, "with_rtt_ms")),
                  f(med(rows, "without_idle_calls"), "%.0f"),
                  f(med(rows, "with_idle_calls"), "%.0f"),
                  f(med(rows, "with_release_ms")),
                  f(med(rows, "with_returned_mib"))))
    worst_on = max(med(rows, "on") for _, rows in table)
    added = max(med(rows, "with_stall_ms") - med(rows, "without_stall_ms")
                for _, rows in table)
    print("\nTargets: post-backup RSS within 25 MiB on every build: %s "
          "(worst %+.1f MiB); a release adds at most 2 ms to the guest's "
          "longest stall: %s (worst %+.1f ms)"
          % ("met" if worst_on <= 25 else "NOT met", worst_on,
             "met" if added <= 2 else "NOT met", added))


if __name__ == "__main__":
    main()

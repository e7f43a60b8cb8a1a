#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""RSS around a backup, before and after QEMU's automatic release.

For each QEMU build, one fresh QEMU per round: three concurrent backups
of 256 MiB disks (2048 workers of 64 KiB, slow null-co targets, so
~380 MiB of bounce buffers are live at the peak), next to 512 MiB of
preallocated memory that stands for the guest's RAM.  RSS is sampled from
/proc every 5 ms; an HMP monitor on its own socket is pinged back to back
to see whether the main loop ever waits.

v2 has no switch for the automatic release (v1's allocator-policy
release-after-backup=off arm is gone).  In its place:
  - "RSS when the (last) automatic release started": that release's own
    process-rss-before, i.e. what the process still held ~1 s after the
    jobs with everything but that release.  Not quite v1's "off": the
    RCU thread's idle-time releases, which v2 cannot switch off either,
    had their chance, and jobs that end more than 1 s apart get one
    release each.  How many idle calls there were (malloc_trim(4 MiB) in
    glibc builds, upstream's included; arena decays in jemalloc builds;
    tcmalloc builds make none) is counted by benchlib's LD_PRELOAD shim
    (IdleCounter): during the jobs, and from the last job's end until the
    last automatic release started (unpatched: until 2 s after the end);
  - an unpatched QEMU can be given as a build (e.g.
    debian=/usr/bin/qemu-system-x86_64, Debian's QEMU 7.2, glibc): what
    upstream does, with its RCU thread's malloc_trim(4 MiB) and no
    automatic release; its release columns are "-".

Prints per build the medians over the rounds: RSS before, at the peak,
when the last automatic release started, 2 s after the jobs ended;
after - before; the time from the end of the last job until RSS is back
within 5% of its value before the backup; the automatic releases (count;
for the last one: when it started after the last job, its duration, its
RSS drop; what they returned where the allocator counts it, not glibc);
the idle calls during the jobs and after them; the worst HMP round trip
in the 2 s after the jobs ended, and the worst that overlapped the last
automatic release.  The counter is read every 5 ms: a window's count can
miss or gain a call made in the 5 ms before either of its ends.

Usage: backup-bench.py [--rounds N] [NAME=QEMU_BINARY ...]
       (default: build/build-{system,tcmalloc,jemalloc}/qemu-system-x86_64)
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import fmt, median_or_none, rss  # noqa: E402

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SIZE = 256 << 20
JOBS = 3


def one_round(qemu, work, sources):
    qmp_path = os.path.join(work, "qmp.sock")
    hmp_path = os.path.join(work, "hmp.sock")
    if os.path.exists(hmp_path):
        os.unlink(hmp_path)
    counter = benchlib.IdleCounter(os.path.join(work, "idle-counter"))
    with counter.preloaded():
        proc = benchlib.start_qemu(qemu, qmp_path, [
            # Debian's 7.2 has no qtest: it falls back to TCG
            "-accel", "tcg",
            # stands for the guest's RAM, which dominates a VM's RSS
            "-object", "memory-backend-ram,id=ram0,size=512M,prealloc=on",
            "-monitor", "unix:%s,server=on,wait=off" % hmp_path],
            log=os.path.join(work, "qemu.log"))
    qmp = hmp = None
    idle = benchlib.IdleSampler(counter)
    try:
        qmp = benchlib.AsyncQMP(qmp_path)
        hmp = benchlib.HMP(hmp_path)
        info0 = benchlib.allocator_info(qmp)
        patched = info0 is not None
        idle.start()
        for j, src in enumerate(sources):
            qmp.cmd("blockdev-add", driver="raw", **{"node-name": "src%d" % j},
                    file={"driver": "file", "filename": src})
            qmp.cmd("blockdev-add", driver="null-co", size=SIZE,
                    **{"node-name": "dst%d" % j, "latency-ns": 50000000})
        time.sleep(0.2)
        before = rss(proc.pid)
        samples = []
        pings = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                samples.append((time.time(), rss(proc.pid)))
                time.sleep(0.005)

        def pinger():
            while not stop.is_set():
                t_wall = time.time()
                t0 = time.perf_counter()
                hmp.cmd("info status")
                pings.append((t_wall, (time.perf_counter() - t0) * 1e3))

        threads = [threading.Thread(target=sampler),
                   threading.Thread(target=pinger)]
        for t in threads:
            t.start()
        try:
            n_ev = len(qmp.events)
            t_start = time.time()
            for j in range(len(sources)):
                qmp.cmd("blockdev-backup", device="src%d" % j,
                        target="dst%d" % j, sync="full",
                        **{"job-id": "job%d" % j,
                           "x-perf": {"use-copy-range": False,
                                      "max-workers": 2048,
                                      "max-chunk": 65536}})
            end = time.monotonic() + 300
            while (len(qmp.find_events("BLOCK_JOB_COMPLETED", n_ev))
                   < len(sources)):
                if time.monotonic() > end:
                    raise RuntimeError("backups did not end in 300 s")
                time.sleep(0.005)
            done = qmp.find_events("BLOCK_JOB_COMPLETED", n_ev)
            errors = [m["data"]["error"] for _, m in done
                      if "error" in m["data"]]
            if errors:
                raise RuntimeError("backup failed: %s" % errors)
            t_end = max(t for t, _ in done)
            time.sleep(max(0.0, t_end + 2.0 - time.time()))
            after = rss(proc.pid)
        finally:
            stop.set()
            for t in threads:
                t.join()
        autos = []
        info = None
        if patched:
            # the automatic release comes ~1 s after the last job: within
            # the 2 s above unless the machine is very busy
            qmp.wait_event(lambda m: (
                m["event"] == "ALLOCATOR_MEMORY_RELEASED" and
                m["data"]["trigger"] == "automatic"), n_ev, 5)
            autos = [m for _, m in qmp.find_events(
                "ALLOCATOR_MEMORY_RELEASED", n_ev)
                if m["data"]["trigger"] == "automatic"]
            info = benchlib.allocator_info(qmp)
        # after the automatic release: the window below ends at its start
        idle.stop()
        qmp.cmd("quit")
        peak = max([before] + [r for _, r in samples])
        back = [t for t, r in samples if t >= t_end and r <= before * 1.05]
        rtt_after = [ms for t, ms in pings if t + ms / 1e3 >= t_end]
        t_last = time.time()
        # the one after the last job (jobs that end more than 1 s apart
        # get one each)
        last = autos[-1] if autos else None
        if last:
            ts = last["timestamp"]
            a_end = ts["seconds"] + ts["microseconds"] / 1e6
            a_start = a_end - last["data"]["duration-us"] / 1e6
            rtt_auto = [ms for t, ms in pings
                        if t <= a_end and t + ms / 1e3 >= a_start]
        d = last["data"] if last else {}
        # what the idle hook did before the release could: unpatched
        # QEMU has none, there the window is the 2 s of "after"
        t_window = a_start if last else t_end + 2.0
        return {
            "backend": info["backend"] if info else "unpatched",
            "before_mib": before / 2**20,
            "peak_mib": peak / 2**20,
            "at_auto_start_mib": d["process-rss-before"] / 2**20
            if "process-rss-before" in d else None,
            "after_mib": after / 2**20,
            "above_before_mib": (after - before) / 2**20,
            "back_within_5pct_ms": (back[0] - t_end) * 1e3 if back
            else float("inf"),
            "automatic_releases": len(autos) if patched else None,
            "automatic_releases_qmp": info["automatic-releases"]
            if info else None,
            "auto_start_after_end_ms": (a_start - t_end) * 1e3
            if last else None,
            "auto_ms": d["duration-us"] / 1e3 if last else None,
            "auto_rss_drop_mib": (d["process-rss-before"] -
                                  d["process-rss-after"]) / 2**20
            if "process-rss-after" in d and "process-rss-before" in d
            else None,
            "auto_returned_mib": sum(a["data"].get("returned", 0)
                                     for a in autos) / 2**20
            if autos and all("returned" in a["data"] for a in autos)
            else None,
            "idle_during_jobs": idle.between(t_start, t_end),
            "idle_after_jobs": idle.between(t_end, t_window),
            # a check on the counting: glibc one malloc_trim(0) per
            # release, jemalloc one purge per arena
            "release_calls": idle.between(t_start, t_last, "release"),
            "hmp_rtt_max_after_ms": max(rtt_after) if rtt_after else None,
            "hmp_rtt_max_during_auto_ms": max(rtt_auto)
            if last and rtt_auto else None,
        }
    finally:
        if idle.is_alive():
            idle.stop()
        for c in (hmp, qmp):
            if c is not None:
                c.close()
        try:
            proc.wait(timeout=5)
        except Exception:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("builds", nargs="*", metavar="NAME=QEMU_BINARY")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds] or [
        (v, os.path.join(TOP, "build", "build-" + v, "qemu-system-x86_64"))
        for v in ("system", "tcmalloc", "jemalloc")]
    work = tempfile.mkdtemp(prefix="backup-bench-")
    rows = {}
    try:
        sources = [benchlib.make_source(
            os.path.join(work, "source%d.raw" % j), SIZE, j)
            for j in range(JOBS)]
        for r in range(args.rounds):
            for name, qemu in builds:
                res = one_round(qemu, work, sources)
                rows.setdefault(name, []).append(res)
                print("round %d %s: %s" % (r + 1, name, json.dumps(
                    {k: round(v, 2) if isinstance(v, float) else v
                     for k, v in res.items()})), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cols = [("before_mib", "RSS before MiB", "%.1f"),
            ("peak_mib", "peak MiB", "%.1f"),
            ("at_auto_start_mib", "RSS when the (last) automatic release "
             "started MiB", "%.1f"),
            ("after_mib", "2 s after MiB", "%.1f"),
            ("above_before_mib", "after - before MiB", "%.1f"),
            ("back_within_5pct_ms", "back within 5% after ms", "%.0f"),
            ("automatic_releases", "automatic releases", "%.0f"),
            ("auto_start_after_end_ms", "the last started after the last "
             "job ms",
             "%.0f"),
            ("auto_ms", "it took ms", "%.1f"),
            ("auto_rss_drop_mib", "its RSS drop MiB", "%.1f"),
            ("auto_returned_mib", "returned (counted) MiB", "%.1f"),
            ("idle_during_jobs", "idle calls during the jobs", "%.0f"),
            ("idle_after_jobs", "idle calls from the last job's end to the "
             "(last) automatic release (unpatched: 2 s)", "%.0f"),
            ("hmp_rtt_max_after_ms", "worst HMP RTT after end ms", "%.1f"),
            ("hmp_rtt_max_during_auto_ms",
             "worst HMP RTT overlapping the release ms", "%.1f")]
    print("\nMedians over %d rounds (\"-\": the build does not tell):\n"
          % args.rounds)
    print("| build | backend | " + " | ".join(c[1] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, _ in builds:
        res = rows[name]
        cells = [fmt(median_or_none(x[k] for x in res), f)
                 for k, _, f in cols]
        print("| %s | %s | %s |" % (name, res[0]["backend"],
                                    " | ".join(cells)))


if __name__ == "__main__":
    main()

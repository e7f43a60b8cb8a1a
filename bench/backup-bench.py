#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""RSS around a backup, with and without the automatic release.

For each QEMU build and each policy (release-after-backup on/off), one
fresh QEMU per round: three concurrent backups of 256 MiB disks (2048
workers of 64 KiB, slow null-co targets, so ~380 MiB of bounce buffers
are live at the peak), next to 512 MiB of preallocated memory that
stands for the guest's RAM.  RSS is sampled from /proc every 5 ms; an HMP
monitor is pinged back to back to see whether the main loop ever waits.

Prints RSS before, at the peak, and 2 s after the jobs ended; the time
from the end of the last job until RSS is back within 5% of its value
before the backup; and the worst HMP round trip after the jobs ended.

Usage: backup-bench.py [--rounds N] NAME=QEMU_BINARY...
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time

spec = importlib.util.spec_from_file_location(
    "qmpbench", os.path.join(os.path.dirname(__file__), "qmp-bench.py"))
qb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qb)
rss = qb.rss


def one_round(qemu, work, sources, auto):
    qmp_path = os.path.join(work, "qmp.sock")
    hmp_path = os.path.join(work, "hmp.sock")
    for p in (qmp_path, hmp_path):
        if os.path.exists(p):
            os.unlink(p)
    proc = subprocess.Popen(
        [qemu, "-machine", "none", "-nodefaults", "-display", "none",
         "-accel", "kvm", "-accel", "qtest",
         # stands for the guest's RAM, which dominates a VM's RSS
         "-object", "memory-backend-ram,id=ram0,size=512M,prealloc=on",
         "-object", "allocator-policy,id=policy,release-after-backup=%s"
         % ("on" if auto else "off"),
         "-chardev", "socket,id=hmp0,path=%s,server=on,wait=off" % hmp_path,
         "-mon", "chardev=hmp0,mode=readline",
         "-qmp", "unix:%s,server=on,wait=on" % qmp_path],
        stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(qmp_path):
            time.sleep(0.01)
        qmp = qb.QMP(qmp_path)
        hmp = qb.HMP(hmp_path)
        for j, src in enumerate(sources):
            qmp.cmd("blockdev-add", driver="raw", **{"node-name": "src%d" % j},
                    file={"driver": "file", "filename": src})
            qmp.cmd("blockdev-add", driver="null-co", size=qb.SIZE,
                    **{"node-name": "dst%d" % j, "latency-ns": 50000000})
        time.sleep(0.2)
        before = rss(proc.pid)
        samples = []
        pings = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                samples.append((time.perf_counter(), rss(proc.pid)))
                time.sleep(0.005)

        def pinger():
            while not stop.is_set():
                t0 = time.perf_counter()
                hmp.cmd("info status")
                pings.append((t0, time.perf_counter()))

        threads = [threading.Thread(target=sampler),
                   threading.Thread(target=pinger)]
        for t in threads:
            t.start()
        for j in range(len(sources)):
            qmp.cmd("blockdev-backup", device="src%d" % j, target="dst%d" % j,
                    sync="full",
                    **{"job-id": "job%d" % j,
                       "x-perf": {"use-copy-range": False,
                                  "max-workers": 2048, "max-chunk": 65536}})
        while qmp.count_events("BLOCK_JOB_COMPLETED") < len(sources):
            qmp.cmd("query-status")
            time.sleep(0.005)
        t_end = time.perf_counter()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join()
        info = qmp.cmd("x-query-allocator-stats")
        after = rss(proc.pid)
        peak = max(r for _, r in samples)
        back = [t for t, r in samples if t >= t_end and r <= before * 1.05]
        rtt_after = [(b - a) * 1e3 for a, b in pings if b >= t_end]
        qmp.cmd("quit")
        return {
            "backend": info["stats"]["backend"],
            "before_mib": before / 2**20,
            "peak_mib": peak / 2**20,
            "after_mib": after / 2**20,
            "above_before_mib": (after - before) / 2**20,
            "back_within_5pct_ms": (back[0] - t_end) * 1e3 if back
            else float("inf"),
            "automatic_releases": info["releases"]["automatic"],
            "hmp_rtt_max_after_ms": max(rtt_after) if rtt_after else 0,
        }
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("builds", nargs="+", metavar="NAME=QEMU_BINARY")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    work = tempfile.mkdtemp(prefix="backup-bench-")
    sources = qb.make_sources(work)
    rows = {}
    for r in range(args.rounds):
        for name, qemu in builds:
            for auto in (True, False):
                res = one_round(qemu, work, sources, auto)
                key = (name, "on" if auto else "off")
                rows.setdefault(key, []).append(res)
                print("round %d %s auto=%s: %s" % (r + 1, name, key[1],
                      json.dumps({k: round(v, 2) if isinstance(v, float)
                                  else v for k, v in res.items()})),
                      flush=True)
    cols = [("before_mib", "RSS before MiB"), ("peak_mib", "peak MiB"),
            ("after_mib", "2 s after MiB"),
            ("above_before_mib", "after - before MiB"),
            ("back_within_5pct_ms", "back within 5% after ms"),
            ("automatic_releases", "automatic releases"),
            ("hmp_rtt_max_after_ms", "worst HMP RTT after end ms")]
    print("\nMedians over %d rounds:\n" % args.rounds)
    print("| build | automatic release | " +
          " | ".join(c[1] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (name, auto), res in sorted(rows.items()):
        cells = []
        for k, _ in cols:
            v = statistics.median(x[k] for x in res)
            cells.append("never" if v == float("inf") else "%.1f" % v)
        print("| %s | %s | %s |" % (name, auto, " | ".join(cells)))
    for f in os.listdir(work):
        os.unlink(os.path.join(work, f))
    os.rmdir(work)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""RSS around a backup from Ceph RBD, with and without the automatic release.

Like bench/backup-bench.py, with librbd in the data path: starts a
one-OSD cluster with scripts/ceph-cluster.sh, imports three 256 MiB
images (a pattern in which every 4 KiB block differs), then for each
QEMU build and each policy (release-after-backup on/off, the other
allocator-policy properties at their defaults), one fresh QEMU per
round: three concurrent backups of the rbd images (2048 workers of
64 KiB each) to slow null-co targets, next to 512 MiB of preallocated
memory that stands for the guest's RAM.  RSS is sampled from /proc every
5 ms.

Prints RSS before (rbd images open), at the peak and 2 s after the last
job ended; after - before (target: at most 25 MiB); the automatic
releases and what they returned; the machine's busy CPUs during the round.
Log: bench/out/rbd-backup-bench.log.

Usage: rbd-backup-bench.py [--rounds N] [NAME=QEMU_BINARY ...]
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from qmplib import QMP, rss  # noqa: E402

cephlib = cephbench.cephlib
SIZE = 256 << 20
IMAGES = ["bench-src%d" % i for i in range(3)]
TARGET_MIB = 25


def one_round(qemu, work, conf, auto):
    sock = os.path.join(work, "qmp.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    proc = subprocess.Popen(
        [qemu, "-machine", "none", "-nodefaults", "-display", "none",
         "-accel", "kvm", "-accel", "qtest",
         # stands for the guest's RAM, which dominates a VM's RSS
         "-object", "memory-backend-ram,id=ram0,size=512M,prealloc=on",
         "-object", "allocator-policy,id=policy,release-after-backup=%s"
         % ("on" if auto else "off"),
         "-qmp", "unix:%s,server=on,wait=on" % sock],
        stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("QEMU did not start")
            time.sleep(0.01)
        qmp = QMP(sock, timeout=120)
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
        info = qmp.cmd("x-query-allocator-stats")
        after = rss(proc.pid)
        m1, _ = cephlib.machine_cpu_s()
        errors = [e["data"]["error"] for e in qmp.events
                  if e["event"] == "BLOCK_JOB_COMPLETED"
                  and "error" in e["data"]]
        if errors:
            raise RuntimeError("backup failed: %s" % errors)
        autos = [e["data"] for e in qmp.events
                 if e["event"] == "ALLOCATOR_MEMORY_RELEASED"
                 and e["data"]["trigger"] == "automatic"]
        peak = max([before] + [r for _, r in samples])
        back = [t for t, r in samples if t >= t_end and r <= before * 1.05]
        qmp.cmd("quit")
        return {
            "backend": info["stats"]["backend"],
            "before_mib": before / 2**20,
            "peak_mib": peak / 2**20,
            "after_mib": after / 2**20,
            "above_before_mib": (after - before) / 2**20,
            "back_within_5pct_ms": (back[0] - t_end) * 1e3 if back
            else float("inf"),
            "backup_s": t_end - w0,
            "automatic_releases": info["releases"]["automatic"],
            "automatic_returned_mib": sum(a["returned"] for a in autos)
            / 2**20,
            "idle_releases": info["releases"]["idle"],
            "machine_busy_cpus": (m1 - m0) / (time.monotonic() - w0),
        }
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
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
                for auto in (True, False):
                    busy = cephlib.wait_idle(0.15, log=log)
                    res = one_round(qemu, work, cluster.conf, auto)
                    res["busy_before_cpus"] = busy
                    key = (name, "on" if auto else "off")
                    rows.setdefault(key, []).append(res)
                    log("round %d %s auto=%s: %s" % (
                        r + 1, name, key[1], json.dumps(
                            {k: round(v, 2) if isinstance(v, float) else v
                             for k, v in res.items()})))
    finally:
        cluster.stop(purge=True)
        shutil.rmtree(work, ignore_errors=True)
    cols = [("before_mib", "RSS before MiB"), ("peak_mib", "peak MiB"),
            ("after_mib", "2 s after MiB"),
            ("above_before_mib", "after - before MiB"),
            ("back_within_5pct_ms", "back within 5% after ms"),
            ("automatic_releases", "automatic releases"),
            ("automatic_returned_mib", "returned by them MiB"),
            ("backup_s", "backups s"),
            ("machine_busy_cpus", "machine busy CPUs")]
    log("")
    log("Medians (min - max) over %d rounds; target: after - before <= "
        "%d MiB" % (args.rounds, TARGET_MIB))
    log("")
    log("| build | automatic release | " + " | ".join(c[1] for c in cols)
        + " | target met |")
    log("|---|---|" + "---|" * len(cols) + "---|")
    for (name, auto), res in rows.items():
        cells = []
        for k, _ in cols:
            xs = [x[k] for x in res]
            f = "%.2f" if k == "machine_busy_cpus" else "%.1f"
            cells.append(" ".join(
                "never" if v == float("inf") else f % v
                for v in [statistics.median(xs)]) +
                (" (%s - %s)" % tuple("never" if v == float("inf") else f % v
                                       for v in (min(xs), max(xs)))
                 if k in ("above_before_mib", "after_mib") else ""))
        met = sum(1 for x in res if x["above_before_mib"] <= TARGET_MIB)
        log("| %s | %s | %s | %d of %d |" % (name, auto, " | ".join(cells),
                                             met, len(res)))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Show the feature on a live QEMU: fill its heap with a real workload (a
backup job with many parallel workers), then show the allocator statistics,
a release, and the statistics after, through QMP and HMP.

Usage: demo-session.py QEMU_BINARY WORKDIR
"""
import json
import os
import sys
import time

from qmplib import QMP, rss, start_qemu

SIZE = 256 << 20


def mib(n):
    return "%.1f MiB" % (n / (1 << 20))


def wait_event(qmp, name, n=1):
    """The n-th event called name, once it has come."""
    while qmp.count_events(name) < n:
        qmp.cmd("query-status")
        time.sleep(0.05)
    return [e for e in qmp.events if e["event"] == name][n - 1]


def main():
    qemu, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "source.raw")
    sock = os.path.join(work, "qmp.sock")
    if not os.path.exists(src) or os.path.getsize(src) != SIZE:
        with open(src, "wb") as f:
            for i in range(SIZE >> 20):
                f.write(bytes([0x11 + i % 200]) * (1 << 20))
    proc = start_qemu(qemu, sock)
    try:
        qmp = QMP(sock)
        print("QEMU pid %d, RSS at start: %s" % (proc.pid, mib(rss(proc.pid))))
        print("\n-- workload: backup of a 256 MiB disk, 2048 parallel 64 KiB workers")
        qmp.cmd("blockdev-add", driver="raw", **{"node-name": "src"},
                file={"driver": "file", "filename": src})
        qmp.cmd("blockdev-add", driver="null-co", size=SIZE,
                **{"node-name": "dst", "latency-ns": 50000000})
        qmp.cmd("blockdev-backup", device="src", target="dst", sync="full",
                **{"job-id": "backup0",
                   "x-perf": {"use-copy-range": False, "max-workers": 2048,
                              "max-chunk": 65536}})
        wait_event(qmp, "BLOCK_JOB_COMPLETED")
        print("backup completed; RSS now %s" % mib(rss(proc.pid)))

        print("\n-- (qemu) info allocator   (statistics are read in the background)")
        print(qmp.hmp("info allocator").rstrip())
        print("\n-- ALLOCATOR_MEMORY_RELEASED: QEMU released by itself after the backup")
        print(json.dumps(wait_event(qmp, "ALLOCATOR_MEMORY_RELEASED", 1)["data"]))
        print("RSS now %s" % mib(rss(proc.pid)))
        print("\n-- x-query-allocator-stats (QMP)")
        print(json.dumps(qmp.cmd("x-query-allocator-stats"), indent=2))
        print("\n-- x-release-free-memory (QMP)   (nothing much left)")
        print(json.dumps(qmp.cmd("x-release-free-memory"), indent=2))
        wait_event(qmp, "ALLOCATOR_MEMORY_RELEASED", 2)
        print("\n-- (qemu) release_free_memory   (returns at once)")
        print(qmp.hmp("release_free_memory").rstrip())
        wait_event(qmp, "ALLOCATOR_MEMORY_RELEASED", 3)
        print("\n-- (qemu) info allocator")
        print(qmp.hmp("info allocator").rstrip())
        print("\nRSS from /proc at the end: %s" % mib(rss(proc.pid)))
        qmp.cmd("quit")
    finally:
        proc.wait(timeout=10) if proc.poll() is None else None


if __name__ == "__main__":
    main()

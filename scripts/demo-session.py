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


def wait_event(qmp, name):
    while not qmp.count_events(name):
        qmp.cmd("query-status")
        time.sleep(0.05)
    return [e for e in qmp.events if e["event"] == name][-1]


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

        print("\n-- (qemu) info allocator")
        print(qmp.hmp("info allocator").rstrip())
        print("\n-- x-release-free-memory (QMP)")
        ret = qmp.cmd("x-release-free-memory")
        print(json.dumps(ret["release"], indent=2))
        print("\n-- ALLOCATOR_MEMORY_RELEASED event")
        print(json.dumps(wait_event(qmp, "ALLOCATOR_MEMORY_RELEASED")["data"]))
        print("\n-- (qemu) release_free_memory   (nothing much left)")
        print(qmp.hmp("release_free_memory").rstrip())
        print("\n-- (qemu) info allocator")
        print(qmp.hmp("info allocator").rstrip())
        print("\n-- query-stats, provider allocator")
        stats = qmp.cmd("query-stats", target="vm",
                        providers=[{"provider": "allocator"}])
        print(", ".join("%s=%s" % (s["name"], s["value"])
                        for s in stats[0]["stats"]))
        print("\nRSS from /proc at the end: %s" % mib(rss(proc.pid)))
        qmp.cmd("quit")
    finally:
        proc.wait(timeout=10) if proc.poll() is None else None


if __name__ == "__main__":
    main()

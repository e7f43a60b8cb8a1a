#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Show the feature on a booted VM: the test guest (tests/guest) writes
its disk and uses 512 MiB of its RAM, QEMU backs the disk up while the
guest overwrites it, then shows `info allocator`, releases, and the
process's RSS and the guest's own view of the release (its longest stall
while the release ran, against the same window without one).

Usage: demo-session.py QEMU_BINARY GUEST_DIR WORKDIR
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "guest"))
from guestlib import Guest  # noqa: E402
from qmplib import rss  # noqa: E402

MiB = 1 << 20
DISK_MIB = 256


def mib(n):
    return "%.1f MiB" % (n / MiB)


def show(title, text):
    print("\n-- " + title)
    print(text.rstrip())


def stall_line(ans):
    return ("longest gap %.1f ms, %d gaps over 1 ms, %d over 10 ms (clock %s)"
            % (ans["max_gap_us"] / 1000, ans["gaps_over_1ms"],
               ans["gaps_over_10ms"], ans["clocksource"]))


def main():
    qemu, guest_dir, work = sys.argv[1:4]
    os.makedirs(os.path.join(work, "vm"), exist_ok=True)
    disks = [os.path.join(work, n) for n in ("vda.raw", "backup.raw")]
    for p in disks:
        with open(p, "wb") as f:
            f.truncate(DISK_MIB * MiB)
    # 2 vCPUs: the guest's clock is then read through QEMU (acpi_pm or
    # hpet), so its stall loop also sees QEMU's main loop (tests/guest/README.md)
    with Guest(qemu, guest_dir, disks=disks, smp=2, accel="auto",
               workdir=os.path.join(work, "vm")) as g:
        qmp = g.qmp
        backend = qmp.cmd("x-query-allocator-stats")["backend"]
        print("QEMU pid %d (%s allocator, accel %s): the guest answered %.1f s "
              "after start; RSS %s"
              % (g.proc.pid, backend, g.accel_used, g.boot_seconds,
                 mib(rss(g.proc.pid))))

        w = g.cmd("write vda A")
        g.cmd("touch 512")
        before = rss(g.proc.pid)
        show("the guest wrote pattern A on its disk and uses 512 MiB of its RAM",
             "its 1 MiB writes: p99 %.1f ms; QEMU's RSS %s"
             % (w["p99_us"] / 1000, mib(before)))

        print("\n-- a backup of vda (to a 64 MiB/s target, 64 workers of 2 MiB), "
              "while the guest overwrites half of its disk with pattern B")
        qmp.cmd("object-add", **{"qom-type": "throttle-group", "id": "slow",
                                 "limits": {"bps-write": 64 * MiB}})
        qmp.cmd("blockdev-add", driver="throttle", file="disk1",
                **{"node-name": "slow1", "throttle-group": "slow"})
        qmp.cmd("blockdev-backup", device="disk0", target="slow1",
                sync="full", **{"job-id": "backup0", "x-perf": {
                    "use-copy-range": False, "max-workers": 64,
                    "max-chunk": 2 * MiB}})
        w = g.cmd("write vda B %d" % (DISK_MIB // 2))
        qmp.wait_event("BLOCK_JOB_COMPLETED")
        print("the guest's write took %.2f s; the backup completed; RSS %s (%+.1f MiB)"
              % (w["seconds"], mib(rss(g.proc.pid)),
                 (rss(g.proc.pid) - before) / MiB))
        show("(qemu) info allocator   (right after the backup)",
             qmp.hmp("info allocator"))
        ev = qmp.wait_event("ALLOCATOR_MEMORY_RELEASED")["data"]
        show("ALLOCATOR_MEMORY_RELEASED: QEMU released by itself, 1 s after "
             "the backup", json.dumps(ev))
        print("RSS now %s (%+.1f MiB against before the backup)"
              % (mib(rss(g.proc.pid)), (rss(g.proc.pid) - before) / MiB))
        t = g.cmd("verify vdb A", check=False)
        print("the guest reads the backup: %d bad blocks (all pattern A: the "
              "moment the backup started)" % t["bad_blocks"])

        print("\n-- the guest's view of a release: its stall loop for 2 s, "
              "without and with a release inside")
        base = g.cmd("stall 2")
        print("without: " + stall_line(base))
        qmp.cmd("blockdev-backup", device="disk0", target="slow1",
                sync="full", **{"job-id": "backup1", "x-perf": {
                    "use-copy-range": False, "max-workers": 64,
                    "max-chunk": 2 * MiB}})
        qmp.wait_event("BLOCK_JOB_COMPLETED", 2)
        job = g.start_job("stall 2")
        time.sleep(0.5)
        rel = qmp.cmd("x-release-free-memory")
        with_rel = g.wait(job)
        print("with:    " + stall_line(with_rel))
        show("x-release-free-memory (QMP), right after a second backup",
             json.dumps(rel))
        qmp.wait_event("ALLOCATOR_MEMORY_RELEASED", 3)
        show("(qemu) info allocator", qmp.hmp("info allocator"))
        print("\nRSS from /proc at the end: %s (%+.1f MiB against before the "
              "first backup)" % (mib(rss(g.proc.pid)),
                                 (rss(g.proc.pid) - before) / MiB))
        g.poweroff()


if __name__ == "__main__":
    main()

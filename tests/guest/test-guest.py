#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A backup and releases with a real guest running (speaks TAP).

Boots the test guest (tests/guest/README.md) in the QEMU build named by
$QTEST_QEMU_BINARY, 1 GiB of RAM of which the guest touches 512 MiB, two
virtio-blk disks: vda (the guest's data) and vdb (the backup's target).

  1. The guest writes pattern A on vda and touches 512 MiB of its RAM.
  2. A backup of vda to vdb starts, held at 1 MiB/s; the guest overwrites
     the first half of vda with pattern B while the backup exists (every
     write goes through copy-before-write); then the backup runs at full
     speed, to vdb behind a 64 MiB/s throttle (64 workers of 2 MiB: the
     bounce buffers a backup to slower storage piles up).
  3. Checks, as a user would: vdb, read by the guest, is all A (the
     point in time the backup started); vda holds B; exactly one
     automatic release follows; QEMU's RSS is back within 25 MiB of its
     value before the backup; the allocator's figures (statistics, each
     release's "returned") stay below what QEMU holds besides guest RAM;
     the guest keeps running through a manual release during a second,
     paused backup (it finishes reading its disk meanwhile, and answers
     afterwards).

Where the build's allocator cannot release ("system"), the release
checks are skipped with the reason.
"""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from guestlib import Guest  # noqa: E402
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
from qmplib import rss  # noqa: E402
from taplib import results, skip, tap  # noqa: E402

MiB = 1 << 20
DISK_MIB = 256
TOUCH_MIB = 512
RSS_SLACK = 25 * MiB        # the bound for RSS after a backup
# block-copy's workers, each with a bounce buffer of up to one chunk
X_PERF = {"use-copy-range": False, "max-workers": 64, "max-chunk": 2 * MiB}

def mib(n):
    return "%.1f MiB" % (n / MiB)


def pause_job(qmp, job, offset):
    """Pause a running job once it copied `offset` bytes; wait until it is
    paused (its requests in flight done)."""
    deadline = time.monotonic() + 300
    while True:
        j = {x["id"]: x for x in qmp.cmd("query-jobs")}.get(job)
        if j is None or j["status"] not in ("created", "running"):
            raise RuntimeError("job %s is %s before it could be paused"
                               % (job, j and j["status"]))
        if j["current-progress"] >= offset:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("job %s made no progress in 300 s" % job)
        time.sleep(0.02)
    qmp.cmd("job-pause", id=job)
    while {x["id"]: x for x in qmp.cmd("query-jobs")}[job]["status"] != "paused":
        if time.monotonic() > deadline:
            raise RuntimeError("job %s did not pause in 300 s" % job)
        time.sleep(0.02)


def releases(qmp, trigger):
    return [e["data"] for e in qmp.events
            if e["event"] == "ALLOCATOR_MEMORY_RELEASED"
            and e["data"]["trigger"] == trigger]


def run(qemu, guest_dir, work):
    vda = os.path.join(work, "vda.raw")
    vdb = os.path.join(work, "vdb.raw")
    for p in (vda, vdb):
        with open(p, "wb") as f:
            f.truncate(DISK_MIB * MiB)
    # glibc returns the top of its heap by itself above its trim threshold:
    # what is measured here is the series' release, not that
    tunables = os.environ.get("GLIBC_TUNABLES")
    ours = "glibc.malloc.trim_threshold=1073741824"
    os.environ["GLIBC_TUNABLES"] = tunables + ":" + ours if tunables else ours

    with Guest(qemu, guest_dir, disks=[vda, vdb], accel="auto") as g:
        qmp = g.qmp
        info = qmp.cmd("x-query-allocator-stats")
        backend = info["backend"]
        can_release = backend != "system"
        tap(True, "the guest boots (%s, accel %s) in %.1f s"
            % (backend, g.accel_used, g.boot_seconds))

        g.cmd("write vda A")
        g.cmd("touch %d" % TOUCH_MIB)
        rss_before = rss(g.proc.pid)

        # The backup starts: from now on vdb must receive vda as it is
        # Bounce buffers as a backup to slower storage holds them: block
        # copy's workers each read a chunk and wait for the target, here
        # vdb behind a throttle (the guest reads vdb itself, unthrottled)
        qmp.cmd("object-add", **{"qom-type": "throttle-group", "id": "slow",
                                 "limits": {"bps-write": 64 * MiB}})
        qmp.cmd("blockdev-add", driver="throttle", file="disk1",
                **{"node-name": "slow1", "throttle-group": "slow"})
        qmp.cmd("blockdev-backup", device="disk0", target="slow1",
                sync="full", speed=MiB,
                **{"job-id": "bk", "auto-dismiss": False, "x-perf": X_PERF})
        # Half the disk: what the guest overwrites, copy-before-write
        # copies first; the job's workers copy the rest
        write = g.cmd("write vda B %d" % (DISK_MIB // 2))
        running = [j for j in qmp.cmd("query-block-jobs")
                   if j["device"] == "bk" and j["status"] == "running"]
        qmp.cmd("block-job-set-speed", device="bk", speed=0)
        deadline = time.monotonic() + 300
        peak = 0
        while not [e for e in qmp.events if e["event"] == "BLOCK_JOB_COMPLETED"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the backup did not end in 300 s")
            qmp.cmd("query-status")
            peak = max(peak, rss(g.proc.pid))
            time.sleep(0.005)
        done = [e for e in qmp.events if e["event"] == "BLOCK_JOB_COMPLETED"][0]
        tap(bool(running) and "error" not in done["data"],
            "the guest overwrote its disk while the backup ran",
            "write of %s took %.2f s; the backup was %s when it ended; "
            "the backup: %s" % (mib(write["bytes"]), write["seconds"],
                                "running" if running else "NOT running",
                                done["data"]))
        qmp.cmd("job-dismiss", id="bk")

        if can_release:
            qmp.wait_event("ALLOCATOR_MEMORY_RELEASED", 1, 60)
            rss_after = rss(g.proc.pid)
            auto = releases(qmp, "automatic")[0]
            tap(rss_after <= rss_before + RSS_SLACK,
                "RSS back within %s of its value before the backup"
                % mib(RSS_SLACK),
                "RSS before the backup %s, at its peak %s, when the automatic release "
                "started %s, after it %s (%+.1f MiB; %s of guest RAM "
                "touched); the release returned %s in %.1f ms"
                % (mib(rss_before), mib(peak), mib(auto["process-rss-before"]),
                   mib(rss_after), (rss_after - rss_before) / MiB,
                   mib(TOUCH_MIB * MiB),
                   mib(auto["returned"]) if "returned" in auto else "-",
                   auto["duration-us"] / 1000))
        else:
            skip("RSS back after the backup",
                 "the %s allocator cannot release" % backend)

        # The guest reads both disks back: the backup holds the moment it
        # started, the guest's disk what the guest wrote last
        target = g.cmd("verify vdb A", check=False)
        tap(target.get("ok") and target["bad_blocks"] == 0,
            "the backup is the point in time it started (vdb all A)",
            "%s bad 4 KiB blocks, the first at %s holds %s"
            % (target.get("bad_blocks"), target.get("first_bad"),
               target.get("found", "-")) if target.get("bad_blocks") else None)
        own = g.cmd("verify vda B %d" % (DISK_MIB // 2), check=False)
        tap(own.get("ok") and own["bad_blocks"] == 0,
            "the guest's disk holds what it wrote last (B on vda's first half)",
            "%s bad blocks, first holds %s" % (own.get("bad_blocks"),
                                              own.get("found", "-"))
            if own.get("bad_blocks") else None)

        # The allocator's figures are the allocator's: guest RAM (mapped by
        # QEMU, not allocated through malloc) must not be in them
        now = qmp.cmd("x-query-allocator-stats")
        held = rss(g.proc.pid) - TOUCH_MIB * MiB
        figures = [("allocated", now["stats"]["allocated"])]
        if "releasable" in now["stats"]:
            figures.append(("releasable", now["stats"]["releasable"]))
        for e in releases(qmp, "automatic"):
            if "returned" in e:
                figures.append(("returned by the automatic release",
                                e["returned"]))
        big = [(n, v) for n, v in figures if v > held]
        tap(not big, "the allocator's figures do not count guest RAM",
            "RSS less the guest's touched RAM: %s; %s"
            % (mib(held), ", ".join("%s %s" % (n, mib(v)) for n, v in figures)))

        if not can_release:
            for name in ("the guest keeps running through a manual release",
                         "a release returns what the allocator counts, no more",
                         "one automatic release after each backup"):
                skip(name, "the %s allocator cannot release" % backend)
            tap(g.poweroff() == 0, "the guest powers off, QEMU exits 0")
            return

        # A second backup, paused on its way: its workers' buffers are back
        # in the allocator and, while the job exists, no automatic release
        # can take them first, however slow this machine is.  A manual
        # release then, while the guest reads its disk.
        qmp.cmd("blockdev-backup", device="disk0", target="slow1",
                sync="full", speed=32 * MiB,
                **{"job-id": "bk2", "x-perf": X_PERF})
        pause_job(qmp, "bk2", 16 * MiB)
        job = g.start_job("io-latency vda 2")
        before = qmp.cmd("x-query-allocator-stats")["stats"]
        rel = qmp.cmd("x-release-free-memory")
        after = qmp.cmd("x-query-allocator-stats")["stats"]
        reads = g.wait(job, check=False)
        pong = g.cmd("ping after", check=False)
        qmp.cmd("job-resume", id="bk2")
        qmp.cmd("block-job-set-speed", device="bk2", speed=0)
        qmp.wait_event("BLOCK_JOB_COMPLETED", 2, 300)
        tap(reads.get("ok") and reads.get("count", 0) > 0
            and pong.get("pong") == "after",
            "the guest keeps running through a manual release",
            "the guest's 4 KiB reads during it: %s, p99 %.1f ms, max %.1f "
            "ms; the release took %.1f ms" % (
                reads.get("count"), reads.get("p99_us", -1) / 1000,
                reads.get("max_us", -1) / 1000, rel["duration-us"] / 1000))
        if "returned" in rel:
            # against the allocator's own figures read around it
            grew = after["returned"] - before["returned"]
            tap(0 < rel["returned"] <= before["releasable"] + MiB
                and rel["returned"] <= grew + MiB,
                "a release returns what the allocator counts, no more",
                "returned %s; releasable before %s; the allocator's returned "
                "total %s -> %s" % (mib(rel["returned"]),
                                    mib(before["releasable"]),
                                    mib(before["returned"]),
                                    mib(after["returned"])))
        else:
            skip("a release returns what the allocator counts, no more",
                 "the %s allocator does not count returned memory" % backend)

        qmp.wait_event("ALLOCATOR_MEMORY_RELEASED", 3, 60)
        # the second backup copied vda as the guest had left it
        target = g.cmd("verify vdb B %d" % (DISK_MIB // 2), check=False)
        own = g.cmd("verify vda B %d" % (DISK_MIB // 2), check=False)
        counters = qmp.cmd("x-query-allocator-stats")
        n = len(releases(qmp, "automatic"))
        tap(n == 2 and counters["automatic-releases"] == 2
            and counters["manual-releases"] == 1
            and target.get("bad_blocks") == 0 and own.get("bad_blocks") == 0,
            "one automatic release after each backup, the disks intact",
            "%d ALLOCATOR_MEMORY_RELEASED events with trigger automatic; "
            "counters: %d automatic, %d manual; bad blocks on vdb %s, vda %s"
            % (n, counters["automatic-releases"], counters["manual-releases"],
               target.get("bad_blocks"), own.get("bad_blocks")))
        tap(g.poweroff() == 0, "the guest powers off, QEMU exits 0")


def main():
    qemu = os.environ.get("QTEST_QEMU_BINARY")
    if not qemu:
        print("1..0 # SKIP QTEST_QEMU_BINARY is not set")
        return 0
    guest_dir = os.environ.get("QR_GUEST_DIR",
                               os.path.join(HERE, "..", "..", "build", "guest"))
    planned = 10
    print("1..%d" % planned)
    work = tempfile.mkdtemp(prefix="test-guest-")
    try:
        run(qemu, guest_dir, work)
    except Exception as e:  # noqa: BLE001 - reported as a TAP failure
        tap(False, "the test ran to its end", "%s: %s" % (type(e).__name__, e))
    finally:
        for f in os.listdir(work):
            os.unlink(os.path.join(work, f))
        os.rmdir(work)
    return 0 if all(results) and len(results) == planned else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Soak: many release cycles with continuous block I/O.

For each QEMU build: one QEMU, then --cycles times: a backup of a 64 MiB
disk (256 workers of 64 KiB, to a null-co target) followed by
x-release-free-memory and x-query-allocator-stats.  Prints, from the
first cycle on: RSS after the release (first, min, max, last, and the
growth last - first), the allocator's allocated bytes (first, max, last,
growth: a leak shows here), and release latency, median of the first and
of the last tenth of the cycles (it must not drift; the header says how
many cycles a tenth is).  Run by hand;
--cycles 2000 takes about 10 minutes a build.

v2 cannot switch the automatic release off (v1 ran with
release-after-backup=off): every backup's end asks for one, and since
requests within a second are coalesced, cycles shorter than a second
push it back until the last one; longer cycles get theirs (it runs after
or before our manual release, never at the same time).  The automatic
releases seen (ALLOCATOR_MEMORY_RELEASED, trigger automatic) and the RCU
thread's idle-time releases (which QEMU counts nowhere: counted by
benchlib's LD_PRELOAD shim, IdleCounter; malloc_trim(4 MiB) in glibc
builds, arena decays in jemalloc builds, none in tcmalloc builds) are
printed per build.  x-release-free-memory no longer returns the
statistics: allocated comes from x-query-allocator-stats right after.

Usage: soak-bench.py [--cycles N] [NAME=QEMU_BINARY ...]
       (default: build/build-{system,tcmalloc,jemalloc}/qemu-system-x86_64)
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import rss  # noqa: E402

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SIZE = 64 << 20


def soak(qemu, work, src, cycles):
    sock = os.path.join(work, "qmp.sock")
    counter = benchlib.IdleCounter(os.path.join(work, "idle-counter"))
    with counter.preloaded():
        proc = benchlib.start_qemu(qemu, sock,
                                   log=os.path.join(work, "qemu.log"))
    qmp = None
    try:
        qmp = benchlib.SyncQMP(sock)
        if benchlib.allocator_info(qmp) is None:
            raise SystemExit("%s has no x-query-allocator-stats" % qemu)
        idle0 = benchlib.idle_releases(counter)
        qmp.cmd("blockdev-add", driver="raw", **{"node-name": "src"},
                file={"driver": "file", "filename": src})
        qmp.cmd("blockdev-add", driver="null-co", size=SIZE,
                **{"node-name": "dst"})
        rows = []
        autos = 0
        for i in range(cycles):
            qmp.cmd("blockdev-backup", device="src", target="dst", sync="full",
                    **{"job-id": "j%d" % i,
                       "x-perf": {"use-copy-range": False, "max-workers": 256,
                                  "max-chunk": 65536}})
            # Wait for the job to go away (auto-dismiss): one query per
            # poll, no event bookkeeping.
            while any(j["id"] == "j%d" % i for j in qmp.cmd("query-jobs")):
                time.sleep(0.002)
            rel = qmp.cmd("x-release-free-memory")
            r = rss(proc.pid)
            info = qmp.cmd("x-query-allocator-stats")
            rows.append((r, info["stats"]["allocated"]
                         if "stats" in info else 0,
                         rel["duration-us"] / 1e3))
            autos += sum(1 for e in qmp.events
                         if e["event"] == "ALLOCATOR_MEMORY_RELEASED"
                         and e["data"]["trigger"] == "automatic")
            qmp.events = []
            if (i + 1) % max(1, cycles // 10) == 0:
                print("#   %d cycles, RSS %.1f MiB, release %.2f ms"
                      % (i + 1, rows[-1][0] / 2**20, rows[-1][2]), flush=True)
        idle1 = benchlib.idle_releases(counter)
        info = qmp.cmd("x-query-allocator-stats")
        qmp.cmd("quit")
        return rows, {
            "backend": info["backend"],
            "automatic_seen": autos,
            "automatic_counted": info["automatic-releases"],
            "manual_counted": info["manual-releases"],
            "idle": idle1 - idle0
            if idle0 is not None and idle1 is not None else None,
        }
    finally:
        if qmp is not None:
            qmp.close()
        try:
            proc.wait(timeout=5)
        except Exception:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("builds", nargs="*", metavar="NAME=QEMU_BINARY")
    args = ap.parse_args()
    if args.cycles < 1:
        ap.error("--cycles must be >= 1")
    builds = [b.split("=", 1) for b in args.builds] or [
        (v, os.path.join(TOP, "build", "build-" + v, "qemu-system-x86_64"))
        for v in ("system", "tcmalloc", "jemalloc")]
    work = tempfile.mkdtemp(prefix="soak-bench-")
    mib = 2**20
    try:
        src = os.path.join(work, "source.raw")
        with open(src, "wb") as f:
            for i in range(SIZE >> 20):
                f.write(bytes([0x61 + i % 50]) * (1 << 20))
        print("| build | backend | cycles | RSS after release MiB: first / "
              "min / max / last (last - first) | allocated MiB: first / max "
              "/ last (last - first) | release ms, median of first / last "
              "tenth (%d cycles each) | manual releases | automatic "
              "releases (seen) | idle calls |" % max(1, args.cycles // 10))
        print("|---|---|---|---|---|---|---|---|---|")
        for name, qemu in builds:
            rows, c = soak(qemu, work, src, args.cycles)
            tenth = max(1, len(rows) // 10)
            rs = [r[0] for r in rows]
            al = [r[1] for r in rows]
            print("| %s | %s | %d | %.1f / %.1f / %.1f / %.1f (%+.1f) | "
                  "%.2f / %.2f / %.2f (%+.2f) | %.2f / %.2f | %d | %d (%d) "
                  "| %s |" % (
                      name, c["backend"], len(rows), rs[0] / mib,
                      min(rs) / mib, max(rs) / mib, rs[-1] / mib,
                      (rs[-1] - rs[0]) / mib, al[0] / mib, max(al) / mib,
                      al[-1] / mib, (al[-1] - al[0]) / mib,
                      statistics.median(r[2] for r in rows[:tenth]),
                      statistics.median(r[2] for r in rows[-tenth:]),
                      c["manual_counted"], c["automatic_counted"],
                      c["automatic_seen"],
                      "-" if c["idle"] is None else c["idle"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

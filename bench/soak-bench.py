#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Soak: many release cycles with continuous block I/O.

For each QEMU build: one QEMU, then --cycles times: a backup of a 64 MiB
disk (256 workers of 64 KiB, to a null-co target) followed by
x-release-free-memory.  Prints RSS after each release (its band after a
warm-up of 10% of the cycles: it must stay flat), allocated bytes (a leak
shows as growth), and release latency in the first and last tenth (it must
not drift).  Run by hand; --cycles 2000 takes about 10 minutes a build.

Usage: soak-bench.py [--cycles N] NAME=QEMU_BINARY...
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import tempfile
import time

spec = importlib.util.spec_from_file_location(
    "qmpbench", os.path.join(os.path.dirname(__file__), "qmp-bench.py"))
qb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qb)
rss = qb.rss

SIZE = 64 << 20


def soak(qemu, work, src, cycles):
    sock = os.path.join(work, "qmp.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    proc = subprocess.Popen(
        [qemu, "-machine", "none", "-nodefaults", "-display", "none",
         "-accel", "kvm", "-accel", "qtest",
         "-object", "allocator-policy,id=policy,release-after-backup=off",
         "-qmp", "unix:%s,server=on,wait=on" % sock],
        stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(sock):
            time.sleep(0.01)
        qmp = qb.QMP(sock)
        qmp.cmd("blockdev-add", driver="raw", **{"node-name": "src"},
                file={"driver": "file", "filename": src})
        qmp.cmd("blockdev-add", driver="null-co", size=SIZE,
                **{"node-name": "dst"})
        rows = []
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
            rows.append((rss(proc.pid), rel["stats"]["allocated"],
                         rel["release"]["duration-us"] / 1e3))
            qmp.events = []
            if (i + 1) % max(1, cycles // 10) == 0:
                print("#   %d cycles, RSS %.1f MiB, release %.2f ms"
                      % (i + 1, rows[-1][0] / 2**20, rows[-1][2]), flush=True)
        qmp.cmd("quit")
        return rows
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("builds", nargs="+", metavar="NAME=QEMU_BINARY")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="soak-bench-")
    src = os.path.join(work, "source.raw")
    with open(src, "wb") as f:
        for i in range(SIZE >> 20):
            f.write(bytes([0x61 + i % 50]) * (1 << 20))
    print("| build | cycles | RSS after release min / max MiB (after warm-up) "
          "| allocated first / last MiB | release ms median first / last "
          "tenth |")
    print("|---|---|---|---|---|")
    for name, qemu in (b.split("=", 1) for b in args.builds):
        rows = soak(qemu, work, src, args.cycles)
        tenth = max(1, len(rows) // 10)
        steady = rows[tenth:]
        print("| %s | %d | %.1f / %.1f | %.1f / %.1f | %.2f / %.2f |" % (
            name, len(rows), min(r[0] for r in steady) / 2**20,
            max(r[0] for r in steady) / 2**20, steady[0][1] / 2**20,
            rows[-1][1] / 2**20,
            statistics.median(r[2] for r in rows[:tenth]),
            statistics.median(r[2] for r in rows[-tenth:])), flush=True)
    for f in os.listdir(work):
        os.unlink(os.path.join(work, f))
    os.rmdir(work)


if __name__ == "__main__":
    main()

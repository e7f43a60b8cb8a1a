#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU's own rbd path: 4 KiB reads, depth 16, per QEMU allocator build.

Starts a cluster with scripts/ceph-cluster.sh (--osds N), fills a 1 GiB
image, then runs, in every round and for every build's qemu-img (order
rotating from round to round):

  qemu-img bench -f raw -t none -c 262144 -d 16 -s 4096 -S 165900288 \\
      rbd:rbd/bench-1g:conf=DIR/ceph.conf

qemu-img bench has no random mode: offsets advance by the step (-S) and
wrap around at the image's end.  The step is 40503 blocks of 4 KiB
(158.2 MiB), an odd number of blocks, so with the image's 2^18 blocks the
262144 reads touch every block exactly once, each ~40 RADOS objects (of
4 MiB) away from the previous one: the same amount of data as rbd bench's
--io-total 1G, scattered over all objects and PGs like random reads,
but in a fixed order.  -t none turns librbd's cache off (QEMU sets
rbd_cache=false for cache.direct).  IOPS = count / "Run completed in".

Prints IOPS and CPU per build and per pair with the system (glibc) build;
see bench/cephbench.py for the CPU accounting and the repeat rule.
Log: bench/out/qemu-img-rbd-bench.log.

Usage: qemu-img-rbd-bench.py [--rounds N] [--osds N] [NAME=QEMU_IMG ...]
       (default: build/build-{system,tcmalloc,jemalloc}/qemu-img)
"""
import argparse
import os
import re
import subprocess

import cephbench

IMAGE = "rbd/bench-1g"
COUNT = 262144
STEP = 4096 * 40503


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--osds", type=int, default=1)
    ap.add_argument("--max-others", type=float, default=0.08,
                    help="CPUs other processes may use during a run")
    ap.add_argument("--idle", type=float, default=0.15,
                    help="busy CPUs below which the machine counts as idle")
    ap.add_argument("builds", nargs="*", metavar="NAME=QEMU_IMG")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds] or [
        (v, os.path.join(cephbench.cephlib.TOP, "build", "build-" + v,
                         "qemu-img")) for v in ("system", "tcmalloc",
                                                 "jemalloc")]
    for name, img in builds:
        if not cephbench.cephlib.has_rbd(img):
            raise SystemExit("%s (%s) has no rbd driver: scripts/build.sh "
                             "configures --enable-rbd" % (img, name))
    os.makedirs(cephbench.OUT, exist_ok=True)
    log = cephbench.log_to(os.path.join(cephbench.OUT,
                                        "qemu-img-rbd-bench.log"))
    with cephbench.filled_image_cluster("qemu-img-rbd-bench", args.osds, IMAGE,
                                        log) as cluster:
        filename = "rbd:%s:conf=%s" % (IMAGE, cluster.conf)
        variants = []
        for name, img in builds:
            argv = [img, "bench", "-f", "raw", "-t", "none", "-c", str(COUNT),
                    "-d", "16", "-s", "4096", "-S", str(STEP), filename]
            variants.append((name, argv, cluster.env))
        log("command: %s" % " ".join(variants[0][1]).replace(
            builds[0][1], "build/build-<variant>/qemu-img"))
        log("builds: " + ", ".join("%s=%s" % (n, i) for n, i in builds))

        def parse(out):
            m = re.search(r"Run completed in ([\d.]+) seconds", out)
            if not m:
                raise RuntimeError("no result in: " + out[-300:])
            return {"iops": COUNT / float(m.group(1)),
                    "io_s": float(m.group(1))}

        cephbench.measured_run(variants[0][1], cluster.env, cluster)  # warm-up
        res = cephbench.run_rounds(variants, args.rounds, cluster, parse,
                                   log, max_others=args.max_others,
                                   idle=args.idle)
        cephbench.report(res, builds[0][0], log)


if __name__ == "__main__":
    main()

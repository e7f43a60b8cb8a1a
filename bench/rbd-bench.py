#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""librbd 4 KiB random reads with the client on glibc, tcmalloc, jemalloc.

Starts a cluster with scripts/ceph-cluster.sh (--osds N), fills a 1 GiB
image, then runs, in every round and for every client allocator (order
rotating from round to round):

  rbd bench --io-type read --io-size 4096 --io-threads 16 \\
      --io-pattern rand --io-total 1G rbd/bench-1g

with LD_PRELOAD choosing the allocator of the rbd process (glibc: none;
Debian's rbd and librbd link no malloc replacement).  Prints IOPS and
CPU per variant and per pair with glibc; see bench/cephbench.py for the
CPU accounting and the repeat rule.  Log: bench/out/rbd-bench.log.

Usage: rbd-bench.py [--rounds N] [--osds N] [--variants a,b,...]
"""
import argparse
import os
import re
import sys

import cephbench

LIBDIR = "/usr/lib/x86_64-linux-gnu"
PRELOAD = {
    "glibc": None,
    "tcmalloc": "libtcmalloc.so.4",            # what QEMU's tcmalloc build links
    "tcmalloc_minimal": "libtcmalloc_minimal.so.4",
    "jemalloc": "libjemalloc.so.2",
}
IMAGE = "rbd/bench-1g"
CMD = ["rbd", "bench", "--io-type", "read", "--io-size", "4096",
       "--io-threads", "16", "--io-pattern", "rand", "--io-total", "1G",
       IMAGE]


def parse(out):
    m = re.findall(r"elapsed:\s*([\d.]+)\s+ops:\s*(\d+)\s+ops/sec:\s*([\d.]+)",
                   out)
    if not m:
        raise RuntimeError("no summary line in rbd bench output: " + out[-300:])
    return {"iops": float(m[-1][2]), "ops": int(m[-1][1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--osds", type=int, default=1)
    ap.add_argument("--variants", default="glibc,tcmalloc,jemalloc")
    ap.add_argument("--max-others", type=float, default=0.08,
                    help="CPUs other processes may use during a run")
    ap.add_argument("--idle", type=float, default=0.15,
                    help="busy CPUs below which the machine counts as idle")
    args = ap.parse_args()
    os.makedirs(cephbench.OUT, exist_ok=True)
    log = cephbench.log_to(os.path.join(cephbench.OUT, "rbd-bench.log"))
    with cephbench.filled_image_cluster("rbd-bench", args.osds, IMAGE,
                                        log) as cluster:
        variants = []
        for v in args.variants.split(","):
            env = dict(cluster.env)
            if PRELOAD[v]:
                lib = os.path.join(LIBDIR, PRELOAD[v])
                if not os.path.exists(lib):
                    sys.exit("%s is missing (scripts/deps.sh)" % lib)
                env["LD_PRELOAD"] = lib
            variants.append((v, CMD, env))
        log("command: CEPH_CONF=%s [LD_PRELOAD=%s/<lib>] %s" % (
            cluster.conf, LIBDIR, " ".join(CMD)))
        log("variants: " + ", ".join("%s=%s" % (v, PRELOAD[v] or "none")
                                     for v, _, _ in variants))
        # one unmeasured run: caches and connections warm for everyone
        cephbench.measured_run(CMD, variants[0][2], cluster)
        res = cephbench.run_rounds(variants, args.rounds, cluster,
                                   parse, log, max_others=args.max_others,
                                   idle=args.idle)
        cephbench.report(res, "glibc", log)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Main-loop responsiveness during a release, and the cost of the stats query.

For each QEMU build given, one fresh QEMU per round:
  1. three concurrent backup jobs (256 MiB each, 2048 workers of 64 KiB,
     slow null-co targets) fill the heap with ~400 MiB of bounce buffers,
     then free them;
  2. x-query-allocator-stats is timed 500 times over QMP on that heap;
  3. an HMP monitor is pinged with "info status" (HMP's query-status)
     back to back; x-release-free-memory is sent on QMP meanwhile; the
     round trips that overlapped the release are compared with those
     before it.

A release done synchronously in the main loop, as a cleanup callback
holding the big QEMU lock would do it, blocks the main loop for the whole
release: its added round trip is the release's duration, reported as
"sync blocks ms".

Usage: qmp-bench.py [--rounds N] NAME=QEMU_BINARY...
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from qmplib import QMP, rss  # noqa: E402,F401

SIZE = 256 << 20
JOBS = 3


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))
    return values[k]


class HMP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buf = b""
        self.read_prompt()

    def read_prompt(self):
        while not self.buf.endswith(b"(qemu) "):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("HMP monitor closed")
            self.buf += chunk
        out, self.buf = self.buf, b""
        return out

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self.read_prompt()


def make_sources(work):
    paths = []
    for j in range(JOBS):
        path = os.path.join(work, "source%d.raw" % j)
        if not os.path.exists(path) or os.path.getsize(path) != SIZE:
            with open(path, "wb") as f:
                for i in range(SIZE >> 20):
                    f.write(bytes([0x11 + (i + j) % 200]) * (1 << 20))
        paths.append(path)
    return paths


def one_round(qemu, work, sources):
    qmp_path = os.path.join(work, "qmp.sock")
    hmp_path = os.path.join(work, "hmp.sock")
    for p in (qmp_path, hmp_path):
        if os.path.exists(p):
            os.unlink(p)
    proc = subprocess.Popen(
        [qemu, "-machine", "none", "-nodefaults", "-display", "none",
         "-accel", "kvm", "-accel", "qtest",
         # measure the manual release: no automatic one after the backups
         "-object", "allocator-policy,id=policy,release-after-backup=off",
         "-chardev", "socket,id=hmp0,path=%s,server=on,wait=off" % hmp_path,
         "-mon", "chardev=hmp0,mode=readline",
         "-qmp", "unix:%s,server=on,wait=on" % qmp_path],
        stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(qmp_path):
            time.sleep(0.01)
        qmp = QMP(qmp_path)
        hmp = HMP(hmp_path)
        for j, src in enumerate(sources):
            qmp.cmd("blockdev-add", driver="raw", **{"node-name": "src%d" % j},
                    file={"driver": "file", "filename": src})
            qmp.cmd("blockdev-add", driver="null-co", size=SIZE,
                    **{"node-name": "dst%d" % j, "latency-ns": 50000000})
        for j in range(JOBS):
            qmp.cmd("blockdev-backup", device="src%d" % j, target="dst%d" % j,
                    sync="full",
                    **{"job-id": "job%d" % j,
                       "x-perf": {"use-copy-range": False,
                                  "max-workers": 2048, "max-chunk": 65536}})
        while qmp.count_events("BLOCK_JOB_COMPLETED") < JOBS:
            qmp.cmd("query-status")
            time.sleep(0.02)

        # The stats query on that heap
        query = []
        for _ in range(500):
            t0 = time.perf_counter()
            info = qmp.cmd("x-query-allocator-stats")
            query.append((time.perf_counter() - t0) * 1e6)
        status = []
        for _ in range(500):
            t0 = time.perf_counter()
            qmp.cmd("query-status")
            status.append((time.perf_counter() - t0) * 1e6)
        releasable = info["stats"]["releasable"]

        # HMP pings before and during the release
        pings = []
        stop = threading.Event()

        def pinger():
            while not stop.is_set():
                t0 = time.perf_counter()
                hmp.cmd("info status")
                pings.append((t0, time.perf_counter()))

        th = threading.Thread(target=pinger)
        th.start()
        time.sleep(0.3)
        t_send = time.perf_counter()
        qmp.send("x-release-free-memory")
        result = qmp.receive()
        t_done = time.perf_counter()
        time.sleep(0.05)
        stop.set()
        th.join()
        before = [(b - a) * 1e3 for a, b in pings if b < t_send]
        during = [(b - a) * 1e3 for a, b in pings
                  if b > t_send and a < t_done]
        rel = result["release"]
        qmp.cmd("quit")
        return {
            "backend": rel["backend"],
            "releasable_mib": releasable / 2**20,
            "returned_mib": rel["returned"] / 2**20,
            "release_ms": rel["duration-us"] / 1e3,
            "longest_step_ms": rel["longest-step-us"] / 1e3,
            "rtt_before_p50_ms": pct(before, 50),
            "rtt_before_p99_ms": pct(before, 99),
            "rtt_during_p50_ms": pct(during, 50),
            "rtt_during_p99_ms": pct(during, 99),
            "rtt_during_max_ms": max(during) if during else float("nan"),
            "pings_during": len(during),
            "query_p50_us": pct(query, 50),
            "query_p99_us": pct(query, 99),
            "status_p50_us": pct(status, 50),
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
    work = tempfile.mkdtemp(prefix="qmp-bench-")
    sources = make_sources(work)
    rows = {}
    for r in range(args.rounds):
        for name, qemu in builds:
            res = one_round(qemu, work, sources)
            rows.setdefault(name, []).append(res)
            print("round %d %s: %s" % (r + 1, name, json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v
                 for k, v in res.items()})), flush=True)
    cols = [("releasable_mib", "releasable MiB"),
            ("returned_mib", "returned MiB"),
            ("release_ms", "release ms = sync blocks ms"),
            ("longest_step_ms", "longest step ms"),
            ("rtt_before_p50_ms", "HMP RTT before p50 ms"),
            ("rtt_before_p99_ms", "before p99 ms"),
            ("rtt_during_p50_ms", "HMP RTT during p50 ms"),
            ("rtt_during_p99_ms", "during p99 ms"),
            ("rtt_during_max_ms", "during max ms"),
            ("pings_during", "pings during"),
            ("query_p50_us", "stats query RTT p50 us"),
            ("query_p99_us", "p99 us"),
            ("status_p50_us", "query-status RTT p50 us")]
    print("\nMedians over %d rounds:\n" % args.rounds)
    print("| build | " + " | ".join(c[1] for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, _ in builds:
        cells = []
        for k, _ in cols:
            v = statistics.median(x[k] for x in rows[name])
            cells.append("%.0f" % v if k.endswith(("_us", "_mib")) or
                         k == "pings_during" else "%.2f" % v)
        print("| %s | %s |" % (name, " | ".join(cells)))
    for f in os.listdir(work):
        os.unlink(os.path.join(work, f))
    os.rmdir(work)


if __name__ == "__main__":
    main()

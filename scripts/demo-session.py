#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Show the feature on a live QEMU: fill its heap with a real workload (a
backup job with many parallel workers), then show the allocator statistics,
a release, and the statistics after, through QMP and HMP.

Usage: demo-session.py QEMU_BINARY WORKDIR
"""
import json
import os
import socket
import subprocess
import sys
import time

SIZE = 256 << 20


def mib(n):
    return "%.1f MiB" % (n / (1 << 20))


class QMP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
        self.events = []
        json.loads(self.file.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            msg = json.loads(self.file.readline())
            if "event" in msg:
                self.events.append(msg)
                continue
            if "error" in msg:
                raise RuntimeError("%s: %s" % (name, msg["error"]["desc"]))
            return msg["return"]

    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})

    def wait_event(self, name):
        while not any(e["event"] == name for e in self.events):
            self.cmd("query-status")
            time.sleep(0.05)
        return [e for e in self.events if e["event"] == name][-1]


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) << 10
    return 0


def main():
    qemu, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "source.raw")
    sock = os.path.join(work, "qmp.sock")
    if not os.path.exists(src) or os.path.getsize(src) != SIZE:
        with open(src, "wb") as f:
            for i in range(SIZE >> 20):
                f.write(bytes([0x11 + i % 200]) * (1 << 20))
    if os.path.exists(sock):
        os.unlink(sock)
    # This build has no TCG: KVM where there is one, else the qtest accelerator
    proc = subprocess.Popen([qemu, "-machine", "none", "-nodefaults",
                             "-accel", "kvm", "-accel", "qtest",
                             "-display", "none",
                             "-qmp", "unix:%s,server=on,wait=on" % sock])
    try:
        while not os.path.exists(sock):
            time.sleep(0.01)
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
        qmp.wait_event("BLOCK_JOB_COMPLETED")
        print("backup completed; RSS now %s" % mib(rss(proc.pid)))

        print("\n-- (qemu) info allocator")
        print(qmp.hmp("info allocator").rstrip())
        print("\n-- x-release-free-memory (QMP)")
        ret = qmp.cmd("x-release-free-memory")
        print(json.dumps(ret["release"], indent=2))
        print("\n-- ALLOCATOR_MEMORY_RELEASED event")
        print(json.dumps(qmp.wait_event("ALLOCATOR_MEMORY_RELEASED")["data"]))
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

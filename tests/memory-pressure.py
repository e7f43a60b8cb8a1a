#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Releases while QEMU runs near a cgroup memory limit.

Starts the QEMU in $QTEST_QEMU_BINARY, puts it in a memory cgroup this
test creates (v2, or v1's memory controller) with a limit 192 MiB above
its resident memory, and backs up twice: each backup fills the allocator
with bounce buffers, and QEMU's automatic release after it returns them.
Checks: the cgroup's limit is reached (QEMU's page cache and bounce
buffers are charged to it), QEMU is never OOM-killed, an automatic release follows each
backup and RSS comes down from its peak, and QEMU still answers.  Speaks TAP; skips with the reason
where no writable memory cgroup exists.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from qmplib import QMP, rss, start_qemu  # noqa: E402
from taplib import results, skip, tap  # noqa: E402

SIZE = 256 << 20
HEADROOM = 192 << 20
def find_cgroup_root():
    """(kind, directory) of a memory cgroup hierarchy we may write."""
    v2 = "/sys/fs/cgroup"
    try:
        with open(os.path.join(v2, "cgroup.controllers")) as f:
            if "memory" in f.read().split() and os.access(v2, os.W_OK):
                return "v2", v2
    except OSError:
        pass
    v1 = "/sys/fs/cgroup/memory"
    if os.path.exists(os.path.join(v1, "memory.limit_in_bytes")) and \
            os.access(v1, os.W_OK):
        return "v1", v1
    return None, None


class Cgroup:
    def __init__(self, kind, root):
        self.kind = kind
        self.path = os.path.join(root, "qemu-reclaim-test-%d" % os.getpid())
        os.mkdir(self.path)

    def write(self, name, value):
        with open(os.path.join(self.path, name), "w") as f:
            f.write(str(value))

    def read(self, name):
        with open(os.path.join(self.path, name)) as f:
            return f.read()

    def set_limit(self, limit):
        self.write("memory.max" if self.kind == "v2" else
                   "memory.limit_in_bytes", limit)

    def add(self, pid):
        self.write("cgroup.procs", pid)

    def oom_kills(self):
        if self.kind == "v2":
            for line in self.read("memory.events").splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
            return 0
        for line in self.read("memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def pressure(self):
        """(times the limit was hit, peak usage in bytes): v2's
        memory.events "max" and memory.peak, v1's failcnt and
        max_usage_in_bytes."""
        if self.kind == "v2":
            hits = 0
            for line in self.read("memory.events").splitlines():
                if line.startswith("max "):
                    hits = int(line.split()[1])
            try:
                peak = int(self.read("memory.peak"))
            except OSError:     # before Linux 5.19
                peak = 0
            return hits, peak
        return (int(self.read("memory.failcnt")),
                int(self.read("memory.max_usage_in_bytes")))

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def main():
    qemu = os.environ.get("QTEST_QEMU_BINARY")
    if not qemu:
        print("1..0 # SKIP QTEST_QEMU_BINARY is not set")
        return 0
    kind, root = find_cgroup_root()
    if not kind:
        print("1..0 # SKIP no writable memory cgroup on this machine")
        return 0
    print("1..7")
    work = tempfile.mkdtemp(prefix="memory-pressure-")
    src = os.path.join(work, "source.raw")
    with open(src, "wb") as f:
        for i in range(SIZE >> 20):
            f.write(bytes([0x41 + i % 100]) * (1 << 20))
        # Out of the page cache: QEMU's reads then charge its own cgroup,
        # whose page cache and bounce buffers together reach the limit
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    sock = os.path.join(work, "qmp.sock")
    proc = start_qemu(qemu, sock, [])
    cg = Cgroup(kind, root)
    try:
        # a QEMU that stops answering fails the test instead of hanging it
        qmp = QMP(sock, timeout=120)
        can_release = qmp.cmd("x-query-allocator-stats")["backend"] != "system"
        cg.add(proc.pid)
        limit = rss(proc.pid) + HEADROOM
        cg.set_limit(limit)
        qmp.cmd("blockdev-add", driver="raw", **{"node-name": "src"},
                file={"driver": "file", "filename": src})
        qmp.cmd("blockdev-add", driver="null-co", size=SIZE,
                **{"node-name": "dst", "latency-ns": 50000000})
        drops = []
        for rnd in range(2):
            qmp.cmd("blockdev-backup", device="src", target="dst",
                    sync="full",
                    **{"job-id": "job%d" % rnd,
                       "x-perf": {"use-copy-range": False,
                                  "max-workers": 2048, "max-chunk": 65536}})
            deadline = time.monotonic() + 300
            peak = 0
            while qmp.count_events("BLOCK_JOB_COMPLETED") <= rnd:
                if time.monotonic() > deadline:
                    raise RuntimeError("backup %d did not end in 300 s" % rnd)
                peak = max(peak, rss(proc.pid))
                qmp.cmd("query-status")
                time.sleep(0.02)
            if can_release:
                while qmp.count_events("ALLOCATOR_MEMORY_RELEASED") <= rnd:
                    if time.monotonic() > deadline:
                        raise RuntimeError("no automatic release after "
                                           "backup %d" % rnd)
                    qmp.cmd("query-status")
                    time.sleep(0.02)
                ev = [e for e in qmp.events
                      if e["event"] == "ALLOCATOR_MEMORY_RELEASED"][rnd]
                drops.append((peak - rss(proc.pid), ev["data"]["trigger"]))
        errors = [e["data"]["error"] for e in qmp.events
                  if e["event"] == "BLOCK_JOB_COMPLETED" and "error" in e["data"]]
        tap(proc.poll() is None and not errors, "QEMU survived two backups "
            "%d MiB from its limit, both complete" % (HEADROOM >> 20),
            "; ".join(errors) or None)
        hits, peak = cg.pressure()
        tap(hits > 0 or peak >= 0.9 * limit, "the cgroup's limit was reached",
            "limit hit %d times; peak usage %.1f MiB of a %.1f MiB limit"
            % (hits, peak / 2**20, limit / 2**20))
        tap(cg.oom_kills() == 0, "no OOM kill in the cgroup")
        if can_release:
            tap(all(d > 0 for d, _ in drops), "RSS came down from its peak "
                "after each backup",
                "RSS drops (MiB): %s" % [round(d / 2**20, 1) for d, _ in drops])
            tap(all(t == "automatic" for _, t in drops), "an automatic "
                "release followed each backup")
        else:
            skip("RSS came down from its peak after each backup",
                 "this build's allocator cannot release")
            skip("an automatic release followed each backup",
                 "this build's allocator cannot release")
        tap(rss(proc.pid) < limit, "RSS ends below the limit")
        tap(qmp.cmd("query-status")["status"] in ("running", "prelaunch"),
            "QEMU still answers")
        qmp.cmd("quit")
        proc.wait(timeout=30)
    except Exception as e:   # report, never hang
        tap(False, "test aborted: %s" % e)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cg.remove()
        for f in os.listdir(work):
            os.unlink(os.path.join(work, f))
        os.rmdir(work)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

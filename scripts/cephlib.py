# SPDX-License-Identifier: GPL-2.0-or-later
"""The local Ceph cluster and CPU accounting, for the rbd test and benches.

The cluster itself is scripts/ceph-cluster.sh's business; this only
drives it and reads what it leaves in its directory (conf, pid files).
"""
import os
import re
import subprocess
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CLUSTER_SH = os.path.join(TOP, "scripts", "ceph-cluster.sh")
HZ = os.sysconf("SC_CLK_TCK")


class Cluster:
    """A cluster in DIR, started and stopped by scripts/ceph-cluster.sh."""

    def __init__(self, path, osds=1):
        self.dir = path
        self.osds = osds
        self.conf = os.path.join(path, "ceph.conf")
        self.env = dict(os.environ, CEPH_CONF=self.conf)

    def start(self):
        """Start (or find running) the cluster; on failure raise with what
        the script said about it (the daemon and its log lines)."""
        t0 = time.monotonic()
        r = subprocess.run([CLUSTER_SH, "start", self.dir,
                            "--osds", str(self.osds)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        if r.returncode:
            lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
            failed = [ln for ln in lines if ln.startswith("FAILED")]
            raise RuntimeError((failed or lines or ["no output"])[-1] +
                               " | " + " | ".join(lines[-4:]))
        self.start_output = r.stdout
        return time.monotonic() - t0

    def stop(self, purge=True):
        args = [CLUSTER_SH, "stop", self.dir] + (["--purge"] if purge else [])
        subprocess.run(args, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def run(self, *args, **kw):
        """A ceph/rbd CLI command against this cluster."""
        return subprocess.run(list(args), env=self.env, check=True,
                              universal_newlines=True, **kw)

    def daemon_pids(self):
        """{"mon.a": pid, "osd.0": pid, ...} of the daemons that run."""
        pids = {}
        run = os.path.join(self.dir, "run")
        for f in sorted(os.listdir(run)) if os.path.isdir(run) else []:
            if f.endswith(".pid"):
                with open(os.path.join(run, f)) as fh:
                    pid = int(fh.read().strip() or 0)
                if pid and os.path.exists("/proc/%d" % pid):
                    pids[f[:-4]] = pid
        return pids

    def osd_allocator(self):
        """The malloc the OSDs run with, from their mappings."""
        found = set()
        for name, pid in self.daemon_pids().items():
            if not name.startswith("osd."):
                continue
            with open("/proc/%d/maps" % pid) as f:
                maps = f.read()
            found.add("tcmalloc" if "libtcmalloc" in maps else
                      "jemalloc" if "libjemalloc" in maps else "glibc")
        return ",".join(sorted(found)) or "-"


def write_pattern(path, size):
    """A deterministic pattern in which every 4 KiB block is different
    (its index and a running byte), so that a misplaced block shows."""
    block = 4096
    with open(path, "wb") as f:
        chunk = []
        for i in range(size // block):
            head = i.to_bytes(8, "little")
            chunk.append((head + bytes([i % 251]) * 56) * (block // 64))
            if len(chunk) == 256:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))


def files_equal(a, b):
    """(equal, first differing offset or None)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            x = fa.read(1 << 20)
            y = fb.read(1 << 20)
            if x != y:
                for i in range(min(len(x), len(y))):
                    if x[i] != y[i]:
                        return False, off + i
                return False, off + min(len(x), len(y))
            if not x:
                return True, None
            off += len(x)


def proc_cpu_s(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ


def machine_cpu_s():
    """(busy, total) CPU seconds of the whole machine since boot, from the
    first line of /proc/stat.  Busy is user, nice, system, irq and softirq
    (guest time is already in user); idle, iowait and steal are not."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy / HZ, sum(v[:8]) / HZ


def wait_idle(max_busy_cpus=0.15, deadline_s=600, window_s=2.0, log=None):
    """Wait until the machine is idle: fewer than max_busy_cpus CPUs busy
    over window_s.  Returns the busy figure seen last (CPUs).  Gives up
    after deadline_s and says so (the run is then marked by its CPU log)."""
    end = time.monotonic() + deadline_s
    said = False
    while True:
        b0, _ = machine_cpu_s()
        time.sleep(window_s)
        b1, _ = machine_cpu_s()
        busy = (b1 - b0) / window_s
        if busy < max_busy_cpus or time.monotonic() > end:
            return busy
        if log and not said:
            log("waiting for an idle machine (%.2f CPUs busy)" % busy)
            said = True

def has_rbd(qemu_img):
    """Whether a build has the rbd block driver: its qemu-img lists the
    drivers compiled in (the same block layer), as "Supported formats: a b"
    (QEMU <= 10.0) or "Supported image formats:" and the lines below (10.2)."""
    try:
        out = subprocess.run([qemu_img, "--help"], stdout=subprocess.PIPE,
                             universal_newlines=True).stdout
    except OSError:
        return False
    m = re.search(r"^Supported (?:image )?formats:(.*?)(?:^\S|\Z)", out,
                  re.M | re.S)
    return bool(m) and "rbd" in m.group(1).split()

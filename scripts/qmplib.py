# SPDX-License-Identifier: GPL-2.0-or-later
"""A small QMP client and process helpers for the demo, tests and benches.

Not the operator tool: just enough to drive one QEMU from a script.
"""
import json
import os
import socket
import subprocess
import time


def connect_unix(path, timeout=None, deadline_s=10):
    """Connect to a listening unix socket.  QEMU creates the file with
    bind() before it calls listen(): until then a connect is refused."""
    end = time.monotonic() + deadline_s
    while True:
        sock = socket.socket(socket.AF_UNIX)
        if timeout:
            sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.01)


class QMP:
    """One QMP connection; events are kept in .events as they arrive."""

    def __init__(self, path, timeout=None):
        self.sock = connect_unix(path, timeout)
        # Read-only file; commands go out with sendall().  A text file
        # opened "rw" on a socket drops the lines it has read ahead (an
        # event that came in the same chunk as a reply) at the next write:
        # TextIOWrapper.write() discards its decoded read buffer.
        self.file = self.sock.makefile("r")
        self.events = []
        json.loads(self.file.readline())  # greeting
        self.cmd("qmp_capabilities")

    def close(self):
        self.sock.close()

    def send(self, name, **args):
        self.sock.sendall((json.dumps({"execute": name, "arguments": args})
                           + "\n").encode())

    def receive(self):
        while True:
            line = self.file.readline()
            if not line:
                raise RuntimeError("QEMU closed the connection")
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)
                continue
            if "error" in msg:
                raise RuntimeError(msg["error"]["desc"])
            return msg["return"]

    def cmd(self, name, **args):
        self.send(name, **args)
        return self.receive()

    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})

    def wait_event(self, name, n=1, timeout=300):
        """The n-th event `name` (the whole message), once it has come;
        QEMU is asked for its status meanwhile, which reads what it sent."""
        deadline = time.monotonic() + timeout
        while self.count_events(name) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("no %s number %d within %d s"
                                   % (name, n, timeout))
            self.cmd("query-status")
            time.sleep(0.02)
        return [e for e in self.events if e["event"] == name][n - 1]

    def count_events(self, name):
        return sum(1 for e in self.events if e["event"] == name)


def rss(pid):
    """VmRSS of a process, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) << 10
    return 0


def start_qemu(qemu, qmp_path, extra=(), deadline_s=30, accel="qtest",
               log=None):
    """Start QEMU (machine none, KVM or else `accel`) with a QMP socket;
    wait until the socket exists.  Our builds have no TCG, so "qtest";
    Debian's QEMU 7.2 has no qtest, so "tcg".  With `log`, QEMU's stderr
    goes there and a QEMU that does not come up says why.  Returns the
    Popen object."""
    if os.path.exists(qmp_path):
        os.unlink(qmp_path)
    err = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [qemu, "-machine", "none", "-nodefaults", "-display", "none",
         "-accel", "kvm", "-accel", accel] + list(extra) +
        ["-qmp", "unix:%s,server=on,wait=on" % qmp_path],
        stderr=err)
    if log:
        err.close()
    end = time.monotonic() + deadline_s
    while not os.path.exists(qmp_path):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            proc.wait()
            why = ""
            if log:
                with open(log) as f:
                    why = ": " + " | ".join(f.read().splitlines()[-3:])
            raise RuntimeError("QEMU did not start (exit %s)%s" % (
                proc.returncode, why))
        time.sleep(0.01)
    return proc

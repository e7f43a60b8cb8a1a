# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers shared by the QEMU benches (qmp-bench, backup-bench, soak-bench,
rbd-backup-bench): an asynchronous QMP client that timestamps what it
receives, a client for an HMP monitor on its own socket, the idle-time
release counter, source files, medians that skip what a build does not
report.
"""
import json
import os
import queue
import re
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from qmplib import QMP, rss, start_qemu  # noqa: E402,F401

# What tests/qtest/allocator-test.c sets for its backups: glibc would
# otherwise return what is at the top of its heap by itself at free().
GLIBC_NO_TRIM = "glibc.malloc.trim_threshold=4294967296"


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


class AsyncQMP:
    """A QMP connection read by a thread: replies and events are stamped
    with time.time() when they arrive, so events can be waited for while
    other work goes on and compared with QEMU's own timestamps (both are
    CLOCK_REALTIME on the same host)."""

    def __init__(self, path, timeout=60):
        self.sock = connect_unix(path)
        self.file = self.sock.makefile("rb")
        self.timeout = timeout
        self.replies = queue.Queue()
        self.events = []            # (arrival time, message)
        self.cond = threading.Condition()
        self.closed = False
        self.greeting = json.loads(self.file.readline())
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()
        self.cmd("qmp_capabilities")

    def _reader(self):
        try:
            for line in self.file:
                t = time.time()
                msg = json.loads(line)
                if "event" in msg:
                    with self.cond:
                        self.events.append((t, msg))
                        self.cond.notify_all()
                else:
                    self.replies.put((t, msg))
        except (OSError, ValueError):
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.replies.put(None)

    def send(self, name, **args):
        """Send a command; returns when it was sent (time.time())."""
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        t = time.time()
        self.sock.sendall((json.dumps(msg) + "\n").encode())
        return t

    def reply(self, timeout=None):
        """The next reply: (arrival time, return value).  Raises
        CommandNotFound / RuntimeError for errors."""
        try:
            got = self.replies.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise RuntimeError("no reply from QEMU in %s s"
                               % (timeout or self.timeout))
        if got is None:
            raise RuntimeError("QEMU closed the connection")
        t, msg = got
        if "error" in msg:
            if msg["error"].get("class") == "CommandNotFound":
                raise CommandNotFound(msg["error"]["desc"])
            raise RuntimeError(msg["error"]["desc"])
        return t, msg["return"]

    def cmd(self, name, **args):
        self.send(name, **args)
        return self.reply()[1]

    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})

    def wait_event(self, pred, since=0, timeout=None):
        """The first event from index `since` on for which pred(msg) is
        true: (index, arrival time, message); None after the timeout."""
        end = time.monotonic() + (timeout or self.timeout)
        with self.cond:
            i = since
            while True:
                while i < len(self.events):
                    t, msg = self.events[i]
                    if pred(msg):
                        return i, t, msg
                    i += 1
                left = end - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(left)

    def find_events(self, name, since=0):
        with self.cond:
            return [(t, m) for t, m in self.events[since:]
                    if m["event"] == name]

    def count_events(self, name):
        return len(self.find_events(name))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class CommandNotFound(RuntimeError):
    pass


class SyncQMP(QMP):
    """scripts/qmplib.py's QMP, connected with connect_unix()."""

    def __init__(self, path, timeout=None):
        # what QMP.__init__ does, on a socket connected with retries
        self.sock = connect_unix(path, timeout)
        self.file = self.sock.makefile("r")
        self.events = []
        json.loads(self.file.readline())  # greeting
        self.cmd("qmp_capabilities")

    def close(self):
        self.sock.close()


class HMP:
    """An HMP monitor on its own socket (-monitor unix:PATH,server=on,
    wait=off): a command is sent, the answer read up to the next prompt."""

    PROMPT = b"(qemu) "

    def __init__(self, path, timeout=60):
        self.sock = connect_unix(path, timeout)
        self.buf = b""
        self.greeting = self.read_prompt()

    def read_prompt(self):
        while not self.buf.endswith(self.PROMPT):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("HMP monitor closed")
            self.buf += chunk
        out, self.buf = self.buf, b""
        return out

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self.read_prompt()

    def close(self):
        self.sock.close()


def wait_for_socket(path, proc, deadline_s=30):
    end = time.monotonic() + deadline_s
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError("QEMU did not create %s" % path)
        time.sleep(0.01)


def idle_releases(qmp):
    """The RCU thread's idle-time releases so far.  QMP has no such
    counter in v2; HMP's "info allocator" printed one ("N idle-time") in
    the first v2 builds, and the current v2 sources count them nowhere.
    None where QEMU does not say (those sources, or unpatched)."""
    try:
        out = qmp.hmp("info allocator")
    except RuntimeError:
        return None
    m = re.search(r"(\d+) idle-time", out)
    return int(m.group(1)) if m else None


def allocator_info(qmp):
    """x-query-allocator-stats, or None for a QEMU without it (AsyncQMP
    or qmplib's QMP, which keeps only the error's text)."""
    try:
        return qmp.cmd("x-query-allocator-stats")
    except CommandNotFound:
        return None
    except RuntimeError as e:
        if "has not been found" in str(e):
            return None
        raise


def make_source(path, size, seed=0):
    """A raw file full of data (not a hole: the backup reads it all)."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    with open(path, "wb") as f:
        for i in range(size >> 20):
            f.write(bytes([0x11 + (i + seed) % 200]) * (1 << 20))
    return path


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, f="%.1f"):
    if v is None:
        return "-"
    if v == float("inf"):
        return "never"
    return f % v

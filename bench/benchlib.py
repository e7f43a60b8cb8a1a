# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers shared by the QEMU benches (qmp-bench, backup-bench, soak-bench,
guest-bench, hook-cost, rbd-backup-bench): an asynchronous QMP client that
timestamps what it receives, a client for an HMP monitor on its own
socket, the idle-time release counter (an LD_PRELOAD shim whose counts a
bench reads while QEMU runs; its selftest: python3 bench/benchlib.py),
source files, medians that skip what a build does not report.
"""
import bisect
import contextlib
import ctypes.util
import json
import os
import queue
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "scripts"))
from qmplib import QMP, connect_unix, rss, start_qemu  # noqa: E402,F401

# What tests/qtest/allocator-test.c sets for its backups: glibc would
# otherwise return what is at the top of its heap by itself at free().
GLIBC_NO_TRIM = "glibc.malloc.trim_threshold=4294967296"


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


# scripts/qmplib.py's QMP connects with retries and has close() now
SyncQMP = QMP


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


# --- the RCU thread's idle-time releases, counted from outside ------------
#
# QEMU counts its releases (x-query-allocator-stats), but not what its idle
# hook does: qemu_allocator_idle(), called by the RCU thread each time it
# runs out of callbacks, calls malloc_trim(4 MiB) in glibc builds (as
# upstream's RCU thread always did), mallctl("arena.<all>.decay") in
# jemalloc builds and nothing in tcmalloc builds.  Those calls can return
# memory before the release does, so the benches count them with an
# LD_PRELOAD shim, in every build alike (an unpatched QEMU's RCU thread
# calls malloc_trim(4 MiB) too).

IDLE_COUNTER_C = r"""
/*
 * LD_PRELOAD shim of the QEMU benches (bench/benchlib.py).  Counts
 *   malloc_trim(pad != 0)   glibc's idle trim (QEMU's RCU thread: 4 MiB)
 *   malloc_trim(0)          glibc's release (x-release-free-memory, the
 *                           automatic release)
 *   mallctl("*.decay")      jemalloc's idle decay (arena.<all>.decay)
 *   mallctl("*.purge")      jemalloc's release (arena.<i>.purge, per arena)
 * and calls the real function (dlsym(RTLD_NEXT)), when there is one.
 * The counters are 64-bit words in the first bytes of the file named by
 * QR_IDLE_COUNTER_FILE, mapped MAP_SHARED: a bench reads them whenever it
 * likes while QEMU runs.  A call is counted when it starts.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    SLOT_MAGIC,             /* stored last: the counters are live */
    SLOT_ATTACHED,          /* processes that mapped the file: 1 */
    SLOT_PID,               /* the last one of them */
    SLOT_IDLE_TRIMS,
    SLOT_RELEASE_TRIMS,
    SLOT_IDLE_DECAYS,
    SLOT_RELEASE_PURGES,
    SLOTS
};

#define MAGIC 0x31454c44495251ull      /* "QRIDLE1\0", little-endian */
#define FILE_SIZE 4096

/* Without the file (or before it is mapped) calls are counted here */
static uint64_t local_slots[SLOTS];
static uint64_t *slots = local_slots;
static pthread_once_t attach_once = PTHREAD_ONCE_INIT;

static void attach(void)
{
    const char *path = getenv("QR_IDLE_COUNTER_FILE");
    struct stat st;
    uint64_t *map;
    int fd;

    if (!path || !*path) {
        return;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return;
    }
    if (fstat(fd, &st) ||
        (st.st_size < FILE_SIZE && ftruncate(fd, FILE_SIZE))) {
        close(fd);
        return;
    }
    map = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        return;
    }
    __atomic_add_fetch(&map[SLOT_ATTACHED], 1, __ATOMIC_RELAXED);
    __atomic_store_n(&map[SLOT_PID], (uint64_t)getpid(), __ATOMIC_RELAXED);
    __atomic_store_n(&map[SLOT_MAGIC], MAGIC, __ATOMIC_RELEASE);
    slots = map;
    /*
     * Programs that QEMU runs inherit LD_PRELOAD; they must not add to
     * QEMU's counts.  This runs in the constructor, before QEMU has
     * threads that could read the environment meanwhile.
     */
    unsetenv("QR_IDLE_COUNTER_FILE");
}

__attribute__((constructor)) static void idle_counter_init(void)
{
    pthread_once(&attach_once, attach);
}

static void count(int slot)
{
    /* Another library's constructor may call before ours has run */
    pthread_once(&attach_once, attach);
    __atomic_add_fetch(&slots[slot], 1, __ATOMIC_RELAXED);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && !strcmp(s + n - m, suffix);
}

/* The next definition after ours; NULL where there is none */
static void *real(void **cache, const char *name)
{
    void *fn = __atomic_load_n(cache, __ATOMIC_ACQUIRE);

    if (!fn) {
        fn = dlsym(RTLD_NEXT, name);
        __atomic_store_n(cache, fn, __ATOMIC_RELEASE);
    }
    return fn;
}

/*
 * tcmalloc (gperftools) has no malloc_trim: there the next one is glibc's,
 * which trims glibc's nearly unused arenas, as a call without the shim
 * would.  QEMU's tcmalloc builds call neither function.
 */
int malloc_trim(size_t pad)
{
    static void *cache;
    int (*fn)(size_t) = (int (*)(size_t))real(&cache, "malloc_trim");

    count(pad ? SLOT_IDLE_TRIMS : SLOT_RELEASE_TRIMS);
    return fn ? fn(pad) : 0;
}

/* jemalloc's unprefixed mallctl, which QEMU's jemalloc builds import */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp,
            size_t newlen)
{
    static void *cache;
    int (*fn)(const char *, void *, size_t *, void *, size_t) =
        (int (*)(const char *, void *, size_t *, void *, size_t))
        real(&cache, "mallctl");

    if (name && ends_with(name, ".decay")) {
        count(SLOT_IDLE_DECAYS);
    } else if (name && ends_with(name, ".purge")) {
        count(SLOT_RELEASE_PURGES);
    }
    return fn ? fn(name, oldp, oldlenp, newp, newlen) : ENOENT;
}
"""

IDLE_COUNTER_MAGIC = 0x31454c44495251       # "QRIDLE1\0"
IDLE_COUNTER_FIELDS = ("idle_trims", "release_trims", "idle_decays",
                       "release_purges")
BENCH_BUILD = os.path.join(TOP, "build", "bench")


def idle_counter_so():
    """The shim, compiled once into build/bench/ and again only when its
    source above changed.  Benches may run side by side: each compiles to
    names of its own and renames, so none loads a half-written file."""
    os.makedirs(BENCH_BUILD, exist_ok=True)
    src = os.path.join(BENCH_BUILD, "idle-counter.c")
    so = os.path.join(BENCH_BUILD, "idle-counter.so")
    try:
        with open(src) as f:
            same = f.read() == IDLE_COUNTER_C
        if same and os.path.getmtime(so) >= os.path.getmtime(src):
            return so
    except OSError:
        pass
    tmp_src = os.path.join(BENCH_BUILD, "idle-counter.%d.c" % os.getpid())
    tmp_so = tmp_src[:-2] + ".so"
    with open(tmp_src, "w") as f:
        f.write(IDLE_COUNTER_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror",
                    "-o", tmp_so, tmp_src, "-ldl", "-pthread"], check=True)
    # the source last: an interrupted build leaves a mismatch, not a match
    os.replace(tmp_so, so)
    os.replace(tmp_src, src)
    return so


class IdleCounter:
    """The counts of the shim in one QEMU process, readable at any time.

    Start QEMU with env() (subprocess) or inside preloaded() (code that
    passes os.environ on: start_qemu(), guestlib's Guest).  A new counter
    starts from zero.  The first process that loads the shim owns the
    counter (the shim removes the variable from its environment, so that
    what QEMU runs counts nowhere): start QEMU itself, not a wrapper such
    as nice, which would take it; read()'s "pid" says who has it."""

    SIZE = 4096
    WORDS = 3 + len(IDLE_COUNTER_FIELDS)

    def __init__(self, path):
        self.so = idle_counter_so()
        self.path = path
        # A new file, not the old one truncated: a QEMU of an earlier
        # round that still maps it would get SIGBUS
        if os.path.exists(path):
            os.unlink(path)
        with open(path, "wb") as f:
            f.write(bytes(self.SIZE))

    def env(self, base=None):
        env = dict(os.environ if base is None else base)
        env["LD_PRELOAD"] = " ".join(x for x in (self.so,
                                                 env.get("LD_PRELOAD")) if x)
        env["QR_IDLE_COUNTER_FILE"] = self.path
        return env

    @contextlib.contextmanager
    def preloaded(self):
        keys = ("LD_PRELOAD", "QR_IDLE_COUNTER_FILE")
        saved = {k: os.environ.get(k) for k in keys}
        new = self.env()
        os.environ.update({k: new[k] for k in keys})
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def read(self):
        """{field: count, "idle": trims + decays, "release": trims +
        purges, "attached": processes, "pid": ...}; None while no process
        has mapped the file (not started yet, or the shim not loaded)."""
        with open(self.path, "rb") as f:
            words = struct.unpack("<%dQ" % self.WORDS,
                                  f.read(8 * self.WORDS))
        if words[0] != IDLE_COUNTER_MAGIC:
            return None
        counts = dict(zip(IDLE_COUNTER_FIELDS, words[3:]))
        counts.update(attached=words[1], pid=words[2],
                      idle=counts["idle_trims"] + counts["idle_decays"],
                      release=counts["release_trims"] +
                      counts["release_purges"])
        return counts


def idle_releases(counter):
    """The idle hook's calls so far (malloc_trim(pad != 0) + decays), for
    a QEMU started with `counter`.  QEMU itself counts them nowhere, so
    None for anything else (bench/rbd-backup-bench.py still passes its
    QMP connection: its QEMU runs without the shim)."""
    if not isinstance(counter, IdleCounter):
        return None
    counts = counter.read()
    return counts["idle"] if counts else None


class IdleSampler(threading.Thread):
    """The counter read every `interval` s, stamped with time.time(), so
    that the calls in a window are known afterwards, once QEMU's events
    have said when the window was (their timestamps are CLOCK_REALTIME
    too).  A window's count is exact up to calls in the last `interval`
    before either of its ends."""

    def __init__(self, counter, interval=0.005):
        super().__init__(daemon=True)
        self.counter = counter
        self.interval = interval
        self.samples = []           # (time.time(), counts)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            counts = self.counter.read()
            if counts is not None:
                self.samples.append((time.time(), counts))
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join()

    def at(self, t):
        """The counts last read at or before t; None before the first."""
        i = bisect.bisect_right([s[0] for s in self.samples], t)
        return self.samples[i - 1][1] if i else None

    def between(self, t0, t1, key="idle"):
        a, b = self.at(t0), self.at(t1)
        return b[key] - a[key] if a and b else None


def idle_counter_selftest():
    """Load the shim into a Python process that calls malloc_trim() and
    mallctl() through ctypes, read the counts while it runs, and check
    that they are sorted into idle and release, that a real function is
    called where there is one, and that the variable is gone from the
    process's environment."""
    child = r"""
import ctypes, ctypes.util, os, sys
c = ctypes.CDLL(None)
c.mallctl.argtypes = ([ctypes.c_char_p] + [ctypes.c_void_p] * 3 +
                      [ctypes.c_size_t])
for pad in (0, 4 << 20, 1):
    c.malloc_trim(ctypes.c_size_t(pad))
rc = [c.mallctl(n, None, None, None, 0) for n in
      (b"arena.4096.decay", b"arena.0.purge", b"arena.1.purge", b"epoch",
       b"arena.0.dirty_decay_ms")]
print(" ".join(map(str, rc)), "QR_IDLE_COUNTER_FILE" in os.environ,
      flush=True)
sys.stdin.read()
"""
    jemalloc = ctypes.util.find_library("jemalloc")
    tmp = tempfile.mkdtemp(prefix="idle-counter-")
    try:
        for lib in [None] + ([jemalloc] if jemalloc else []):
            counter = IdleCounter(os.path.join(tmp, "counts"))
            env = counter.env()
            if lib:             # after the shim: its mallctl is "next"
                env["LD_PRELOAD"] += " " + lib
            proc = subprocess.Popen([sys.executable, "-c", child], env=env,
                                    stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE,
                                    universal_newlines=True)
            words = proc.stdout.readline().split()
            live = counter.read()           # QEMU's case: still running
            proc.stdin.close()
            proc.wait()
            want = {"idle_trims": 2, "release_trims": 1, "idle_decays": 1,
                    "release_purges": 2, "attached": 1, "pid": proc.pid}
            got = {k: live[k] for k in want} if live else None
            assert got == want, (lib, got)
            # ENOENT (2) without jemalloc; with it, real answers: decay
            # and purge 0, a read of "epoch" without oldp 0.
            expect = ["0", "0", "0", "0"] if lib else ["2"] * 4
            assert words[:4] == expect, (lib, words)
            assert words[-1] == "False", "the variable was left set"
            print("idle counter selftest (%s): ok, %s" % (
                lib or "no jemalloc", " ".join("%s %d" % (k, live[k])
                                               for k in IDLE_COUNTER_FIELDS)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


if __name__ == "__main__":
    idle_counter_selftest()

# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared code of the qemu-reclaim tool tests and benchmark.

- TAP output (`ok N - name`, `not ok N - name`, `# SKIP`), as the project's
  other TAP producers (tests/memory-pressure.py) and scripts/test.sh expect;
- a Lab: real QEMU processes of given builds in one temporary directory,
  their QMP sockets named <vmid>.qmp like Proxmox's
  /var/run/qemu-server/<vmid>.qmp, everything killed at exit;
- a backup workload after which a patched QEMU releases by itself (as
  scripts/demo-session.py and bench/backup-bench.py run it);
- a proxy in front of a real QEMU's QMP socket that makes its allocator
  look as if it held much releasable memory, for the tool's thresholds;
- running the tool with a deadline, capturing stdout, stderr, the exit
  code and the CPU it used.

Python 3 standard library only.
"""
import atexit
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

TOP = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(TOP, "scripts"))
from qmplib import QMP, rss, start_qemu  # noqa: E402

TOOL = os.environ.get("QR_TOOL") or os.path.join(
    TOP, "build", "tool", "tools", "qemu-reclaim", "qemu-reclaim")
BUILDS = {
    "system": os.path.join(TOP, "build", "build-system", "qemu-system-x86_64"),
    "tcmalloc": os.path.join(TOP, "build", "build-tcmalloc",
                             "qemu-system-x86_64"),
    "jemalloc": os.path.join(TOP, "build", "build-jemalloc",
                             "qemu-system-x86_64"),
    # Debian's QEMU 7.2: no allocator commands at all
    "unpatched": "/usr/bin/qemu-system-x86_64",
}
# what x-query-allocator-stats calls the backend of each build
BACKEND = {"system": "glibc", "tcmalloc": "tcmalloc", "jemalloc": "jemalloc"}
PATCHED = ("system", "tcmalloc", "jemalloc")
# QEMU releases by itself a second after a backup ends, and its RCU thread
# trims when idle, at most once a second: what a workload frees does not
# stay in the allocator, and nothing turns that off.  Tests compare the
# tool's figures with QEMU's own, whatever they are.
FILL_SIZE = 256 << 20
MiB = 1 << 20


# ---------------------------------------------------------------- TAP

class TAP:
    """TAP producer.  Without -k the first failure bails out."""

    def __init__(self, argv=None):
        argv = sys.argv[1:] if argv is None else argv
        self.keep_going = "-k" in argv or "--keep-going" in argv
        self.n = 0
        self.failed = 0
        self.planned = None

    def plan(self, n):
        self.planned = n
        print("1..%d" % n, flush=True)

    def ok(self, cond, name, diag=None):
        self.n += 1
        cond = bool(cond)
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, name))
        if diag and (not cond or os.environ.get("TAP_VERBOSE")):
            self.diag(diag)
        sys.stdout.flush()
        if not cond:
            self.failed += 1
            if not self.keep_going:
                print("Bail out! %s (run with -k to keep going)" % name,
                      flush=True)
                raise SystemExit(1)
        return cond

    def skip(self, name, reason):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, name, reason), flush=True)

    def diag(self, text):
        for line in str(text).splitlines() or [""]:
            print("# " + line)
        sys.stdout.flush()

    def done(self):
        """Print the plan at the end if none was given; return exit code."""
        if self.planned is None:
            print("1..%d" % self.n, flush=True)
        elif self.planned != self.n:
            print("# planned %d, ran %d" % (self.planned, self.n))
            return 1
        return 1 if self.failed else 0


def parse_common_args():
    """--tap and -k are accepted (meson/GLib style); nothing else."""
    for a in sys.argv[1:]:
        if a not in ("--tap", "-k", "--keep-going"):
            sys.stderr.write("usage: %s [--tap] [-k]\n" % sys.argv[0])
            sys.exit(2)


# ---------------------------------------------------------------- sizes

def mib(n):
    return "%.1f MiB" % (n / MiB)


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "KB": 1 << 10,
          "M": 1 << 20, "MIB": 1 << 20, "MB": 1 << 20,
          "G": 1 << 30, "GIB": 1 << 30, "GB": 1 << 30,
          "T": 1 << 40, "TIB": 1 << 40, "TB": 1 << 40}


def parse_size(text):
    """'21.5 MiB', '120.0MiB', '4096' -> bytes (float), None if not a size."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        return None
    return float(m.group(1)) * _UNITS[m.group(2).upper()]


def close_to(value, lo, hi, slack):
    """value within [lo - slack, hi + slack]."""
    return value is not None and lo - slack <= value <= hi + slack


# ---------------------------------------------------------------- QMP

class QMPError(Exception):
    pass


def qmp_session(path, commands, timeout=30):
    """Connect, negotiate, run [(name, args)], close.  Returns the answers
    (a QMPError instance in place of an error answer).  Never holds the
    socket longer than that: QEMU's QMP socket serves one client at a
    time, and the tool needs it too."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        try:
            s.connect(path)
            break
        except (ConnectionRefusedError, FileNotFoundError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        f = s.makefile("rw")

        def answer():
            while True:
                line = f.readline()
                if not line:
                    raise QMPError("QEMU closed the connection")
                msg = json.loads(line)
                if "event" in msg:
                    continue
                if "error" in msg:
                    return QMPError("%s: %s" % (msg["error"].get("class"),
                                                msg["error"].get("desc")))
                return msg.get("return")

        greeting = json.loads(f.readline())
        if "QMP" not in greeting:
            raise QMPError("no QMP greeting")
        f.write(json.dumps({"execute": "qmp_capabilities"}) + "\n")
        f.flush()
        answer()
        out = []
        for name, args in commands:
            f.write(json.dumps({"execute": name, "arguments": args or {}})
                    + "\n")
            f.flush()
            out.append(answer())
        return out
    finally:
        s.close()


# ---------------------------------------------------------------- QEMUs

class VM:
    def __init__(self, lab, vmid, build, sock, proc):
        self.lab = lab
        self.vmid = str(vmid)
        self.build = build
        self.sock = sock
        self.proc = proc
        self.pid = proc.pid
        self.filled = False

    @property
    def patched(self):
        return self.build in PATCHED

    @property
    def backend(self):
        return BACKEND.get(self.build)

    def cmd(self, name, **args):
        ret = qmp_session(self.sock, [(name, args)])[0]
        if isinstance(ret, QMPError):
            raise ret
        return ret

    def info(self):
        """x-query-allocator-stats, or None for an unpatched QEMU."""
        ret = qmp_session(self.sock, [("x-query-allocator-stats", None)])[0]
        return None if isinstance(ret, QMPError) else ret

    def rss(self):
        return rss(self.pid)

    def alive(self):
        return self.proc.poll() is None

    def fill(self, rounds=1):
        """A backup of a 256 MiB disk with 2048 parallel 64 KiB workers to
        a slow null target: ~80-130 MiB of bounce buffers, freed at the
        end.  Waits for the automatic release QEMU runs after a backup
        (ALLOCATOR_MEMORY_RELEASED, trigger automatic), so that nothing
        changes under a test afterwards.  Returns x-query-allocator-stats
        after it."""
        src = self.lab.source()
        qmp = QMP(self.sock, timeout=300)
        try:
            nodes = {n["node-name"]
                     for n in qmp.cmd("query-named-block-nodes")}
            if "fillsrc" not in nodes:
                qmp.cmd("blockdev-add", driver="raw",
                        **{"node-name": "fillsrc"},
                        file={"driver": "file", "filename": src})
                qmp.cmd("blockdev-add", driver="null-co", size=FILL_SIZE,
                        **{"node-name": "filldst", "latency-ns": 50000000})
            for _ in range(rounds):
                self.lab.fill_seq += 1
                done = qmp.count_events("BLOCK_JOB_COMPLETED")
                released = self._automatic_releases(qmp)
                qmp.cmd("blockdev-backup", device="fillsrc", target="filldst",
                        sync="full",
                        **{"job-id": "fill%d" % self.lab.fill_seq,
                           "x-perf": {"use-copy-range": False,
                                      "max-workers": 2048,
                                      "max-chunk": 65536}})
                end = time.monotonic() + 300
                while qmp.count_events("BLOCK_JOB_COMPLETED") == done:
                    if time.monotonic() > end:
                        raise RuntimeError("backup did not end in 300 s")
                    time.sleep(0.02)
                    qmp.cmd("query-jobs")   # reads the events that came
                # requests are collected for a second, then one release
                end = time.monotonic() + 30
                while self._automatic_releases(qmp) == released:
                    if time.monotonic() > end:
                        raise RuntimeError("no automatic release within 30 s "
                                           "of the backup's end")
                    time.sleep(0.05)
                    qmp.cmd("query-jobs")
            info = qmp.cmd("x-query-allocator-stats")
        finally:
            qmp.sock.close()
        self.filled = True
        return info

    @staticmethod
    def _automatic_releases(qmp):
        return sum(1 for e in qmp.events
                   if e["event"] == "ALLOCATOR_MEMORY_RELEASED" and
                   e["data"].get("trigger") == "automatic")


class FakeQEMU:
    """A stand-in QMP server at `path` for an allocator no build here
    has ("system": no statistics, no release): it greets like QEMU 10.2,
    answers x-query-allocator-stats with `info` and x-release-free-memory
    with QEMU's error.  Every command it gets is kept in .commands."""

    GREETING = {"QMP": {"version": {"qemu": {"micro": 2, "minor": 2,
                                             "major": 10},
                                    "package": "fake"},
                        "capabilities": []}}

    def __init__(self, path, info):
        self.path = path
        self.info = info
        self.commands = []
        self.stop = threading.Event()
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(16)
        os.chmod(path, 0o666)
        self.sock.settimeout(0.2)
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self):
        self.stop.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _serve(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,),
                             daemon=True).start()

    def _handle(self, c):
        with c:
            try:
                self._converse(c.makefile("rwb"))
            except (OSError, ValueError):
                pass    # the client went away, or sent no JSON

    def _converse(self, f):
        f.write((json.dumps(self.GREETING) + "\r\n").encode())
        f.flush()
        for line in f:
            msg = json.loads(line)
            name = msg.get("execute")
            self.commands.append(name)
            if name == "qmp_capabilities":
                ans = {"return": {}}
            elif name == "x-query-allocator-stats":
                ans = {"return": self.info}
            elif name == "x-release-free-memory":
                ans = {"error": {
                    "class": "GenericError",
                    "desc": "the memory allocator of this build (%s) "
                    "cannot return free memory to the OS"
                    % self.info["backend"]}}
            else:
                ans = {"error": {"class": "CommandNotFound",
                                 "desc": "The command %s has not been "
                                 "found" % name}}
            if "id" in msg:
                ans["id"] = msg["id"]
            f.write((json.dumps(ans) + "\r\n").encode())
            f.flush()


class ReleasableProxy:
    """A QMP socket at `path` in front of a real QEMU's (`upstream`): all
    is forwarded both ways, but where QEMU's allocator tells what is
    releasable, x-query-allocator-stats answers say `releasable` bytes
    (and at least as much free).  A real QEMU returns what a workload
    frees by itself within a second or so, so this is how a test puts a
    VM above the tool's thresholds; the releases stay real, counted by
    the QEMU.  Counts the x-release-free-memory commands it forwards;
    with `delay`, holds each that long first (a release that takes long,
    the QMP socket busy all the while, as with a large heap)."""

    def __init__(self, path, upstream, releasable, delay=0):
        self.path = path
        self.upstream = upstream
        self.releasable = releasable
        self.delay = delay
        self.releases = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._conns = []
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(16)
        os.chmod(path, 0o666)
        self.sock.settimeout(0.2)
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self):
        self.stop.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns + [self.sock]:
            try:
                c.close()
            except OSError:
                pass

    def _serve(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,),
                             daemon=True).start()

    def _inflate(self, line):
        try:
            msg = json.loads(line)
        except ValueError:
            return line
        ret = msg.get("return")
        stats = ret.get("stats") if isinstance(ret, dict) else None
        if (not isinstance(stats, dict) or "backend" not in ret or
                "releasable" not in stats):
            return line
        stats["releasable"] = self.releasable
        stats["free"] = max(stats["free"], self.releasable)
        return (json.dumps(msg) + "\r\n").encode()

    def _handle(self, c):
        up = socket.socket(socket.AF_UNIX)
        with self._lock:
            self._conns += [c, up]
        try:
            up.connect(self.upstream)
        except OSError:
            c.close()
            return

        def down():
            try:
                for line in up.makefile("rb"):
                    c.sendall(self._inflate(line))
            except OSError:
                pass
            for s in (c, up):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=down, daemon=True)
        t.start()
        try:
            for line in c.makefile("rb"):
                try:
                    name = json.loads(line).get("execute")
                except (ValueError, AttributeError):
                    name = None
                if name == "x-release-free-memory":
                    with self._lock:
                        self.releases += 1
                    time.sleep(self.delay)
                up.sendall(line)
        except OSError:
            pass
        for s in (c, up):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        t.join(timeout=10)
        with self._lock:
            for s in (c, up):
                if s in self._conns:
                    self._conns.remove(s)
                s.close()


class Lab:
    """A temporary directory with QEMUs and helper processes, all killed
    and removed at exit (normal exit, exception, SIGTERM, SIGINT)."""

    def __init__(self, prefix="qemu-reclaim-test-"):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.dir, 0o755)   # an unprivileged tool may look in it
        self.vmdir = os.path.join(self.dir, "qemu-server")
        os.mkdir(self.vmdir)
        os.chmod(self.vmdir, 0o755)
        self.vms = []
        self.procs = []     # other processes to kill at exit
        self.fill_seq = 0
        self._src = None
        self._lock = threading.Lock()
        atexit.register(self.cleanup)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        self.cleanup()
        os._exit(128 + signum)

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def source(self):
        with self._lock:
            if self._src is None:
                src = self.path("source.raw")
                with open(src, "wb") as f:
                    for i in range(FILL_SIZE >> 20):
                        f.write(bytes([0x11 + i % 200]) * MiB)
                self._src = src
            return self._src

    def start(self, vmid, build, extra=(), directory=None):
        """Start one QEMU with its QMP socket at <directory>/<vmid>.qmp.
        Retries while the binary is missing (another session may be
        relinking it)."""
        qemu = BUILDS[build]
        sock = os.path.join(directory or self.vmdir, "%s.qmp" % vmid)
        extra = list(extra)
        end = time.monotonic() + 180
        while True:
            try:
                if build in PATCHED:
                    proc = start_qemu(qemu, sock, extra)
                else:
                    proc = start_qemu(qemu, sock, extra, accel="tcg")
                break
            except (RuntimeError, FileNotFoundError, PermissionError,
                    OSError):
                if time.monotonic() > end:
                    raise RuntimeError("cannot start %s (%s)" % (build, qemu))
                time.sleep(2)
        with self._lock:
            self.procs.append(proc)
        # -qmp ...,wait=on: QEMU waits for a first client before it runs
        qmp_session(sock, [("query-status", None)])
        os.chmod(sock, 0o666)   # for the unprivileged runs
        vm = VM(self, vmid, build, sock, proc)
        with self._lock:
            self.vms.append(vm)
        return vm

    def start_many(self, specs, parallel=8, **kw):
        """specs: [(vmid, build)]; started in parallel batches."""
        with ThreadPoolExecutor(max_workers=parallel) as ex:
            futs = [ex.submit(self.start, vmid, build, **kw)
                    for vmid, build in specs]
            return [f.result() for f in futs]

    def spawn(self, argv, **kw):
        """A helper process (e.g. the tool as a daemon) killed at exit."""
        if argv[0] == TOOL:
            tool_exists()
        proc = subprocess.Popen(argv, **kw)
        with self._lock:
            self.procs.append(proc)
        return proc

    def cleanup(self):
        with self._lock:
            procs = list(self.procs)
            self.procs = []
        for p in procs:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except Exception:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- the tool

class Result:
    def __init__(self, argv, rc, out, err, wall, cpu, timed_out, maxrss_kib):
        self.argv = argv
        self.rc = rc
        self.out = out
        self.err = err
        self.wall = wall
        self.cpu = cpu          # user + sys seconds of the tool
        self.timed_out = timed_out
        self.maxrss_kib = maxrss_kib

    @property
    def signalled(self):
        return self.rc is not None and self.rc < 0

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError:
            return None

    def describe(self):
        return ("$ %s\nexit %s%s, %.2f s\n--- stdout\n%s--- stderr\n%s"
                % (" ".join(self.argv), self.rc,
                   " (killed after deadline)" if self.timed_out else "",
                   self.wall, _clip(self.out), _clip(self.err)))


def _clip(text, n=4000):
    if len(text) > n:
        text = text[:n] + "\n... (%d more characters)\n" % (len(text) - n)
    return text if text.endswith("\n") or not text else text + "\n"


def tool_exists(wait=120):
    """True if the tool binary is there; waits up to `wait` s for it (a
    rebuild in progress briefly removes it while linking)."""
    end = time.monotonic() + wait
    while not os.access(TOOL, os.X_OK):
        if time.monotonic() > end:
            return False
        time.sleep(1)
    return True


def run_tool(args, deadline=60, user=None, env=None, stdin=None):
    """Run the tool with args; kill it after `deadline` seconds.  user:
    run as that unprivileged user (setpriv).  Returns a Result; CPU and
    peak RSS come from wait4() of the tool process itself."""
    tool_exists()
    argv = [TOOL] + list(args)
    if user:
        argv = ["setpriv", "--reuid=%s" % user[0], "--regid=%s" % user[1],
                "--clear-groups", "--"] + argv
    e = dict(os.environ)
    e.setdefault("LC_ALL", "C.UTF-8")
    if env:
        e.update(env)
    outf = tempfile.TemporaryFile()
    errf = tempfile.TemporaryFile()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=outf, stderr=errf,
                            stdin=stdin if stdin is not None
                            else subprocess.DEVNULL, env=e)
    timed_out = False
    status = ru = None
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > deadline:
            timed_out = True
            proc.kill()
            _, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    outf.seek(0)
    errf.seek(0)
    out = outf.read().decode("utf-8", "replace")
    err = errf.read().decode("utf-8", "replace")
    return Result(argv, proc.returncode, out, err, wall,
                  ru.ru_utime + ru.ru_stime, timed_out, ru.ru_maxrss)


# ---------------------------------------------------------------- parsing

def table_rows(text):
    """Rows of a whitespace-aligned table: {first word: line}, header and
    'total' lines included under their first word."""
    rows = {}
    for line in text.splitlines():
        if line.strip():
            rows.setdefault(line.split()[0], line)
    return rows


def row_order(text, names):
    """The order in which the given VM names start a line of text."""
    seen = []
    for line in text.splitlines():
        w = line.split()
        if w and w[0] in names and w[0] not in seen:
            seen.append(w[0])
    return seen


_METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)'
                     r'(\s+-?[0-9]+)?\s*$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format -> [(name, {label: value}, float)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC.match(line)
        if not m:
            out.append(("__unparsable__", {"line": line}, float("nan")))
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            value = float("nan")
        out.append((m.group(1), labels, value))
    return out


def metric(samples, name, **labels):
    """The value of the one sample of `name` with these labels, or None."""
    vals = [v for n, lab, v in samples
            if n == name and all(lab.get(k) == str(x)
                                 for k, x in labels.items())]
    return vals[0] if len(vals) == 1 else None


# ---------------------------------------------------------------- misc

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu(pid):
    """user + sys CPU seconds of a live process, from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_for(cond, timeout, step=0.1):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            return v
        time.sleep(step)


def nobody_ids():
    """(uid, gid) of an unprivileged user to run the tool as, or None."""
    import pwd
    import grp
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return None
    for g in ("nogroup", "nobody"):
        try:
            return uid, grp.getgrnam(g).gr_gid
        except KeyError:
            pass
    return None


_SIZE = r"[0-9]+(?:\.[0-9]+)?(?:\s?(?:[KMGT]i?B|[KMGT]|B))?"
_STATS_ROW = re.compile(
    r"^(?P<vm>\S+)\s+(?P<backend>\S+)\s+(?P<allocated>%s|-)\s+"
    r"(?P<held>%s|-)\s+(?P<releasable>%s|-)\s+(?P<rss>%s|-)\s+"
    r"(?P<releases>[0-9]+|-)\s+(?P<status>\S.*?)\s*$"
    % (_SIZE, _SIZE, _SIZE, _SIZE))
_RELEASE_ROW = (
    r"^(?P<vm>\S+)\s+%s(?P<returned>%s|-)\s+(?P<rss_before>%s|-)\s+"
    r"(?P<rss_after>%s|-)\s+(?P<time>[0-9.]+\s?(?:us|µs|ms|s)|-)\s+"
    r"(?P<status>\S.*?)\s*$" % ("%s", _SIZE, _SIZE, _SIZE))


def _size_or_none(text):
    return None if text in (None, "-") else parse_size(text)


def parse_stats_table(text, names):
    """{vm: {backend, allocated, held, releasable, rss, releases, status}}
    for the rows of the given VM names (sizes in bytes, None for '-')."""
    out = {}
    for line in text.splitlines():
        w = line.split()
        if not w or w[0] not in names:
            continue
        m = _STATS_ROW.match(line)
        if not m:
            out[w[0]] = {"unparsed": line}
            continue
        d = m.groupdict()
        for k in ("allocated", "held", "releasable", "rss"):
            d[k] = _size_or_none(d[k])
        d["releases"] = None if d["releases"] == "-" else int(d["releases"])
        d["line"] = line
        out[d["vm"]] = d
    return out


def release_header(text):
    """The column names of the release table's header line."""
    for line in text.splitlines():
        if line.split()[:1] == ["VM"]:
            return line.split()
    return []


def parse_release_table(text, names):
    """{vm: {returned, rss_before, rss_after, time, status[, releasable]}};
    copes with an extra RELEASABLE column after VM (the tool has one)."""
    extra = "RELEASABLE" in release_header(text)
    rx = re.compile(_RELEASE_ROW % (
        r"(?P<releasable>%s|-)\s+" % _SIZE if extra else ""))
    out = {}
    for line in text.splitlines():
        w = line.split()
        if not w or w[0] not in names:
            continue
        m = rx.match(line)
        d = m.groupdict() if m else {"vm": w[0], "returned": None,
                                     "rss_before": None, "rss_after": None,
                                     "time": None, "status": line}
        for k in ("returned", "rss_before", "rss_after", "releasable"):
            if k in d:
                d[k] = _size_or_none(d[k])
        d["line"] = line
        out[w[0]] = d
    return out


def main(run, prefix="qemu-reclaim-test-", need_builds=False):
    """The main() of a tool test: TAP, a Lab, run(tap, lab), and a
    failed case (never a hang) if run raises."""
    parse_common_args()
    tap = TAP()
    if not tool_exists():
        tap.ok(False, "the tool is built at %s" % TOOL,
               "build it: meson setup build/tool && ninja -C build/tool")
        return tap.done()
    missing = [p for p in BUILDS.values() if not os.access(p, os.X_OK)]
    if need_builds and missing:
        print("1..0 # SKIP missing QEMU builds: %s" % ", ".join(missing))
        return 0
    lab = Lab(prefix=prefix)
    try:
        run(tap, lab)
    except SystemExit:
        raise
    except Exception as e:   # report, never hang
        import traceback
        tap.ok(False, "test aborted: %r" % e, traceback.format_exc())
    finally:
        lab.cleanup()
    return tap.done()

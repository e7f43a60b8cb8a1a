#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-reclaim's Prometheus exporter, checked by Prometheus itself.

`qemu-reclaim export --listen 127.0.0.1:<port>` over real QEMUs: one of
each patched build (301 glibc, 302 tcmalloc after a backup and the
automatic release that follows it, 303 jemalloc), Debian's unpatched QEMU
(304) and a dead socket (305, nobody listens).  Checks:
  - GET /metrics answers, `promtool check metrics` passes with no lint
    problem;
  - every VM has qemu_reclaim_up (305: 0), the figures equal the QEMUs'
    own (RSS: /proc's), and what QEMU does not tell (glibc: releasable,
    returned) has no sample;
  - a real Prometheus server scraping it every second sees
    qemu_reclaim_up for every VM and qemu_reclaim_releasable_bytes for
    the patched ones that tell it, equal to what the QEMUs say, and none
    for glibc's;
  - with a VM that never answers, a scrape returns within the tool's
    --timeout (+ slack) and still has the other VMs.

Over stand-in QMP servers (toollib.FakeQEMU, no QEMU build needed), the
exporter's own behaviour:
  - --max-age (default 5 s): two scrapes within it visit each VM once,
    the second gets the same page; one after it visits again; with
    --max-age 0 every scrape visits;
  - scrapes that come during a pass wait for it: 8 at once, one pass;
    and a pass longer than --idle-timeout still answers them;
  - --idle-timeout, under `ulimit -n 64`: 64 idle connections and a
    half-sent request are closed after it, and a scrape sent while they
    held every file descriptor is answered, with every VM up.
The real-QEMU checks are skipped when the QEMU builds are missing.

Usage: test-prometheus.py [--tap] [-k]
"""
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toollib as T  # noqa: E402

PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"
TIMEOUT_MS = 2000
SLACK_S = 3.0


def get(url, timeout=30):
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read().decode()
        ctype = r.headers.get("Content-Type", "")
        return r.status, body, ctype, time.monotonic() - t0


def wait_http(url, proc, timeout=30):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            return "process exited with %s" % proc.returncode
        try:
            return get(url, timeout=10)
        except OSError as e:
            last = e
            time.sleep(0.2)
    return "no answer in %d s: %s" % (timeout, last)


def main():
    return T.main(run, prefix='qemu-reclaim-prom-')


def figure(info, k):
    """QEMU's own figure `k`, None if it does not tell it; held is
    allocated + free, as the tool derives it."""
    st = info.get("stats")
    if st is None:
        return None
    return st["allocated"] + st["free"] if k == "held" else st.get(k)


def start_exporter(lab, args, name):
    port = T.free_port()
    log = open(lab.path(name + ".log"), "w+")
    p = lab.spawn([T.TOOL] + args[:1] + ["--listen", "127.0.0.1:%d" % port]
                  + args[1:], stdout=log, stderr=log)
    return p, port, log


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(tap, lab):
    check_fake(tap, lab)
    need = ("system", "tcmalloc", "jemalloc", "unpatched")
    missing = [T.BUILDS[b] for b in need if not os.access(T.BUILDS[b],
                                                          os.X_OK)]
    if missing:
        tap.skip("the exporter over real QEMUs, promtool and Prometheus",
                 "missing QEMU builds: %s" % ", ".join(missing))
        return
    check_real(tap, lab)


def check_real(tap, lab):
    vms = lab.start_many([("301", "system"), ("302", "tcmalloc"),
                          ("303", "jemalloc"), ("304", "unpatched")])
    by = {v.vmid: v for v in vms}
    by["302"].fill()            # one automatic release, a last-release
    dead = os.path.join(lab.vmdir, "305.qmp")
    s = socket.socket(socket.AF_UNIX)
    s.bind(dead)
    s.close()                                   # stale: refused
    allnames = sorted(list(by) + ["305"])

    p, port, log = start_exporter(lab, ["export", "--timeout",
                                        str(TIMEOUT_MS), lab.vmdir],
                                  "export")
    url = "http://127.0.0.1:%d/metrics" % port
    b = {v.vmid: (v.info(), v.rss()) for v in vms}
    res = wait_http(url, p)
    a = {v.vmid: (v.info(), v.rss()) for v in vms}
    if not tap.ok(isinstance(res, tuple) and res[0] == 200,
                  "export --listen: GET /metrics answers 200",
                  str(res) + "\n" + open(log.name).read()):
        return
    _, body, ctype, _ = res
    tap.ok(ctype.startswith("text/plain") and "version=0.0.4" in ctype,
           "Content-Type is Prometheus text format 0.0.4", ctype)
    with open(lab.path("metrics.txt"), "w") as f:
        f.write(body)
    pt = subprocess.run([PROMTOOL, "check", "metrics"], input=body,
                        capture_output=True, text=True, timeout=60)
    tap.ok(pt.returncode == 0 and not (pt.stdout + pt.stderr).strip(),
           "promtool check metrics: passes, no lint problem",
           "exit %d\n%s%s\n--- metrics\n%s" % (pt.returncode, pt.stdout,
                                                pt.stderr, body))
    m = T.parse_metrics(body)
    ups = {n: T.metric(m, "qemu_reclaim_up", vmid=n) for n in allnames}
    want = {n: (0 if n == "305" else 1) for n in allnames}
    tap.ok(ups == want, "qemu_reclaim_up: 1 for the live VMs, 0 for the "
           "dead socket", "got %s" % ups)
    probs = []
    for v in vms:
        sup = T.metric(m, "qemu_reclaim_supported", vmid=v.vmid)
        if sup != (1 if v.patched else 0):
            probs.append("%s: supported %r" % (v.vmid, sup))
        res_ = T.metric(m, "qemu_reclaim_resident_memory_bytes", vmid=v.vmid)
        lo, hi = min(b[v.vmid][1], a[v.vmid][1]), max(b[v.vmid][1],
                                                      a[v.vmid][1])
        if not T.close_to(res_, lo, hi, (3 << 20) + 0.02 * hi):
            probs.append("%s: resident %r, /proc %d..%d" % (v.vmid, res_,
                                                           lo, hi))
        if v.patched:
            for k in ("allocated", "held", "free", "releasable",
                      "returned"):
                name = "qemu_reclaim_%s_bytes" % k
                val = T.metric(m, name, vmid=v.vmid)
                qb, qa = figure(b[v.vmid][0], k), figure(a[v.vmid][0], k)
                if qb is None or qa is None:
                    if any(n == name and lab_.get("vmid") == v.vmid
                           for n, lab_, _ in m):
                        probs.append("%s: a %s sample, but QEMU does not "
                                     "tell it" % (v.vmid, name))
                    continue
                lo, hi = min(qb, qa), max(qb, qa)
                if not T.close_to(val, lo, hi, (1 << 20) + 0.02 * hi):
                    probs.append("%s: %s %r, QEMU %d..%d" % (v.vmid, k, val,
                                                            lo, hi))
            if T.metric(m, "qemu_reclaim_allocator_info", vmid=v.vmid,
                        backend=v.backend) != 1:
                probs.append("%s: allocator_info{backend=%s} missing" % (
                    v.vmid, v.backend))
            for trig in ("manual", "automatic"):
                val = T.metric(m, "qemu_reclaim_releases_total",
                               vmid=v.vmid, trigger=trig)
                if val != a[v.vmid][0][trig + "-releases"]:
                    probs.append("%s: releases_total{%s} %r, QEMU %d" % (
                        v.vmid, trig, val, a[v.vmid][0][trig + "-releases"]))
            last = a[v.vmid][0].get("last-release") or {}
            val = T.metric(m, "qemu_reclaim_last_release_returned_bytes",
                           vmid=v.vmid)
            if val != last.get("returned"):
                probs.append("%s: last_release_returned_bytes %r, QEMU %r"
                             % (v.vmid, val, last.get("returned")))
    if any(n == "qemu_reclaim_supported" and lab_.get("vmid") == "305"
           for n, lab_, _ in m):
        probs.append("305 (down): qemu_reclaim_supported present")
    if T.metric(m, "qemu_reclaim_vms") != len(allnames):
        probs.append("qemu_reclaim_vms %r" % T.metric(m, "qemu_reclaim_vms"))
    if T.metric(m, "qemu_reclaim_scrape_duration_seconds") is None:
        probs.append("no qemu_reclaim_scrape_duration_seconds")
    tap.ok(not probs, "metrics equal the QEMUs' own figures",
           "\n".join(probs) + "\n" + body)

    # -- a real Prometheus server
    if not os.access(PROMETHEUS, os.X_OK):
        tap.skip("Prometheus scrapes every VM", "%s missing" % PROMETHEUS)
        tap.skip("Prometheus: releasable bytes", "%s missing" % PROMETHEUS)
    else:
        check_prometheus(tap, lab, port, by, allnames)

    # -- one VM never answers: the scrape is bounded by --timeout
    silent = os.path.join(lab.path("silent"), "306.qmp")
    os.mkdir(lab.path("silent"))
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(silent)
    ls.listen(8)          # connect succeeds (backlog), no greeting ever
    p2, port2, log2 = start_exporter(
        lab, ["export", "--timeout", str(TIMEOUT_MS), "--max-age", "0",
              silent] + [v.sock for v in vms], "export-silent")
    url2 = "http://127.0.0.1:%d/metrics" % port2
    res = wait_http(url2, p2, timeout=TIMEOUT_MS / 1000 + 30)
    if isinstance(res, tuple):
        res = get(url2)          # a second scrape, the server warm
    ok = isinstance(res, tuple) and res[0] == 200
    took = res[3] if ok else float("inf")
    tap.ok(ok and took < TIMEOUT_MS / 1000 + SLACK_S,
           "a scrape with a VM that never answers returns within --timeout "
           "%d ms + %.0f s (took %.2f s)" % (TIMEOUT_MS, SLACK_S, took),
           str(res if not ok else "") + open(log2.name).read())
    if ok:
        m = T.parse_metrics(res[1])
        ups = {n: T.metric(m, "qemu_reclaim_up", vmid=n)
               for n in list(by) + ["306"]}
        tap.ok(ups == dict({n: 1 for n in by}, **{"306": 0}),
               "... and it has up 1 for the other VMs, 0 for the silent one",
               "got %s" % ups)
    else:
        tap.ok(False, "... and it has up 1 for the other VMs")
    ls.close()
    for proc in (p, p2):
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    tap.ok(p.returncode == 0,
           "export exits 0 on SIGTERM", "exit %s" % p.returncode)


def check_prometheus(tap, lab, port, by, allnames):
    pport = T.free_port()
    tsdb = lab.path("tsdb")
    os.mkdir(tsdb)
    cfg = lab.path("prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: qemu-reclaim\n"
                "    static_configs:\n"
                "      - targets: ['127.0.0.1:%d']\n" % port)
    plog = open(lab.path("prometheus.log"), "w+")
    prom = lab.spawn([PROMETHEUS, "--config.file=" + cfg,
                      "--storage.tsdb.path=" + tsdb,
                      "--web.listen-address=127.0.0.1:%d" % pport],
                     stdout=plog, stderr=plog, cwd=lab.dir)
    api = "http://127.0.0.1:%d/api/v1/query?query=" % pport

    def query(q):
        try:
            _, body, _, _ = get(api + urllib.parse.quote(q), timeout=10)
            doc = json.loads(body)
            return {r["metric"].get("vmid"): float(r["value"][1])
                    for r in doc["data"]["result"]}
        except (OSError, ValueError, KeyError):
            return {}

    end = time.monotonic() + 60
    ups = {}
    while time.monotonic() < end and prom.poll() is None:
        ups = query("qemu_reclaim_up")
        if sorted(ups) == allnames:
            break
        time.sleep(0.5)
    tap.ok(sorted(ups) == allnames and ups.get("305") == 0 and
           all(ups[n] == 1 for n in allnames if n != "305"),
           "Prometheus scrapes the exporter: qemu_reclaim_up for every VM "
           "(dead one 0) within 60 s",
           "got %s\n%s" % (ups, open(plog.name).read()[-3000:]))
    rel = query("qemu_reclaim_releasable_bytes")
    probs = []
    for v in by.values():
        own = figure(v.info() or {}, "releasable")
        if own is None:
            # unpatched, or glibc: unknown, so no series at all (not 0)
            if v.vmid in rel:
                probs.append("%s (%s) has releasable %r" % (
                    v.vmid, v.backend or "unpatched", rel[v.vmid]))
            continue
        if not T.close_to(rel.get(v.vmid), own, own, (1 << 20) + 0.02 * own):
            probs.append("%s: Prometheus %r, QEMU %d" % (v.vmid,
                                                        rel.get(v.vmid), own))
    tap.ok(not probs and sorted(rel) == ["302", "303"],
           "Prometheus: qemu_reclaim_releasable_bytes of tcmalloc and "
           "jemalloc equals QEMU's; glibc's and the unpatched one have none",
           "\n".join(probs) + "\n%s" % rel)
    prom.kill()
    prom.wait()



# ---------------------------------------------------------------- stand-ins

FAKE_INFO = {"backend": "system", "manual-releases": 0,
             "automatic-releases": 0}
IDLE_S = 2          # --idle-timeout of the timeout checks
NOFILE = 64         # the exporter's `ulimit -n` there


class GatedQEMU(T.FakeQEMU):
    """A FakeQEMU that greets only once .gate is set: a pass over it lasts
    as long as the test wants."""

    def __init__(self, path, info):
        self.gate = threading.Event()
        super().__init__(path, info)

    def _converse(self, f):
        self.gate.wait(60)
        super()._converse(f)


def visits(fakes):
    """How many times each stand-in was visited (one qmp_capabilities per
    connection of the tool)."""
    return [f.commands.count("qmp_capabilities") for f in fakes]


def ups(body, names):
    m = T.parse_metrics(body)
    return {n: T.metric(m, "qemu_reclaim_up", vmid=n) for n in names}


def log_of(log):
    with open(log.name) as f:
        return f.read()[-3000:]


def check_fake(tap, lab):
    d = lab.path("fake")
    os.mkdir(d)
    names = ["401", "402", "403"]
    fakes = [T.FakeQEMU(os.path.join(d, n + ".qmp"), FAKE_INFO)
             for n in names]
    try:
        r1 = T.run_tool(["export", "--max-age", "soon", d], 30)
        r2 = T.run_tool(["export", "--idle-timeout", "0", d], 30)
        tap.ok(r1.rc == 2 and "soon" in r1.err and
               r2.rc == 2 and "--idle-timeout" in r2.err and
               "nknown option" not in r2.err,
               "export --max-age soon, --idle-timeout 0: usage errors (2)",
               r1.describe() + r2.describe())
        check_cache(tap, lab, d, names, fakes)
        check_concurrent(tap, lab)
        check_idle(tap, lab, d, names)
    finally:
        for f in fakes:
            f.close()


def check_cache(tap, lab, d, names, fakes):
    # the default --max-age, 5 s
    p, port, log = start_exporter(lab, ["export", d], "export-cache")
    url = "http://127.0.0.1:%d/metrics" % port
    first = wait_http(url, p)
    done = time.monotonic()
    v1 = visits(fakes)
    second = get(url) if isinstance(first, tuple) else None
    v2 = visits(fakes)
    ok = (isinstance(first, tuple) and first[0] == 200 and
          second and second[0] == 200)
    tap.ok(ok and v1 == [1, 1, 1] and v2 == v1 and second[1] == first[1] and
           ups(first[1], names) == {n: 1 for n in names},
           "two scrapes within --max-age (default 5 s): one visit per VM, "
           "the same page (second %.2f s after the first)"
           % (time.monotonic() - done),
           "visits after the first %s, after the second %s\n%s\n%s"
           % (v1, v2, first, log_of(log)))
    time.sleep(max(0, done + 5.5 - time.monotonic()))
    third = get(url)
    v3 = visits(fakes)
    tap.ok(third[0] == 200 and v3 == [2, 2, 2] and
           ups(third[1], names) == {n: 1 for n in names},
           "a scrape after --max-age visits every VM again",
           "visits %s (were %s)" % (v3, v2))
    check_keepalive(tap, p, port, log)
    stop(p)

    p, port, log = start_exporter(lab, ["export", "--max-age", "0", d],
                                  "export-age0")
    url = "http://127.0.0.1:%d/metrics" % port
    first = wait_http(url, p)
    v1 = visits(fakes)
    second = get(url) if isinstance(first, tuple) else None
    v2 = visits(fakes)
    tap.ok(isinstance(first, tuple) and first[0] == 200 and
           second and second[0] == 200 and
           [b - a for a, b in zip(v1, v2)] == [1, 1, 1],
           "--max-age 0: every scrape visits every VM",
           "visits after the first %s, after the second %s\n%s"
           % (v1, v2, log_of(log)))
    stop(p)


def check_keepalive(tap, p, port, log):
    """HTTP/1.1 clients that would keep the connection, then close it:
    libsoup 3.2 leaked each such connection's descriptor (its keep-alive
    path; fixed in 3.3.0): the exporter answers one request per
    connection and says so."""
    fds = "/proc/%d/fd" % p.pid
    before = len(os.listdir(fds))
    headers = set()
    for _ in range(50):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/metrics")        # no "Connection: close"
        r = c.getresponse()
        r.read()
        headers.add(r.getheader("Connection"))
        c.close()
    time.sleep(0.5)
    after = len(os.listdir(fds))
    tap.ok(headers == {"close"} and after <= before + 2,
           "50 HTTP/1.1 clients that close their connection: 'Connection: "
           "close', no descriptor left behind (%d before, %d after)"
           % (before, after), "Connection: %s\n%s" % (headers, log_of(log)))


def check_concurrent(tap, lab):
    """8 scrapes sent while a pass waits for its VMs: they share it."""
    d = lab.path("gated")
    os.mkdir(d)
    names = ["501", "502"]
    gated = [GatedQEMU(os.path.join(d, n + ".qmp"), FAKE_INFO)
             for n in names]
    n = 8
    try:
        p, port, log = start_exporter(
            lab, ["export", "--max-age", "0", "--idle-timeout", "1",
                  "--timeout", "30000", d], "export-concurrent")
        # "/" is answered without asking the VMs
        res = wait_http("http://127.0.0.1:%d/" % port, p)
        if not tap.ok(isinstance(res, tuple) and res[0] == 200,
                      "export answers GET /", "%s\n%s" % (res, log_of(log))):
            return
        conns = []
        for _ in range(n):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/metrics")
            conns.append(c)
        results = [None] * n

        def fetch(i):
            try:
                r = conns[i].getresponse()
                results[i] = (r.status, r.read().decode())
            except (OSError, http.client.HTTPException) as e:
                results[i] = e

        threads = [threading.Thread(target=fetch, args=(i,), daemon=True)
                   for i in range(n)]
        for t in threads:
            t.start()
        # the exporter has read every request; the pass outlasts
        # --idle-timeout
        time.sleep(2.5)
        for g in gated:
            g.gate.set()
        for t in threads:
            t.join(timeout=60)
        answered = [r for r in results if isinstance(r, tuple)]
        v = visits(gated)
        tap.ok(len(answered) == n and all(r[0] == 200 for r in answered) and
               len({r[1] for r in answered}) == 1 and v == [1, 1],
               "%d scrapes during one pass: one visit per VM, the same page "
               "for all" % n,
               "visits %s; answers %s\n%s" % (
                   v, [r if not isinstance(r, tuple) else r[0]
                       for r in results], log_of(log)))
        tap.ok(len(answered) == n and
               all(ups(r[1], names) == {x: 1 for x in names}
                   for r in answered),
               "... answered, every VM up, although the pass outlasted "
               "--idle-timeout 1 s", "answers %s" % [
                   r if not isinstance(r, tuple) else r[0] for r in results])
        for c in conns:
            c.close()
        stop(p)
    finally:
        for g in gated:
            g.gate.set()
            g.close()


def closed_by_peer(sock, deadline):
    """Wait until the exporter closes `sock` or `deadline`: the time it
    closed it, None if it did not."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return time.monotonic()
        except socket.timeout:
            return None
        except OSError:         # reset
            return time.monotonic()


def check_idle(tap, lab, d, names):
    p, port, log = start_exporter(
        lab, ["export", "--max-age", "0", "--idle-timeout", str(IDLE_S), d],
        "export-idle")
    resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    res = wait_http("http://127.0.0.1:%d/" % port, p)
    if not tap.ok(isinstance(res, tuple) and res[0] == 200,
                  "export answers GET / under ulimit -n %d" % NOFILE,
                  "%s\n%s" % (res, log_of(log))):
        return
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t_half = time.monotonic()
    idle, failed = [], 0
    for _ in range(NOFILE):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            idle.append(s)
        except OSError:
            s.close()
            failed += 1
    t0 = time.monotonic()
    # a scrape now, while the idle connections hold every descriptor
    scrape = {}

    def fetch():
        try:
            scrape["res"] = get("http://127.0.0.1:%d/metrics" % port,
                                timeout=4 * IDLE_S + 30)
        except OSError as e:
            scrape["res"] = e
        scrape["t"] = time.monotonic()

    th = threading.Thread(target=fetch, daemon=True)
    th.start()
    deadline = t0 + 3 * IDLE_S + 10
    c_half = closed_by_peer(half, deadline)
    c_idle = [closed_by_peer(s, deadline) for s in idle]
    th.join(timeout=4 * IDLE_S + 40)
    text = log_of(log)
    tap.ok("cannot accept" in text,
           "%d idle connections take every descriptor of the exporter "
           "(ulimit -n %d): it logs that it cannot accept" % (len(idle),
                                                            NOFILE),
           "%d connects failed\n%s" % (failed, text))
    tap.ok(c_half is not None and c_half - t_half < IDLE_S + 3,
           "a half-sent request is closed after --idle-timeout %d s (%s)"
           % (IDLE_S, "%.1f s" % (c_half - t_half) if c_half else "never"),
           text)
    open_ = sum(1 for c in c_idle if c is None)
    tap.ok(idle and not open_,
           "%d idle connections are all closed within %d s (the last "
           "after %s)" % (len(idle), 3 * IDLE_S + 10, "%.1f s" % (
               max(c_idle) - t0) if idle and not open_ else "-"),
           "%d still open, %d connects failed\n%s" % (open_, failed, text))
    res = scrape.get("res")
    ok = isinstance(res, tuple) and res[0] == 200
    tap.ok(ok and ups(res[1], names) == {n: 1 for n in names},
           "a scrape sent while they held every descriptor is answered "
           "once they are closed, every VM up (after %s)"
           % ("%.1f s" % (scrape["t"] - t0) if ok else "-"),
           "%r\n%s" % (res if not ok else ups(res[1], names), text))
    for s in idle + [half]:
        s.close()
    stop(p)
    tap.ok(p.returncode == 0, "export exits 0 on SIGTERM",
           "exit %s" % p.returncode)


if __name__ == "__main__":
    sys.exit(main())

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

Usage: test-prometheus.py [--tap] [-k]
"""
import json
import os
import socket
import subprocess
import sys
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


def run(tap, lab):
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
        lab, ["export", "--timeout", str(TIMEOUT_MS), silent] +
        [v.sock for v in vms], "export-silent")
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


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The exporter's memory over many scrapes: does it stay flat?

Serves --vms stand-in QMP sockets (default 100; <dir>/<vmid>.qmp, real
Unix sockets, one asyncio loop in this process) that answer like a
jemalloc QEMU: greeting, qmp_capabilities, x-query-allocator-stats with
every figure.  Then, for each --max-age (default 0 and 5, the exporter's
default), starts `qemu-reclaim export --listen 127.0.0.1:PORT DIR`, does
--scrapes GET /metrics one after the other (default 10,000; a new
connection each, as Prometheus does every scrape interval), and samples
the exporter's VmRSS and open descriptors (/proc/PID/status, /proc/PID/fd)
and the passes so far (QMP sessions / VMs) after the first scrape and
every --every scrapes (default 1,000).

--max-age 0 makes every scrape a full pass over all the VMs (100 QMP
sessions), the worst case for a leak; the default 5 s answers most
scrapes from the last pass's page, and shows the HTTP side alone (10,000
scrapes take seconds: two or three passes, and the heap of the second
one is warm-up, not growth).

Prints a table of the samples, the growth (last - first, and from the
sample at --every on, past the allocator's warm-up) and per 1,000
scrapes, and the exact command; keeps them in bench/out/export-bench.json
and bench/out/export-bench.txt.  Exits non-zero only if the exporter dies
or a scrape fails (not 200, or not every VM in it): growth is reported,
not judged.

Usage: export-bench.py [--vms N] [--scrapes N] [--every N]
                       [--max-age SEC ...]
"""
import argparse
import asyncio
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "tool"))
import toollib as T  # noqa: E402

OUT = os.path.join(T.TOP, "bench", "out")
MiB = 1 << 20

GREETING = {"QMP": {"version": {"qemu": {"micro": 2, "minor": 2,
                                         "major": 10},
                                "package": "export-bench"},
                    "capabilities": []}}
# what a patched jemalloc QEMU answers: every family of the exporter has
# a sample
INFO = {"backend": "jemalloc",
        "stats": {"allocated": 61 * MiB, "free": 37 * MiB,
                  "releasable": 29 * MiB, "returned": 3 * MiB},
        "manual-releases": 4, "automatic-releases": 17,
        "last-release": {"returned": 12 * MiB, "duration-us": 1834}}


class FakeVMs:
    """`n` QMP sockets in `directory`, served by one asyncio loop in a
    thread (no thread per connection: 100 sessions a scrape, a million
    in a run).  .sessions counts the connections."""

    def __init__(self, directory, n):
        self.sessions = 0
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.names = [str(1000 + i) for i in range(n)]
        asyncio.run_coroutine_threadsafe(self._start(directory),
                                         self.loop).result(60)

    async def _start(self, directory):
        self.servers = []
        for name in self.names:
            path = os.path.join(directory, name + ".qmp")
            self.servers.append(await asyncio.start_unix_server(
                self._session, path=path, backlog=256))

    @staticmethod
    def _answer(msg):
        name = msg.get("execute")
        if name == "qmp_capabilities":
            ans = {"return": {}}
        elif name == "x-query-allocator-stats":
            ans = {"return": INFO}
        else:
            ans = {"error": {"class": "CommandNotFound",
                             "desc": "The command %s has not been found"
                             % name}}
        if "id" in msg:
            ans["id"] = msg["id"]
        return (json.dumps(ans) + "\r\n").encode()

    async def _session(self, reader, writer):
        self.sessions += 1
        try:
            writer.write((json.dumps(GREETING) + "\r\n").encode())
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(self._answer(json.loads(line)))
                await writer.drain()
        except (OSError, ValueError):
            pass
        finally:
            writer.close()

    def close(self):
        async def stop():
            for s in self.servers:
                s.close()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])     # kB
    return None


def n_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def run_mode(lab, fakes, max_age, args):
    """--scrapes scrapes of an exporter with --max-age `max_age`: its
    samples, or sys.exit() on a real failure."""
    port = T.free_port()
    log = open(lab.path("export-%d.log" % max_age), "w+")
    exp = lab.spawn([T.TOOL, "export", "--listen", "127.0.0.1:%d" % port,
                     "--max-age", str(max_age), lab.vmdir],
                    stdout=log, stderr=log)
    # "/" is answered without asking the VMs
    if not T.wait_for(lambda: _answers(port, "/"), 30, 0.2):
        sys.exit("the exporter does not answer; see %s:\n%s"
                 % (log.name, open(log.name).read()[-2000:]))
    want = b"qemu_reclaim_vms %d\n" % len(fakes.names)
    ups = b"qemu_reclaim_up{"
    samples = []
    sessions0 = fakes.sessions
    c0, t0 = T.proc_cpu(exp.pid), time.monotonic()
    worst = 0.0
    for i in range(1, args.scrapes + 1):
        t = time.monotonic()
        try:
            status, body = scrape(port)
        except (OSError, http.client.HTTPException) as e:
            status, body = repr(e), b""
        worst = max(worst, time.monotonic() - t)
        if status != 200 or want not in body:
            sys.exit("scrape %d (--max-age %d): %s\n%s\n--- exporter log\n%s"
                     % (i, max_age, status,
                        body[-500:].decode(errors="replace"),
                        open(log.name).read()[-2000:]))
        if i == 1 or i % args.every == 0:
            time.sleep(0.05)    # the exporter closes the connection
            m = T.parse_metrics(body.decode())
            up = sum(1 for n, _, v in m if n == "qemu_reclaim_up" and v == 1)
            samples.append({"scrapes": i,
                            "rss_kib": proc_status(exp.pid, "VmRSS"),
                            "fds": n_fds(exp.pid), "up": up,
                            "sessions": fakes.sessions - sessions0,
                            "wall_s": time.monotonic() - t0})
            s = samples[-1]
            print("  --max-age %d: %6d scrapes, VmRSS %6d KiB, %3d fds, "
                  "%d/%d VMs up, %d QMP sessions, %.0f s" % (
                      max_age, i, s["rss_kib"], s["fds"], up,
                      body.count(ups), s["sessions"], s["wall_s"]),
                  flush=True)
        if exp.poll() is not None:
            sys.exit("the exporter exited with %s; see %s"
                     % (exp.returncode, log.name))
    cpu = T.proc_cpu(exp.pid) - c0
    wall = time.monotonic() - t0
    exp.terminate()
    exp.wait(timeout=20)
    if exp.returncode != 0:
        sys.exit("the exporter exited with %s on SIGTERM; see %s"
                 % (exp.returncode, log.name))
    return {"max_age": max_age, "samples": samples, "wall_s": wall,
            "cpu_s": cpu, "worst_scrape_s": worst,
            "passes": (fakes.sessions - sessions0) / len(fakes.names)}


def _answers(port, path):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", path)
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


def growth(samples, start):
    """(KiB, fds) from the sample at `start` scrapes to the last one."""
    first = next(s for s in samples if s["scrapes"] >= start)
    last = samples[-1]
    return (last["rss_kib"] - first["rss_kib"], last["fds"] - first["fds"],
            last["scrapes"] - first["scrapes"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--scrapes", type=int, default=10000)
    ap.add_argument("--every", type=int, default=1000,
                    help="scrapes between two samples")
    ap.add_argument("--max-age", type=int, action="append",
                    help="the exporter's --max-age (repeatable; default "
                    "0 and 5)")
    args = ap.parse_args()
    ages = args.max_age or [0, 5]
    command = " ".join(["bench/export-bench.py"] + sys.argv[1:])
    if not T.tool_exists():
        sys.exit("no tool at %s: scripts/build-tool.sh, or QR_TOOL=..."
                 % T.TOOL)
    os.makedirs(OUT, exist_ok=True)
    lab = T.Lab(prefix="qemu-reclaim-export-bench-")
    fakes = FakeVMs(lab.vmdir, args.vms)
    print("%d stand-in VMs at %s; %s" % (args.vms, lab.vmdir, T.TOOL),
          flush=True)
    results = [run_mode(lab, fakes, a, args) for a in ages]
    fakes.close()

    lines = ["`QR_TOOL=%s %s` (%d stand-in VMs, jemalloc answers; "
             "%d CPUs)" % (T.TOOL, command, args.vms, os.cpu_count()), ""]
    head = "| scrapes |"
    rule = "|---:|"
    for r in results:
        head += " --max-age %d: VmRSS KiB | fds | passes |" % r["max_age"]
        rule += "---:|---:|---:|"
    lines += [head, rule]
    for k, s in enumerate(results[0]["samples"]):
        row = "| %d |" % s["scrapes"]
        for r in results:
            x = r["samples"][k]
            row += " %d | %d | %d |" % (x["rss_kib"], x["fds"],
                                        x["sessions"] // args.vms)
        lines.append(row)
    lines.append("")
    for r in results:
        g_all, f_all, n_all = growth(r["samples"], 0)
        g_warm, f_warm, n_warm = growth(r["samples"], args.every)
        r["growth_kib"] = g_all
        r["growth_after_warmup_kib"] = g_warm
        r["growth_fds"] = f_all
        lines.append(
            "--max-age %d: %.0f passes (%d QMP sessions each) in %.0f s, "
            "exporter CPU %.1f s, slowest scrape %.3f s; VmRSS growth "
            "%+d KiB over %d scrapes, %+d KiB over the last %d "
            "(%+.1f KiB per 1,000); descriptors %+d"
            % (r["max_age"], r["passes"], args.vms, r["wall_s"], r["cpu_s"],
               r["worst_scrape_s"], g_all, n_all, g_warm, n_warm,
               1000.0 * g_warm / n_warm if n_warm else 0.0, f_all))
    text = "\n".join(lines)
    print("\n" + text)
    with open(os.path.join(OUT, "export-bench.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(OUT, "export-bench.json"), "w") as f:
        json.dump({"command": command, "tool": T.TOOL, "vms": args.vms,
                   "results": results}, f, indent=1)
    lab.cleanup()


if __name__ == "__main__":
    main()

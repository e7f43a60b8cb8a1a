#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What qemu-reclaim costs on a host with many VMs.

Starts N QEMU processes (default 100; the three patched builds in turn,
`-machine none`) with sockets <dir>/<vmid>.qmp,
in parallel batches, then measures:

  stats    one `qemu-reclaim stats DIR` pass over all of them (and
           `stats --json`): wall time, and the tool's CPU (user+sys, from
           wait4() of the tool process); median and min-max of --runs runs
  scrape   one HTTP GET /metrics of `qemu-reclaim export --listen`: wall
           time, and the exporter's CPU per scrape (/proc/<pid>/stat
           before and after all the scrapes, divided by their number)
  agent    `export --textfile F --interval 10` and `auto --interval 10`
           (its default 256M threshold: it only polls) left running for
           --agent-seconds (default 120 s): their CPU from /proc/<pid>/stat,
           extrapolated to one hour, as % of one core
  QEMU     the QEMUs' CPU per poll of one VM (all QEMUs' CPU during the
           stats passes, minus their idle CPU over the same time, divided
           by the number of VM visits)

Targets: one pass < 1 s; the agent < 1% of one core.
Prints a Markdown table and the exact command; keeps the raw figures in
bench/out/tool-bench.json and the table in bench/out/tool-bench.txt.

Usage: tool-bench.py [--vms N] [--runs N] [--agent-seconds S]
"""
import argparse
import json
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "tool"))
import toollib as T  # noqa: E402

OUT = os.path.join(T.TOP, "bench", "out")


def med_range(values, fmt="%.3f"):
    return "%s (%s - %s)" % (fmt % statistics.median(values),
                             fmt % min(values), fmt % max(values))


def qemu_cpu(vms):
    total = 0.0
    for v in vms:
        try:
            total += T.proc_cpu(v.pid)
        except OSError:
            pass
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--agent-seconds", type=float, default=120)
    ap.add_argument("--parallel", type=int, default=10,
                    help="QEMUs started at once")
    args = ap.parse_args()
    command = "bench/tool-bench.py " + " ".join(sys.argv[1:])
    if not T.tool_exists():
        sys.exit("no tool at %s: meson setup build/tool && ninja -C "
                 "build/tool" % T.TOOL)
    os.makedirs(OUT, exist_ok=True)
    lab = T.Lab(prefix="qemu-reclaim-bench-")
    builds = list(T.PATCHED)
    specs = [(str(1000 + i), builds[i % len(builds)])
             for i in range(args.vms)]
    t0 = time.monotonic()
    vms = lab.start_many(specs, parallel=args.parallel)
    start_s = time.monotonic() - t0
    rss_total = sum(v.rss() for v in vms)
    print("%d QEMUs started in %.1f s (%s in all)" % (len(vms), start_s,
                                                      T.mib(rss_total)),
          flush=True)
    res = {"vms": len(vms), "start_s": start_s, "qemu_rss_total": rss_total,
           "cpus": os.cpu_count()}

    # idle CPU of the QEMUs, to subtract
    c0, w0 = qemu_cpu(vms), time.monotonic()
    time.sleep(10)
    idle_rate = (qemu_cpu(vms) - c0) / (time.monotonic() - w0)
    res["qemu_idle_cpu_per_s"] = idle_rate

    # -- stats passes
    for name, extra in (("stats", []), ("stats --json", ["--json"])):
        walls, cpus = [], []
        q0, w0 = qemu_cpu(vms), time.monotonic()
        for _ in range(args.runs):
            r = T.run_tool(["stats"] + extra + [lab.vmdir], deadline=120)
            if r.rc != 0 or r.timed_out:
                sys.exit("%s failed:\n%s" % (name, r.describe()))
            walls.append(r.wall)
            cpus.append(r.cpu)
        qcpu = qemu_cpu(vms) - q0 - idle_rate * (time.monotonic() - w0)
        res[name] = {"wall_s": walls, "cpu_s": cpus,
                     "qemu_cpu_per_visit_ms":
                     1e3 * qcpu / (args.runs * len(vms))}
        print("%s: wall %s s, CPU %s s" % (name, med_range(walls),
                                           med_range(cpus)), flush=True)

    # -- export scrapes
    port = T.free_port()
    elog = open(os.path.join(lab.dir, "export.log"), "w")
    exp = lab.spawn([T.TOOL, "export", "--listen", "127.0.0.1:%d" % port,
                     lab.vmdir], stdout=elog, stderr=elog)
    url = "http://127.0.0.1:%d/metrics" % port
    T.wait_for(lambda: _try_get(url), 30, 0.2)
    walls = []
    c0 = T.proc_cpu(exp.pid)
    for _ in range(args.runs):
        t = time.monotonic()
        with urllib.request.urlopen(url, timeout=60) as f:
            body = f.read()
        walls.append(time.monotonic() - t)
    scrape_cpu = (T.proc_cpu(exp.pid) - c0) / args.runs
    ups = body.decode().count("qemu_reclaim_up{")
    res["scrape"] = {"wall_s": walls, "cpu_per_scrape_s": scrape_cpu,
                     "bytes": len(body), "vms_in_scrape": ups}
    print("scrape: wall %s s, exporter CPU %.3f s per scrape, %d bytes, "
          "%d VMs" % (med_range(walls), scrape_cpu, len(body), ups),
          flush=True)
    exp.terminate()
    exp.wait(timeout=10)

    # -- the agents, polling every 10 s
    prom = os.path.join(lab.dir, "textfile.prom")
    alog = open(os.path.join(lab.dir, "agents.log"), "w")
    agents = {
        "export --textfile F --interval 10": lab.spawn(
            [T.TOOL, "export", "--textfile", prom, "--interval", "10",
             lab.vmdir], stdout=alog, stderr=alog),
        "auto --interval 10": lab.spawn(
            [T.TOOL, "auto", "--interval", "10", lab.vmdir],
            stdout=alog, stderr=alog),
    }
    time.sleep(2)       # past start-up and the first poll
    start = {k: T.proc_cpu(p.pid) for k, p in agents.items()}
    w0 = time.monotonic()
    mtimes = set()
    while time.monotonic() - w0 < args.agent_seconds:
        try:
            mtimes.add(os.stat(prom).st_mtime_ns)
        except OSError:
            pass
        time.sleep(0.5)
    span = time.monotonic() - w0
    # the textfile agent really polled: one new file per interval
    res["textfile_writes"] = len(mtimes)
    print("textfile rewritten %d times in %.0f s" % (len(mtimes), span))
    if len(mtimes) < span / 10 - 1:
        sys.exit("the textfile agent did not poll every 10 s")
    res["agents"] = {}
    for k, p in agents.items():
        if p.poll() is not None:
            sys.exit("%s exited with %s; see %s" % (k, p.returncode,
                                                    alog.name))
        cpu = T.proc_cpu(p.pid) - start[k]
        per_hour = cpu * 3600 / span
        res["agents"][k] = {"cpu_s": cpu, "span_s": span,
                            "cpu_s_per_hour": per_hour,
                            "pct_one_core": 100 * per_hour / 3600}
        print("%s: %.2f s CPU in %.0f s -> %.1f s/hour = %.3f%% of one core"
              % (k, cpu, span, per_hour, 100 * per_hour / 3600), flush=True)
        p.terminate()
        p.wait(timeout=20)

    # -- table
    rows = []
    s, sj, sc = res["stats"], res["stats --json"], res["scrape"]
    rows.append(("one `stats` pass, %d VMs" % len(vms),
                 med_range(s["wall_s"]), med_range(s["cpu_s"]),
                 "%.2f" % s["qemu_cpu_per_visit_ms"],
                 "< 1 s: %s" % ("met" if statistics.median(s["wall_s"]) < 1
                                else "NOT met")))
    rows.append(("one `stats --json` pass, %d VMs" % len(vms),
                 med_range(sj["wall_s"]), med_range(sj["cpu_s"]),
                 "%.2f" % sj["qemu_cpu_per_visit_ms"],
                 "< 1 s: %s" % ("met" if statistics.median(sj["wall_s"]) < 1
                                else "NOT met")))
    rows.append(("one `export` scrape (GET /metrics), %d VMs" % len(vms),
                 med_range(sc["wall_s"]), "%.3f" % sc["cpu_per_scrape_s"],
                 "-", "< 1 s: %s" % ("met" if statistics.median(
                     sc["wall_s"]) < 1 else "NOT met")))
    for k, a in res["agents"].items():
        rows.append(("`%s`, %.0f s, x%.0f" % (k, a["span_s"],
                                              3600 / a["span_s"]),
                     "-", "%.1f s/hour = %.3f%% of one core" % (
                         a["cpu_s_per_hour"], a["pct_one_core"]), "-",
                     "< 1%%: %s" % ("met" if a["pct_one_core"] < 1
                                    else "NOT met")))
    lines = [
        "`%s` (%d QEMUs: %s, started in %.0f s, %s RSS in all; %d CPUs; "
        "%d runs)" % (command.strip(), len(vms), "/".join(builds), start_s,
                      T.mib(rss_total), os.cpu_count(), args.runs),
        "",
        "| what | wall s, median (min - max) | tool CPU s (user+sys) | "
        "QEMU CPU per VM visit ms | target |",
        "|---|---|---|---|---|"]
    lines += ["| %s |" % " | ".join(r) for r in rows]
    text = "\n".join(lines)
    print("\n" + text)
    with open(os.path.join(OUT, "tool-bench.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(OUT, "tool-bench.json"), "w") as f:
        json.dump(dict(res, command=command), f, indent=1)
    lab.cleanup()


def _try_get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as f:
            f.read()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()

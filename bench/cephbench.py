# SPDX-License-Identifier: GPL-2.0-or-later
"""Paired, CPU-accounted runs of a client against the local Ceph cluster.

Used by bench/rbd-bench.py and bench/qemu-img-rbd-bench.py.  Client and
OSD share the machine's 2 cores, so any CPU the client saves turns into
OSD throughput and any other process distorts a run; single runs vary by
about 10%, more than the effect looked for.  Hence:

- the variants are alternated within every round (the order rotates from
  round to round) and each is compared with the baseline of the same
  round: a pair, not two medians;
- before each run the machine must be idle (wait_idle);
- each run logs the client's CPU (rusage of the reaped process), the CPU
  of every Ceph daemon (/proc/PID/stat) and the machine's (/proc/stat);
  CPU used by anything else during the run ("others") beyond a small
  allowance means the run lost CPU: it is repeated (up to --retries).
"""
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import cephlib  # noqa: E402

OUT = os.path.join(cephlib.TOP, "bench", "out")


@contextlib.contextmanager
def filled_image_cluster(name, osds, image, log):
    """A throw-away cluster with `osds` OSDs and a 1 GiB image written once
    (reads of never-written objects would not reach BlueStore's data);
    stopped by pid and removed afterwards."""
    work = tempfile.mkdtemp(prefix=name + "-")
    cluster = cephlib.Cluster(os.path.join(work, "ceph"), osds=osds)
    try:
        secs = cluster.start()
        log("cluster with %d OSD(s) on %s ready in %.1f s (%s)" % (
            osds, cluster.osd_allocator(), secs, work))
        cluster.run("rbd", "create", "--size", "1G", image)
        cluster.run("rbd", "bench", "--io-type", "write", "--io-size", "4M",
                    "--io-threads", "4", "--io-pattern", "seq",
                    "--io-total", "1G", image, stdout=subprocess.DEVNULL)
        yield cluster
    finally:
        cluster.stop(purge=True)
        shutil.rmtree(work, ignore_errors=True)


def log_to(path):
    f = open(path, "a")

    def log(msg):
        line = time.strftime("%H:%M:%S ") + msg
        print(line, flush=True)
        f.write(line + "\n")
        f.flush()
    return log


def measured_run(argv, env, cluster):
    """Run argv to its end; returns (stdout, figures)."""
    daemons = cluster.daemon_pids()
    d0 = {n: cephlib.proc_cpu_s(p) for n, p in daemons.items()}
    m0, _ = cephlib.machine_cpu_s()
    w0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            universal_newlines=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - w0
    m1, _ = cephlib.machine_cpu_s()
    d1 = {n: cephlib.proc_cpu_s(p) for n, p in daemons.items()}
    if proc.returncode:
        raise RuntimeError("%s exited %d: %s" % (argv[0], proc.returncode,
                                                  out[-500:]))
    client = ru.ru_utime + ru.ru_stime
    dcpu = {n: d1[n] - d0[n] for n in daemons}
    machine = m1 - m0
    others = machine - client - sum(dcpu.values())
    return out, {
        "wall_s": wall,
        "client_cpu_s": client,
        "client_user_s": ru.ru_utime,
        "client_sys_s": ru.ru_stime,
        "osd_cpu_s": sum(v for n, v in dcpu.items() if n.startswith("osd")),
        "mon_mgr_cpu_s": sum(v for n, v in dcpu.items()
                             if not n.startswith("osd")),
        "machine_busy_s": machine,
        "others_cpu_s": others,
        "others_cpus": others / wall if wall else 0,
    }


def run_rounds(variants, rounds, cluster, parse, log,
               max_others=0.08, retries=3, idle=0.15):
    """variants: [(label, argv, env)].  parse(stdout) -> {"iops": ...}.
    Returns {label: [figures of round 1, 2, ...]}."""
    res = {v[0]: [] for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for label, argv, env in order:
            for attempt in range(retries + 1):
                busy = cephlib.wait_idle(idle, log=log)
                out, fig = measured_run(argv, env, cluster)
                fig.update(parse(out))
                fig["busy_before_cpus"] = busy
                fig["round"] = r + 1
                fig["attempt"] = attempt + 1
                log("round %d %s: %s" % (r + 1, label, json.dumps(
                    {k: round(v, 3) if isinstance(v, float) else v
                     for k, v in fig.items()})))
                if fig["others_cpus"] <= max_others:
                    break
                log("  lost %.2f CPUs to other processes (allowed %.2f): %s"
                    % (fig["others_cpus"], max_others,
                       "repeating" if attempt < retries else
                       "kept, marked lost_cpu"))
                fig["lost_cpu"] = True
            res[label].append(fig)
    return res


def mm(xs, fmt="%.0f"):
    """median (min-max)"""
    return (fmt + " (" + fmt + " - " + fmt + ")") % (
        statistics.median(xs), min(xs), max(xs))


def report(res, baseline, log, perf_key="iops", perf_name="IOPS"):
    labels = list(res)
    n = len(res[baseline])
    log("")
    log("Per variant, medians (min - max) over %d rounds:" % n)
    log("")
    log("| client | %s | client CPU s | client user / sys s | "
        "OSD CPU s | mon+mgr CPU s | machine busy CPUs | others CPUs | "
        "runs repeated |" % perf_name)
    log("|---|---|---|---|---|---|---|---|---|")
    for v in labels:
        rs = res[v]
        log("| %s | %s | %s | %.2f / %.2f | %s | %s | %s | %s | %d |" % (
            v, mm([x[perf_key] for x in rs]),
            mm([x["client_cpu_s"] for x in rs], "%.2f"),
            statistics.median(x["client_user_s"] for x in rs),
            statistics.median(x["client_sys_s"] for x in rs),
            mm([x["osd_cpu_s"] for x in rs], "%.2f"),
            mm([x["mon_mgr_cpu_s"] for x in rs], "%.2f"),
            mm([x["machine_busy_s"] / x["wall_s"] for x in rs], "%.2f"),
            mm([x["others_cpus"] for x in rs], "%.3f"),
            sum(x["attempt"] - 1 for x in rs)))
    log("")
    log("Pairs (same round) vs %s, median (min - max) of the per-round "
        "differences:" % baseline)
    log("")
    log("| client | %s %% | client CPU %% | client CPU lower in |"
        % perf_name)
    log("|---|---|---|---|")
    for v in labels:
        if v == baseline:
            continue
        dp = [100.0 * (a[perf_key] / b[perf_key] - 1)
              for a, b in zip(res[v], res[baseline])]
        dc = [100.0 * (a["client_cpu_s"] / b["client_cpu_s"] - 1)
              for a, b in zip(res[v], res[baseline])]
        lower = sum(1 for d in dc if d < 0)
        log("| %s | %s | %s | %d of %d rounds |" % (
            v, mm(dp, "%+.1f"), mm(dc, "%+.1f"), lower, len(dc)))
    lost = sum(1 for v in labels for x in res[v] if x.get("lost_cpu"))
    if lost:
        log("")
        log("%d kept runs still lost CPU to other processes after the "
            "retries (marked lost_cpu in the log)" % lost)

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The main loop's round trip on a second monitor during a release.

For each QEMU build and each mode, --rounds fresh QEMUs (machine none,
started by scripts/qmplib.py's start_qemu: -accel kvm, else qtest), with
the setup of
tests/qtest/allocator-test.c: a 256 MiB source file (-blockdev file),
a slow null-co target (latency-ns 50 ms), GLIBC_TUNABLES
glibc.malloc.trim_threshold=4 GiB (glibc would otherwise trim the top of
its heap at free(); --glibc-default drops it).  Per round:

  1. the second monitor is pinged at rest (--rest-pings round trips, back
     to back): the round trip with nothing going on;
  2. a backup with x-perf {use-copy-range: false, max-workers: 2048,
     max-chunk: 65536} fills the heap with 128 MiB of 64 KiB bounce
     buffers and frees them (RSS sampled every 10 ms: its peak);
  3. as soon as BLOCK_JOB_COMPLETED arrives (QEMU's own automatic release
     comes ~1 s later and is not the one measured), a pinger starts round
     trips back to back on the second monitor, and a release is started
     on the main QMP socket:
       qmp      x-release-free-memory (the reply comes when it has ended)
       hmp      human-monitor-command "release_free_memory" (returns at
                once, the release runs in the background)
       qmp-peer x-release-free-memory, with the second monitor a QMP
                monitor pinged with query-status: QMP dispatches one
                command at a time across all QMP monitors, so this
                measures how long another QMP client is held up (v1's
                "sync blocks" column was the release's duration, assumed;
                this is measured)
     For qmp and hmp the second monitor is an HMP monitor on its own unix
     socket (-monitor unix:PATH,server=on,wait=off) sent "info status".
  4. the pinger stops once the release's ALLOCATOR_MEMORY_RELEASED event
     (trigger manual) has arrived on the main socket.  The release ran
     from the event's timestamp minus its duration-us to the timestamp;
     the round trips that started in that window are kept ("during").
     The event is sent by a bottom half in the main loop after the
     release has ended, so the window ends slightly late if the main loop
     was busy.  "Worst overlapping" is the longest round trip that
     overlapped the window at all, including the one in flight when the
     release started: where the main loop waits for the release, that
     one waits longest, and it did not start "during".
  5. the RCU thread's idle-time releases, which v2 cannot switch off and
     QEMU counts nowhere, are counted by benchlib's LD_PRELOAD shim
     (IdleCounter: malloc_trim(4 MiB) in glibc builds, arena decays in
     jemalloc builds, none in tcmalloc builds), read before the backup,
     when its end was seen, when our release was sent, and at the end:
     in the round, and between the backup's end and our release.  An idle
     release, or the allocator's own purging, between the backup's end and
     ours returns part of the heap first: "RSS ... at release start" (the
     event's process-rss-before) shows what was left for ours.

With glibc, malloc_trim() holds each arena's lock for the arena's whole
trim, and the main loop allocates from the main arena, where the bounce
buffers were: round trips can last as long as that trim, and even HMP's
release_free_memory, which returns at once, is answered only when the
main loop gets the arena back ("command answered after").  That is what
glibc does, and it is reported as measured.

Dropped from v1: releasable (glibc has none in v2), returned is shown
where the allocator counts it (not glibc); the longest step (v2 does not
report it); the round trip of x-query-allocator-stats (500 of them on the
filled heap would delay the release past the automatic one; the cost of
the statistics themselves is measured by bench/release-bench.sh); "sync
blocks" as an assumed figure (qmp-peer measures what a QMP client waits).

Prints one JSON line per round, then per build and mode the medians over
the rounds: release duration, round trips during it, their median and
worst (median of the per-round worst, and the worst of all rounds), the
worst overlapping, the round trip at rest (median of --rest-pings), when
the release command itself was answered, RSS at the backup's peak, when
the release started and ended, returned, idle calls.  No percentiles
beyond the median: the rounds have from 0 to ~200 round trips during a
release, too few for a p99.

Usage: qmp-bench.py [--rounds N] [--modes qmp,hmp,qmp-peer]
                    [NAME=QEMU_BINARY ...]
       (default: build/build-{system,tcmalloc,jemalloc}/qemu-system-x86_64)
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import fmt, median_or_none  # noqa: E402

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SIZE = 256 << 20
WORKERS = 2048
CHUNK = 64 << 10
MODES = ("qmp", "hmp", "qmp-peer")


def pinger(ping, out, stop):
    """Round trips back to back until stop: (start wall time, ms)."""
    while not stop.is_set():
        t_wall = time.time()
        t0 = time.perf_counter()
        ping()
        out.append((t_wall, (time.perf_counter() - t0) * 1e3))


def one_round(qemu, work, source, mode, rest_pings):
    qmp_path = os.path.join(work, "qmp.sock")
    mon_path = os.path.join(work, "mon.sock")
    if os.path.exists(mon_path):
        os.unlink(mon_path)
    second = (["-qmp", "unix:%s,server=on,wait=off" % mon_path]
              if mode == "qmp-peer" else
              ["-monitor", "unix:%s,server=on,wait=off" % mon_path])
    counter = benchlib.IdleCounter(os.path.join(work, "idle-counter"))
    with counter.preloaded():
        proc = benchlib.start_qemu(qemu, qmp_path, [
            "-blockdev", "file,node-name=src,filename=%s" % source,
            "-blockdev", "null-co,node-name=tgt,size=%d,latency-ns=50000000"
            % SIZE] + second, log=os.path.join(work, "qemu.log"))
    qmp = mon = None
    try:
        qmp = benchlib.AsyncQMP(qmp_path)
        benchlib.wait_for_socket(mon_path, proc)
        if mode == "qmp-peer":
            mon = benchlib.SyncQMP(mon_path, timeout=60)

            def ping():
                mon.cmd("query-status")
        else:
            mon = benchlib.HMP(mon_path)

            def ping():
                mon.cmd("info status")
        info = benchlib.allocator_info(qmp)
        if info is None:
            raise SystemExit("%s has no x-query-allocator-stats: not a "
                             "build of the series" % qemu)
        backend = info["backend"]
        idle0 = benchlib.idle_releases(counter)
        time.sleep(0.2)     # settle after the statistics read

        rest = []
        for _ in range(rest_pings):
            t0 = time.perf_counter()
            ping()
            rest.append((time.perf_counter() - t0) * 1e3)

        rss0 = benchlib.rss(proc.pid)
        n_ev = len(qmp.events)
        qmp.cmd("blockdev-backup", device="src", target="tgt", sync="full",
                **{"job-id": "backup",
                   "x-perf": {"use-copy-range": False,
                              "max-workers": WORKERS, "max-chunk": CHUNK}})
        peak = rss0
        done = None
        end = time.monotonic() + 120
        while done is None:
            peak = max(peak, benchlib.rss(proc.pid))
            done = qmp.wait_event(
                lambda m: m["event"] == "BLOCK_JOB_COMPLETED", n_ev, 0.01)
            if done is None and time.monotonic() > end:
                raise RuntimeError("the backup did not end in 120 s")
        if "error" in done[2]["data"]:
            raise RuntimeError("backup failed: %s" % done[2]["data"])
        idle_done = benchlib.idle_releases(counter)
        n_rel = len(qmp.events)

        # The release, with the pinger running
        pings = []
        stop = threading.Event()
        th = threading.Thread(target=pinger, args=(ping, pings, stop))
        th.start()
        rss_start = benchlib.rss(proc.pid)
        idle_send = benchlib.idle_releases(counter)
        if mode == "hmp":
            t_send = qmp.send("human-monitor-command",
                              **{"command-line": "release_free_memory"})
        else:
            t_send = qmp.send("x-release-free-memory")
        try:
            t_reply, answer = qmp.reply(60)
            ev = qmp.wait_event(
                lambda m: (m["event"] == "ALLOCATOR_MEMORY_RELEASED" and
                           m["data"]["trigger"] == "manual"), n_rel, 60)
        finally:
            stop.set()
            th.join()
        if ev is None:
            raise RuntimeError("no ALLOCATOR_MEMORY_RELEASED event")
        _, t_ev_arrival, msg = ev
        if mode == "hmp" and "in the background" not in answer:
            raise RuntimeError("release_free_memory said: %r" % answer)
        data = msg["data"]
        ts = msg["timestamp"]
        rel_end = ts["seconds"] + ts["microseconds"] / 1e6
        rel_start = rel_end - data["duration-us"] / 1e6
        during = [ms for t, ms in pings if rel_start <= t <= rel_end]
        overlap = [ms for t, ms in pings
                   if t <= rel_end and t + ms / 1e3 >= rel_start]
        autos_before = [m for _, m in qmp.find_events(
            "ALLOCATOR_MEMORY_RELEASED", n_rel)
            if m["data"]["trigger"] == "automatic"
            and m["timestamp"]["seconds"] + m["timestamp"]["microseconds"]
            / 1e6 <= rel_end]
        idle1 = benchlib.idle_releases(counter)
        qmp.cmd("quit")
        before = data.get("process-rss-before")
        after = data.get("process-rss-after")
        return {
            "backend": backend,
            "mode": mode,
            "release_ms": data["duration-us"] / 1e3,
            "returned_mib": data["returned"] / 2**20
            if "returned" in data else None,
            "rss_before_backup_mib": rss0 / 2**20,
            "rss_peak_mib": peak / 2**20,
            "rss_release_start_mib": before / 2**20 if before else None,
            "rss_release_end_mib": after / 2**20 if after else None,
            "rss_at_send_mib": rss_start / 2**20,
            "rtts_during": len(during),
            "rtt_during_median_ms": statistics.median(during)
            if during else None,
            "rtt_during_max_ms": max(during) if during else None,
            "rtt_overlap_max_ms": max(overlap) if overlap else None,
            "rtt_rest_median_ms": statistics.median(rest) if rest else None,
            "rtt_rest_max_ms": max(rest) if rest else None,
            "rest_pings": len(rest),
            # when the release command was answered, after it was sent
            "command_answered_ms": (t_reply - t_send) * 1e3,
            "event_after_send_ms": (t_ev_arrival - t_send) * 1e3,
            # when the release started (QEMU's clock), after we sent it
            "release_started_after_send_ms": (rel_start - t_send) * 1e3,
            "pings_total": len(pings),
            "automatic_before_ours": len(autos_before),
            "idle_releases": idle1 - idle0
            if idle0 is not None and idle1 is not None else None,
            "idle_before_release": idle_send - idle_done
            if idle_done is not None and idle_send is not None else None,
        }
    finally:
        for c in (mon, qmp):
            if c is not None:
                try:
                    c.close()
                except OSError:
                    pass
        if proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except Exception:
                proc.kill()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma-separated, of: " + ", ".join(MODES))
    ap.add_argument("--rest-pings", type=int, default=200,
                    help="round trips at rest before each backup")
    ap.add_argument("--glibc-default", action="store_true",
                    help="no GLIBC_TUNABLES trim_threshold")
    ap.add_argument("builds", nargs="*", metavar="NAME=QEMU_BINARY")
    args = ap.parse_args()
    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            ap.error("unknown mode %r" % m)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    builds = [b.split("=", 1) for b in args.builds] or [
        (v, os.path.join(TOP, "build", "build-" + v, "qemu-system-x86_64"))
        for v in ("system", "tcmalloc", "jemalloc")]
    if not args.glibc_default:
        os.environ["GLIBC_TUNABLES"] = benchlib.GLIBC_NO_TRIM
    work = tempfile.mkdtemp(prefix="qmp-bench-")
    rows = {}
    try:
        source = benchlib.make_source(os.path.join(work, "source.raw"), SIZE)
        for r in range(args.rounds):
            for name, qemu in builds:
                for mode in modes:
                    res = one_round(qemu, work, source, mode,
                                    args.rest_pings)
                    rows.setdefault((name, mode), []).append(res)
                    print("round %d %s %s: %s" % (r + 1, name, mode,
                          json.dumps({k: round(v, 3) if isinstance(v, float)
                                      else v for k, v in res.items()})),
                          flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.rounds < 5:
        print("\nOnly %d rounds: a smoke run, not a measurement (use >= 5)"
              % args.rounds)
    print("\nMedians over %d rounds (GLIBC_TUNABLES %s); second monitor: "
          "HMP \"info status\" (qmp, hmp), QMP query-status (qmp-peer)\n"
          % (args.rounds, os.environ.get("GLIBC_TUNABLES", "unset")))
    hdr = ["build", "backend", "release started by", "rounds",
           "release ms", "RTTs during (min - max)", "RTT during median ms",
           "worst RTT during ms (worst round)",
           "worst RTT overlapping the release ms (worst round)",
           "RTT at rest median ms", "command answered after ms",
           "RSS peak / at release start / after MiB", "returned MiB",
           "idle calls, all rounds (of them between the backup's end and "
           "the release)", "rounds w/o RTT during"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, _ in builds:
        for mode in modes:
            res = rows[(name, mode)]

            def m(k, f="%.2f"):
                return fmt(median_or_none(x[k] for x in res), f)

            n = [x["rtts_during"] for x in res]
            worst = [x["rtt_during_max_ms"] for x in res
                     if x["rtt_during_max_ms"] is not None]
            idle = [x["idle_releases"] for x in res]
            idle_before = [x["idle_before_release"] for x in res]
            print("| %s |" % " | ".join([
                name, res[0]["backend"],
                "QMP" if mode == "qmp" else "HMP" if mode == "hmp"
                else "QMP (peer: QMP)", str(len(res)), m("release_ms"),
                "%s (%d - %d)" % (fmt(statistics.median(n), "%.0f"),
                                  min(n), max(n)),
                m("rtt_during_median_ms"),
                "%s (%s)" % (m("rtt_during_max_ms"),
                             fmt(max(worst) if worst else None, "%.2f")),
                "%s (%s)" % (m("rtt_overlap_max_ms"), fmt(max(
                    (x["rtt_overlap_max_ms"] for x in res
                     if x["rtt_overlap_max_ms"] is not None),
                    default=None), "%.2f")),
                m("rtt_rest_median_ms"),
                m("command_answered_ms"),
                "%s / %s / %s" % (m("rss_peak_mib", "%.0f"),
                                  m("rss_release_start_mib", "%.0f"),
                                  m("rss_release_end_mib", "%.0f")),
                m("returned_mib", "%.1f") if any(
                    x["returned_mib"] is not None for x in res)
                else "not counted",
                "%s (%s)" % ("-" if None in idle else sum(idle),
                             "-" if None in idle_before
                             else sum(idle_before)),
                str(sum(1 for x in n if not x))]))


if __name__ == "__main__":
    main()

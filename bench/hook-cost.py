#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Steady-state cost of the series: patched against pristine QEMU, paired.

What the series changes on a path that runs while QEMU does I/O is one
call: the RCU thread's idle hook.  Where upstream's util/rcu.c calls
malloc_trim(4 MiB) each time the thread runs out of callbacks, the series
calls qemu_allocator_idle(), which does

  glibc ("system" build)  the same malloc_trim(4 MiB): should cost nothing;
  jemalloc                mallctl("arena.<all>.decay"): new work, upstream
                          with --enable-malloc=jemalloc calls nothing;
  tcmalloc                nothing (upstream: nothing either), so its pair
                          shows what two equal builds differ by.

Everything else the series adds runs after a backup job, on request, or
when statistics are read.  So this compares, for every variant, the
patched qemu-img (build/build-<variant>, scripts/build.sh) with a pristine
one built from the tree's `baseline` tag with the same configure flags,
on two workloads that run real QEMU code without Ceph:

  null-read  qemu-img bench -c COUNT -d 16 -s 4096 --image-opts
             driver=null-co,size=1G,read-zeroes=off
             4 KiB reads through the block layer, coroutines and
             BlockBackend AIO, no system call per request: the I/O path
             at its cheapest, where any cost of the series would show most.
             It never wakes the RCU thread: the hook runs once per process.
  map        qemu-img map --output=json -f raw FRAG
             FRAG has EXTENTS data extents of 4 KiB, each followed by a
             4 KiB hole.  Every data extent's block status is cached in
             the node with an RCU update (bdrv_bsc_fill() -> g_free_rcu):
             the RCU thread wakes, frees, runs out of callbacks and calls
             the idle hook, thousands of times per run.  This is the
             workload where the hook's cost can show.

How often the hook ran is counted in one extra, untimed run per build and
workload, with the benches' LD_PRELOAD shim (bench/benchlib.py,
IdleCounter; compiled once into build/bench/idle-counter.so) that counts
the calls of malloc_trim() and of mallctl("....decay").

The binaries are copied before the rounds (build/ is shared: a rebuild
meanwhile must not change what is measured).  Rounds: in every round,
each workload and variant runs patched and pristine back to back, the
order alternating from round to round; a pair is compared within its
round (the machine's load drifts more between rounds than within a
pair).  Per run: throughput (bench: count / "Run
completed in"; map: extents / wall time) and the CPU time of the process
(user + sys from os.wait4, all threads).  Per pair: the differences in %;
reported as the median (min - max), how many pairs came out lower, and
the exact two-sided Wilcoxon signed-rank p over the pairs.  The machine's
load (/proc/loadavg) at start and end, and the CPU other processes used
during each run (/proc/stat minus the run's own), are printed so that
noise is visible: the measurement runs at normal priority but does not
wait for an idle machine.

The pristine tree is a `git worktree` of build/qemu's `baseline` tag in
build/pristine/qemu, built in build/pristine/build-<variant> (qemu-img
only, under nice -n 19).  The directory layout mirrors build/: from every
build directory the sources are ../qemu, so the command lines are those
of the patched builds and ccache (scripts/lib.sh's settings) serves every
file the series does not touch from the patched builds' compilations (as
preprocessor-mode hits: config-host.h differs), in about a minute each.
Both are set up again when the tree is gone or not at `baseline`, and
otherwise only brought up to date.

Usage: hook-cost.py [--rounds N] [--variants system jemalloc tcmalloc]
                    [--workloads null-read map] [--bench-count N]
                    [--map-extents N] [--build-only] [--selftest]
       hook-cost.py --report JSON...   (the tables of saved runs, pooled)
Log: bench/out/hook-cost.log, raw figures: bench/out/hook-cost.json.
"""
import argparse
import bz2
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(TOP, "scripts")]
import benchlib  # noqa: E402  (IdleCounter)
import cephbench  # noqa: E402  (log_to, mm, OUT)
import cephlib  # noqa: E402  (machine_cpu_s)

NICE = ["nice", "-n", "19"]


# --- statistics ----------------------------------------------------------

def signed_ranks2(diffs):
    """Twice the average ranks of |d| (integers even with ties), for the
    non-zero differences, in their order; and those differences."""
    d = [x for x in diffs if x != 0]
    order = sorted(range(len(d)), key=lambda i: abs(d[i]))
    ranks2 = [0] * len(d)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):        # ranks i+1 .. j+1, averaged
            ranks2[order[k]] = i + j + 2
        i = j + 1
    return ranks2, d


def wilcoxon_exact(diffs):
    """Exact two-sided p of the Wilcoxon signed-rank test for paired
    differences: zero differences are dropped, ties get their average
    rank, and p is the share of the 2^n sign assignments whose W+ lies as
    far from its mean as the observed one (or farther).  The assignments
    are counted per W+ rather than one by one: the same count in
    O(n * sum of ranks), for any n.  Returns (p, W+, n)."""
    ranks2, d = signed_ranks2(diffs)
    n = len(d)
    if n == 0:
        return 1.0, 0.0, 0
    w2 = sum(r for r, x in zip(ranks2, d) if x > 0)
    total2 = sum(ranks2)
    counts = {0: 1}                  # doubled W+ -> number of assignments
    for r in ranks2:
        nxt = dict(counts)
        for s, c in counts.items():
            nxt[s + r] = nxt.get(s + r, 0) + c
        counts = nxt
    dev = abs(2 * w2 - total2)
    extreme = sum(c for s, c in counts.items() if abs(2 * s - total2) >= dev)
    return extreme / 2 ** n, w2 / 2, n


def wilcoxon_enumerated(diffs):
    """The same p by enumerating every sign assignment (n <= 20): the
    selftest's reference."""
    ranks2, d = signed_ranks2(diffs)
    n = len(d)
    assert n <= 20
    total2 = sum(ranks2)
    dev = abs(2 * sum(r for r, x in zip(ranks2, d) if x > 0) - total2)
    extreme = 0
    for signs in itertools.product((0, 1), repeat=n):
        w2 = sum(r for r, s in zip(ranks2, signs) if s)
        extreme += abs(2 * w2 - total2) >= dev
    return extreme / 2 ** n


def selftest():
    # scipy.stats.wilcoxon's documented example (Darwin's maize heights,
    # cross- minus self-fertilized): W- = 24, exact two-sided p =
    # 0.041259765625 = 2 * 676 / 2^15.
    d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    p, wplus, n = wilcoxon_exact(d)
    assert n == 15 and wplus == 120 - 24, (n, wplus)
    assert p == 0.041259765625, p
    assert wilcoxon_enumerated(d) == p
    # All of n = 5 in one direction: only 2 of the 32 assignments are as
    # extreme, p = 0.0625; zeros are dropped.
    assert wilcoxon_exact([1, 2, 3, 4, 5, 0])[0] == 0.0625
    assert wilcoxon_exact([-0.5, -1, -2, -3, -4])[0] == 0.0625
    assert wilcoxon_exact([])[0] == 1.0
    # Ties: |d| = 1, 1, 2 -> ranks 1.5, 1.5, 3.
    assert signed_ranks2([1, -1, 2])[0] == [3, 3, 6]
    # Counting per W+ agrees with the enumeration, ties included.
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 10)
        xs = [rng.choice([-3, -2, -1, 0, 1, 2, 3, 4]) * rng.choice([1, 1.5])
              for _ in range(n)]
        if any(xs):
            p = wilcoxon_exact(xs)[0]
            assert abs(p - wilcoxon_enumerated(xs)) < 1e-12, xs
    print("selftest: ok")


# --- the pristine build --------------------------------------------------

def lib_env():
    """The environment of scripts/lib.sh (ccache's variables and compiler
    wrappers on PATH, QR_WORK, QR_TREE), taken from lib.sh itself so the
    pristine builds use the same cache as the patched ones."""
    out = subprocess.run(
        ["bash", "-c", '. "$1" && export QR_WORK QR_TREE '
         'QR_QEMU_VERSION="$QEMU_VERSION" && env -0', "-",
         os.path.join(TOP, "scripts", "lib.sh")],
        stdout=subprocess.PIPE, check=True).stdout.decode()
    return dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)


def git(cwd, *args, check=True):
    r = subprocess.run(["git", "-C", cwd] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if check and r.returncode:
        raise SystemExit("git %s failed: %s" % (" ".join(args), r.stderr))
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_worktree(tree, pristine_tree, log):
    """build/pristine/qemu at the tree's baseline, without local changes;
    made anew when missing, detached from a re-created tree (scripts/
    tree.sh deletes and re-creates build/qemu), or elsewhere."""
    base = git(tree, "rev-parse", "baseline^{commit}")
    if os.path.exists(pristine_tree):
        head = git(pristine_tree, "rev-parse", "HEAD", check=False)
        dirty = git(pristine_tree, "status", "--porcelain",
                    "--untracked-files=no", check=False)
        if head == base and dirty == "":
            return base
        log("pristine tree %s is not a clean checkout of baseline: "
            "making it anew" % pristine_tree)
        git(tree, "worktree", "remove", "--force", pristine_tree, check=False)
        shutil.rmtree(pristine_tree, ignore_errors=True)
    git(tree, "worktree", "prune")
    os.makedirs(os.path.dirname(pristine_tree), exist_ok=True)
    git(tree, "worktree", "add", "--detach", pristine_tree, base)
    log("added worktree %s at baseline %s" % (pristine_tree, base[:8]))
    return base


def stand_ins(tree, pristine_tree, flags):
    """What scripts/build.sh puts beside the tree, outside git's view (its
    edk2_stand_ins and guest_devices): empty edk2 firmware archives, and
    the device set named by --with-devices-x86_64, copied from the patched
    tree.  Files already equal are left alone (their mtime would make
    meson reconfigure)."""
    pc_bios = os.path.join(pristine_tree, "pc-bios")
    with open(os.path.join(pc_bios, "meson.build")) as f:
        names = re.findall(r"^ *'(edk2-[a-z0-9_-]*\.fd)',$", f.read(), re.M)
    for name in names:
        path = os.path.join(pc_bios, name + ".bz2")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(bz2.compress(b""))
    for flag in flags:
        m = re.match(r"--with-devices-(\w+)=(.+)$", flag)
        if not m:
            continue
        rel = os.path.join("configs", "devices", m.group(1) + "-softmmu",
                           m.group(2) + ".mak")
        src, dst = os.path.join(tree, rel), os.path.join(pristine_tree, rel)
        with open(src, "rb") as f:
            want = f.read()
        if not os.path.exists(dst) or open(dst, "rb").read() != want:
            shutil.copyfile(src, dst)


def build_pristine(variant, env, log):
    """Configure (when the flags changed) and build the pristine qemu-img
    of one variant, with the configure flags of build/build-<variant>.
    Returns the binary's path."""
    work, tree = env["QR_WORK"], env["QR_TREE"]
    pristine_tree = os.path.join(work, "pristine", "qemu")
    flags_file = os.path.join(work, "build-" + variant, ".qr-configure")
    if not os.path.exists(flags_file):
        raise SystemExit("no patched build of '%s' (%s): run scripts/build.sh "
                         "%s" % (variant, flags_file, variant))
    with open(flags_file) as f:
        flags_text = f.read()
    flags = flags_text.split()
    stand_ins(tree, pristine_tree, flags)
    bdir = os.path.join(work, "pristine", "build-" + variant)
    os.makedirs(bdir, exist_ok=True)
    mine = os.path.join(bdir, ".qr-configure")
    if (not os.path.exists(os.path.join(bdir, "build.ninja")) or
            not os.path.exists(mine) or open(mine).read() != flags_text):
        log("configure pristine %s: %s" % (variant, flags_text.strip()))
        with open(os.path.join(bdir, "configure.log"), "w") as out:
            r = subprocess.run(NICE + [os.path.join(pristine_tree,
                                                    "configure")] + flags,
                               cwd=bdir, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
        if r.returncode:
            raise SystemExit("configure failed, see %s/configure.log" % bdir)
        with open(mine, "w") as f:
            f.write(flags_text)
    t0 = time.monotonic()
    with open(os.path.join(bdir, "ninja.log"), "w") as out:
        r = subprocess.run(NICE + ["ninja", "-C", bdir, "qemu-img"], env=env,
                           stdout=out, stderr=subprocess.STDOUT)
    if r.returncode:
        raise SystemExit("build failed, see %s/ninja.log" % bdir)
    with open(os.path.join(bdir, "ninja.log")) as f:
        steps = sum(1 for line in f if line.startswith("["))
    log("pristine %s: qemu-img up to date (%d steps, %.0f s)"
        % (variant, steps, time.monotonic() - t0))
    return os.path.join(bdir, "qemu-img")


# --- counting the hook's calls -------------------------------------------

def count_hook_calls(argv, tmp):
    """(malloc_trim calls, arena decay calls) in one run of argv, counted
    by benchlib's LD_PRELOAD shim: malloc_trim() of any pad (qemu-img
    runs no release, so all of them are the idle hook's), and mallctl()
    of names ending in ".decay"."""
    counter = benchlib.IdleCounter(os.path.join(tmp, "hook-count"))
    subprocess.run(argv, env=counter.env(), stdout=subprocess.DEVNULL,
                   check=True)
    counts = counter.read()
    if counts is None:
        raise RuntimeError("the counting shim was not loaded into %s"
                           % argv[0])
    return (counts["idle_trims"] + counts["release_trims"],
            counts["idle_decays"])


# --- workloads -----------------------------------------------------------

def make_fragmented(path, extents):
    """A raw file of `extents` data extents of 4 KiB (bytes 0x5a), each
    followed by a 4 KiB hole."""
    if os.path.exists(path) and os.path.getsize(path) == extents * 8192:
        return path
    data = b"\x5a" * 4096
    with open(path, "wb") as f:
        f.truncate(extents * 8192)
        for i in range(extents):
            os.pwrite(f.fileno(), data, i * 8192)
        os.fsync(f.fileno())
    return path


UNITS = {"null-read": "IOPS", "map": "extents/s"}


class NullRead:
    name = "null-read"
    unit = "IOPS"
    capture = True

    def __init__(self, count):
        self.count = count

    def argv(self, img):
        return [img, "bench", "-c", str(self.count), "-d", "16", "-s", "4096",
                "--image-opts", "driver=null-co,size=1G,read-zeroes=off"]

    def rate(self, out, wall):
        m = re.search(r"Run completed in ([\d.]+) seconds", out)
        if not m:
            raise RuntimeError("no result in: " + out[-300:])
        return self.count / float(m.group(1))


class Map:
    name = "map"
    unit = "extents/s"
    capture = False          # megabytes of JSON: to /dev/null

    def __init__(self, path, extents):
        self.path = path
        self.extents = extents

    def argv(self, img):
        return [img, "map", "--output=json", "-f", "raw", self.path]

    def rate(self, out, wall):
        return self.extents / wall

    def check(self, img):
        """Every data extent is one map entry (with its hole): 2 per
        extent, or the run would not exercise what it should."""
        out = subprocess.run(self.argv(img), stdout=subprocess.PIPE,
                             check=True, universal_newlines=True).stdout
        entries = json.loads(out)
        data = sum(1 for e in entries if e["data"])
        if data != self.extents:
            raise SystemExit("map of %s: %d data extents, expected %d"
                             % (self.path, data, self.extents))


# --- measurement ---------------------------------------------------------

def measured_run(argv, capture):
    """Run argv to its end: (stdout, wall s, user s, sys s, CPUs used by
    other processes during the run)."""
    m0, _ = cephlib.machine_cpu_s()
    w0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE if capture
                            else subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    out = proc.stdout.read() if capture else ""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - w0
    m1, _ = cephlib.machine_cpu_s()
    if proc.returncode:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv),
                                                  proc.returncode, out[-500:]))
    cpu = ru.ru_utime + ru.ru_stime
    return out, wall, ru.ru_utime, ru.ru_stime, (m1 - m0 - cpu) / wall


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pct(a, b):
    return 100.0 * (a / b - 1)


def fmt_p(p):
    """Two decimals, or two significant digits below 0.01 (12 pairs go
    down to 2 / 4096)."""
    return "%.2f" % p if p >= 0.01 else "%.2g" % p


def hook_calls(calls):
    """"29476 / 168990 malloc_trim": the counting runs, one per file."""
    words = []
    for i, name in ((0, "malloc_trim"), (1, "decay")):
        if any(c[i] for c in calls):
            words.append("%s %s" % (" / ".join(str(c[i]) for c in calls),
                                    name))
    return ", ".join(words) or "none"


def table_head(log, title, columns):
    """A markdown table's title, header and separator."""
    log("")
    log(title)
    log("")
    log("| " + " | ".join(columns) + " |")
    log("|" + "---|" * len(columns))


def report(res, counts, log):
    """res[workload][variant][build]: the runs' figures, in round order;
    counts[workload][variant][build]: [(malloc_trim, decay) calls] of the
    counting runs (one per file when several runs are reported)."""
    table_head(log, "Per build, median (min - max) over the rounds; CPU = "
               "user + sys of qemu-img; others = CPUs other processes used "
               "during the run:",
               ["workload", "variant", "build", "throughput", "CPU s",
                "user / sys s", "others CPUs", "idle-hook calls per run"])
    for w, per_variant in res.items():
        for v, per_build in per_variant.items():
            for b, rs in per_build.items():
                calls = counts[w][v][b]
                log("| %s | %s | %s | %s %s | %s | %.2f / %.2f | %s | %s |" % (
                    w, v, b, cephbench.mm([x["rate"] for x in rs]), UNITS[w],
                    cephbench.mm([x["cpu_s"] for x in rs], "%.2f"),
                    statistics.median(x["user_s"] for x in rs),
                    statistics.median(x["sys_s"] for x in rs),
                    cephbench.mm([x["others"] for x in rs], "%.2f"),
                    hook_calls(calls)))
    table_head(log, "Pairs (patched vs pristine, same round), median (min - "
               "max) of the differences in %; p = exact two-sided Wilcoxon "
               "signed-rank:",
               ["workload", "variant", "pairs", "throughput %", "lower in",
                "p", "CPU %", "lower in", "p"])
    for w, per_variant in res.items():
        for v, per_build in per_variant.items():
            a, b = per_build["patched"], per_build["pristine"]
            cols = [str(len(a))]
            for key in ("rate", "cpu_s"):
                d = [pct(x[key], y[key]) for x, y in zip(a, b)]
                cols += [cephbench.mm(d, "%+.1f"),
                         "%d of %d" % (sum(1 for x in d if x < 0), len(d)),
                         fmt_p(wilcoxon_exact(d)[0])]
            log("| %s | %s | %s |" % (w, v, " | ".join(cols)))


def report_files(paths, log):
    """The tables again, from saved runs (bench/out/hook-cost.json): the
    rounds of several files are pooled per workload and variant."""
    res, counts = {}, {}
    for path in paths:
        with open(path) as f:
            saved = json.load(f)
        log("%s: %s, load %s at start, %s at end" % (
            path, " ".join(["bench/hook-cost.py"] + saved["argv"]),
            saved["load_start"], saved["load_end"]))
        for w, per_variant in saved["runs"].items():
            for v, per_build in per_variant.items():
                for b, rs in per_build.items():
                    res.setdefault(w, {}).setdefault(v, {}).setdefault(
                        b, []).extend(rs)
                    counts.setdefault(w, {}).setdefault(v, {}).setdefault(
                        b, []).append(saved["counts"][w][v][b])
    report(res, counts, log)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--variants", nargs="+",
                    default=["system", "jemalloc", "tcmalloc"],
                    help="allocator builds (default: all three)")
    ap.add_argument("--workloads", nargs="+", default=["null-read", "map"],
                    choices=["null-read", "map"])
    ap.add_argument("--bench-count", type=int, default=4000000,
                    help="requests per null-read run")
    ap.add_argument("--map-extents", type=int, default=262144,
                    help="data extents of the map workload's file")
    ap.add_argument("--build-only", action="store_true",
                    help="set up and build the pristine qemu-img, no runs")
    ap.add_argument("--selftest", action="store_true",
                    help="check the Wilcoxon p-values and the counting "
                    "shim, and exit")
    ap.add_argument("--report", nargs="+", metavar="JSON",
                    help="print the tables of saved runs (pooled), no runs")
    args = ap.parse_args()
    if args.selftest:
        selftest()
        benchlib.idle_counter_selftest()
        return
    if args.report:
        report_files(args.report, print)
        return

    env = lib_env()
    os.makedirs(cephbench.OUT, exist_ok=True)
    log = cephbench.log_to(os.path.join(cephbench.OUT, "hook-cost.log"))
    log("command: %s" % " ".join(["bench/hook-cost.py"] + sys.argv[1:]))
    t_start = time.monotonic()
    pristine_tree = os.path.join(env["QR_WORK"], "pristine", "qemu")
    base = ensure_worktree(env["QR_TREE"], pristine_tree, log)
    patched_head = git(env["QR_TREE"], "rev-parse", "HEAD")
    log("QEMU %s: patched %s (build/qemu HEAD), pristine %s (baseline)"
        % (env["QR_QEMU_VERSION"], patched_head[:8], base[:8]))
    imgs = {}
    for v in args.variants:
        imgs[v] = {"patched": os.path.join(env["QR_WORK"], "build-" + v,
                                           "qemu-img"),
                   "pristine": build_pristine(v, env, log)}
        if not os.path.exists(imgs[v]["patched"]):
            raise SystemExit("%s missing: run scripts/build.sh %s"
                             % (imgs[v]["patched"], v))
        log("%s configure flags: %s" % (v, open(os.path.join(
            env["QR_WORK"], "build-" + v, ".qr-configure")).read().strip()))
    log("builds ready after %.0f s" % (time.monotonic() - t_start))
    if args.build_only:
        return

    tmp = tempfile.mkdtemp(prefix="hook-cost-")
    try:
        workloads = []
        for name in args.workloads:
            if name == "null-read":
                workloads.append(NullRead(args.bench_count))
            else:
                path = make_fragmented(os.path.join(tmp, "frag.raw"),
                                       args.map_extents)
                workloads.append(Map(path, args.map_extents))
        run(args, env, imgs, workloads, tmp, log, t_start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def snapshot(imgs, tmp, log):
    """Copies of the binaries, so that a rebuild of build/ during the
    rounds (the patched builds are shared) changes nothing measured."""
    for v, builds in imgs.items():
        for b, path in builds.items():
            copy = os.path.join(tmp, "%s-%s-qemu-img" % (v, b))
            shutil.copy2(path, copy)
            with open(copy, "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            log("%s %s: %s (sha256 %s)" % (v, b, path, sha[:12]))
            builds[b] = copy


def run(args, env, imgs, workloads, tmp, log, t_start):
    snapshot(imgs, tmp, log)
    counts = {w.name: {v: {} for v in args.variants} for w in workloads}
    for w in workloads:
        for v in args.variants:
            for b in ("patched", "pristine"):
                if hasattr(w, "check"):
                    w.check(imgs[v][b])
                # also the warm-up: binaries and the file in the page cache
                counts[w.name][v][b] = count_hook_calls(
                    w.argv(imgs[v][b]), tmp)
                log("%s %s %s: %d malloc_trim, %d arena decay calls" % (
                    w.name, v, b, *counts[w.name][v][b]))
    load0 = loadavg()
    log("load average at start: %s" % load0)
    res = {w.name: {v: {"patched": [], "pristine": []} for v in args.variants}
           for w in workloads}
    for r in range(args.rounds):
        order = ("patched", "pristine") if r % 2 == 0 else ("pristine",
                                                            "patched")
        for w in workloads:
            for v in args.variants:
                for b in order:
                    out, wall, user, sys_, others = measured_run(
                        w.argv(imgs[v][b]), w.capture)
                    fig = {"round": r + 1, "wall_s": wall, "user_s": user,
                           "sys_s": sys_, "cpu_s": user + sys_,
                           "others": others, "rate": w.rate(out, wall)}
                    res[w.name][v][b].append(fig)
                    log("round %d %s %s %s: %s" % (r + 1, w.name, v, b,
                        json.dumps({k: round(x, 3) if isinstance(x, float)
                                    else x for k, x in fig.items()})))
    load1 = loadavg()
    with open(os.path.join(cephbench.OUT, "hook-cost.json"), "w") as f:
        json.dump({"argv": sys.argv[1:], "load_start": load0,
                   "load_end": load1, "counts": counts, "runs": res}, f,
                  indent=1)
    report(res, {w: {v: {b: [c] for b, c in cv.items()}
                     for v, cv in cw.items()} for w, cw in counts.items()},
           log)
    log("")
    log("load average (1, 5, 15 min): %s at start, %s at end; %d CPUs"
        % (load0, load1, os.cpu_count()))
    log("%d s from start to here, builds included" % (time.monotonic() -
                                                       t_start))
    log("command: %s" % " ".join(["bench/hook-cost.py"] + sys.argv[1:]))


if __name__ == "__main__":
    main()

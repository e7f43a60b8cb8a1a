#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Benchmark qemu_allocator_release() and qemu_allocator_get_stats() for
# every allocator variant:
#   bench/release-bench.sh [--rounds N] [--mib N] [--stats-mib N]
#       [--stats-sizes "64 256 4096"] [--reads N] [--no-release]
#       [--no-stats] [variant...]
# Builds bench/release-bench.c against each variant's libqemuutil (with
# the exact compile and link commands meson uses for the unit test), then
#  - release: API and one-shot releases alternately on a fragmented heap
#    of --mib MiB (default 400), each with and without a probe thread;
#  - statistics: the cost of one qemu_allocator_get_stats() on a heap of
#    --stats-mib MiB (default 1024) in objects of each --stats-sizes
#    size, every other one free; the median of --reads reads (default 9)
#    per run;
# and prints tables of medians over the rounds.  Raw lines:
# bench/out/release-bench.txt, bench/out/release-bench-stats.txt.
# Needs the variants built (scripts/build.sh).
#
# What changed for v2: the API reports no steps and no longest step, so
# those columns are gone (the probe's worst stall is the measured effect on
# other threads); "x floor" is the median release time divided by the
# median floor, both as shown in the table (v1: median of per-run ratios);
# the idle-time releases of the RCU thread, which v2 cannot switch off and
# does not count, are counted per run by the benchmark itself (the
# allocator calls they make from threads other than the main thread, see
# release-bench.c) after the one the RCU thread does at start-up, and
# summed ("idle-time release calls").
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

rounds=5
mib=400
stats_mib=1024
stats_sizes="64 256 4096"
reads=9
do_release=1
do_stats=1
variants=()
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    --stats-mib) stats_mib=$2; shift 2 ;;
    --stats-sizes) stats_sizes=$2; shift 2 ;;
    --reads) reads=$2; shift 2 ;;
    --no-release) do_release=0; shift ;;
    --no-stats) do_stats=0; shift ;;
    -h|--help) sed -n '3,28p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) variants+=("$1"); shift ;;
    esac
done
[ ${#variants[@]} -gt 0 ] || variants=(system tcmalloc jemalloc)
OUT=$QR_TOP/bench/out
mkdir -p "$OUT"

build_bench() {
    local v=$1 b=$QR_WORK/build-$v compile link
    [ -x "$b/tests/unit/test-allocator" ] || die "variant $v is not built: run scripts/build.sh $v"
    compile=$(cd "$b" && "$QR_PYTHON" -c '
import json, sys
for e in json.load(open("compile_commands.json")):
    if e["file"].endswith("tests/unit/test-allocator.c"):
        print(e["command"])' )
    link=$(ninja -C "$b" -t commands tests/unit/test-allocator | tail -n 1)
    compile=${compile/-MD -MQ*-c ..\/qemu\/tests\/unit\/test-allocator.c/-c $QR_TOP/bench/release-bench.c -o $OUT/release-bench-$v.o}
    link=${link/-o tests\/unit\/test-allocator/-o $OUT/release-bench-$v}
    link=${link/tests\/unit\/test-allocator.p\/test-allocator.c.o/$OUT/release-bench-$v.o}
    (cd "$b" && eval "$compile" && eval "$link") || die "cannot build the benchmark for $v"
}

step "Building the benchmark"
for v in "${variants[@]}"; do build_bench "$v"; done

results=$OUT/release-bench.txt
stats_results=$OUT/release-bench-stats.txt
if [ $do_release = 1 ]; then
    step "Releases: $rounds rounds of $mib MiB per variant and mode"
    : >"$results"
    for ((r = 1; r <= rounds; r++)); do
        for v in "${variants[@]}"; do
            for mode in api oneshot; do
                for probe in "" --probe; do
                    flag=; [ $mode = oneshot ] && flag=--oneshot
                    # shellcheck disable=SC2086
                    line=$("$OUT/release-bench-$v" --mib "$mib" $flag $probe)
                    echo "$line" >>"$results"
                    info "round $r $v $mode$probe: $(echo "$line" | grep -o ' returned_pct=[^ ]*\| release_ms=[^ ]*\| stall_ms=[^ ]*\| idle_release_calls=[^ ]*' | tr -d '\n')"
                done
            done
        done
    done
fi
if [ $do_stats = 1 ]; then
    step "Statistics reads: $rounds rounds of $stats_mib MiB per variant and object size, $reads reads each"
    : >"$stats_results"
    for ((r = 1; r <= rounds; r++)); do
        for v in "${variants[@]}"; do
            for size in $stats_sizes; do
                line=$("$OUT/release-bench-$v" --stats-cost "$size" --mib "$stats_mib" --reads "$reads")
                echo "$line" >>"$stats_results"
                info "round $r $v ${size} B: $(echo "$line" | grep -o ' rss_heap_mib=[^ ]*\| stats_median_ms=[^ ]*\| stats_max_ms=[^ ]*' | tr -d '\n')"
            done
        done
    done
fi

step "Medians over $rounds rounds"
"$QR_PYTHON" - "$results" "$stats_results" "$do_release" "$do_stats" <<'PY'
import statistics, sys

def load(path):
    rows = []
    for line in open(path):
        rows.append(dict(kv.split("=", 1) for kv in line.split()))
    return rows

def med(ds, k):
    """Median of the runs that know the figure; None if none does."""
    xs = [float(d[k]) for d in ds if d.get(k, "na") != "na"]
    return statistics.median(xs) if xs else None

def fmt(v, k):
    if v is None:
        return "-"
    return "%.1f" % v if k.endswith(("mib", "pct")) else "%.2f" % v

if sys.argv[3] == "1":
    rows = {}
    for d in load(sys.argv[1]):
        rows.setdefault((d["backend"], d["mode"]), []).append(d)
    quiet = [("freed_mib", "freed MiB"), ("cached_mib", "still cached MiB"),
             ("releasable_before_mib", "releasable before MiB"),
             ("returned_mib", "RSS drop MiB"),
             ("api_returned_mib", "API says returned MiB"),
             ("returned_pct", "RSS drop % of cached"),
             ("release_ms", "release ms"), ("floor_ms", "madvise floor ms"),
             (None, "x floor (release ms / floor ms)"),
             ("stats_p50_us", "get_stats p50 us"),
             ("stats_p99_us", "get_stats p99 us")]
    loaded = [("release_ms", "release ms, probe running"),
              ("stall_ms", "probe's worst stall ms"),
              ("idle_stall_ms", "probe's worst w/o release ms")]
    hdr = [c[1] for c in quiet + loaded] + ["runs", "idle-time release calls"]
    print("Releases (get_stats percentiles: 1000 reads per run)\n")
    print("| backend | release | " + " | ".join(hdr) + " |")
    print("|---|---|" + "---|" * len(hdr))
    for (b, m) in sorted({(b, m.split("+")[0]) for (b, m) in rows}):
        q, l = rows.get((b, m), []), rows.get((b, m + "+probe"), [])
        cells = []
        for k, _ in quiet:
            if k is None:
                # the ratio of the two medians shown, not a median of ratios
                rel, flo = med(q, "release_ms"), med(q, "floor_ms")
                cells.append("%.1f" % (rel / flo) if rel and flo else "-")
            else:
                cells.append(fmt(med(q, k), k) if q else "-")
        cells += [fmt(med(l, k), k) if l else "-" for k, _ in loaded]
        cells.append("%d + %d" % (len(q), len(l)))
        cells.append(str(sum(int(d["idle_release_calls"]) for d in q + l)))
        print("| %s | %s |" % (b, m) + " %s |" % " | ".join(cells))
    print()

if sys.argv[4] == "1":
    rows = {}
    for d in load(sys.argv[2]):
        rows.setdefault((d["backend"], int(d["object_bytes"])), []).append(d)
    print("One qemu_allocator_get_stats() on a fragmented heap (every "
          "other object free)\n")
    print("| backend | object B | heap MiB asked | RSS MiB | stats: free MiB"
          " | read ms, median | min - max ms over all reads | runs x reads "
          "| idle-time release calls |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (b, size), ds in sorted(rows.items()):
        has = all(d["has_stats"] == "1" for d in ds)
        print("| %s | %d | %s | %.0f | %s | %s | %s | %d x %s | %d |" % (
            b, size, ds[0]["heap_mib"], med(ds, "rss_heap_mib"),
            "%.0f" % med(ds, "free_mib") if has else "none",
            "%.3f" % med(ds, "stats_median_ms"),
            "%.3f - %.3f" % (min(float(d["stats_min_ms"]) for d in ds),
                             max(float(d["stats_max_ms"]) for d in ds)),
            len(ds), ds[0]["reads"],
            sum(int(d["idle_release_calls"]) for d in ds)))
    print("\nread ms, median: the median over the runs of each run's "
          "median read.")
PY

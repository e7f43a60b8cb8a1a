#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Benchmark qemu_allocator_release() for every allocator variant:
#   bench/release-bench.sh [--rounds N] [--mib N] [variant...]
# Builds bench/release-bench.c against each variant's libqemuutil (with
# the exact compile and link commands meson uses for the unit test), runs
# API and one-shot releases alternately, and prints a table of medians.
# Needs the variants built (scripts/build.sh).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

rounds=5
mib=400
variants=()
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    -h|--help) sed -n '3,8p' "$0"; exit 0 ;;
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

step "Running $rounds rounds of $mib MiB per variant and mode"
results=$OUT/release-bench.txt
: >"$results"
for ((r = 1; r <= rounds; r++)); do
    for v in "${variants[@]}"; do
        for mode in api oneshot; do
            for probe in "" --probe; do
                flag=; [ $mode = oneshot ] && flag=--oneshot
                # shellcheck disable=SC2086
                line=$("$OUT/release-bench-$v" --mib "$mib" $flag $probe)
                echo "$line" >>"$results"
                info "round $r $v $mode$probe: $(echo "$line" | grep -o ' returned_pct=[^ ]*\| release_ms=[^ ]*\| stall_ms=[^ ]*' | tr -d '\n')"
            done
        done
    done
done

step "Medians over $rounds rounds"
"$QR_PYTHON" - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = dict(kv.split("=", 1) for kv in line.split())
    rows.setdefault((d["backend"], d["mode"]), []).append(d)
quiet = [("freed_mib", "freed MiB"), ("cached_mib", "still cached MiB"),
         ("returned_mib", "returned MiB"),
         ("returned_pct", "returned % of cached"), ("release_ms", "release ms"),
         ("floor_ms", "madvise floor ms"), ("ratio", "x floor"),
         ("steps", "steps"), ("max_step_ms", "longest step ms"),
         ("stats_p50_us", "get_stats p50 us"), ("stats_p99_us", "get_stats p99 us")]
loaded = [("release_ms", "release ms, probe running"),
          ("stall_ms", "probe's worst stall ms"),
          ("idle_stall_ms", "probe's worst w/o release ms")]
def med(ds, k):
    v = statistics.median(float(d[k]) for d in ds)
    return "%.1f" % v if k.endswith(("mib", "pct")) else "%.2f" % v
hdr = [c[1] for c in quiet + loaded]
print("| backend | release | " + " | ".join(hdr) + " |")
print("|---|---|" + "---|" * len(hdr))
for (b, m) in sorted({(b, m.split("+")[0]) for (b, m) in rows}):
    q, l = rows.get((b, m), []), rows.get((b, m + "+probe"), [])
    cells = [med(q, k) if q else "-" for k, _ in quiet]
    cells += [med(l, k) if l else "-" for k, _ in loaded]
    print("| %s | %s | %s |" % (b, m, " | ".join(cells)))
PY

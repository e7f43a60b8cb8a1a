#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A throw-away single-host Ceph cluster for the rbd test and benchmarks:
#   scripts/ceph-cluster.sh start DIR [--osds N]   (N = 1..3, default 1)
#   scripts/ceph-cluster.sh stop DIR [--purge]
#   scripts/ceph-cluster.sh status DIR
#   scripts/ceph-cluster.sh env DIR                (export lines for clients)
# One mon (msgr v2 only, 127.0.0.1), one mgr, N BlueStore OSDs on sparse
# files, auth none, pools of size 1, an rbd pool "rbd".  No systemd, no
# cephadm, no containers: the daemons are started directly and stopped by
# their pid files.  Everything (conf, keyrings, data, logs, pid files, admin
# sockets) lives under DIR; nothing is written to /etc/ceph or /var/lib/ceph.
# Runs as root, like the rest of the harness.  Tunables (environment):
# CEPH_OSD_PRELOAD, CEPH_OSD_SIZE, CEPH_READY_DEADLINE, CEPH_STOP_DEADLINE.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

READY_DEADLINE=${CEPH_READY_DEADLINE:-120}   # s until every PG is active+clean
STOP_DEADLINE=${CEPH_STOP_DEADLINE:-30}      # s between TERM and KILL
OSD_SIZE=${CEPH_OSD_SIZE:-10G}               # sparse: only written data uses disk
# Ceph's own packages (upstream, Proxmox) link the OSD with tcmalloc;
# Debian's ceph-osd links no malloc replacement.  Preload it, so that the
# OSD is not the glibc-malloc bottleneck a real cluster would not have
# (CEPH_OSD_PRELOAD= keeps glibc; another path chooses another allocator).
OSD_PRELOAD=${CEPH_OSD_PRELOAD-/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4}
PG_NUM=32                                    # of the rbd pool

usage() {
    sed -n '3,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2
osds=1
purge=0
while [ $# -gt 0 ]; do
    case "$1" in
    --osds) [ $# -ge 2 ] || usage; osds=$2; shift 2 ;;
    --purge) purge=1; shift ;;
    *) usage ;;
    esac
done
case "$osds" in 1|2|3) ;; *) die "--osds must be 1, 2 or 3 (got '$osds')" ;; esac
[ "$cmd" != start ] || mkdir -p "$dir"
if [ ! -d "$dir" ]; then
    [ "$cmd" = status ] && { echo "no cluster in $dir"; exit 3; }
    die "no directory $dir"
fi
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf

# The ceph CLI waits forever for an absent mon unless told otherwise.
ceph_cli() {
    timeout 60 ceph -c "$conf" --connect-timeout 15 "$@"
}

# pid of a daemon ("mon.a", "osd.0") if it runs, from its pid file.  The
# pid counts only if that process has our conf on its command line: a
# stale pid file whose number was reused never points at another process.
daemon_pid() {
    local f=$dir/run/$1.pid pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-c $conf " || return 1
    echo "$pid"
}

# Daemons this DIR has (mon.a, mgr.x, osd.N), from their data directories.
daemons() {
    local d
    [ -d "$dir/data/mon/ceph-a" ] && echo mon.a
    [ -d "$dir/data/mgr/ceph-x" ] && echo mgr.x
    for d in "$dir"/data/osd/ceph-*; do
        [ -d "$d" ] && echo "osd.${d##*/ceph-}"
    done
    return 0
}

# Why a daemon failed: its last error-level lines (before any dump of
# recent events, which repeats them), the end of its log, and what it
# printed before it forked (conf errors, mkfs failures).
daemon_log_tail() {
    local name=$1 log=$dir/log/$1.log out=$dir/log/$1.out
    local noise='^ *[0-9]+: |^ NOTE: |^ *$'
    if [ -s "$log" ]; then
        echo "--- errors in $log:"
        sed '/begin dump of recent events/,$d' "$log" | grep -Ev "$noise" |
            grep -E ' -1 |ceph_abort|ceph_assert|Caught signal' | tail -n 8
        echo "--- last lines of $log:"
        sed '/begin dump of recent events/,$d' "$log" | grep -Ev "$noise" | tail -n 4
    fi
    if [ -s "$out" ]; then
        echo "--- last lines of $out:"
        grep -Ev "$noise" "$out" | tail -n 4
    fi
}

fail_daemon() {
    die "$1 $2
$(daemon_log_tail "$1")"
}

# Every daemon started so far must still run; called while waiting, so a
# crash is reported at once, with its log, instead of as a timeout.
check_alive() {
    local name
    for name in "$@"; do
        daemon_pid "$name" >/dev/null || fail_daemon "$name" "is not running (it exited or never started)"
    done
}

# Start one daemon; it forks into the background itself once it is set
# up and writes its pid file.  Its stderr before that goes to log/NAME.out.
start_daemon() {
    local name=$1 type=${1%%.*} id=${1#*.} i
    daemon_pid "$name" >/dev/null && return 0
    rm -f "$dir/run/$name.pid"
    local -a preload=()
    if [ "$type" = osd ] && [ -n "$OSD_PRELOAD" ]; then
        [ -e "$OSD_PRELOAD" ] || die "CEPH_OSD_PRELOAD: $OSD_PRELOAD does not exist"
        preload=(env "LD_PRELOAD=$OSD_PRELOAD")
    fi
    "${preload[@]}" "/usr/bin/ceph-$type" -c "$conf" -i "$id" \
        >"$dir/log/$name.out" 2>&1 || fail_daemon "$name" "failed to start"
    for ((i = 0; i < 100; i++)); do
        daemon_pid "$name" >/dev/null && return 0
        sleep 0.1
    done
    fail_daemon "$name" "wrote no pid file within 10 s"
}

free_port() {
    local p
    for ((p = 3300; p < 3400; p++)); do
        ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return 0; }
    done
    die "no free TCP port in 3300-3399 for the mon"
}

write_conf() {
    local fsid=$1 port=$2
    cat >"$conf" <<CONF
# Written by qemu-reclaim scripts/ceph-cluster.sh: a throw-away test cluster.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
mon initial members = a
public network = 127.0.0.1/32
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = none
auth service required = none
auth client required = none
keyring = $dir/keyring
run dir = $dir/run
# One copy of everything, on one host: allowed, placed by OSD, no warnings.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# Nothing to warn about on a test cluster: no keys to reclaim (auth none),
# and a mostly used disk is the host's business, not the cluster's.
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
osd crush chooseleaf type = 0
# PG counts stay what the script sets: no autoscaler moving PGs mid-bench.
osd pool default pg autoscale mode = off
# The sparse files sit on a disk that calls itself rotational: use the
# SSD defaults BlueStore would pick on the real thing.
bluestore debug enforce settings = ssd

[mon]
mon data = $dir/data/mon/ceph-\$id
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok

[mgr]
mgr data = $dir/data/mgr/ceph-\$id
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok

[osd]
osd data = $dir/data/osd/ceph-\$id
osd objectstore = bluestore
# The block file is created in the OSD's directory (never name its path:
# pointing it at that default location makes it a link to itself).
bluestore block create = true
bluestore block size = $OSD_SIZE
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
CONF
}

# "active+clean 32, peering 1": the PG states of the whole cluster.
pg_states() {
    ceph_cli pg stat -f json 2>/dev/null | "$QR_PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
m = d.get("pg_summary", d)
print(", ".join("%s %d" % (s["name"], s["num"]) for s in m.get("num_pg_by_state", [])))' 2>/dev/null || true
}

# True when every PG of every pool in the osdmap is active+clean, counted
# against the pools' pg_num: a new pool's PGs are not yet in the PG map.
all_clean() {
    local pools stat
    pools=$(ceph_cli osd pool ls detail -f json 2>/dev/null) || return 1
    stat=$(ceph_cli pg stat -f json 2>/dev/null) || return 1
    "$QR_PYTHON" - "$pools" "$stat" <<'PY'
import json, sys
pools = json.loads(sys.argv[1])
d = json.loads(sys.argv[2])
m = d.get("pg_summary", d)
want = sum(p["pg_num"] for p in pools)
clean = sum(s["num"] for s in m.get("num_pg_by_state", [])
            if s["name"] == "active+clean")
sys.exit(0 if pools and m.get("num_pgs") == want and clean == want else 1)
PY
}

wait_clean() {
    local t0=$SECONDS last=-5 names
    mapfile -t names < <(daemons)
    while ! all_clean; do
        check_alive "${names[@]}"
        if [ $((SECONDS - t0)) -ge "$READY_DEADLINE" ]; then
            die "PGs not all active+clean after $READY_DEADLINE s: $(pg_states)
$(ceph_cli health detail 2>&1 | head -n 20)"
        fi
        if [ $((SECONDS - last)) -ge 5 ]; then
            info "waiting for PGs ($((SECONDS - t0)) s): $(pg_states)"
            last=$SECONDS
        fi
        sleep 1
    done
    info "every PG of every pool is active+clean: $(pg_states)"
}

create_osd() {
    local uuid id d
    uuid=$(uuidgen)
    id=$(ceph_cli osd new "$uuid") || die "'ceph osd new' failed"
    d=$dir/data/osd/ceph-$id
    mkdir -p "$d"
    /usr/bin/ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$uuid" \
        >"$dir/log/osd.$id.out" 2>&1 || fail_daemon "osd.$id" "mkfs failed"
    echo "$id"
}

bootstrap() {
    local fsid port i t_boot=$SECONDS
    fsid=$(uuidgen)
    port=$(free_port)
    mkdir -p "$dir/run" "$dir/log" "$dir/data/mon/ceph-a" "$dir/data/mgr/ceph-x" "$dir/data/osd"
    write_conf "$fsid" "$port"
    info "mon on v2:127.0.0.1:$port, fsid $fsid"
    # auth is none, but mkfs wants a mon. key, and clients find the admin
    # keyring where the conf says: both live in DIR.
    ceph-authtool --create-keyring "$dir/keyring.mon" --gen-key -n mon. \
        --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$dir/keyring.mon" --import-keyring "$dir/keyring" >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
        "$dir/monmap" >/dev/null
    /usr/bin/ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" \
        --keyring "$dir/keyring.mon" >"$dir/log/mon.a.out" 2>&1 ||
        fail_daemon mon.a "mkfs failed"

    step "Starting mon.a and mgr.x"
    start_daemon mon.a
    ceph_cli mon stat >/dev/null 2>&1 || fail_daemon mon.a "does not answer"
    start_daemon mgr.x
    info "mon.a and mgr.x started ($((SECONDS - t_boot)) s)"

    step "Creating $osds BlueStore OSD(s) on sparse $OSD_SIZE files"
    for ((i = 0; i < osds; i++)); do
        id=$(create_osd)
        start_daemon "osd.$id"
        info "osd.$id started${OSD_PRELOAD:+ (LD_PRELOAD=${OSD_PRELOAD##*/})} ($((SECONDS - t_boot)) s)"
    done

    step "Creating the rbd pool"
    ceph_cli osd pool create rbd "$PG_NUM" "$PG_NUM" >/dev/null 2>&1 ||
        die "cannot create pool rbd: $(ceph_cli osd pool create rbd "$PG_NUM" "$PG_NUM" 2>&1)"
    timeout 60 rbd -c "$conf" pool init rbd ||
        die "rbd pool init failed"
    info "pool rbd: $PG_NUM PGs, initialised for rbd ($((SECONDS - t_boot)) s)"
}

# A start that fails leaves nothing running: stop what it started (the
# directory stays, with the logs that say why).
stop_after_failure() {
    local rc=$?
    trap - EXIT
    if [ $rc != 0 ] && [ -f "$conf" ]; then
        info "start failed: stopping what runs in $dir (logs kept in $dir/log)"
        purge=0 cmd_stop || true
    fi
    exit $rc
}

cmd_start() {
    local t0=$SECONDS name
    need_root
    for b in ceph-mon ceph-mgr ceph-osd ceph rbd monmaptool ceph-authtool uuidgen; do
        command -v "$b" >/dev/null || die "$b is missing: run scripts/deps.sh"
    done
    if [ -f "$conf" ] && daemon_pid mon.a >/dev/null; then
        info "a cluster already runs in $dir (mon.a pid $(daemon_pid mon.a))"
        for name in $(daemons); do start_daemon "$name"; done
        return 0
    fi
    trap stop_after_failure EXIT
    if [ -f "$conf" ] && [ -d "$dir/data/mon/ceph-a" ]; then
        step "Restarting the stopped cluster in $dir"
        for name in $(daemons); do start_daemon "$name"; done
    else
        [ -z "$(ls -A "$dir")" ] ||
            die "$dir is not empty and holds no cluster: give an empty or new directory"
        step "Bootstrapping a Ceph cluster in $dir"
        bootstrap
    fi
    step "Waiting until every PG is active+clean (at most $READY_DEADLINE s)"
    wait_clean
    info "cluster ready in $((SECONDS - t0)) s ($(daemons | tr '\n' ' '))"
    info "clients: eval \"\$($0 env $dir)\""
    trap - EXIT
}

cmd_stop() {
    local name pid i left
    local -a pids=()
    [ -f "$conf" ] || die "no cluster in $dir (no ceph.conf)"
    # OSDs first, then mgr, then the mon they all report to.
    for name in $(daemons | grep '^osd\.') mgr.x mon.a; do
        if pid=$(daemon_pid "$name"); then
            info "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < STOP_DEADLINE * 10; i++)); do
        left=0
        for pid in "${pids[@]+"${pids[@]}"}"; do
            [ -d "/proc/$pid" ] && left=1
        done
        [ $left = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]+"${pids[@]}"}"; do
        if [ -d "/proc/$pid" ]; then
            info "pid $pid still runs after $STOP_DEADLINE s: KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$dir"/run/*.pid
    if [ "$purge" = 1 ]; then
        # Only a directory this script made: its conf says so.
        grep -q '^# Written by qemu-reclaim scripts/ceph-cluster.sh' "$conf" ||
            die "$conf was not written by this script: not purging $dir"
        rm -rf "$dir"
        info "removed $dir"
    fi
}

cmd_status() {
    local name pid all=1 any=0
    [ -f "$conf" ] || { echo "no cluster in $dir"; exit 3; }
    for name in $(daemons); do
        if pid=$(daemon_pid "$name"); then
            echo "$name running (pid $pid)"
            any=1
        else
            echo "$name stopped"
            all=0
        fi
    done
    [ $any = 1 ] || exit 3
    ceph_cli -s || true
    [ $all = 1 ] || exit 1
}

cmd_env() {
    [ -f "$conf" ] || die "no cluster in $dir (no ceph.conf)"
    echo "export CEPH_CONF=$conf"
    echo "export CEPH_KEYRING=$dir/keyring"
}

case "$cmd" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*) usage ;;
esac

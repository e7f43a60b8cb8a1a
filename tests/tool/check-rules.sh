#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The Prometheus rules shipped with the tool
# (tools/qemu-reclaim/qemu-reclaim.rules.yml):
#   1. `promtool check rules`: they parse, the PromQL is valid;
#   2. `promtool test rules tests/tool/qemu-reclaim.rules.test.yml`: every
#      alert fires, and does not just under its threshold and duration;
#      the recording rules' values;
#   3. against what the exporter really emits: the built qemu-reclaim
#      (QR_TOOL, else $QR_WORK/tool/..., else build/tool/...; missing: a failure) runs
#      `export --listen` over stand-in QMP sockets (toollib.FakeQEMU: a
#      jemalloc VM with 2 GiB releasable and releases, a glibc VM, a dead
#      socket); its /metrics page must have a sample of every qemu_reclaim_
#      metric the rules use, with the labels they use, and the scraped
#      samples, fed to `promtool test rules`, must give the recording
#      rules' sums and fire exactly the expected alerts.  Skipped (said so
#      in the summary) when the tool is not built.
# Prints one summary line; exits non-zero on any failure.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
rules=$top/tools/qemu-reclaim/qemu-reclaim.rules.yml
tests=$top/tests/tool/qemu-reclaim.rules.test.yml
promtool=$(command -v promtool || true)
[ -n "$promtool" ] ||
    { echo "promtool missing (Debian package prometheus)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! out=$("$promtool" check rules "$rules" 2>&1); then
    echo "$out"; echo "promtool check rules failed"; exit 1
fi
nrules=$(sed -n 's/.*SUCCESS: \([0-9]*\) rules found.*/\1/p' <<<"$out")
if ! out=$("$promtool" test rules "$tests" 2>&1); then
    echo "$out"; echo "promtool test rules failed"; exit 1
fi
ntests=$(grep -c '^  - name:' "$tests")

tool=${QR_TOOL:-}
[ -n "$tool" ] ||
    tool=${QR_WORK:-$top/build}/tool/tools/qemu-reclaim/qemu-reclaim
summary="rules: promtool check rules ok ($nrules rules), promtool test rules"
summary+=" ok ($ntests groups)"
# Without the binary the rules are not checked against what it emits: a
# failure, not a quiet skip (build it with scripts/build-tool.sh)
if [ ! -x "$tool" ]; then
    echo "$summary; but no exporter to scrape: $tool is missing"
    exit 1
fi

# 3. a real scrape of the built exporter, checked against the rules
scrape=$(TOP=$top QR_TOOL=$tool /usr/bin/python3 - "$rules" "$tmp" <<'EOF'
import json, os, re, socket, subprocess, sys, time, urllib.request
sys.path.insert(0, os.path.join(os.environ["TOP"], "tests", "tool"))
import toollib as T

rules, tmp = sys.argv[1], sys.argv[2]

def fail(msg):
    print(msg)
    sys.exit(1)

# -- what the rules use: exprs, recorded names, metric and label names
exprs, records = [], set()
lines = open(rules).read().split("\n")
i = 0
while i < len(lines):
    m = re.match(r"^(\s*)(- )?(record|expr): ?(.*)$", lines[i])
    i += 1
    if not m:
        continue
    if m.group(3) == "record":
        records.add(m.group(4).strip())
        continue
    val, ind = m.group(4).strip(), len(m.group(1)) + len(m.group(2) or "")
    if val in (">", ">-", "|", "|-"):
        body = []
        while i < len(lines) and (not lines[i].strip() or
                                  len(lines[i]) - len(lines[i].lstrip()) > ind):
            body.append(lines[i])
            i += 1
        val = "\n".join(body)
    exprs.append(val)
text = "\n".join(exprs)
nostr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
used = set(re.findall(r"\bqemu_reclaim_[a-z0-9_]+\b(?!:)", nostr))
recorded_used = set(re.findall(r"\b[a-z_]+:qemu_reclaim_[a-z0-9_]+:[a-z0-9_]+",
                               nostr))
if recorded_used - records:
    fail("rules use undefined recorded series: %s"
         % sorted(recorded_used - records))
labels_used = set()
for grp in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", nostr):
    labels_used |= {x.strip() for x in grp.split(",") if x.strip()}
labels_used |= set(re.findall(r"([a-z_]+)\s*=~?\s*\"", text))
labels_used |= set(re.findall(r"\$labels\.([a-z_]+)", open(rules).read()))
if not used:
    fail("found no qemu_reclaim_ metric in the rules' expressions")

# -- stand-in QEMUs: 401 jemalloc (2 GiB releasable, releases), 402 glibc
# (no releasable, no returned), 403 a dead socket (up 0)
vmdir = os.path.join(tmp, "vms")
os.mkdir(vmdir)
fakes = [
    T.FakeQEMU(os.path.join(vmdir, "401.qmp"), {
        "backend": "jemalloc",
        "stats": {"allocated": 50 << 20, "free": (2 << 30) + (10 << 20),
                  "releasable": 2 << 30, "returned": 64 << 20},
        "manual-releases": 3, "automatic-releases": 2,
        "last-release": {"trigger": "manual", "returned": 1 << 20,
                         "process-rss-before": 900 << 20,
                         "process-rss-after": 899 << 20,
                         "duration-us": 1234}}),
    T.FakeQEMU(os.path.join(vmdir, "402.qmp"), {
        "backend": "glibc",
        "stats": {"allocated": 40 << 20, "free": 8 << 20},
        "manual-releases": 1, "automatic-releases": 0,
        "last-release": {"trigger": "manual", "duration-us": 99}}),
]
dead = socket.socket(socket.AF_UNIX)
dead.bind(os.path.join(vmdir, "403.qmp"))
dead.close()

body = None
for attempt in range(3):
    port = T.free_port()
    log = open(os.path.join(tmp, "export.log"), "w+")
    p = subprocess.Popen([T.TOOL, "export", "--timeout", "2000", "--listen",
                          "127.0.0.1:%d" % port, vmdir],
                         stdout=log, stderr=log)
    end = time.monotonic() + 20
    while time.monotonic() < end and p.poll() is None and body is None:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                        timeout=10) as r:
                body = r.read().decode()
        except OSError:
            time.sleep(0.1)
    p.terminate()
    p.wait(timeout=10)
    if body is not None:
        break
for f in fakes:
    f.close()
if body is None:
    log.seek(0)
    fail("export --listen: no /metrics page\n" + log.read())
with open(os.path.join(tmp, "metrics.txt"), "w") as f:
    f.write(body)
samples = T.parse_metrics(body)

# -- every metric the rules use has a sample, with the labels they use
probs = []
for name in sorted(used):
    got = [lab for n, lab, _ in samples if n == name]
    if not got:
        probs.append("%s: no sample on the /metrics page" % name)
    elif not all("vmid" in lab for lab in got):
        probs.append("%s: a sample without vmid" % name)
have_labels = {k for _, lab, _ in samples for k in lab}
target_labels = {"job", "instance", "reason", "alertname", "severity"}
for lab in sorted(labels_used - have_labels - target_labels):
    probs.append("label %s: on no sample of the /metrics page" % lab)
if T.metric(samples, "qemu_reclaim_releases_total", vmid="401",
            trigger="manual") != 3:
    probs.append("qemu_reclaim_releases_total{vmid=401,trigger=manual} "
                 "is not 3")
if any(n == "qemu_reclaim_releasable_bytes" and lab.get("vmid") == "402"
       for n, lab, _ in samples):
    probs.append("glibc's VM 402 has a releasable sample")
if probs:
    fail("the rules and the exporter disagree:\n  " + "\n  ".join(probs)
         + "\n--- /metrics\n" + body)

# -- the scraped samples as promtool input: constant for 70 minutes, but
# each release counter one lower before 10m (a release at 10m, that leaves
# 401's 2 GiB releasable: ineffective until 39m, then not_released, as its
# trigger=manual counter went up in the last day)
def sel(name, lab):
    lab = dict(lab, job="qemu-reclaim", instance="pve:9864")
    return "%s{%s}" % (name, ",".join('%s="%s"' % (k, lab[k])
                                       for k in sorted(lab)))

series = []
for n, lab, v in samples:
    if n == "qemu_reclaim_releases_total" and v >= 1:
        vals = "%rx9 %rx60" % (v - 1, v)
    else:
        vals = "%rx69" % v
    series.append({"series": sel(n, lab), "values": vals})
rel = {lab["vmid"]: v for n, lab, v in samples
       if n == "qemu_reclaim_releasable_bytes"}
rss = {lab["vmid"]: v for n, lab, v in samples
       if n == "qemu_reclaim_resident_memory_bytes"}
down = sum(1 for n, lab, v in samples if n == "qemu_reclaim_up" and v == 0)
h = {"job": "qemu-reclaim", "instance": "pve:9864"}

def alert(name, sev, vmid, **more):
    return {"labels": sel("ALERTS", dict(alertname=name, alertstate="firing",
                                         severity=sev, vmid=vmid, **more)),
            "value": 1}

exp = [
    {"expr": "instance:qemu_reclaim_releasable_bytes:sum", "eval_time": "5m",
     "exp_samples": [{"labels": sel(
         "instance:qemu_reclaim_releasable_bytes:sum", {}),
         "value": sum(rel.values())}]},
    {"expr": "instance:qemu_reclaim_resident_memory_bytes:sum",
     "eval_time": "5m",
     "exp_samples": [{"labels": sel(
         "instance:qemu_reclaim_resident_memory_bytes:sum", {}),
         "value": sum(rss.values())}]},
    {"expr": "vmid:qemu_reclaim_releasable_per_resident:ratio",
     "eval_time": "5m",
     "exp_samples": [{"labels": sel(
         "vmid:qemu_reclaim_releasable_per_resident:ratio", {"vmid": k}),
         "value": rel[k] / rss[k]} for k in sorted(rel) if rss.get(k)]},
    {"expr": "instance:qemu_reclaim_down:sum", "eval_time": "5m",
     "exp_samples": [{"labels": sel("instance:qemu_reclaim_down:sum", {}),
                      "value": down}]},
    {"expr": 'ALERTS{alertstate="firing"}', "eval_time": "31m",
     "exp_samples": [
         alert("QemuReclaimReleasableHigh", "warning", "401"),
         alert("QemuReclaimQmpDown", "critical", "403"),
         alert("QemuReclaimReleasesFailing", "warning", "401",
               reason="ineffective")]},
    {"expr": 'ALERTS{alertstate="firing"}', "eval_time": "55m",
     "exp_samples": [
         alert("QemuReclaimReleasableHigh", "warning", "401"),
         alert("QemuReclaimQmpDown", "critical", "403"),
         alert("QemuReclaimReleasesFailing", "warning", "401",
               reason="not_released")]},
]
doc = {"rule_files": [rules], "evaluation_interval": "1m",
       "tests": [{"name": "a real scrape", "interval": "1m",
                  "input_series": series, "promql_expr_test": exp}]}
path = os.path.join(tmp, "scrape.test.yml")
with open(path, "w") as f:
    json.dump(doc, f, indent=1)        # JSON is YAML
pt = subprocess.run(["promtool", "test", "rules", path], capture_output=True,
                    text=True, timeout=120)
if pt.returncode:
    fail("promtool test rules on the real scrape failed:\n" + pt.stdout
         + pt.stderr + "\n--- /metrics\n" + body)
print("%d metrics, %d labels" % (len(used), len(labels_used)))
EOF
) || { echo "$scrape"; echo "scrape check failed"; exit 1; }

echo "$summary, a real scrape of $(basename "$tool") has the $scrape" \
    "the rules use and fires the expected alerts"

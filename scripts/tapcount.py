#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Count a TAP log honestly: tapcount.py [--meson] LOG EXIT_STATUS

Prints one line "PASSED FAILED SKIPPED", then one line per skip or failure
reason ("skip: ..." / "fail: ...").  Rules:
- "ok" counts as passed, "not ok" as failed, "ok ... # SKIP why" as skipped;
- a plan "1..N" that the cases do not meet counts each missing case as
  failed (a crash after some cases);
- "1..0 # SKIP why" (a whole file skipped) counts one skip, with its reason;
- no plan and no case, or "Bail out!", or a non-zero exit with no failed
  case: at least one failure (a crash before or between cases).

With --meson, LOG is meson's meson-logs/testlog.json (one JSON object per
test) and each meson test counts once: OK and EXPECTEDFAIL pass; SKIP is
skipped, with the reason the test printed ("1..0 # SKIP ..." or a "# SKIP"
case, else glib's "# skip" lines on stderr); anything else (FAIL, TIMEOUT,
ERROR, UNEXPECTEDPASS, INTERRUPT) fails.  No test at all, or a non-zero exit
with no failed test, is a failure too.
"""

import json
import re
import sys

CASE = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*(.*)$")
PLAN = re.compile(r"^1\.\.(\d+)\s*(#\s*(?i:skip)\S*\s*(.*))?$")


def count(lines, status):
    passed = failed = skipped = 0
    plan = None
    reasons = []
    bailed = None
    for line in lines:
        line = line.rstrip("\n")
        m = PLAN.match(line)
        if m and plan is None:
            plan = int(m.group(1))
            if plan == 0:
                skipped += 1
                reasons.append("skip: whole file: " + (m.group(3) or "no reason given"))
            continue
        if line.startswith("Bail out!"):
            bailed = line
            continue
        m = CASE.match(line)
        if not m:
            continue
        rest = m.group(3)
        directive = re.search(r"#\s*(SKIP|TODO)\S*\s*(.*)$", rest, re.I)
        if m.group(1) == "ok":
            if directive and directive.group(1).upper() == "SKIP":
                skipped += 1
                reasons.append(f"skip: {rest[:directive.start()].strip()}: "
                               f"{directive.group(2) or 'no reason given'}")
            else:
                passed += 1
        else:
            if directive and directive.group(1).upper() == "TODO":
                continue
            failed += 1
            reasons.append(f"fail: {rest.strip()}")
    seen = passed + failed + skipped
    if plan is not None and plan > 0 and seen < plan:
        missing = plan - seen
        failed += missing
        reasons.append(f"fail: {missing} of {plan} planned cases never ran")
    if bailed:
        if failed == 0:
            failed = 1
        reasons.append(f"fail: {bailed}")
    if plan is None and seen == 0:
        failed = max(failed, 1)
        reasons.append("fail: no TAP plan and no test case (crashed or not a TAP program?)")
    if status != 0 and failed == 0:
        failed = 1
        reasons.append(f"fail: exit status {status} although no case failed")
    return passed, failed, skipped, reasons


MESON_SKIP = re.compile(r"#\s*SKIP\S*\s*(.*)$", re.I)


def skip_reason(t):
    """What the test said: its last "# SKIP why" case, else what it wrote
    on stderr about skipping (glib's "# skip ..."), else its empty plan."""
    for line in reversed((t.get("stdout") or "").splitlines()):
        m = MESON_SKIP.search(line)
        if m:
            return m.group(1).strip() or "no reason given"
    said = [line[len("# skip"):].strip() for line in
            (t.get("stderr") or "").splitlines()
            if line.lower().startswith("# skip")]
    if said:
        return "; ".join(said[:3]) + ("; ..." if len(said) > 3 else "")
    return "no case applies to this build (its plan is 1..0)"


def count_meson(lines, status):
    """The same for meson's testlog.json: each meson test counts once."""
    passed = failed = skipped = 0
    reasons = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        t = json.loads(line)
        name, result = t["name"], t["result"]
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
            reasons.append("skip: %s: %s" % (name, skip_reason(t)))
        else:
            failed += 1
            reasons.append("fail: %s: %s" % (name, result))
    if passed + failed + skipped == 0:
        failed = 1
        reasons.append("fail: meson ran no test")
    if status != 0 and failed == 0:
        failed = 1
        reasons.append("fail: meson test exited %d although no test failed"
                       % status)
    return passed, failed, skipped, reasons


def main():
    args = sys.argv[1:]
    counter = count
    if args[:1] == ["--meson"]:
        counter = count_meson
        args = args[1:]
    if len(args) != 2:
        print("usage: tapcount.py [--meson] LOG EXIT_STATUS", file=sys.stderr)
        return 2
    try:
        with open(args[0], errors="replace") as f:
            p, fl, s, reasons = counter(f, int(args[1]))
    except (OSError, ValueError, KeyError) as e:
        p, fl, s, reasons = 0, 1, 0, ["fail: no readable log: %s" % e]
    print(p, fl, s)
    for r in reasons:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())

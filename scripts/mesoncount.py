#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Count a `meson test` run honestly: mesoncount.py TESTLOG.json EXIT_STATUS

TESTLOG.json is meson's meson-logs/testlog.json (one JSON object per test).
Prints what tapcount.py prints: "PASSED FAILED SKIPPED", then one line per
skip or failure ("skip: NAME: reason" / "fail: NAME: result").  Each meson
test counts once: OK and EXPECTEDFAIL pass; SKIP is skipped, with the
reason the test printed ("1..0 # SKIP ..." or a "# SKIP" case); anything
else (FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, INTERRUPT) fails.  No test at
all, or a non-zero exit with no failed test, is a failure too.
"""

import json
import re
import sys

SKIP = re.compile(r"#\s*SKIP\S*\s*(.*)$", re.I)


def skip_reason(t):
    """What the test said: its last "# SKIP why" case, else what it wrote
    on stderr about skipping (glib's "# skip ..."), else its empty plan."""
    for line in reversed((t.get("stdout") or "").splitlines()):
        m = SKIP.search(line)
        if m:
            return m.group(1).strip() or "no reason given"
    said = [line[len("# skip"):].strip() for line in
            (t.get("stderr") or "").splitlines()
            if line.lower().startswith("# skip")]
    if said:
        return "; ".join(said[:3]) + ("; ..." if len(said) > 3 else "")
    return "no case applies to this build (its plan is 1..0)"


def count(lines, status):
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
    if len(sys.argv) != 3:
        print("usage: mesoncount.py TESTLOG.json EXIT_STATUS", file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], errors="replace") as f:
            p, fl, s, reasons = count(f, int(sys.argv[2]))
    except (OSError, ValueError, KeyError) as e:
        p, fl, s, reasons = 0, 1, 0, ["fail: no readable test log: %s" % e]
    print(p, fl, s)
    for r in reasons:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The test command's TAP counting, against programs that misbehave.

Each case runs a small real program (sh), logs its output as run_tap does,
and checks what scripts/tapcount.py makes of it: a plan that is not met
counts each missing case as failed, a whole-file skip counts once with its
reason, a crash before the first case is a failure.  Speaks TAP itself.
"""

import os
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAPCOUNT = os.path.join(TOP, "scripts", "tapcount.py")

CASES = [
    # name, program, (passed, failed, skipped), a reason line that must be there
    ("plan of 6, one ok", "echo 1..6; echo 'ok 1 /a'", (1, 5, 0),
     "fail: 5 of 6 planned cases never ran"),
    ("whole file skipped", "echo '1..0 # SKIP no memory cgroup here'", (0, 0, 1),
     "skip: whole file: no memory cgroup here"),
    ("crash before the first case", "kill -SEGV $$", (0, 1, 0),
     "fail: no TAP plan and no test case"),
    ("crash after a case", "echo 1..3; echo 'ok 1 /a'; kill -ABRT $$", (1, 2, 0),
     "fail: 2 of 3 planned cases never ran"),
    ("all well, plan at the end", "echo 'ok 1 /a'; echo 'ok 2 /b # SKIP why'; echo 1..2",
     (1, 0, 1), "skip: /b: why"),
    ("bail out", "echo 1..2; echo 'ok 1 /a'; echo 'Bail out! ERROR:x.c:1: boom'; exit 1",
     (1, 1, 0), "fail: Bail out! ERROR:x.c:1: boom"),
    ("exit 1 with every case ok", "echo 1..1; echo 'ok 1 /a'; exit 1", (1, 1, 0),
     "fail: exit status 1 although no case failed"),
    ("a failed case", "echo 1..2; echo 'ok 1 /a'; echo 'not ok 2 /b'; exit 1", (1, 1, 0),
     "fail: /b"),
]


def main():
    print(f"1..{len(CASES)}")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log")
        for n, (name, prog, want, reason) in enumerate(CASES, 1):
            with open(log, "w") as f:
                rc = subprocess.run(["sh", "-c", prog], stdout=f,
                                    stderr=subprocess.STDOUT).returncode
            out = subprocess.run([sys.executable, TAPCOUNT, log, str(rc)],
                                 capture_output=True, text=True, check=True).stdout
            first, *reasons = out.splitlines()
            got = tuple(int(x) for x in first.split())
            if got == want and any(r.startswith(reason) for r in reasons):
                print(f"ok {n} {name}: {got[0]} passed, {got[1]} failed, {got[2]} skipped")
            else:
                bad += 1
                print(f"not ok {n} {name}: got {got} {reasons}, want {want} and '{reason}'")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

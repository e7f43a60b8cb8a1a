#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The test command's counting, against programs that misbehave.

Each case runs a small real program (sh), logs its output as run_tap does,
and checks what scripts/tapcount.py makes of it: a plan that is not met
counts each missing case as failed, a whole-file skip counts once with its
reason, a crash before the first case is a failure.  The last case runs a
real `meson test` (as run_meson does) on a project of a passing, a failing,
a skipping and a hanging test, plus a failing one in another suite, and
checks what scripts/tapcount.py --meson makes of it.  Speaks TAP itself.
"""

import os
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAPCOUNT = os.path.join(TOP, "scripts", "tapcount.py")

MESON_PROJECT = """project('counting')
sh = find_program('sh')
test('passes', sh, args: ['-c', 'exit 0'], suite: 'unit')
test('fails', sh, args: ['-c', 'exit 1'], suite: 'unit')
test('skips', sh, args: ['-c', 'echo "1..0 # SKIP no device here"'],
     protocol: 'tap', suite: 'qtest')
test('hangs', sh, args: ['-c', 'sleep 60'], timeout: 1, suite: 'qtest')
test('not ours', sh, args: ['-c', 'exit 1'], suite: 'other')
"""

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
    print(f"1..{len(CASES) + 1}")
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
    n = len(CASES) + 1
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "meson.build"), "w") as f:
            f.write(MESON_PROJECT)
        subprocess.run(["meson", "setup", "build"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        build = os.path.join(tmp, "build")
        rc = subprocess.run(["meson", "test", "--no-rebuild", "--suite", "unit",
                             "--suite", "qtest", "--num-processes", "2"],
                            cwd=build, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode
        out = subprocess.run([sys.executable, TAPCOUNT, "--meson", os.path.join(
            build, "meson-logs", "testlog.json"), str(rc)],
            capture_output=True, text=True, check=True).stdout
        first, *reasons = out.splitlines()
        got = tuple(int(x) for x in first.split())
        want = (1, 2, 1)
        need = ["fail: counting:unit / fails: FAIL",
                "fail: counting:qtest / hangs: TIMEOUT",
                "skip: counting:qtest / skips: no device here"]
        if got == want and all(r in reasons for r in need):
            print(f"ok {n} meson test: {got[0]} passed, {got[1]} failed "
                  f"(a failure, a timeout), {got[2]} skipped with its reason; "
                  "another suite not counted")
        else:
            bad += 1
            print(f"not ok {n} meson test: got {got} {reasons}, want {want} {need}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

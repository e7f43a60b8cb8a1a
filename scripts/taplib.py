# SPDX-License-Identifier: GPL-2.0-or-later
"""TAP for the project's Python tests, as scripts/tapcount.py counts it.

    from taplib import tap, skip, results
    print("1..2")
    tap(rss < limit, "RSS ends below the limit", "RSS 12.0 MiB")
    skip("a release", "this build cannot release")
    sys.exit(0 if all(results) else 1)
"""
import sys

results = []        # one bool per case so far; a skip counts as passed


def tap(ok, name, diag=None):
    """One case; diag's lines follow it as TAP comments."""
    results.append(bool(ok))
    print("%s %d - %s" % ("ok" if ok else "not ok", len(results), name))
    for line in (diag or "").splitlines():
        print("# " + line)
    sys.stdout.flush()


def skip(name, why):
    results.append(True)
    print("ok %d - %s # SKIP %s" % (len(results), name, why))
    sys.stdout.flush()

#!/usr/bin/env python3
"""Counts test results of one `meson test` run from its testlog.json.

A doctest binary counts as its test cases (its own summary line); any other test counts
as one. A test that meson saw fail while its cases all passed (a sanitizer report at
exit, a crash after the summary) adds one failure, so nothing is hidden.
Prints "N passed, M failed, K skipped" and writes the same three numbers to argv[2].
"""
import json
import re
import sys

SUMMARY = re.compile(r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed\s*\|\s*(\d+) skipped")
SKIP_LINE = re.compile(r"^(?:.*: )?skipped: ", re.MULTILINE)

passed = failed = skipped = 0
with open(sys.argv[1], encoding="utf-8") as log:
    for line in log:
        entry = json.loads(line)
        result = entry.get("result", "")
        output = (entry.get("stdout") or "") + (entry.get("stderr") or "")
        match = SUMMARY.search(output)
        if match:
            total, ok, bad, _ = (int(x) for x in match.groups())
            if total == 0:  # a filter that selects nothing proves nothing
                failed += 1
            # Cases that returned early with a "skipped:" message count as skipped.
            skips = len(SKIP_LINE.findall(output))
            passed += max(ok - skips, 0)
            skipped += min(skips, ok)
            failed += bad
            if result not in ("OK", "EXPECTEDFAIL") and bad == 0:
                failed += 1
        elif result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write(f"{passed} {failed} {skipped}\n")

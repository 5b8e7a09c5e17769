#!/usr/bin/env python3
"""Per-suite counts of a `cargo test` run, with every ignored and skipped test named.

Usage: test-report.py CARGO_TEST_OUTPUT SKIP_LOG

A skipped test (one that found no root, daemon or tool and returned early) reports "ok" to the
test harness; it is counted here from the skip log that dso::test_support::skipped appends to
(DSO_SKIP_LOG). Ignored tests come from cargo's own output. Exits 0: this is a report, the run's
status is cargo's.
"""
import re
import sys
from collections import OrderedDict


def main() -> int:
    out_path, skip_path = sys.argv[1], sys.argv[2]
    suites: "OrderedDict[str, dict]" = OrderedDict()
    current = None
    running = re.compile(r"^\s+Running (.+?) \((?:.*/)?([^/()]+?)(?:-[0-9a-f]+)?\)$")
    result = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")
    ignored = re.compile(r"^test (\S+) \.\.\. ignored(?:, (.*))?$")
    with open(out_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = running.match(line)
            if m:
                current = m.group(2)
                suites.setdefault(current, {"passed": 0, "failed": 0, "ignored": [], "n_ignored": 0})
                continue
            if current is None:
                continue
            m = ignored.match(line)
            if m:
                why = m.group(2) or "#[ignore]"
                suites[current]["ignored"].append(f"{m.group(1)} ({why})")
                continue
            m = result.match(line)
            if m:
                s = suites[current]
                s["passed"] += int(m.group(1))
                s["failed"] += int(m.group(2))
                s["n_ignored"] += int(m.group(3))
    skipped: "OrderedDict[str, list]" = OrderedDict()
    try:
        with open(skip_path, errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t", 2)
                if len(parts) == 3:
                    skipped.setdefault(parts[0], []).append(f"{parts[1]}: {parts[2]}")
    except FileNotFoundError:
        pass
    for name in skipped:
        suites.setdefault(name, {"passed": 0, "failed": 0, "ignored": [], "n_ignored": 0})

    width = max([len("suite")] + [len(n) for n in suites])
    print(f"{'suite':<{width}}  {'passed':>6}  {'failed':>6}  {'ignored':>7}  {'skipped':>7}")
    totals = [0, 0, 0, 0]
    for name, s in suites.items():
        n_skipped = len(skipped.get(name, []))
        # A skipped test passed as far as the harness knows: count it as skipped, not passed.
        passed = max(s["passed"] - n_skipped, 0)
        row = [passed, s["failed"], s["n_ignored"], n_skipped]
        totals = [a + b for a, b in zip(totals, row)]
        print(f"{name:<{width}}  {row[0]:>6}  {row[1]:>6}  {row[2]:>7}  {row[3]:>7}")
    print(f"{'total':<{width}}  {totals[0]:>6}  {totals[1]:>6}  {totals[2]:>7}  {totals[3]:>7}")
    for name, s in suites.items():
        for t in s["ignored"]:
            print(f"ignored  {name}: {t}")
        for t in skipped.get(name, []):
            print(f"SKIPPED  {name}: {t}")
    if totals[2] or totals[3]:
        print(f"\n{totals[3]} test(s) skipped and {totals[2]} ignored: they did not run (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

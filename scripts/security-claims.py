#!/usr/bin/env python3
"""SECURITY.md's claims table: every test it names must exist, and its "How to run" column
must be the commands that run exactly those tests.

  scripts/security-claims.py          check (CI runs this; exit 1 on any problem)
  scripts/security-claims.py --write  regenerate the "How to run" column in place

A test is named `path::name` (a `fn name` in that file; `*` matches any part of a name), or
a bare `path` (every test of that file, or of that module under src/)."""
import fnmatch
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "SECURITY.md"
HEADER = "| # | Claim | Test(s) | How to run |"
RULE = "| --- | --- | --- | --- |"


def tests_in(path):
    text = (ROOT / path).read_text()
    return re.findall(r"#\[test\]\s*(?:#\[[^\]]*\]\s*)*fn\s+(\w+)", text)


def module_of(path):
    p = pathlib.PurePosixPath(path).with_suffix("")
    parts = list(p.parts[1:])
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def commands(cell, problems, row):
    """The cargo commands that run the tests named in `cell`."""
    cmds = []
    for ref in re.findall(r"`([^`]+)`", cell):
        # `path::name`, or a bare `path` (all the tests of that file or module).
        m = re.fullmatch(r"(\S+\.rs)(?:::(\S+))?", ref)
        if not m:
            problems.append(f"row {row}: cannot read test reference {ref!r}")
            continue
        path, name = m.group(1), m.group(2)
        if not (ROOT / path).is_file():
            problems.append(f"row {row}: no file {path}")
            continue
        names = tests_in(path)
        if name is None:
            if not names:
                problems.append(f"row {row}: {path} has no tests")
            filt = module_of(path)
        else:
            hits = fnmatch.filter(names, name)
            if not hits:
                problems.append(f"row {row}: no test {name} in {path}")
            filt = name.replace("*", "") if "*" in name else name
            if "*" in name and "*" in name.strip("*"):
                problems.append(f"row {row}: only a leading or trailing * is supported: {ref}")
        if path.startswith("src/"):
            if name is not None:
                filt = f"{module_of(path)}::tests::{name}" if "*" not in name else filt
            cmd = f"cargo test --lib {filt}"
        else:
            target = pathlib.PurePosixPath(path).stem
            # Root suites are #[ignore]d (scripts/test.sh runs them with --include-ignored).
            cmd = f"cargo test --test {target}" + (f" {filt}" if name is not None else "")
            if target == "fuzz_regressions":  # needs dso::fuzzing
                cmd = cmd.replace("cargo test ", "cargo test --features fuzzing ", 1)
            if target.endswith("_real") or target.startswith("e2e_"):
                cmd += " -- --include-ignored"
        if cmd not in cmds:
            cmds.append(cmd)
    return "<br>".join(f"`{c}`" for c in cmds)


def main():
    write = "--write" in sys.argv[1:]
    lines = DOC.read_text().split("\n")
    problems = []
    out = []
    in_table = False
    seen = 0
    for line in lines:
        if line.startswith("| # | Claim | Test(s)"):
            in_table = True
            out.append(HEADER)
            continue
        if in_table and line.startswith("| ---"):
            out.append(RULE)
            continue
        if in_table and line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            num, claim, tests = cells[0], cells[1], cells[2]
            seen += 1
            if num != str(seen):
                problems.append(f"row {num}: expected number {seen}")
            run = commands(tests, problems, num)
            new = f"| {num} | {claim} | {tests} | {run} |"
            if len(cells) < 4 or cells[3] != run:
                if not write:
                    problems.append(f"row {num}: the How to run column is stale (--write)")
            out.append(new)
            continue
        if in_table and not line.startswith("|"):
            in_table = False
        out.append(line)
    if seen == 0:
        problems.append("no claims table found")
    if write:
        DOC.write_text("\n".join(out))
    for p in problems:
        print(f"SECURITY.md: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"SECURITY.md: {seen} claims, every named test exists, run commands up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fails when the library's module graph has a cycle (issue 12 point 1).

Nodes are the top-level modules of src/lib.rs (runtime, agent, rotation, state, providers, ...),
and, one level down, the files of src/providers/aws. An edge A -> B is any `crate::B` path
(`use` line or inline) in non-test, non-comment code of A; within providers/aws, `super::X`
and `crate::providers::aws::X` too. Test modules (`#[cfg(test)] mod ... {` to the end of the
file, where this code base keeps them) and comments do not count. With --dot, prints the
top-level graph in Graphviz form instead.

Exit status: 0 without a cycle, 1 with one (each cycle printed with the lines behind its edges).
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# Helpers for tests and fuzzing, not part of the layering.
IGNORED = {"test_support", "fuzzing"}
TEST_MOD = re.compile(r"^#\[cfg\(test\)\]\s*\n(?:#\[[^\n]*\]\s*\n)*mod \w+ \{", re.M)
CRATE_PATH = re.compile(r"\bcrate::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")
SUPER_PATH = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")
AWS_PATH = re.compile(r"\bcrate::providers::aws::([a-z_][a-z0-9_]*)")


def code_lines(path):
    """(line number, code) of a file, without its test module and comments."""
    text = path.read_text()
    m = TEST_MOD.search(text)
    if m:
        text = text[: m.start()]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        # Comments (doc comments included) and string contents do not make dependencies.
        line = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
        line = line.split("//", 1)[0]
        if line.strip():
            out.append((n, line))
    return out


def top_modules():
    lib = (SRC / "lib.rs").read_text()
    return [m for m in re.findall(r"^pub mod (\w+);", lib, re.M) if m not in IGNORED]


def files_of(module):
    single = SRC / f"{module}.rs"
    if single.exists():
        return [single]
    return sorted((SRC / module).rglob("*.rs"))


def top_graph(modules):
    edges = {}
    for a in modules:
        for f in files_of(a):
            for n, line in code_lines(f):
                for m in CRATE_PATH.finditer(line):
                    names = [m.group(2)] if m.group(2) else re.findall(r"\b([a-z_]\w*)\s*(?:::|,|$|\})", m.group(1))
                    for b in names:
                        if b in modules and b != a:
                            edges.setdefault((a, b), []).append(f"{f.relative_to(ROOT)}:{n}")
    return edges


def aws_graph():
    d = SRC / "providers" / "aws"
    files = {f.stem: f for f in d.glob("*.rs") if f.stem != "mod"}
    edges = {}
    for a, f in files.items():
        for n, line in code_lines(f):
            for m in list(SUPER_PATH.finditer(line)) + list(AWS_PATH.finditer(line)):
                b = m.group(1)
                if b in files and b != a:
                    edges.setdefault((a, b), []).append(f"{f.relative_to(ROOT)}:{n}")
    return list(files), edges


def cycles(nodes, edges):
    """The strongly connected components of more than one node (Tarjan)."""
    succ = {n: sorted(b for (a, b) in edges if a == n) for n in nodes}
    index, low, on, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def report(title, nodes, edges):
    bad = cycles(nodes, edges)
    for comp in bad:
        print(f"{title}: cycle between {', '.join(comp)}")
        for (a, b), where in sorted(edges.items()):
            if a in comp and b in comp:
                print(f"  {a} -> {b}: {', '.join(where[:3])}{' ...' if len(where) > 3 else ''}")
    return not bad


def main():
    modules = top_modules()
    edges = top_graph(modules)
    if "--dot" in sys.argv:
        print("digraph dso {")
        for a, b in sorted(edges):
            print(f"  {a} -> {b};")
        print("}")
        return 0
    aws_nodes, aws_edges = aws_graph()
    ok = report("top-level modules", modules, edges)
    ok = report("providers/aws", aws_nodes, aws_edges) and ok
    if ok:
        print(f"no module cycle ({len(modules)} top-level modules, {len(aws_nodes)} files in providers/aws)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where the CPU of a create with 10 file secrets goes (issue 18; BENCHMARKS.md).

Usage: python3 bench/cpu_split.py BINDIR ROUNDS   (root; perf, runc and busybox-static installed)

CPU time (perf stat -e task-clock) of four variants, interleaved rounds:
   runc tree  : perf stat runc create, on the spec as dso rewrote it (runc + exited children)
   dso tree   : perf stat dso-runc create, 10 file secrets (hop + dso + runc child)
   dso alone  : perf stat --no-inherit dso-runc create (hop + exec'd dso, not the runc child)
   runc child : the runc child of dso-runc, through a perf wrapper as the delegate
"""
import sys, os, subprocess, statistics, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench
lab = bench.Lab(sys.argv[1], 100)
n = int(sys.argv[2])
EV = "task-clock,page-faults"
wrap = os.path.join(lab.dir, "perfrunc.sh")
open(wrap, "w").write('#!/bin/sh\nfor a; do [ "$a" = create ] && exec perf stat -x, -o "$PERF_OUT" -e ' + EV + ' -- runc "$@"; done\nexec runc "$@"\n')
os.chmod(wrap, 0o755)
def parse(f):
    d = {}
    for line in open(f):
        p = line.strip().split(",")
        if len(p) > 3 and p[0] and p[0][0].isdigit():
            d[p[2] or p[1]] = float(p[0])
    return d
try:
    b = lab.bundle(bench.file_env(10))
    base = [lab.dso_runc, f"--dso-config={lab.cfg}", "--root", lab.runc_root]
    subprocess.run([*base, "create", "--bundle", b, "--pid-file", b + "/pid", "rw"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    rewritten = json.load(open(b + "/config.json"))
    subprocess.run([*base, "delete", "--force", "rw"], check=True)
    names = ["runc tree", "dso tree", "dso alone", "runc child"]
    res = {k: [] for k in names}
    for r in range(n + 1):
        for name in (names if r % 2 == 0 else names[::-1]):
            env = dict(os.environ)
            if name == "runc tree":
                bb = lab.bundle([]); json.dump(rewritten, open(bb + "/config.json", "w"))
                out = bb + "/perf.txt"
                cmd = ["perf", "stat", "-x,", "-o", out, "-e", EV, "--", "runc", "--root", lab.runc_root]
            else:
                bb = lab.bundle(bench.file_env(10)); out = bb + "/perf.txt"
                if name == "runc child":
                    cmd = [lab.dso_runc, f"--dso-config={lab.cfg}", f"--dso-delegate={wrap}", "--root", lab.runc_root]
                    env["PERF_OUT"] = out
                else:
                    ni = ["--no-inherit"] if name == "dso alone" else []
                    cmd = ["perf", "stat", *ni, "-x,", "-o", out, "-e", EV, "--", *base]
            cid = "t" + os.path.basename(bb)
            subprocess.run([*cmd, "create", "--bundle", bb, "--pid-file", bb + "/pid", cid], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            subprocess.run(["runc", "--root", lab.runc_root, "delete", "--force", cid], check=True)
            if r: res[name].append(parse(out))
    for k, v in res.items():
        tc = [x["task-clock"] for x in v]; pf = [x["page-faults"] for x in v]
        q = statistics.quantiles(tc, n=4)
        print(f"{k:11} task-clock median {statistics.median(tc):.2f} ms (p25 {q[0]:.2f}, p75 {q[2]:.2f}); page faults {statistics.median(pf):.0f}")
finally:
    lab.close()

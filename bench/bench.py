#!/usr/bin/env python3
"""dso benchmarks: what dso-runc costs against plain runc, measured in the same run.

Runs interleaved rounds (runc, dso, runc, dso, ...) and prints medians, spreads and the ratio
against runc beside each goal. Needs root, runc, busybox-static, and for the Docker rows
docker.io (a private throwaway dockerd is started; the system's daemon is never touched).

    sudo python3 bench/bench.py            # full run (release binaries, 30 rounds)
    sudo python3 bench/bench.py --smoke    # 3 rounds: checks that the benchmark still works
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, **kw)


class Lab:
    def __init__(self, bindir):
        self.dir = tempfile.mkdtemp(prefix="dso-bench-", dir="/tmp")
        bindir = os.path.abspath(bindir)
        self.dso_runc = os.path.join(bindir, "dso-runc")
        self.dso = os.path.join(bindir, "dso")
        self.cfg = os.path.join(self.dir, "dso.yaml")
        self.runc_root = os.path.join(self.dir, "runc-root")
        self.rootfs = os.path.join(self.dir, "rootfs")
        self.make_rootfs()
        sh(self.dso, "--config", self.cfg, "init", "--store", os.path.join(self.dir, "store"),
           "--key-file", os.path.join(self.dir, "key"))
        names = [f"s{i}" for i in range(100)]
        with open(self.cfg, "w") as f:
            f.write(f"providers:\n  local: {{ type: local, path: {self.dir}/store, key_file: {self.dir}/key }}\n")
            f.write("secrets:\n")
            for n in names:
                f.write(f"  {n}: {{}}\n")
            f.write(f"runtime: {{ state_dir: {self.dir}/state }}\naudit: {{ path: {self.dir}/audit.log }}\n")
        for n in names:
            subprocess.run([self.dso, "--config", self.cfg, "secret", "set", n],
                           input=os.urandom(32).hex().encode(), check=True, capture_output=True)
        self.n = 0

    def make_rootfs(self):
        os.makedirs(os.path.join(self.rootfs, "bin"))
        for d in ("proc", "sys", "dev", "run", "tmp", "etc"):
            os.makedirs(os.path.join(self.rootfs, d))
        shutil.copy("/bin/busybox", os.path.join(self.rootfs, "bin/busybox"))
        for a in ("sh", "true", "cat"):
            os.symlink("busybox", os.path.join(self.rootfs, "bin", a))
        spec_dir = os.path.join(self.dir, "spec")
        os.makedirs(spec_dir)
        sh("runc", "spec", cwd=spec_dir)
        with open(os.path.join(spec_dir, "config.json")) as f:
            self.spec = json.load(f)
        self.spec["process"]["terminal"] = False
        self.spec["process"]["args"] = ["true"]
        self.spec["root"] = {"path": self.rootfs, "readonly": True}

    def bundle(self, env):
        self.n += 1
        b = os.path.join(self.dir, f"b{self.n}")
        os.makedirs(b)
        spec = json.loads(json.dumps(self.spec))
        spec["process"]["env"] += env
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(spec, f)
        return b

    def cycle(self, runtime, env):
        """create + start + delete of one container; returns seconds."""
        b = self.bundle(env)
        cid = f"bench{self.n}"
        base = [runtime]
        if runtime == self.dso_runc:
            base.append(f"--dso-config={self.cfg}")
        base += ["--root", self.runc_root]
        t0 = time.perf_counter()
        # Not captured: the container's init inherits create's stdio and would hold a pipe open.
        subprocess.run([*base, "create", "--bundle", b, "--pid-file", os.path.join(b, "pid"), cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        sh(*base, "start", cid)
        sh(*base, "delete", "--force", cid)
        t = time.perf_counter() - t0
        shutil.rmtree(b)
        return t


def file_env(k):
    return [f"S{i}_FILE=dsofile://s{i}" for i in range(k)]


def env_env(k):
    return [f"S{i}=dso://s{i}" for i in range(k)]


class Docker:
    """A private dockerd with the dso runtime registered; stopped on close()."""

    def __init__(self, lab):
        self.dir = tempfile.mkdtemp(prefix="dso-bd-", dir="/tmp")
        self.sock = os.path.join(self.dir, "d.sock")
        conf = os.path.join(self.dir, "daemon.json")
        with open(conf, "w") as f:
            json.dump({"runtimes": {"dso": {"path": lab.dso_runc,
                                            "runtimeArgs": [f"--dso-config={lab.cfg}"]}}}, f)
        self.log = open(os.path.join(self.dir, "dockerd.log"), "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", os.path.join(self.dir, "data"), "--exec-root",
             os.path.join(self.dir, "exec"), "--pidfile", os.path.join(self.dir, "d.pid"),
             "-H", f"unix://{self.sock}", "--bridge", "none", "--iptables=false",
             "--ip6tables=false", "--config-file", conf],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        for _ in range(600):
            if subprocess.run(["docker", "version"], env=self.env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("dockerd did not start; see " + self.log.name)
        tar = subprocess.Popen(["tar", "-C", lab.rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", "dso-bench/busybox"], stdin=tar.stdout,
                       env=self.env, check=True, capture_output=True)
        tar.wait()

    def run(self, runtime, env):
        args = ["docker", "run", "--rm", "--network", "none", "--runtime", runtime]
        for e in env:
            args += ["-e", e]
        args += ["dso-bench/busybox", "true"]
        t0 = time.perf_counter()
        subprocess.run(args, env=self.env, check=True, capture_output=True)
        return time.perf_counter() - t0

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run(["sh", "-c", f"grep -o ' {self.dir}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def fmt_ms(xs):
    med = statistics.median(xs) * 1000
    spread = (max(xs) - min(xs)) * 1000 if len(xs) > 1 else 0
    return med, f"{med:8.1f} ms (±{spread / 2:5.1f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="3 rounds, debug binaries allowed")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--bindir", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--no-docker", action="store_true")
    a = ap.parse_args()
    rounds = 3 if a.smoke else a.rounds
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (runc, dockerd)")
    lab = Lab(a.bindir)
    runc = shutil.which("runc")

    rows = [
        # name, runtime for "dso" side, env, goal
        ("passthrough (no references)", [], 1.05),
        ("1 file secret (local)", file_env(1), None),
        ("10 file secrets (local)", file_env(10), 1.25),
        ("10 env secrets (local)", env_env(10), None),
        ("100 file secrets (local)", file_env(100), None),
    ]
    results = {name: ([], []) for name, _, _ in rows}
    lab.cycle(runc, [])  # warm caches (page cache, keyring-cached key)
    lab.cycle(lab.dso_runc, file_env(1))
    for _ in range(rounds):
        for name, env, _ in rows:
            results[name][0].append(lab.cycle(runc, []))
            results[name][1].append(lab.cycle(lab.dso_runc, env))

    docker_rows = []
    if not a.no_docker and shutil.which("dockerd"):
        d = Docker(lab)
        try:
            d.run("runc", [])
            d.run("dso", file_env(10))
            docker_rows = [("docker run, passthrough", [], 1.05),
                           ("docker run, 10 file secrets", file_env(10), 1.10)]
            for name, _, _ in docker_rows:
                results[name] = ([], [])
            for _ in range(rounds):
                for name, env, _ in docker_rows:
                    results[name][0].append(d.run("runc", []))
                    results[name][1].append(d.run("dso", env))
        finally:
            d.close()

    print(f"\ndso benchmark: {rounds} interleaved rounds, binaries in {a.bindir}")
    print(f"{'case':32} {'runc':>22} {'dso':>22} {'ratio':>7} {'goal':>6}")
    failed = []
    for name, _, goal in rows + docker_rows:
        base, dso = results[name]
        bm, bs = fmt_ms(base)
        dm, ds = fmt_ms(dso)
        ratio = dm / bm
        g = f"≤{goal:.2f}" if goal else "-"
        mark = "" if goal is None or ratio <= goal else "  MISSED"
        if mark:
            failed.append(name)
        print(f"{name:32} {bs:>22} {ds:>22} {ratio:7.3f} {g:>6}{mark}")
    if failed and not a.smoke:
        print("\ngoals missed: " + ", ".join(failed))
    shutil.rmtree(lab.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

//! The real-runc lab of the tests/*_real.rs suites: a temp dir with a local store and
//! dso.yaml, busybox bundles, and runc/dso-runc/dso invocations under a private runc root
//! (whatever a test leaves there is deleted with the lab).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use crate::{dso_exe, dso_runc_exe};

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until `file` contains `needle` (an agent's log line, say) and returns its text;
/// panics with the text after `timeout`.
pub fn wait_for(file: &Path, needle: &str, timeout: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let text = fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            t0.elapsed() < timeout,
            "{needle:?} not seen in {} within {timeout:?}: {text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when the test can run; panics under CI=true when it cannot.
pub fn ready() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ok = root && have("runc") && Path::new("/bin/busybox").exists();
    if !ok {
        let why = format!(
            "needs root ({root}), runc ({}) and busybox-static ({})",
            have("runc"),
            Path::new("/bin/busybox").exists()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("runc tests cannot run under CI: {why}");
        }
        dso::test_support::skipped(&format!("runc test: {why}"));
    }
    ok
}

pub struct Created {
    pub status: std::process::ExitStatus,
    pub stderr: String,
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub n: usize,
}

impl Lab {
    #[allow(clippy::new_without_default)] // it runs `dso init`: not a default value
    pub fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("dso-runc-")
            .tempdir_in("/tmp")
            .unwrap();
        let lab = Lab { dir, n: 0 };
        let cfg = lab.path("dso.yaml");
        let out = Command::new(dso_exe())
            .args(["--config", cfg.to_str().unwrap(), "init", "--store"])
            .arg(lab.path("store"))
            .arg("--key-file")
            .arg(lab.path("key"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dso init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn write_config(&self, extra_secrets: &str, runtime: &str) {
        let text = format!(
            "providers:\n  local: {{ type: local, path: {}, key_file: {} }}\nsecrets:\n  db: {{}}\n  api: {{}}\n{extra_secrets}policy: {{ default: allow, inline_references: true }}\naudit: {{ path: {} }}\nruntime: {{ state_dir: {}{runtime} }}\n",
            self.path("store").display(),
            self.path("key").display(),
            self.path("audit.log").display(),
            self.path("state").display(),
        );
        fs::write(self.path("dso.yaml"), text).unwrap();
    }

    pub fn set_secret(&self, name: &str, value: &[u8]) {
        use std::io::Write;
        let mut child = Command::new(dso_exe())
            .arg("--config")
            .arg(self.path("dso.yaml"))
            .args(["secret", "set", name])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(value).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "secret set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A bundle with a busybox rootfs running `script` as `user`, with extra env entries.
    pub fn bundle(&mut self, script: &str, env: &[&str], user: (u32, u32)) -> PathBuf {
        self.n += 1;
        let b = self.path(&format!("bundle{}", self.n));
        let rootfs = b.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "run", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cat", "ls", "stat", "grep", "echo", "sleep", "id", "env",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let out = Command::new("runc")
            .arg("spec")
            .current_dir(&b)
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut spec: serde_json::Value =
            serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        spec["process"]["user"] = serde_json::json!({"uid": user.0, "gid": user.1});
        let envs = spec["process"]["env"].as_array_mut().unwrap();
        for e in env {
            envs.push((*e).into());
        }
        // Not needed for these tests, and absent on some CI kernels.
        spec["linux"]["namespaces"] = serde_json::json!([
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
        ]);
        fs::write(
            b.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        b
    }

    pub fn runc_root(&self) -> PathBuf {
        self.path("runc-root")
    }

    /// `dso-runc create`, the container's stdout/stderr going to files in the bundle (a pipe
    /// would be held open by the container's init and never reach EOF).
    pub fn create(&self, bundle: &Path, id: &str) -> Created {
        self.create_in(bundle, bundle, id)
    }

    /// Like `create`, with the container's output files in `out_dir`.
    pub fn create_in(&self, out_dir: &Path, bundle: &Path, id: &str) -> Created {
        let stdout = fs::File::create(out_dir.join("stdout")).unwrap();
        let stderr = fs::File::create(out_dir.join("stderr")).unwrap();
        let status = Command::new(dso_runc_exe())
            .arg(format!("--dso-config={}", self.path("dso.yaml").display()))
            .arg("--root")
            .arg(self.runc_root())
            .arg("--log")
            .arg(self.path("runc.log"))
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(bundle.join("pid"))
            .arg(id)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .unwrap();
        Created {
            status,
            stderr: fs::read_to_string(out_dir.join("stderr")).unwrap_or_default(),
        }
    }

    pub fn runc(&self, args: &[&str]) -> Output {
        Command::new("runc")
            .arg("--root")
            .arg(self.runc_root())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn list(&self) -> String {
        String::from_utf8_lossy(&self.runc(&["list", "-q"]).stdout).into_owned()
    }

    /// Starts the container and waits for it to stop; returns its stdout.
    pub fn start_and_wait(&self, bundle: &Path, id: &str) -> String {
        let out = self.runc(&["start", id]);
        assert!(
            out.status.success(),
            "start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t0 = Instant::now();
        loop {
            let st = self.runc(&["state", id]);
            let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
            if v["status"] == "stopped" || t0.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.runc(&["delete", "--force", id]);
        fs::read_to_string(bundle.join("stdout")).unwrap()
    }

    /// `dso --config <lab config> args...`.
    pub fn dso(&self, args: &[&str]) -> Output {
        Command::new(dso_exe())
            .arg("--config")
            .arg(self.path("dso.yaml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Creates (with dso-runc) and starts a long-running container; returns its init pid.
    pub fn run_detached(&self, bundle: &Path, id: &str) -> i32 {
        let out = self.create(bundle, id);
        assert!(
            out.status.success(),
            "create failed: {}\nlog: {}",
            out.stderr,
            fs::read_to_string(self.path("runc.log")).unwrap_or_default()
        );
        let out = self.runc(&["start", id]);
        assert!(
            out.status.success(),
            "start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::read_to_string(bundle.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Kills the container and waits until runc calls it stopped.
    pub fn kill(&self, id: &str) {
        self.runc(&["kill", id, "KILL"]);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            let st = self.runc(&["state", id]);
            let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
            if v["status"] == "stopped" || !st.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("container {id} did not stop");
    }
}

/// Whatever a test left under the lab's runc root is deleted with the lab.
impl Drop for Lab {
    fn drop(&mut self) {
        for id in self.list().lines() {
            self.runc(&["delete", "--force", id]);
        }
    }
}

/// A `dso agent` on the lab's dso.yaml (stderr in `agent.log`), killed on drop.
pub struct AgentProc(pub std::process::Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the lab's agent (callers wait for what they need it to have done).
pub fn start_agent(lab: &Lab) -> AgentProc {
    AgentProc(
        Command::new(dso_exe())
            .arg("--config")
            .arg(lab.path("dso.yaml"))
            .arg("agent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(lab.path("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

//! A private dockerd for the end-to-end suites: its own data-root, exec-root, socket and
//! daemon.json (registering `dso-runc` as runtime `dso`), two imported busybox images, and a
//! local dso store made with the real `dso` CLI. Started once per test process, stopped (with
//! everything it mounted or spawned) when the process exits.
//!
//! Tests never touch the system's Docker: every `docker` call gets `DOCKER_HOST` pointing at
//! the private socket and its own `DOCKER_CONFIG`.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::{dso_exe, dso_runc_exe};

/// The plain busybox image.
pub const IMAGE: &str = "dso-test/busybox:latest";
/// Busybox with `/run` a symlink to an absolute path that also exists on a typical host.
pub const RUNLINK_IMAGE: &str = "dso-test/runlink:latest";
/// Where `/run` points in [`RUNLINK_IMAGE`]. Harmless and unique, so the tests can check that
/// nothing appears at this path on the host.
pub const RUNLINK_TARGET: &str = "/var/dso-e2e-hostrun";

/// Temp dirs are made here, not under `$TMPDIR`: unix socket paths must stay under 108 bytes.
pub const TMP_PARENT: &str = "/tmp";
pub const TMP_PREFIX: &str = "dsoe2e-";
/// How long dockerd may take to answer `docker version`.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// True when the end-to-end tests can run here: root, dockerd, docker, runc, tar and
/// busybox-static present. Under `CI=true` a missing piece is a failure (panic); elsewhere the
/// test prints why it is skipped and the caller returns early.
pub fn require_root() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for tool in ["dockerd", "docker", "runc", "containerd", "tar"] {
        if find_in_path(tool).is_none() {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    if !is_static_elf(Path::new("/bin/busybox")) {
        // The test images have no libc: a dynamically linked busybox would not run in them.
        missing.push("a static /bin/busybox (package busybox-static)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "the dockerd end-to-end tests need {} (run scripts/install-deps.sh as root)",
        missing.join(", ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("\n\n*** CI=true and an end-to-end test cannot run: {why} ***\n\n");
    }
    dso::test_support::skipped(&why);
    false
}

/// True when `tool` is on PATH; otherwise a failure under `CI=true`, a skip elsewhere.
pub fn require_tool(tool: &str) -> bool {
    if find_in_path(tool).is_some() {
        return true;
    }
    let why = format!("this test needs `{tool}` on PATH (run scripts/install-deps.sh as root)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("\n\n*** CI=true and an end-to-end test cannot run: {why} ***\n\n");
    }
    dso::test_support::skipped(&why);
    false
}

/// A 64-bit little-endian ELF executable without a program interpreter (PT_INTERP).
fn is_static_elf(path: &Path) -> bool {
    let Ok(elf) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(phentsize);
        elf.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != PT_INTERP)
    })
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = search_path();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// `$PATH` plus the sbin directories, where dockerd and runc live on Debian.
pub fn search_path() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    std::env::join_paths(dirs).expect("PATH entries contain no ':'")
}

/// The private dockerd and what belongs to it.
pub struct Harness {
    dir: PathBuf,
    dockerd_pid: std::sync::atomic::AtomicU32,
    store: OnceLock<Result<(), String>>,
}

static HARNESS: OnceLock<Result<Harness, String>> = OnceLock::new();
/// Extra daemon.json settings for this test process's dockerd (e.g. `userns-remap`); set
/// before the first [`Harness::get`].
pub static DAEMON_EXTRA: OnceLock<serde_json::Value> = OnceLock::new();
/// Tests take this lock so that they never share the store's secrets or the runc root.
static SERIAL: Mutex<()> = Mutex::new(());
/// What the exit handler stops and removes.
static CLEANUP: Mutex<Option<Cleanup>> = Mutex::new(None);

struct Cleanup {
    dir: PathBuf,
    dockerd: Option<Child>,
}

impl Harness {
    /// The process-wide private dockerd, started on first use. Panics (in every test that
    /// asks) if it could not be started, with the tail of dockerd's log.
    pub fn get() -> &'static Harness {
        match HARNESS.get_or_init(start) {
            Ok(h) => h,
            Err(e) => panic!("private dockerd is not available: {e}"),
        }
    }

    /// Serializes the tests of one process: they share one store and one runc root.
    pub fn serial(&self) -> MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn exec_root(&self) -> PathBuf {
        self.dir.join("exec")
    }
    pub fn dockerd_log(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }
    pub fn dockerd_pid(&self) -> u32 {
        self.dockerd_pid.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the private dockerd (SIGTERM; it stops its containers, as on a host's
    /// `systemctl restart docker`, unless live-restore is on) and starts it again on the same
    /// data root, exec root and socket. Panics if it does not come back.
    pub fn restart_dockerd(&self) {
        let old = lock_cleanup().as_mut().and_then(|c| c.dockerd.take());
        if let Some(mut child) = old {
            // SAFETY: kill with a pid we spawned and still own (not yet waited for).
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let t0 = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if t0.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let child = spawn_dockerd(&self.dir).unwrap_or_else(|e| panic!("restarting dockerd: {e}"));
        self.dockerd_pid
            .store(child.id(), std::sync::atomic::Ordering::SeqCst);
        let mut cleanup = lock_cleanup();
        match cleanup.as_mut() {
            Some(c) => c.dockerd = Some(child),
            None => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                panic!("the harness's exit handler state is gone");
            }
        }
        drop(cleanup);
        wait_until_ready(&self.dir).unwrap_or_else(|e| panic!("dockerd did not come back: {e}"));
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("dso.yaml")
    }
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("store.vault")
    }
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("master.key")
    }
    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("dso-state")
    }

    /// A `docker` command aimed at the private daemon.
    pub fn docker_command(&self) -> Command {
        docker_command(&self.dir)
    }

    /// Runs the real `docker` CLI against the private daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"))
    }

    /// Runs `docker`, asserts success, returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `dso --config <tmp>/dso.yaml ARGS`, feeding `stdin` if given.
    pub fn dso(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(dso_exe())
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", dso_exe()));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input).expect("writing dso's stdin");
        }
        child.wait_with_output().expect("waiting for dso")
    }

    /// Writes `<tmp>/dso.yaml` atomically (dso-runc reads it on every create).
    pub fn write_dso_yaml(&self, text: &str) {
        let tmp = self.dir.join(".dso.yaml.tmp");
        fs::write(&tmp, text).expect("writing dso.yaml");
        fs::rename(&tmp, self.config_path()).expect("renaming dso.yaml into place");
    }

    /// The dso.yaml of the contract: one local provider, `db_password` and `api_key`. Audit
    /// and per-container state go under the temp dir, not to the host's defaults.
    pub fn default_dso_yaml(&self) -> String {
        let q = |p: PathBuf| serde_json::Value::String(p.display().to_string()).to_string();
        format!(
            "providers:\n  local: {{ type: local, path: {}, key_file: {} }}\n\
             secrets:\n  db_password: {{}}\n  api_key: {{}}\n\
             policy: {{ default: allow, inline_references: true }}\n\
             audit: {{ path: {} }}\n\
             runtime: {{ state_dir: {} }}\n",
            q(self.store_path()),
            q(self.key_path()),
            q(self.audit_path()),
            q(self.state_dir()),
        )
    }

    /// Creates the local store with `dso init` (once per process) and writes the default
    /// dso.yaml. Panics with dso's message if the CLI fails.
    pub fn init_store(&self) {
        let result = self.store.get_or_init(|| {
            let out = self.dso(
                &[
                    "init",
                    "--store",
                    path_str(&self.store_path()),
                    "--key-file",
                    path_str(&self.key_path()),
                ],
                None,
            );
            if !out.status.success() {
                return Err(format!(
                    "dso init failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            self.write_dso_yaml(&self.default_dso_yaml());
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// `dso secret set NAME` with the value on stdin (never in argv).
    pub fn set_secret(&self, name: &str, value: &[u8]) {
        self.init_store();
        let out = self.dso(&["secret", "set", name], Some(value));
        assert!(
            out.status.success(),
            "dso secret set {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The runc state root (`--root`) dockerd hands to the runtime named `runtime`, if it
    /// exists yet. Docker 20.10 gives every runc-compatible runtime `<exec-root>/runtime-runc`
    /// (and calls it through a wrapper script in `<data-root>/runtimes/<name>` that adds the
    /// runtimeArgs); later versions use `<exec-root>/runtime-<name>`. Containerd adds the
    /// namespace, `moby`.
    pub fn runc_root(&self, runtime: &str) -> Option<PathBuf> {
        let exec = self.exec_root();
        [format!("runtime-{runtime}"), "runtime-runc".to_string()]
            .into_iter()
            .map(|d| exec.join(d).join("moby"))
            .find(|p| p.is_dir())
    }

    /// The OCI bundle directory containerd made for the running container `id`.
    pub fn bundle_dir(&self, id: &str) -> Option<PathBuf> {
        find_dir_named(&self.exec_root(), id, "config.json", 6)
    }

    /// The runc root the running container `id` was created under, read from the shim's
    /// options in its bundle (`root`, plus containerd's namespace).
    pub fn runc_root_of(&self, id: &str) -> Option<PathBuf> {
        let options = fs::read(self.bundle_dir(id)?.join("options.json")).ok()?;
        let options: serde_json::Value = serde_json::from_slice(&options).ok()?;
        let root = PathBuf::from(options.get("root")?.as_str()?).join("moby");
        root.is_dir().then_some(root)
    }

    /// Ids of the containers runc knows under `root`.
    pub fn runc_list(&self, root: &Path) -> Vec<String> {
        let out = Command::new("runc")
            .env("PATH", search_path())
            .arg("--root")
            .arg(root)
            .args(["list", "-q"])
            .output()
            .expect("running runc list");
        assert!(
            out.status.success(),
            "runc --root {} list failed: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The last `lines` lines of dockerd's log, for failure messages.
    pub fn dockerd_log_tail(&self, lines: usize) -> String {
        log_tail(&self.dockerd_log(), lines)
    }
}

/// The usual start of a test: root and tools checked (else skipped, or a failure under
/// `CI=true`), the process's dockerd, the serial lock, the store.
pub fn begin() -> Option<(&'static Harness, MutexGuard<'static, ()>)> {
    if !require_root() {
        return None;
    }
    let h = Harness::get();
    let serial = h.serial();
    h.init_store();
    Some((h, serial))
}

impl Harness {
    /// Writes the default dso.yaml with `extra` (lines of YAML, two-space indented) added to
    /// its `secrets:` map.
    pub fn write_dso_yaml_with_secrets(&self, extra: &str) {
        let yaml = self
            .default_dso_yaml()
            .replace("  api_key: {}\n", &format!("  api_key: {{}}\n{extra}"));
        self.write_dso_yaml(&yaml);
    }
}

/// A `dso agent` on the harness's dso.yaml and dockerd, killed on drop. Its stderr goes to
/// `agent.log` in the harness dir.
pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Harness {
    /// Starts `dso agent` and waits until it says it is watching.
    pub fn start_agent(&self) -> Agent {
        let log = self.dir.join("agent.log");
        let child = Command::new(dso_exe())
            .arg("--config")
            .arg(self.config_path())
            .arg("agent")
            .arg("--docker-socket")
            .arg(self.socket())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("creating agent.log"))
            .spawn()
            .expect("starting dso agent");
        let agent = Agent(child);
        let t0 = Instant::now();
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("watching")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "agent did not start: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
        agent
    }
}

/// A container that is removed (`docker rm -f`) when the guard drops, even if the test panics.
pub struct ContainerGuard<'a> {
    harness: &'a Harness,
    pub name: String,
}

impl<'a> ContainerGuard<'a> {
    pub fn new(harness: &'a Harness, name: impl Into<String>) -> Self {
        let name = name.into();
        // A leftover from an aborted earlier test in this daemon would make `--name` clash.
        let _ = harness.docker(&["rm", "-f", &name]);
        ContainerGuard { harness, name }
    }
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let _ = self.harness.docker(&["rm", "-f", &self.name]);
    }
}

impl Harness {
    /// `docker run --runtime dso` of a container whose only reference is
    /// `X_FILE=dsofile://<secret>` and whose command says "must not run": for the fail-closed
    /// tests.
    pub fn run_file_ref(&self, name: &str, secret: &str) -> Output {
        let env = format!("X_FILE=dsofile://{secret}");
        self.docker(&[
            "run",
            "--name",
            name,
            "--runtime",
            "dso",
            "--network",
            "none",
            "-e",
            &env,
            IMAGE,
            "echo",
            "must not run",
        ])
    }
}

/// A fresh random token (hex), for secret values that can be searched for on the host.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Files under the host's /run, /var, /tmp, /etc and /dev/shm whose content contains
/// `needle`. Unreadable files, devices, FIFOs and sockets are skipped; symlinks are not
/// followed.
pub fn host_files_containing(needle: &str) -> Vec<String> {
    files_containing(
        &["/run", "/var", "/tmp", "/etc", "/dev/shm"].map(Path::new),
        needle,
    )
}

/// Files under `dirs` whose content contains `needle` (as [`host_files_containing`]).
pub fn files_containing(dirs: &[&Path], needle: &str) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-rlF", "--devices=skip", "-s", "--", needle])
        .args(dirs)
        .stdin(Stdio::null())
        .output()
        .expect("running grep");
    // 0: found, 1: not found, 2: some file could not be read (the matches are still listed).
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "grep failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// A directory named `name` holding a file `marker`, at most `depth` levels under `root`.
fn find_dir_named(root: &Path, name: &str, marker: &str, depth: usize) -> Option<PathBuf> {
    let candidate = root.join(name);
    if candidate.join(marker).is_file() {
        return Some(candidate);
    }
    if depth == 0 {
        return None;
    }
    fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| find_dir_named(&e.path(), name, marker, depth - 1))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("harness paths are UTF-8")
}

/// A `docker` command aimed at the dockerd whose socket is `<dir>/docker.sock`.
pub fn docker_command(dir: &Path) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("PATH", search_path())
        .env(
            "DOCKER_HOST",
            format!("unix://{}", dir.join("docker.sock").display()),
        )
        .env("DOCKER_CONFIG", dir.join("docker-cli"))
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    cmd
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Start-up

fn start() -> Result<Harness, String> {
    clean_stale_dirs();
    let dir = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempdir_in(TMP_PARENT)
        .map_err(|e| format!("cannot create a temp dir in {TMP_PARENT}: {e}"))?
        .keep();
    fs::write(dir.join("owner.pid"), std::process::id().to_string())
        .map_err(|e| format!("writing owner.pid: {e}"))?;
    *lock_cleanup() = Some(Cleanup {
        dir: dir.clone(),
        dockerd: None,
    });
    // SAFETY: `cleanup_at_exit` is an `extern "C" fn()` that never unwinds.
    if unsafe { libc::atexit(cleanup_at_exit) } != 0 {
        return Err("atexit registration failed".into());
    }

    let runtime_dir = Path::new(dso_runc_exe())
        .parent()
        .expect("dso-runc has a directory");
    if !runtime_dir.join("dso-init").is_file() {
        return Err(format!(
            "dso-init is not built next to {} (cargo builds all bins for tests)",
            dso_runc_exe()
        ));
    }
    let mut daemon_json = serde_json::json!({
        "runtimes": {
            "dso": {
                "path": dso_runc_exe(),
                "runtimeArgs": [format!("--dso-config={}", dir.join("dso.yaml").display())],
            }
        },
        // Containers still running at shutdown are killed after 2 s, not 15.
        "shutdown-timeout": 2,
    });
    if let (Some(extra), Some(obj)) = (
        DAEMON_EXTRA.get().and_then(|v| v.as_object()),
        daemon_json.as_object_mut(),
    ) {
        obj.extend(extra.clone());
        // A remapped root must be able to walk down to its layers and bundles.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    }
    if dockerd_major_version().is_some_and(|v| v <= 20) {
        // Docker 20.10 otherwise creates /etc/docker/key.json on the host; later versions
        // have no trust key and reject the option.
        daemon_json["deprecated-key-path"] = dir.join("key.json").display().to_string().into();
    }
    fs::write(dir.join("daemon.json"), daemon_json.to_string())
        .map_err(|e| format!("writing daemon.json: {e}"))?;

    let child = spawn_dockerd(&dir)?;
    let pid = child.id();
    lock_cleanup()
        .as_mut()
        .expect("cleanup state was set above")
        .dockerd = Some(child);
    eprintln!(
        "dso e2e: private dockerd (pid {pid}) in {}; log: {}/dockerd.log",
        dir.display(),
        dir.display()
    );

    wait_until_ready(&dir)?;
    let harness = Harness {
        dir,
        dockerd_pid: std::sync::atomic::AtomicU32::new(pid),
        store: OnceLock::new(),
    };
    import_image(&harness, IMAGE, None)?;
    import_image(&harness, RUNLINK_IMAGE, Some(RUNLINK_TARGET))?;
    Ok(harness)
}

/// `dockerd --version` → 20 for "Docker version 20.10.24+dfsg1, build 5d6db84".
pub fn dockerd_major_version() -> Option<u32> {
    let out = Command::new("dockerd")
        .env("PATH", search_path())
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

fn lock_cleanup() -> MutexGuard<'static, Option<Cleanup>> {
    CLEANUP.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts dockerd from a thread that lives as long as the process, so that
/// `PR_SET_PDEATHSIG` (which fires when the *thread* that forked exits) only fires when the
/// test process dies without running its exit handler (SIGKILL, abort).
fn spawn_dockerd(dir: &Path) -> Result<Child, String> {
    spawn_dockerd_in(dir, None)
}

/// [`spawn_dockerd`] for the dockerd of `dir`, inside the network namespace `netns`
/// (`/run/netns/NAME`) when given. `nsenter --net` and not `ip netns exec`: the latter also
/// remounts /sys for the namespace, and dockerd then fails.
pub fn spawn_dockerd_in(dir: &Path, netns: Option<&Path>) -> Result<Child, String> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    let netns = netns.map(Path::to_path_buf);
    thread::Builder::new()
        .name("dso-e2e-dockerd".into())
        .spawn(move || {
            let _ = tx.send(spawn_dockerd_here(&dir, netns.as_deref()));
            loop {
                thread::park();
            }
        })
        .map_err(|e| format!("cannot start the dockerd keeper thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the dockerd keeper thread died".to_string())?
}

fn spawn_dockerd_here(dir: &Path, netns: Option<&Path>) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let log = fs::File::create(dir.join("dockerd.log"))
        .map_err(|e| format!("creating dockerd.log: {e}"))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("dup of dockerd.log: {e}"))?;
    let p = |name: &str| dir.join(name).display().to_string();
    let mut cmd = match netns {
        // nsenter execs dockerd (no fork): the child is dockerd itself.
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display()))
                .args(["--", "dockerd"]);
            c
        }
        None => Command::new("dockerd"),
    };
    cmd.env("PATH", search_path())
        .env_remove("DOCKER_HOST")
        .args(["--data-root", &p("data")])
        .args(["--exec-root", &p("exec")])
        .args(["--pidfile", &p("dockerd.pid")])
        .args(["-H", &format!("unix://{}", p("docker.sock"))])
        .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
        .args(["--config-file", &p("daemon.json")])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start dockerd: {e}"))
}

fn wait_until_ready(dir: &Path) -> Result<(), String> {
    wait_until_answering(dir, || {
        lock_cleanup()
            .as_mut()
            .and_then(|c| c.dockerd.as_mut())
            .and_then(|child| child.try_wait().ok().flatten())
    })
}

/// Waits until the dockerd of `dir` answers `docker version`; fails with the tail of its log
/// when `exited` says it is gone or after [`STARTUP_DEADLINE`].
pub fn wait_until_answering(
    dir: &Path,
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let out = docker_command(dir)
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        if let Some(status) = exited() {
            return Err(format!(
                "dockerd exited ({status}) before answering; last lines of its log:\n{}",
                log_tail(&dir.join("dockerd.log"), 40)
            ));
        }
        if started.elapsed() > STARTUP_DEADLINE {
            return Err(format!(
                "dockerd did not answer `docker version` within {}s; last lines of its log:\n{}\n\
                 last docker error: {}",
                STARTUP_DEADLINE.as_secs(),
                log_tail(&dir.join("dockerd.log"), 40),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Builds a busybox rootfs (every applet a symlink in /bin, root and `app` (1000) users) and
/// `docker import`s it as `name`. With `run_link`, `/run` is a symlink to that absolute path.
fn import_image(h: &Harness, name: &str, run_link: Option<&str>) -> Result<(), String> {
    import_image_into(&h.dir, name, run_link)
}

/// [`import_image`] into the dockerd of `dir` (its socket `<dir>/docker.sock`).
pub fn import_image_into(dir: &Path, name: &str, run_link: Option<&str>) -> Result<(), String> {
    let rootfs = dir.join(format!(
        "rootfs-{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    ));
    build_rootfs(&rootfs, run_link).map_err(|e| format!("building rootfs for {name}: {e}"))?;
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let tar_out = tar.stdout.take().expect("tar stdout is piped");
    let out = docker_command(dir)
        .args(["import", "-", name])
        .stdin(Stdio::from(tar_out))
        .output()
        .map_err(|e| format!("cannot run docker import: {e}"))?;
    let tar_status = tar.wait().map_err(|e| format!("waiting for tar: {e}"))?;
    let _ = fs::remove_dir_all(&rootfs);
    if !tar_status.success() || !out.status.success() {
        return Err(format!(
            "importing {name} failed (tar: {tar_status}, docker: {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn build_rootfs(rootfs: &Path, run_link: Option<&str>) -> std::io::Result<()> {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "var", "root"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    match run_link {
        None => fs::create_dir_all(rootfs.join("run"))?,
        Some(target) => {
            let inside = target.trim_start_matches('/');
            fs::create_dir_all(rootfs.join(inside))?;
            symlink(target, rootfs.join("run"))?;
        }
    }
    let busybox = rootfs.join("bin/busybox");
    fs::copy("/bin/busybox", &busybox)?;
    fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755))?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    if !list.status.success() {
        return Err(std::io::Error::other("busybox --list failed"));
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:1000:\n")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shutdown

extern "C" fn cleanup_at_exit() {
    // Never unwind out of an exit handler.
    let _ = std::panic::catch_unwind(|| {
        let state = lock_cleanup().take();
        if let Some(state) = state {
            shut_down(state);
        }
    });
}

fn shut_down(mut state: Cleanup) {
    let dir = state.dir.clone();
    let keep = std::env::var_os("DSO_E2E_KEEP").is_some();
    eprintln!("dso e2e: stopping the private dockerd in {}", dir.display());
    if let Some(mut dockerd) = state.dockerd.take() {
        if matches!(dockerd.try_wait(), Ok(None)) {
            // Remove the containers while dockerd still answers: quicker than its shutdown.
            let ps = run_with_deadline(
                docker_command(&dir).args(["ps", "-aq"]),
                Duration::from_secs(20),
            );
            if let Some(ps) = ps {
                let ids: Vec<String> = String::from_utf8_lossy(&ps.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                if !ids.is_empty() {
                    let _ = run_with_deadline(
                        docker_command(&dir).args(["rm", "-f"]).args(&ids),
                        Duration::from_secs(30),
                    );
                }
            }
        }
        let containerd_pid = read_pid(&dir.join("exec/containerd/containerd.pid"));
        terminate_child(&mut dockerd, Duration::from_secs(30));
        // dockerd stops its managed containerd on a clean shutdown; make sure.
        if let Some(pid) = containerd_pid.filter(|&p| cmdline_mentions(p, &dir)) {
            terminate_pid(pid, Duration::from_secs(10));
        }
    }
    release_dir(&dir);
    if keep {
        eprintln!("dso e2e: DSO_E2E_KEEP is set; leaving {}", dir.display());
    } else if let Err(e) = fs::remove_dir_all(&dir) {
        eprintln!("dso e2e: cannot remove {}: {e}", dir.display());
    }
}

/// Kills what is left running from `dir` (containers, shims, daemons) and unmounts everything
/// under it. Used at exit and for dirs left behind by killed test processes.
pub fn release_dir(dir: &Path) {
    // Containers that survived their daemon: delete them through runc, under every runtime root
    // of the dockerd of `dir` and of those in its subdirectories (e2e_swarm's nodes).
    let mut exec_roots = vec![dir.join("exec")];
    if let Ok(entries) = fs::read_dir(dir) {
        exec_roots.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("exec")),
        );
    }
    for entries in exec_roots.iter().filter_map(|e| fs::read_dir(e).ok()) {
        for root in entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("moby"))
        {
            if !root.is_dir() {
                continue;
            }
            let out = Command::new("runc")
                .env("PATH", search_path())
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output();
            let Ok(out) = out else { continue };
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("runc")
                    .env("PATH", search_path())
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
    }
    // Anything still running with our dir on its command line (dockerd, containerd, shims).
    for pid in pids_mentioning(dir) {
        terminate_pid(pid, Duration::from_secs(5));
    }
    unmount_under(dir);
}

/// Removes temp dirs whose owning test process is gone (it was killed before its exit handler
/// ran). Dirs of live processes — another suite running right now — are left alone.
pub fn clean_stale_dirs() {
    let Ok(entries) = fs::read_dir(TMP_PARENT) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(TMP_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Some(owner) = read_pid(&dir.join("owner.pid")) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        eprintln!(
            "dso e2e: removing {} left by dead process {owner}",
            dir.display()
        );
        release_dir(&dir);
        let _ = fs::remove_dir_all(&dir);
    }
}

pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Alive and not a zombie (a reparented zombie is dead for our purposes).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain anything.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

fn cmdline_mentions(pid: u32, dir: &Path) -> bool {
    let needle = format!("{}/", dir.display());
    cmdline(pid).is_some_and(|c| c.contains(&needle))
}

fn pids_mentioning(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && cmdline_mentions(pid, dir) && pid_alive(pid))
        .collect()
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a positive pid signals exactly that process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; for processes that are not our children.
fn terminate_pid(pid: u32, grace: Duration) {
    if !pid_alive(pid) {
        return;
    }
    signal(pid, libc::SIGTERM);
    let started = Instant::now();
    while pid_alive(pid) && started.elapsed() < grace {
        thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid) {
        signal(pid, libc::SIGKILL);
        while pid_alive(pid) && started.elapsed() < grace + Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGTERM our child, wait up to `grace`, then SIGKILL; always reaps it.
pub fn terminate_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let started = Instant::now();
    while started.elapsed() < grace {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("dso e2e: dockerd ignored SIGTERM for {grace:?}; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` (stdout captured), killing it after `deadline`; None if it could not finish.
pub fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if started.elapsed() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Lazily unmounts every mount point at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    for _ in 0..3 {
        let mut points = mount_points_under(dir);
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for point in points {
            let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: `c` is a valid NUL-terminated path; MNT_DETACH has no other requirements.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// Helpers of the provider suites (e2e_aws, e2e_providers): outputs, and the fail-closed check.

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn field<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{key}=` line in:\n{text}"))
}

pub fn container_id(h: &Harness, name: &str) -> Option<String> {
    let out = h.docker(&["inspect", "--format", "{{.Id}}", name]);
    out.status
        .success()
        .then(|| stdout(&out).trim().to_string())
        .filter(|id| !id.is_empty())
}

/// The runc root dockerd gives the dso runtime (from a container started through it).
pub fn dso_runc_root(h: &Harness) -> std::path::PathBuf {
    let c = ContainerGuard::new(h, "dso-e2e-root-probe");
    let out = h.docker(&[
        "run",
        "-d",
        "--name",
        &c.name,
        "--runtime",
        "dso",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "probe container: {}", stderr(&out));
    let id = stdout(&out);
    h.runc_root_of(id.trim())
        .or_else(|| h.runc_root("dso"))
        .unwrap_or_else(|| panic!("no runc root for runtime dso under {:?}", h.exec_root()))
}

/// The run failed, said `expect` (all of it), printed nothing of the command, and left no runc
/// container and no dso state behind.
pub fn assert_failed_closed(h: &Harness, root: &Path, name: &str, out: &Output, expect: &[&str]) {
    assert!(
        !out.status.success(),
        "docker run succeeded: {}",
        stdout(out)
    );
    assert!(!stdout(out).contains("must not run"));
    let err = stderr(out);
    eprintln!("docker run said: {err}");
    for e in expect {
        assert!(err.contains(e), "the error does not say {e:?}: {err}");
    }
    let id = container_id(h, name);
    let listed = h.runc_list(root);
    match &id {
        Some(id) => assert!(
            !listed.iter().any(|l| l == id),
            "runc still has container {id}: {listed:?}"
        ),
        None => assert!(listed.is_empty(), "runc has containers left: {listed:?}"),
    }
    if let Some(id) = &id {
        let state: Vec<String> = fs::read_dir(h.state_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !state.iter().any(|n| n.contains(id.as_str())),
            "dso kept state for the failed container: {state:?}"
        );
    }
}

// containerd, shared by e2e_engines (ctr) and e2e_cri (the CRI).

/// A private containerd (and the shims it started), stopped and its mounts undone on drop.
pub struct ContainerdGuard {
    pub child: Child,
    pub dir: PathBuf,
}

impl Drop for ContainerdGuard {
    fn drop(&mut self) {
        // Shims outlive containerd: stop whatever mentions our dir, then containerd.
        let me = std::process::id();
        let needle = format!("{}/", self.dir.display());
        if let Ok(entries) = fs::read_dir("/proc") {
            for pid in entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| p as u32 != me && p as u32 != self.child.id())
            {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(&needle)
                {
                    // SAFETY: kill(2) on a pid we found running our dir's command line.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_under(&self.dir);
    }
}

/// A minimal busybox root: the static busybox, a few applet links, passwd/group.
pub fn build_busybox_rootfs(rootfs: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    fs::set_permissions(
        rootfs.join("bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for applet in ["sh", "cat", "echo", "ls", "stat", "id"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        // /bin/sh is dash on Debian, dynamically linked; the test binary itself is too.
        assert!(!is_static_elf(Path::new("/bin/sh")));
        assert!(!is_static_elf(&std::env::current_exe().unwrap()));
        assert!(!is_static_elf(Path::new("/etc/passwd")));
        assert!(!is_static_elf(Path::new("/nonexistent")));
        if Path::new("/bin/busybox").exists() {
            assert!(is_static_elf(Path::new("/bin/busybox")));
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo(r"/tmp/a\040b\011c\134d"),
            "/tmp/a b\tc\\d"
        );
        assert_eq!(unescape_mountinfo(r"/plain\0"), r"/plain\0");
        assert_eq!(unescape_mountinfo(r"\134"), "\\");
    }
}

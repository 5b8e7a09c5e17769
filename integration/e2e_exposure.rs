//! Exposure scans (issue 7): with unique random values, a full scenario through a real dockerd
//! — create with a file and an env secret, rotation by the agent, `docker restart`, `docker
//! stop` — and then a search for every value, old and new, everywhere on the host it must not
//! be: every file on the host's filesystem (all of it but /proc and /sys), `docker inspect`,
//! dockerd's log (which carries containerd's), dso's audit and agent logs, the environment and
//! argv of every host process; and a core dump (`gcore`) of the agent taken after the rotation
//! must hold neither old value, in the clear, in base64 (how the agent's socket carries values)
//! or in hex. Needs root, dockerd, runc, busybox-static and gdb's gcore
//! (skipped elsewhere, a failure under `CI=true`).

use dso_testkit::harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Harness, IMAGE};

/// The values searched for, by label (`file v1`, ...); the labels go into messages, never the
/// values.
struct Needles(Vec<(&'static str, String)>);

impl Needles {
    /// Labels of the values found in `haystack`.
    fn found_in(&self, haystack: &[u8]) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|(_, v)| haystack.windows(v.len()).any(|w| w == v.as_bytes()))
            .map(|(l, _)| *l)
            .collect()
    }
}

/// Regular files anywhere on the host (but /proc and /sys) whose inode changed after `marker`
/// was written, i.e. every file that could hold a value generated after it: a ctime cannot be
/// set back from user space, so a file that received a value after the marker has a newer one.
fn files_changed_since(marker: &Path) -> Vec<PathBuf> {
    let out = Command::new("find")
        .args([
            "/", "(", "-path", "/proc", "-o", "-path", "/sys", ")", "-prune", "-o",
        ])
        .args(["-type", "f", "-cnewer"])
        .arg(marker)
        .arg("-print0")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("running find");
    // find exits 1 when some directory vanished or could not be read while it walked; what it
    // listed is still right.
    out.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .collect()
}

/// The files among `files` that contain any of the needles. grep reads the values from its
/// stdin (never from argv or a file on the host); devices, FIFOs and sockets are skipped.
fn files_containing(files: &[PathBuf], needles: &Needles) -> Vec<String> {
    let patterns: String = needles.0.iter().map(|(_, v)| format!("{v}\n")).collect();
    let mut found = Vec::new();
    for batch in files.chunks(2000) {
        let mut child = Command::new("grep")
            .args(["-lsF", "--devices=skip", "-f", "-", "--"])
            .args(batch)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running grep");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(patterns.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "grep failed: {}",
            out.status
        );
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from),
        );
    }
    found
}

/// Host processes (those in this test's pid namespace: a container's own processes are not
/// the host's, and an env secret is in its init's environment by design) whose environment or
/// argv holds a value: `(pid, comm, labels)`.
fn host_processes_holding(needles: &Needles) -> (usize, Vec<String>) {
    let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let mut seen = 0;
    let mut bad = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let base = entry.path();
        // Gone already, or a kernel thread: nothing to read.
        let Ok(ns) = std::fs::read_link(base.join("ns/pid")) else {
            continue;
        };
        if ns != ours {
            continue;
        }
        seen += 1;
        for what in ["environ", "cmdline"] {
            let Ok(bytes) = std::fs::read(base.join(what)) else {
                continue;
            };
            let hits = needles.found_in(&bytes);
            if !hits.is_empty() {
                let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
                bad.push(format!("pid {pid} ({}) {what}: {hits:?}", comm.trim()));
            }
        }
    }
    (seen, bad)
}

fn exec(h: &Harness, name: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", name];
    args.extend_from_slice(cmd);
    harness::stdout(&h.docker(&args))
}

fn wait_until(h: &Harness, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < timeout,
            "{what}: not within {timeout:?}\n--- agent log ---\n{}",
            std::fs::read_to_string(h.dir().join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn no_value_anywhere_on_the_host_after_create_rotate_restart_and_stop() {
    if !harness::require_tool("gcore") {
        return;
    }
    let Some((h, _serial)) = harness::begin() else {
        return;
    };
    h.write_dso_yaml_with_secrets(
        "  exp_file: { rotation: { interval: 1s } }\n  exp_env: { rotation: { interval: 1s } }\n",
    );

    // Only files whose inode changes from here on can hold a value.
    let marker = h.dir().join("scan-marker");
    std::fs::write(&marker, b"").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let needles = Needles(vec![
        ("file v1", harness::random_token("exp-file-1-")),
        ("file v2", harness::random_token("exp-file-2-")),
        ("env v1", harness::random_token("exp-env-1-")),
        ("env v2", harness::random_token("exp-env-2-")),
    ]);
    let v = |i: usize| needles.0[i].1.clone();
    let (file1, file2, env1, env2) = (v(0), v(1), v(2), v(3));

    h.set_secret("exp_file", file1.as_bytes());
    h.set_secret("exp_env", env1.as_bytes());
    let agent = h.start_agent();
    let _guard = harness::ContainerGuard::new(h, "exposure");

    // Create: both values reach the container.
    let out = h.docker(&[
        "run",
        "-d",
        "--name",
        "exposure",
        "--runtime",
        "dso",
        "--network",
        "none",
        "-e",
        "EXP_ENV=dso://exp_env",
        "-e",
        "EXP_FILE=dsofile://exp_file",
        IMAGE,
        "sh",
        "-c",
        "while :; do sleep 1; done",
    ]);
    assert!(
        out.status.success(),
        "docker run: {}",
        harness::stderr(&out)
    );
    assert_eq!(
        exec(h, "exposure", &["cat", "/run/secrets/exp_file"]),
        file1
    );
    assert!(exec(h, "exposure", &["cat", "/proc/1/environ"]).contains(&env1));
    // The create was served by the agent (its fast path): the agent held both first values.
    let audit = std::fs::read_to_string(h.audit_path()).unwrap();
    for name in ["exp_env", "exp_file"] {
        assert!(
            audit.lines().any(|l| l.contains("\"secret_fetched\"")
                && l.contains(&format!("\"{name}\""))
                && l.contains("\"via\":\"agent\"")),
            "{name} was not fetched through the agent:\n{audit}"
        );
    }

    // Rotate: the agent rewrites the file within its 1 s interval.
    h.set_secret("exp_file", file2.as_bytes());
    h.set_secret("exp_env", env2.as_bytes());
    wait_until(h, "rotation of exp_file", Duration::from_secs(10), || {
        exec(h, "exposure", &["cat", "/run/secrets/exp_file"]) == file2
    });
    // Let the agent's env secret cycle pass too (it records the version; the value waits for
    // a restart).
    std::thread::sleep(Duration::from_millis(1500));

    // A core dump of the agent after the rotation holds no old value. (It may hold the
    // current ones: the agent caches the decrypted store to serve creates.) The core is read
    // and deleted at once; it is written under the harness dir, outside the scan's reach
    // because it is gone before the scan.
    let cores = h.dir().join("cores");
    std::fs::create_dir_all(&cores).unwrap();
    let prefix = cores.join("agent");
    let out = Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(agent.0.id().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let core_path = prefix.with_extension(agent.0.id().to_string());
    let core = std::fs::read(&core_path).unwrap_or_default();
    std::fs::remove_dir_all(&cores).unwrap();
    assert!(
        out.status.success() && core.len() > 1 << 20,
        "gcore failed ({}): {}",
        out.status,
        harness::stderr(&out)
    );
    // The values as the agent carried them too: base64 (its socket answers) and hex.
    let encoded = Needles(
        needles
            .0
            .iter()
            .flat_map(|(label, v)| {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(v.as_bytes());
                let hex: String = v.bytes().map(|b| format!("{b:02x}")).collect();
                // Without the padding, which depends only on the length.
                let b64 = b64.trim_end_matches('=').to_string();
                [(*label, b64), (*label, hex)]
            })
            .collect(),
    );
    let mut in_core = needles.found_in(&core);
    let encoded_in_core = encoded.found_in(&core);
    eprintln!("agent core after rotation holds, encoded: {encoded_in_core:?}");
    in_core.extend(encoded_in_core);
    drop(core);
    eprintln!("agent core after rotation holds: {in_core:?}");
    assert!(
        !in_core.contains(&"file v1") && !in_core.contains(&"env v1"),
        "the agent's memory still holds an old value after rotation: {in_core:?}"
    );

    // While the container runs: no host process holds a value in its environment or argv.
    let (seen, bad) = host_processes_holding(&needles);
    assert!(seen > 10, "only {seen} host processes seen");
    assert!(bad.is_empty(), "values in host processes: {bad:#?}");

    // Restart: the new env value arrives, the file keeps the rotated one.
    let out = h.docker(&["restart", "-t", "1", "exposure"]);
    assert!(
        out.status.success(),
        "docker restart: {}",
        harness::stderr(&out)
    );
    assert!(exec(h, "exposure", &["cat", "/proc/1/environ"]).contains(&env2));
    assert_eq!(
        exec(h, "exposure", &["cat", "/run/secrets/exp_file"]),
        file2
    );
    let (_, bad) = host_processes_holding(&needles);
    assert!(
        bad.is_empty(),
        "values in host processes after restart: {bad:#?}"
    );

    // Stop, then look everywhere.
    let out = h.docker(&["stop", "-t", "1", "exposure"]);
    assert!(
        out.status.success(),
        "docker stop: {}",
        harness::stderr(&out)
    );
    let inspect = h.docker(&["inspect", "exposure"]);
    assert!(inspect.status.success());
    assert_eq!(
        needles.found_in(&inspect.stdout),
        Vec::<&str>::new(),
        "docker inspect"
    );
    for log in [h.dockerd_log(), h.audit_path(), h.dir().join("agent.log")] {
        let text = std::fs::read(&log).unwrap_or_default();
        assert!(!text.is_empty(), "{} is empty", log.display());
        assert_eq!(
            needles.found_in(&text),
            Vec::<&str>::new(),
            "{}",
            log.display()
        );
    }
    let (_, bad) = host_processes_holding(&needles);
    assert!(
        bad.is_empty(),
        "values in host processes after stop: {bad:#?}"
    );

    let t0 = Instant::now();
    let changed = files_changed_since(&marker);
    let found = files_containing(&changed, &needles);
    eprintln!(
        "whole-filesystem scan: {} files changed since the scenario began, searched in {:?}",
        changed.len(),
        t0.elapsed()
    );
    // The scan must have seen what the scenario wrote: the store, the audit log, dockerd's
    // state of the container.
    for must in [h.store_path(), h.audit_path()] {
        assert!(
            changed.contains(&must),
            "{} not among the changed files",
            must.display()
        );
    }
    assert!(found.is_empty(), "values found in host files: {found:#?}");
    // And the places a value would most likely be left, whatever their ctime.
    for (label, value) in &needles.0 {
        let found = harness::host_files_containing(value);
        assert!(found.is_empty(), "{label} found in {found:?}");
    }
    drop(agent);
}

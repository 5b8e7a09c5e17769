//! dso with the engines people run, for real: `dso install`/`uninstall` and `dso doctor` against
//! the private dockerd of [`harness`] (its own daemon.json, pid file and socket, never the
//! host's /etc/docker), Debian's docker-compose with `runtime: dso`, podman with
//! `--runtime dso-runc` (private storage), and containerd's `ctr run --runc-binary dso-runc`
//! against a containerd started here. Needs root and the engines (skipped elsewhere, a failure
//! under `CI=true`).

use dso_testkit::harness;

use std::fs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use harness::{
    ContainerdGuard, Harness, IMAGE, build_busybox_rootfs, dso_exe, dso_runc_exe, unmount_under,
};
use serde_json::Value;

fn begin() -> Option<(&'static Harness, MutexGuard<'static, ()>)> {
    if !harness::require_root() {
        return None;
    }
    let h = Harness::get();
    let serial = h.serial();
    Some((h, serial))
}

/// True when `tool` is installed; under `CI=true` a missing tool fails the test.
fn require_tool(tool: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .env("PATH", path_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return true;
    }
    let why = format!("`{tool}` is not installed (run scripts/install-deps.sh as root)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("\n\n*** CI=true and an engine test cannot run: {why} ***\n\n");
    }
    dso::test_support::skipped(&why);
    false
}

/// PATH with the sbin directories (runc, containerd live there on Debian).
fn path_env() -> String {
    let base = std::env::var("PATH").unwrap_or_default();
    format!("{base}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{key}=` line in:\n{out}"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The flags that aim install/uninstall/doctor at the harness's dockerd.
fn dockerd_flags(h: &Harness) -> Vec<String> {
    vec![
        "--daemon-json".into(),
        h.dir().join("daemon.json").display().to_string(),
        "--dockerd-pidfile".into(),
        h.dir().join("dockerd.pid").display().to_string(),
        "--docker-host".into(),
        format!("unix://{}", h.socket().display()),
    ]
}

/// The flags that aim doctor at the harness's dockerd.
fn doctor_flags(h: &Harness) -> Vec<String> {
    vec![
        "--daemon-json".into(),
        h.dir().join("daemon.json").display().to_string(),
        "--docker-host".into(),
        format!("unix://{}", h.socket().display()),
    ]
}

fn dso_with(h: &Harness, args: &[&str], extra: &[String]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    h.dso(&all, None)
}

fn registered_runtimes(h: &Harness) -> Value {
    let out = h.docker_ok(&["info", "--format", "{{json .Runtimes}}"]);
    serde_json::from_str(out.trim()).expect("docker info prints JSON")
}

fn backups_in(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".dso-backup"))
                .count()
        })
        .unwrap_or(0)
}

/// A temp dir under /tmp (unix socket paths must stay short).
fn short_tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("creating a temp dir in /tmp")
}

// ---------------------------------------------------------------------------------------------
// dso install / uninstall / doctor

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn install_registers_the_runtime_with_the_running_dockerd_and_uninstall_removes_it() {
    let Some((h, _serial)) = begin() else { return };
    let token = harness::random_token("install-");
    h.set_secret("db_password", token.as_bytes());
    let daemon_json = h.dir().join("daemon.json");
    let before: Value = serde_json::from_slice(&fs::read(&daemon_json).unwrap()).unwrap();
    let backups_before = backups_in(h.dir());
    let flags = dockerd_flags(h);
    let install_args = [
        "install",
        "--name",
        "dso-installed",
        "--runtime-path",
        dso_runc_exe(),
    ];

    let out = dso_with(h, &install_args, &flags);
    let said = ok("dso install", &out);
    assert!(said.contains("reloaded"), "{said}");
    let runtimes = registered_runtimes(h);
    assert_eq!(
        runtimes["dso-installed"]["path"],
        dso_runc_exe(),
        "dockerd did not load the runtime: {runtimes}"
    );
    // Every other key survived, and the file kept its mode.
    let after: Value = serde_json::from_slice(&fs::read(&daemon_json).unwrap()).unwrap();
    for (k, v) in before.as_object().unwrap() {
        if k != "runtimes" {
            assert_eq!(&after[k], v, "key {k} changed");
        }
    }
    assert_eq!(after["runtimes"]["dso"], before["runtimes"]["dso"]);
    assert_eq!(
        after["runtimes"]["dso-installed"]["runtimeArgs"][0],
        format!("--dso-config={}", h.config_path().display())
    );
    assert_eq!(backups_in(h.dir()), backups_before + 1);

    // A container through the freshly registered runtime gets its secret.
    let run = h.docker(&[
        "run",
        "--rm",
        "--runtime",
        "dso-installed",
        "--network",
        "none",
        "-e",
        "DB_PASSWORD_FILE=dsofile://db_password",
        IMAGE,
        "sh",
        "-c",
        "echo value=$(cat $DB_PASSWORD_FILE)",
    ]);
    assert_eq!(
        field(&ok("docker run --runtime dso-installed", &run), "value"),
        token
    );

    // Idempotent: nothing rewritten, no new backup, no reload needed.
    let again = ok("second dso install", &dso_with(h, &install_args, &flags));
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(backups_in(h.dir()), backups_before + 1);

    let out = dso_with(h, &["uninstall", "--name", "dso-installed"], &flags);
    let said = ok("dso uninstall", &out);
    assert!(said.contains("is gone"), "{said}");
    assert!(
        registered_runtimes(h).get("dso-installed").is_none(),
        "runtime still registered after uninstall"
    );
    let restored: Value = serde_json::from_slice(&fs::read(&daemon_json).unwrap()).unwrap();
    assert_eq!(restored, before, "uninstall left daemon.json different");
    let again = ok(
        "second dso uninstall",
        &dso_with(h, &["uninstall", "--name", "dso-installed"], &flags),
    );
    assert!(again.contains("nothing to change"), "{again}");
}

#[test]
fn install_refuses_a_daemon_json_that_does_not_parse_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("daemon.json");
    let broken = "{\n  \"log-driver\": \"journald\",\n  \"runtimes\": {\n}\n";
    fs::write(&path, broken).unwrap();
    let out = Command::new(dso_exe())
        .args(["install", "--no-reload", "--runtime-path", dso_runc_exe()])
        .arg("--daemon-json")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("dso: ") && err.contains("does not parse") && err.contains("line 5"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), broken);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no backup or temp file"
    );
    // A runtime path that is not there is refused before anything is written.
    let out = Command::new(dso_exe())
        .args([
            "install",
            "--no-reload",
            "--runtime-path",
            "/nonexistent/dso-runc",
        ])
        .arg("--daemon-json")
        .arg(dir.path().join("new.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--runtime-path"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("new.json").exists());
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn doctor_passes_on_a_healthy_host_and_fails_on_a_broken_config() {
    let Some((h, _serial)) = begin() else { return };
    h.set_secret("db_password", b"doctor-check");
    h.set_secret("api_key", b"doctor-check");
    let flags = doctor_flags(h);

    let out = dso_with(h, &["doctor", "--json"], &flags);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json ({}): {e}: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let status = |name: &str| -> (String, String) {
        let c = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {report:#}"));
        (
            c["status"].as_str().unwrap().to_string(),
            c["detail"].as_str().unwrap().to_string(),
        )
    };
    for name in [
        "runc",
        "binaries",
        "dockerd",
        "runtime",
        "config",
        "permissions",
        "provider:local",
    ] {
        assert_eq!(status(name).0, "ok", "{name}: {report:#}");
    }
    assert!(status("runtime").1.contains(dso_runc_exe()));
    // No agent configured: a warning, not a failure.
    assert_eq!(status("agent").0, "warn");

    // The table form.
    let out = dso_with(h, &["doctor"], &flags);
    let table = ok("dso doctor", &out);
    assert!(table.starts_with("CHECK"), "{table}");
    assert!(table.contains("provider:local"), "{table}");

    // A broken config and an unregistered runtime: exit 1, each check says what to do.
    let bad = h.dir().join("bad-dso.yaml");
    fs::write(&bad, "providers: {}\nsecretz: {}\n").unwrap();
    let mut args: Vec<String> = vec![
        "--config".into(),
        path_str(&bad).into(),
        "doctor".into(),
        "--json".into(),
        "--name".into(),
        "not-registered".into(),
    ];
    args.extend(flags.iter().cloned());
    let out = Command::new(dso_exe()).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let checks = report["checks"].as_array().unwrap();
    let find = |n: &str| checks.iter().find(|c| c["check"] == n).unwrap().clone();
    assert_eq!(find("config")["status"], "fail");
    assert!(
        find("config")["detail"]
            .as_str()
            .unwrap()
            .contains("secretz")
    );
    assert_eq!(find("runtime")["status"], "fail");
    assert!(
        find("runtime")["detail"]
            .as_str()
            .unwrap()
            .contains("dso install")
    );
}

// ---------------------------------------------------------------------------------------------
// docker-compose

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn compose_service_with_runtime_dso_receives_its_secrets() {
    let Some((h, _serial)) = begin() else { return };
    if !require_tool("docker-compose") {
        return;
    }
    let file_value = harness::random_token("compose-file-");
    let env_value = harness::random_token("compose-env-");
    h.set_secret("db_password", file_value.as_bytes());
    h.set_secret("api_key", env_value.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let compose = dir.path().join("docker-compose.yml");
    // The harness's dockerd has no bridge: the service needs no network.
    fs::write(
        &compose,
        format!(
            r#"services:
  app:
    image: {IMAGE}
    runtime: dso
    network_mode: none
    environment:
      API_KEY: dso://api_key
      DB_PASSWORD_FILE: dsofile://db_password
    command: ["sh", "-c", "echo env=$$API_KEY; echo path=$$DB_PASSWORD_FILE; echo file=$$(cat $$DB_PASSWORD_FILE)"]
"#
        ),
    )
    .unwrap();
    let compose_cmd = |args: &[&str]| -> Output {
        Command::new("docker-compose")
            .env("PATH", path_env())
            .env("DOCKER_HOST", format!("unix://{}", h.socket().display()))
            .env("DOCKER_CONFIG", h.dir().join("docker-cli"))
            .env_remove("DOCKER_CONTEXT")
            .arg("-f")
            .arg(&compose)
            .args(["-p", "dsoe2ecompose"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker-compose")
    };
    let out = compose_cmd(&["run", "--rm", "-T", "app"]);
    let _ = compose_cmd(&["down", "--remove-orphans"]);
    let printed = ok("docker-compose run", &out);
    assert_eq!(field(&printed, "env"), env_value);
    assert_eq!(field(&printed, "path"), "/run/secrets/db_password");
    assert_eq!(field(&printed, "file"), file_value);
}

#[test]
fn compose_example_is_a_valid_compose_file() {
    if !require_tool("docker-compose") {
        return;
    }
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/runtime-config/compose/docker-compose.yml"
    );
    let out = Command::new("docker-compose")
        .env("PATH", path_env())
        .args(["-f", example, "config"])
        .output()
        .expect("running docker-compose config");
    let resolved = ok("docker-compose config", &out);
    assert!(resolved.contains("runtime: dso"), "{resolved}");
    assert!(resolved.contains("dsofile://db_password"), "{resolved}");
}

// ---------------------------------------------------------------------------------------------
// podman

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn podman_with_dso_runc_as_runtime_injects_env_file_and_annotation_references() {
    let Some((h, _serial)) = begin() else { return };
    if !require_tool("podman") {
        return;
    }
    let file_value = harness::random_token("podman-file-");
    let env_value = harness::random_token("podman-env-");
    h.set_secret("db_password", file_value.as_bytes());
    h.set_secret("api_key", env_value.as_bytes());
    let dir = short_tempdir("dsopod-");
    let d = dir.path();
    let podman = |args: &[&str]| -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("PATH", path_env())
            .args(["--root", path_str(&d.join("storage"))])
            .args(["--runroot", path_str(&d.join("run"))])
            .args(["--tmpdir", path_str(&d.join("tmp"))])
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    };
    let _cleanup = PodmanCleanup {
        dir: d.to_path_buf(),
    };

    // The harness's busybox image, exported from dockerd and imported into podman's store.
    let export = d.join("busybox.tar");
    let id = h.docker_ok(&["create", IMAGE, "true"]);
    let id = id.trim();
    h.docker_ok(&["export", "-o", path_str(&export), id]);
    h.docker_ok(&["rm", id]);
    let out = podman(&["import", path_str(&export), "dso-e2e-busybox"])
        .output()
        .unwrap();
    ok("podman import", &out);

    let dso_config_flag = format!("dso-config={}", h.config_path().display());
    let out = podman(&[
        "--runtime",
        dso_runc_exe(),
        "--runtime-flag",
        &dso_config_flag,
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "-e",
        "API_KEY=dso://api_key",
        "-e",
        "DB_PASSWORD_FILE=dsofile://db_password",
        "--annotation",
        "dso.secrets/TOKEN_FILE=dsofile://api_key",
        "localhost/dso-e2e-busybox",
        "sh",
        "-c",
        "echo env=$API_KEY; echo file=$(cat $DB_PASSWORD_FILE); echo token=$(cat $TOKEN_FILE); \
         echo mode=$(stat -c %a $DB_PASSWORD_FILE)",
    ])
    .output()
    .unwrap();
    let printed = ok("podman run --runtime dso-runc", &out);
    assert_eq!(field(&printed, "env"), env_value);
    assert_eq!(field(&printed, "file"), file_value);
    assert_eq!(field(&printed, "token"), env_value);
    assert_eq!(field(&printed, "mode"), "400");
    // Podman keeps no plaintext: not in its storage, not in its run dir.
    for value in [&file_value, &env_value] {
        let grep = Command::new("grep")
            .args(["-rlF", "--devices=skip", "-s", "--", value])
            .arg(d)
            .output()
            .unwrap();
        assert!(
            grep.stdout.is_empty(),
            "secret value found in podman's dirs: {}",
            text(&grep.stdout)
        );
    }
}

/// Removes podman's leftovers (storage mounts) from the test's dir.
struct PodmanCleanup {
    dir: PathBuf,
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .env("PATH", path_env())
            .args(["--root", path_str(&self.dir.join("storage"))])
            .args(["--runroot", path_str(&self.dir.join("run"))])
            .args(["--storage-driver", "vfs"])
            .args(["rm", "-af"])
            .output();
        unmount_under(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// containerd

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn containerd_ctr_run_with_dso_runc_as_runc_binary() {
    let Some((h, _serial)) = begin() else { return };
    if !require_tool("ctr") {
        return;
    }
    let file_value = harness::random_token("ctr-file-");
    let env_value = harness::random_token("ctr-env-");
    h.set_secret("db_password", file_value.as_bytes());
    h.set_secret("api_key", env_value.as_bytes());
    let dir = short_tempdir("dsoctr-");
    let d = dir.path();
    let socket = d.join("c.sock");
    fs::write(
        d.join("config.toml"),
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}\"\n",
            d.join("root").display(),
            d.join("state").display(),
            socket.display(),
            d.join("t.sock").display(),
        ),
    )
    .unwrap();
    // containerd's runc shim takes no runtime arguments: dso-runc finds its config through
    // DSO_CONFIG, which the shim (and so dso-runc) inherits from containerd.
    let log = fs::File::create(d.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .env("PATH", path_env())
        .env("DSO_CONFIG", h.config_path())
        .arg("--config")
        .arg(d.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting containerd");
    let _containerd = ContainerdGuard {
        child,
        dir: d.to_path_buf(),
    };
    let ctr = |args: &[&str]| -> Output {
        Command::new("ctr")
            .env("PATH", path_env())
            .args(["--address", path_str(&socket), "--namespace", "dso-e2e"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    };
    let started = Instant::now();
    while !ctr(&["version"]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "private containerd did not answer; log:\n{}",
            fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let rootfs = d.join("rootfs");
    build_busybox_rootfs(&rootfs);
    let out = ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        dso_runc_exe(),
        "--env",
        "API_KEY=dso://api_key",
        "--env",
        "DB_PASSWORD_FILE=dsofile://db_password",
        "--rootfs",
        path_str(&rootfs),
        "dso-e2e-ctr",
        "sh",
        "-c",
        "echo env=$API_KEY; echo file=$(cat $DB_PASSWORD_FILE); echo path=$DB_PASSWORD_FILE",
    ]);
    let printed = ok("ctr run --runc-binary dso-runc", &out);
    assert_eq!(field(&printed, "env"), env_value);
    assert_eq!(field(&printed, "file"), file_value);
    assert_eq!(field(&printed, "path"), "/run/secrets/db_password");
    // Nothing written into the rootfs on the host: the secrets were on the container's tmpfs.
    let grep = Command::new("grep")
        .args(["-rlF", "--devices=skip", "-s", "--", &file_value])
        .arg(d)
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "{}", text(&grep.stdout));
}

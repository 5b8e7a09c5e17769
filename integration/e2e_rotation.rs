//! Rotation through a real dockerd: `dso rotate` rewrites the file of a running `docker run
//! --runtime dso` container in place, and the `restart` strategy brings an env-injected
//! container back (Docker Engine API over the private daemon's socket) with the new value.
//! Needs root, dockerd, runc and busybox-static (skipped elsewhere, a failure under `CI=true`).

mod harness;

use std::process::Output;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use harness::{ContainerGuard, Harness, IMAGE};

fn begin() -> Option<(&'static Harness, MutexGuard<'static, ()>)> {
    if !harness::require_root() {
        return None;
    }
    let h = Harness::get();
    let serial = h.serial();
    h.init_store();
    let mut yaml = h.default_dso_yaml();
    yaml = yaml.replace(
        "  api_key: {}\n",
        "  api_key: {}\n  rot_file: {}\n  rot_env: { rotation: { strategy: restart } }\n",
    );
    h.write_dso_yaml(&yaml);
    Some((h, serial))
}

fn ok(h: &Harness, what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}\n--- dockerd log (tail) ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        h.dockerd_log_tail(30)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_detached(h: &Harness, name: &str, env: &str, cmd: &[&str]) {
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--runtime",
        "dso",
        "--network",
        "none",
        "-e",
        env,
        IMAGE,
    ];
    args.extend_from_slice(cmd);
    let out = h.docker(&args);
    ok(h, "docker run -d", &out);
}

#[test]
fn rotate_rewrites_a_running_containers_file() {
    let Some((h, _serial)) = begin() else { return };
    let v1 = harness::random_token("rot-file-1-");
    let v2 = harness::random_token("rot-file-2-");
    h.set_secret("rot_file", v1.as_bytes());
    let c = ContainerGuard::new(h, "dso-e2e-rotate-file");
    run_detached(h, &c.name, "F_FILE=dsofile://rot_file", &["sleep", "600"]);
    let read = || h.docker_ok(&["exec", &c.name, "cat", "/run/secrets/rot_file"]);
    assert_eq!(read(), v1);
    h.set_secret("rot_file", v2.as_bytes());
    let out = h.dso(&["rotate", "rot_file"], None);
    let text = ok(h, "dso rotate", &out);
    assert!(text.contains("rot_file: rotated"), "{text}");
    assert_eq!(read(), v2);
    let perms = h.docker_ok(&["exec", &c.name, "stat", "-c", "%a", "/run/secrets/rot_file"]);
    assert_eq!(perms.trim(), "400");
    let status = ok(h, "dso status", &h.dso(&["status", "--json"], None));
    assert!(
        status.contains("\"rot_file\"") && !status.contains(&v2),
        "{status}"
    );
}

#[test]
fn restart_strategy_brings_the_new_env_value() {
    let Some((h, _serial)) = begin() else { return };
    let v1 = harness::random_token("rot-env-1-");
    let v2 = harness::random_token("rot-env-2-");
    h.set_secret("rot_env", v1.as_bytes());
    let c = ContainerGuard::new(h, "dso-e2e-rotate-restart");
    run_detached(
        h,
        &c.name,
        "TOKEN=dso://rot_env",
        &["sh", "-c", "echo \"token=$TOKEN\"; sleep 600"],
    );
    let logs = || {
        let out = h.docker(&["logs", &c.name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let t0 = Instant::now();
    while !logs().contains(&format!("token={v1}")) {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    h.set_secret("rot_env", v2.as_bytes());
    let socket = h.socket();
    let out = h.dso(
        &[
            "rotate",
            "rot_env",
            "--docker-socket",
            socket.to_str().unwrap(),
        ],
        None,
    );
    ok(h, "dso rotate (restart)", &out);
    let t0 = Instant::now();
    while !logs().contains(&format!("token={v2}")) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "new value not seen after restart: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let audit = std::fs::read_to_string(h.audit_path()).unwrap();
    assert!(audit.contains("\"event\":\"rotation_completed\""));
    assert!(!audit.contains(&v2));
}

//! Rotation through a real dockerd: `dso rotate` rewrites the file of a running `docker run
//! --runtime dso` container in place, and the `restart` strategy brings an env-injected
//! container back (Docker Engine API over the private daemon's socket) with the new value.
//! Needs root, dockerd, runc and busybox-static (skipped elsewhere, a failure under `CI=true`).

use dso_testkit::harness;

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
        "  api_key: {}\n  rot_file: {}\n  rot_env: { rotation: { strategy: restart } }\n  \
         rot_sig: { rotation: { strategy: signal, signal: SIGUSR1, interval: 1s } }\n",
    );
    let key = h.dir().join("webhook.key");
    std::fs::write(&key, WEBHOOK_KEY).unwrap();
    // The agent takes a key of at least 32 bytes that only its owner can read.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    yaml.push_str(&format!(
        "agent: {{ webhook: {{ listen: \"127.0.0.1:{}\", secret_file: {} }} }}\n",
        webhook_port(),
        key.display()
    ));
    h.write_dso_yaml(&yaml);
    Some((h, serial))
}

const WEBHOOK_KEY: &str = "e2e-webhook-key-5d1e-0123456789abcdef";

/// The webhook's port for this test process.
fn webhook_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// POSTs a signed webhook naming `secret`; returns the HTTP status.
fn post_webhook(secret: &str) -> u16 {
    use hmac::Mac;
    use std::io::{Read, Write};
    let body = format!(r#"{{"secrets":["{secret}"]}}"#);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_KEY.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", webhook_port())).unwrap();
    write!(
        c,
        "POST /v1/webhook HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-DSO-Timestamp: {ts}\r\nX-DSO-Signature: sha256={sig}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
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
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
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
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
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
    // It says what it is waiting for (Docker stops the container first).
    let id = h.docker_ok(&["inspect", "--format", "{{.Id}}", &c.name]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "dso: {}: rot_env: restarting the container through the Docker API at {}; Docker waits up to 10s for it to stop\n",
            &id.trim()[..12],
            socket.display()
        )),
        "{said}"
    );
    // dso status names the container as its engine does (docker:NAME), beside its short id.
    let status = h.dso(&["status"], None);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.lines().any(|l| l.starts_with(&format!(
            "{:<12} {:<24} ",
            &id.trim()[..12],
            format!("docker:{}", c.name)
        ))),
        "{table}"
    );
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

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn agent_rotates_a_docker_container_within_the_interval_and_signals_it() {
    let Some((h, _serial)) = begin() else { return };
    let v1 = harness::random_token("rot-sig-1-");
    let v2 = harness::random_token("rot-sig-2-");
    h.set_secret("rot_sig", v1.as_bytes());
    let c = ContainerGuard::new(h, "dso-e2e-agent-signal");
    // The trap reports the signal and a hash of what the file holds then (never the value:
    // container output lands in dockerd's log on the host).
    run_detached(
        h,
        &c.name,
        "S_FILE=dsofile://rot_sig",
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1 $(sha256sum < $S_FILE | cut -c1-16)' USR1; echo ready; \
             while :; do sleep 1 & wait $!; done",
        ],
    );
    let logs = || {
        let out = h.docker(&["logs", &c.name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let t0 = Instant::now();
    while !logs().contains("ready") {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _agent = h.start_agent();
    std::thread::sleep(Duration::from_millis(300));
    h.set_secret("rot_sig", v2.as_bytes());
    let changed = Instant::now();
    // rotation.interval (1 s, ± 10 %) + 1 s.
    loop {
        let now = h.docker_ok(&["exec", &c.name, "cat", "/run/secrets/rot_sig"]);
        if now == v2 {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_millis(2200),
            "the agent did not rotate within the interval"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("agent rotation seen after {:?}", changed.elapsed());
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(v2.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let t0 = Instant::now();
    while !logs().contains(&format!("got-usr1 {}", &want[..16])) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the trap did not see SIGUSR1 after the new file: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!logs().contains(&v2));
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn agent_killed_with_sigkill_and_restarted_keeps_tracking_and_a_webhook_rotates() {
    let Some((h, _serial)) = begin() else { return };
    let v1 = harness::random_token("rot-hook-1-");
    let v2 = harness::random_token("rot-hook-2-");
    h.set_secret("rot_file", v1.as_bytes());
    let c = ContainerGuard::new(h, "dso-e2e-agent-kill9");
    run_detached(h, &c.name, "F_FILE=dsofile://rot_file", &["sleep", "600"]);
    let read = || h.docker_ok(&["exec", &c.name, "cat", "/run/secrets/rot_file"]);
    assert_eq!(read(), v1);

    let mut agent = h.start_agent();
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGKILL) };
    let _ = agent.0.wait();
    drop(agent);
    let _agent = h.start_agent();
    let status = ok(h, "dso status", &h.dso(&["status", "--json"], None));
    assert!(status.contains(r#""agent": true"#), "{status}");
    assert!(status.contains("\"rot_file\""), "{status}");

    h.set_secret("rot_file", v2.as_bytes());
    let t0 = Instant::now();
    assert_eq!(post_webhook("rot_file"), 202);
    while read() != v2 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the webhook did not rotate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "webhook → new file in the container after {:?}",
        t0.elapsed()
    );
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn a_reader_in_a_docker_container_never_sees_a_torn_value_over_500_rotations() {
    let Some((h, _serial)) = begin() else { return };
    h.set_secret("rot_file", b"old");
    let c = ContainerGuard::new(h, "dso-e2e-torn");
    run_detached(
        h,
        &c.name,
        "F_FILE=dsofile://rot_file",
        &[
            "sh",
            "-c",
            "n=0; while :; do v=$(cat /run/secrets/rot_file); \
             case \"$v\" in old|new*END) ;; *) echo \"BAD:${#v}\";; esac; \
             n=$((n+1)); [ $((n % 50)) = 0 ] && echo tick; done",
        ],
    );
    let logs = || {
        let out = h.docker(&["logs", &c.name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let t0 = Instant::now();
    while !logs().contains("tick") {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let cfg = dso::config::Config::load(&h.config_path()).unwrap();
    let mut store = dso::providers::local::Store::open(&h.store_path(), &h.key_path()).unwrap();
    let rotator = dso::rotation::Rotator::new(cfg, dso::rotation::Options::default());
    let sel = dso::rotation::Selector::Secret("rot_file".into());
    for i in 0..500 {
        let value = format!("new{i}-{}END", "x".repeat(3000 + i));
        store
            .set(
                "rot_file",
                dso::secrets::SecretValue::new(value.into_bytes()),
            )
            .unwrap();
        let out = rotator.rotate(&sel, dso::rotation::Mode::IfChanged);
        assert!(
            out.iter()
                .all(|o| o.status == dso::rotation::OutcomeStatus::Rotated),
            "{out:?}"
        );
    }
    let last = h.docker_ok(&["exec", &c.name, "cat", "/run/secrets/rot_file"]);
    assert!(last.starts_with("new499-") && last.ends_with("END"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!logs().contains("BAD"), "a reader saw a torn value");
}

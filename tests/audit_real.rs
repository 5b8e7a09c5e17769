//! The audit trail against the real runc (issue 19): one hash chain kept by 30 concurrent
//! dso-runc creates, an agent rotating and a logrotate in the middle (`dso audit verify`);
//! `audit.required` failing a create closed (nothing left) and refusing a rotation it cannot
//! audit. Needs root, runc and busybox-static: skipped outside CI when missing, a failure
//! under `CI=true`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dso_testkit::runc_lab::*;

fn dso(lab: &Lab, args: &[&str]) -> Output {
    Command::new(dso_exe())
        .arg("--config")
        .arg(lab.path("dso.yaml"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The lab's agent, once it says it is watching.
fn start_watching_agent(lab: &Lab) -> AgentProc {
    let agent = start_agent(lab);
    wait_for(&lab.path("agent.log"), "watching", Duration::from_secs(20));
    agent
}

fn events(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|l| l.contains(&format!("\"event\":\"{name}\"")))
        .count()
}

#[test]
#[ignore = "root: real runc and busybox-static; scripts/test.sh runs it (--include-ignored)"]
fn one_chain_through_concurrent_creates_an_agent_rotating_and_a_logrotate() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    lab.write_config("  rot: { rotation: { interval: 200ms } }\n", "");
    let mut cfg = fs::read_to_string(lab.path("dso.yaml")).unwrap();
    cfg.push_str("watch: { interval: 200ms }\n");
    fs::write(lab.path("dso.yaml"), cfg).unwrap();
    lab.set_secret("db", b"chain-db-value-7f3a");
    lab.set_secret("rot", b"chain-rot-value-0");

    // A running container whose secret the agent keeps rotating meanwhile.
    let b = lab.bundle(
        "while :; do sleep 1; done",
        &["R_FILE=dsofile://rot"],
        (0, 0),
    );
    let out = lab.create(&b, "rotating");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(lab.runc(&["start", "rotating"]).status.success());
    let _agent = start_watching_agent(&lab);

    let bundles: Vec<_> = (0..30)
        .map(|_| lab.bundle("true", &["D_FILE=dsofile://db"], (0, 0)))
        .collect();
    let lab = &lab;
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        // The provider moves on while the creates run; the agent rotates each new version.
        let rotations = s.spawn(|| {
            for i in 1..=6 {
                lab.set_secret("rot", format!("chain-rot-value-{i}").as_bytes());
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        // logrotate's `create` mode, half-way through: rename, new file made by the writers.
        let logrotate = s.spawn(|| {
            while done.load(std::sync::atomic::Ordering::SeqCst) < 15 {
                std::thread::sleep(Duration::from_millis(5));
            }
            fs::rename(lab.path("audit.log"), lab.path("audit.log.1")).unwrap();
        });
        let creates: Vec<_> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let done = &done;
                s.spawn(move || {
                    let dir = lab.path(&format!("out{i}"));
                    fs::create_dir_all(&dir).unwrap();
                    let out = lab.create_in(&dir, b, &format!("c{i}"));
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert!(out.status.success(), "create c{i}: {}", out.stderr);
                    // Nothing of dso's on the container's stderr.
                    assert_eq!(out.stderr, "", "c{i}");
                })
            })
            .collect();
        for c in creates {
            c.join().unwrap();
        }
        rotations.join().unwrap();
        logrotate.join().unwrap();
    });
    // The last version reaches the container (the agent's rotations are in the chain).
    let pid = fs::read_to_string(lab.path("bundle1/pid")).unwrap();
    let file = format!("/proc/{}/root/run/secrets/rot", pid.trim());
    let t0 = Instant::now();
    while fs::read(&file).unwrap_or_default() != b"chain-rot-value-6" {
        assert!(t0.elapsed() < Duration::from_secs(30), "not rotated");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The event follows the rename that made the value visible.
    let t0 = Instant::now();
    while events(
        &fs::read_to_string(lab.path("audit.log")).unwrap(),
        "rotation_completed",
    ) == 0
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "no rotation event");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(_agent);

    let out = dso(lab, &["audit", "verify", "/dev/null"]);
    assert_eq!(out.status.code(), Some(0));
    let files = [lab.path("audit.log.1"), lab.path("audit.log")];
    let out = Command::new(dso_exe())
        .args(["audit", "verify"])
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text: String = files
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    assert_eq!(events(&text, "secret_injected"), 31, "{text}");
    assert!(events(&text, "rotation_completed") >= 1);
    assert_eq!(events(&text, "audit_chain_continued"), 1);
    for v in ["chain-db-value-7f3a", "chain-rot-value"] {
        assert!(!text.contains(v), "a value in the audit trail");
    }
    // The file and its chain head are root's alone.
    for f in [lab.path("audit.log"), lab.path(".audit.log.chain")] {
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // One line removed from the rotated file: found, and named.
    let old = fs::read_to_string(&files[0]).unwrap();
    let mut lines: Vec<&str> = old.lines().collect();
    lines.remove(4);
    fs::write(&files[0], lines.join("\n") + "\n").unwrap();
    let out = Command::new(dso_exe())
        .args(["audit", "verify"])
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit.log.1: line 5:"), "{err}");
}

/// A read-only tmpfs mounted at `dir`, unmounted on drop.
struct RoMount(std::path::PathBuf);

impl RoMount {
    fn new(dir: std::path::PathBuf) -> RoMount {
        fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a read-only tmpfs");
        RoMount(dir)
    }
}

impl Drop for RoMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "root: real runc and busybox-static; scripts/test.sh runs it (--include-ignored)"]
fn required_audit_in_a_read_only_dir_fails_create_closed_and_refuses_rotation() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    lab.write_config("", "");
    lab.set_secret("db", b"required-v1");
    let writable = fs::read_to_string(lab.path("dso.yaml")).unwrap();
    let ro = RoMount::new(lab.path("ro"));
    let ro_log = ro.0.join("audit.log");
    let required = writable.replace(
        &format!("audit: {{ path: {} }}", lab.path("audit.log").display()),
        &format!("audit: {{ path: {}, required: true }}", ro_log.display()),
    );
    assert_ne!(required, writable);
    fs::write(lab.path("dso.yaml"), &required).unwrap();

    let b = lab.bundle(
        "while :; do sleep 1; done",
        &["D_FILE=dsofile://db"],
        (0, 0),
    );
    let out = lab.create(&b, "req");
    assert!(!out.status.success());
    let log = fs::read_to_string(lab.path("runc.log")).unwrap();
    assert!(
        log.contains(&format!(
            "the audit log {} could not be written",
            ro_log.display()
        )) && log.contains("audit.required is set: the container is not created"),
        "{log}"
    );
    // Nothing left: no container, no state record, nothing on the container's stderr.
    assert_eq!(lab.list().trim(), "");
    let state: Vec<_> = fs::read_dir(lab.path("state"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        state.iter().all(|n| !n.to_string_lossy().contains("req")),
        "{state:?}"
    );
    assert_eq!(out.stderr, "");

    // Created with a writable trail; then the trail becomes unwritable and required: a
    // rotation does not apply a value it cannot audit.
    fs::write(lab.path("dso.yaml"), &writable).unwrap();
    let out = lab.create(&b, "req");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(lab.runc(&["start", "req"]).status.success());
    let pid = fs::read_to_string(b.join("pid")).unwrap();
    let file = format!("/proc/{}/root/run/secrets/db", pid.trim());
    assert_eq!(fs::read(&file).unwrap(), b"required-v1");
    fs::write(lab.path("dso.yaml"), &required).unwrap();
    lab.set_secret("db", b"required-v2");
    let out = dso(&lab, &["rotate", "db"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not be written"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"required-v1");
    // Writable again: the rotation goes through.
    fs::write(lab.path("dso.yaml"), &writable).unwrap();
    let out = dso(&lab, &["rotate", "db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&file).unwrap(), b"required-v2");
    drop(ro);
}

/// What a test receiver got: (headers lowercased, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

/// A small HTTP receiver on `listener`: records every request, answers `status` (or never
/// answers, when `status` is 0), on a background thread.
fn receiver(listener: std::net::TcpListener, status: u16) -> Received {
    use std::io::{Read, Write};
    let got: Received = Default::default();
    let g = got.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, len) = loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break (i + 4, len);
                }
            };
            if head_end == 0 {
                continue;
            }
            while buf.len() < head_end + len {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let headers = String::from_utf8_lossy(&buf[..head_end])
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                .collect();
            g.lock().unwrap().push((headers, buf[head_end..].to_vec()));
            if status == 0 {
                held.push(c); // hang: keep the connection open, never answer
                continue;
            }
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    got
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
#[ignore = "root: real runc and busybox-static; scripts/test.sh runs it (--include-ignored)"]
fn notifications_are_signed_retried_while_the_receiver_is_down_and_bounded() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    lab.write_config("", "");
    lab.set_secret("db", b"notify-value-v1");
    fs::write(lab.path("notify.key"), "notify-hmac-key\n").unwrap();
    fs::set_permissions(lab.path("notify.key"), fs::Permissions::from_mode(0o600)).unwrap();
    // `late` is down at first; `broken` answers 500 forever; `hung` never answers.
    let late_port = free_port();
    let broken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let broken_port = broken.local_addr().unwrap().port();
    let broken_got = receiver(broken, 500);
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let hung_got = receiver(hung, 0);
    let key = lab.path("notify.key");
    let mut cfg = fs::read_to_string(lab.path("dso.yaml")).unwrap();
    cfg.push_str(&format!(
        "notifications:\n\
         \x20 - {{ url: \"http://127.0.0.1:{late_port}/hook\", secret_file: {k}, events: [secret_injected, rotation_completed], max_attempts: 30, timeout: 2m }}\n\
         \x20 - {{ url: \"http://127.0.0.1:{broken_port}/hook\", secret_file: {k}, events: [secret_injected], max_attempts: 3 }}\n\
         \x20 - {{ url: \"http://127.0.0.1:{hung_port}/hook\", secret_file: {k}, events: [secret_injected], timeout: 2s }}\n",
        k = key.display()
    ));
    fs::write(lab.path("dso.yaml"), cfg).unwrap();
    let _agent = start_watching_agent(&lab);

    let b = lab.bundle(
        "while :; do sleep 1; done",
        &["D_FILE=dsofile://db"],
        (0, 0),
    );
    let out = lab.create(&b, "notified");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(lab.runc(&["start", "notified"]).status.success());
    // The receiver comes up only after the agent has tried (and failed) at least once.
    let t0 = Instant::now();
    while broken_got.lock().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "agent sent nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let late_got = receiver(
        std::net::TcpListener::bind(("127.0.0.1", late_port)).unwrap(),
        200,
    );
    // A rotation: its event follows the first.
    lab.set_secret("db", b"notify-value-v2");
    let out = dso(&lab, &["rotate", "db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let t0 = Instant::now();
    while late_got.lock().unwrap().len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not delivered after the receiver came up: {}",
            fs::read_to_string(lab.path("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = late_got.lock().unwrap().clone();
    let mut events = Vec::new();
    for (headers, body) in &got {
        let h = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(
            dso::agent::webhook::verify(
                b"notify-hmac-key",
                h("x-dso-timestamp"),
                h("x-dso-signature"),
                body,
                now
            ),
            Ok(()),
            "a notification that does not verify"
        );
        assert_eq!(h("content-type"), Some("application/json"));
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains("notify-value"), "a value in a notification");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        events.push(v["event"].as_str().unwrap().to_string());
    }
    assert_eq!(events, ["secret_injected", "rotation_completed"]);

    // 500 forever: exactly max_attempts tries, then an audited failure. A receiver that
    // never answers: given up after its timeout, audited too.
    let t0 = Instant::now();
    loop {
        let audit = fs::read_to_string(lab.path("audit.log")).unwrap();
        let failed = |port: u16| {
            audit.lines().any(|l| {
                l.contains("\"event\":\"notification_failed\"")
                    && l.contains(&format!("127.0.0.1:{port}"))
            })
        };
        if failed(broken_port) && failed(hung_port) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no notification_failed: {audit}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(broken_got.lock().unwrap().len(), 3);
    assert!(!hung_got.lock().unwrap().is_empty());
    let audit = fs::read_to_string(lab.path("audit.log")).unwrap();
    assert!(!audit.contains("notify-value") && !audit.contains("notify-hmac-key"));
}

#[test]
fn plain_http_notifications_off_loopback_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dso.yaml");
    fs::write(
        &cfg,
        "providers:\n  local: { type: local, path: /s, key_file: /k }\nnotifications:\n  - { url: \"http://hooks.example.com/dso\", secret_file: /etc/dso/n.key }\n",
    )
    .unwrap();
    let out = Command::new(dso_exe())
        .arg("--config")
        .arg(&cfg)
        .args(["config", "validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notifications.0.url: https is required"),
        "{err}"
    );
}

/// A process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:port; the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant PromQL query with one result (None: no result yet).
fn promql(port: u16, query: &str) -> Option<f64> {
    let body = http_get(
        port,
        &format!("/api/v1/query?query={}", percent_encode(query)),
    );
    // Chunked or not, the JSON object is what lies between the first '{' and the last '}'.
    let json = body.get(body.find('{')?..=body.rfind('}')?)?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
#[ignore = "root: real runc and busybox-static; scripts/test.sh runs it (--include-ignored)"]
fn prometheus_scrapes_event_counts_and_latencies_from_the_agent() {
    if !ready() {
        return;
    }
    if !have("prometheus") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prometheus missing under CI (scripts/install-deps.sh installs it)"
        );
        eprintln!("skipping: no prometheus (run scripts/install-deps.sh)");
        return;
    }
    let mut lab = Lab::new();
    lab.write_config("", "");
    let mport = free_port();
    let mut cfg = fs::read_to_string(lab.path("dso.yaml")).unwrap();
    cfg.push_str(&format!(
        "watch: {{ interval: 1h }}\nagent: {{ socket: {}, metrics: {{ listen: \"127.0.0.1:{mport}\" }} }}\n",
        lab.path("dso.sock").display()
    ));
    fs::write(lab.path("dso.yaml"), cfg).unwrap();
    lab.set_secret("db", b"metrics-value-v1");
    let _agent = start_watching_agent(&lab);
    wait_for(
        &lab.path("agent.log"),
        "metrics on",
        Duration::from_secs(10),
    );

    // Three creates (through the agent's socket), then a rotation of all three.
    for i in 0..3 {
        let b = lab.bundle(
            "while :; do sleep 1; done",
            &["D_FILE=dsofile://db"],
            (0, 0),
        );
        let id = format!("m{i}");
        let out = lab.create(&b, &id);
        assert!(out.status.success(), "{}", out.stderr);
        assert!(lab.runc(&["start", &id]).status.success());
    }
    lab.set_secret("db", b"metrics-value-v2");
    let out = dso(&lab, &["rotate", "db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus, its own config and data dir, on loopback.
    let pport = free_port();
    let pdir = lab.path("prometheus");
    fs::create_dir_all(pdir.join("data")).unwrap();
    fs::write(
        pdir.join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: dso\n    static_configs:\n      - targets: [\"127.0.0.1:{mport}\"]\n"
        ),
    )
    .unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                pdir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                pdir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(pdir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let want = [
        (
            r#"sum(dso_audit_events_total{event="secret_injected",status="success"})"#,
            3.0,
        ),
        (
            r#"sum(dso_audit_events_total{event="rotation_completed",status="success"})"#,
            3.0,
        ),
        (
            r#"sum(dso_injection_duration_seconds_count{provider="local"})"#,
            3.0,
        ),
        (
            r#"sum(dso_rotation_duration_seconds_count{provider="local"})"#,
            3.0,
        ),
        (
            r#"sum(dso_fetch_duration_seconds_count{provider="local"})"#,
            4.0,
        ),
        (r#"dso_rotations_total{result="completed"}"#, 3.0),
        ("dso_managed_containers", 3.0),
    ];
    let t0 = Instant::now();
    loop {
        let got: Vec<Option<f64>> = want.iter().map(|(q, _)| promql(pport, q)).collect();
        if want.iter().zip(&got).all(|((_, w), g)| *g == Some(*w)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "prometheus answers {got:?} for {want:?}\n{}",
            fs::read_to_string(pdir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Names and numbers only.
    let body = http_get(mport, "/metrics");
    assert!(body.contains("dso_audit_events_total"), "{body}");
    assert!(!body.contains("metrics-value"));
}

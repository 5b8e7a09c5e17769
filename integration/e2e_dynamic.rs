//! Dynamic Vault secrets end to end on the harness's dockerd, against a real OpenBao server
//! (`bao server -dev -dev-tls`) and a real PostgreSQL cluster (Debian's, `initdb` as
//! `postgres` with scram-sha-256, on its own port), both started by `tests/support/bao.rs`:
//!
//! - `engine: database`: each container gets its own credential (JSON username/password),
//!   which logs in to Postgres while it runs; `docker rm -f` ends with the role dropped (the
//!   agent revokes the lease within a few seconds; without an agent, at its next start; a kill
//!   -9 of the agent in between changes nothing); a revoked lease is replaced by a new
//!   credential rotated into the running container; a database that refuses the creation
//!   statement, or a role the server does not have, fails the create closed; a revocation the
//!   server cannot take is audited `lease_failed` and shown by `dso status`, and retried.
//! - `engine: pki`: the certificate verifies against the server's CA (`openssl verify`), has
//!   the names asked for, and is re-issued before expiry and rotated in place with a signal.
//!
//! No value of either kind is anywhere on the host's filesystem.
//!
//! Needs root, dockerd, runc, busybox-static, bao, PostgreSQL and openssl; skipped elsewhere,
//! a failure under `CI=true`.

use dso_testkit::bao;
use dso_testkit::harness;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use bao::{Bao, Postgres};
use harness::{
    ContainerGuard, Harness, IMAGE, assert_failed_closed, container_id, dso_runc_root, stderr,
    stdout,
};

/// The token dso uses: exactly what the two engines need (docs/vault.md's policies).
const POLICY: &str = r#"
path "database/creds/app" { capabilities = ["read"] }
path "database/creds/broken" { capabilities = ["read"] }
path "database/creds/nosuchrole" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["create", "update"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"#;

struct Setup {
    h: &'static Harness,
    _serial: MutexGuard<'static, ()>,
    bao: Bao,
    pg: Postgres,
    pki_ca: std::path::PathBuf,
}

/// `db_ttl`: the credentials' lease TTL (renewed at two thirds of it); `cert_ttl`: the
/// certificates'.
fn begin(db_ttl: &str, cert_ttl: &str) -> Option<Setup> {
    if !harness::require_root() || !bao::available() {
        return None;
    }
    let pg = Postgres::start()?;
    let bao = Bao::start()?;
    let h = Harness::get();
    let serial = h.serial();
    bao.database_role(&pg, "app", db_ttl, "1h");
    // A role whose creation statement the database refuses.
    bao.write_json_ok(
        "database/roles/broken",
        &serde_json::json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH NO_SUCH_OPTION;"],
            "default_ttl": "1h",
        }),
    );
    let pki_ca = bao.pki_role("web", "web.internal", "72h");
    bao.policy("dso", POLICY);
    let token = bao.token(&["dso"], &["-ttl=2h"]);
    let token_file = bao.file("dso.token", &token);
    let q = |p: &Path| serde_json::Value::String(p.display().to_string()).to_string();
    h.write_dso_yaml(&format!(
        "providers:\n\
         \x20 bao: {{ type: vault, address: \"{addr}\", ca_file: {ca}, auth: {{ method: token, token_file: {token} }} }}\n\
         secrets:\n\
         \x20 app_db: {{ provider: bao, engine: database, role: app }}\n\
         \x20 app_db_user: {{ provider: bao, engine: database, role: app, key: username }}\n\
         \x20 broken_db: {{ provider: bao, engine: database, role: broken }}\n\
         \x20 nosuch_db: {{ provider: bao, engine: database, role: nosuchrole }}\n\
         \x20 web_tls: {{ provider: bao, engine: pki, role: web, common_name: web.internal, alt_names: [www.web.internal], ip_sans: [\"10.1.2.3\"], ttl: {cert_ttl}, rotation: {{ strategy: signal, signal: SIGHUP }} }}\n\
         \x20 web_key: {{ provider: bao, engine: pki, role: web, common_name: web.internal, key: private_key }}\n\
         \x20 bad_cn: {{ provider: bao, engine: pki, role: web, common_name: evil.example.com }}\n\
         policy: {{ default: allow }}\n\
         audit: {{ path: {audit} }}\n\
         runtime: {{ state_dir: {state}, fetch_timeout: 20s }}\n",
        addr = bao.addr,
        ca = q(&bao.ca),
        token = q(&token_file),
        audit = q(&h.audit_path()),
        state = q(&h.state_dir()),
    ));
    Some(Setup {
        h,
        _serial: serial,
        bao,
        pg,
        pki_ca,
    })
}

/// Runs a detached container with `X_FILE=dsofile://<secret>` that stays up; with `hup`, its
/// init counts SIGHUPs in /tmp/hups.
fn run_detached(h: &Harness, name: &str, secret: &str, hup: bool) {
    let env = format!("X_FILE=dsofile://{secret}");
    let script = if hup {
        "trap 'echo hup >> /tmp/hups' HUP; while true; do sleep 1; done"
    } else {
        "while true; do sleep 1; done"
    };
    let out = h.docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--runtime",
        "dso",
        "--network",
        "none",
        "-e",
        &env,
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert!(
        out.status.success(),
        "docker run failed: {}\n--- dockerd log ---\n{}",
        stderr(&out),
        h.dockerd_log_tail(30)
    );
}

/// The secret file's content, read from inside the container.
fn read_secret(h: &Harness, name: &str, file: &str) -> String {
    let out = h.docker(&["exec", name, "cat", &format!("/run/secrets/{file}")]);
    assert!(out.status.success(), "docker exec: {}", stderr(&out));
    stdout(&out)
}

struct Cred {
    username: String,
    password: String,
}

fn cred(json: &str) -> Cred {
    let v: serde_json::Value = serde_json::from_str(json).expect("credential is JSON");
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 2, "username and password only");
    Cred {
        username: v["username"].as_str().expect("username").to_string(),
        password: v["password"].as_str().expect("password").to_string(),
    }
}

/// Waits (up to `limit`) for `cond`; panics with `what` if it never holds.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn audit_events(h: &Harness, event: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(h.audit_path())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

fn state_record(h: &Harness, name: &str) -> serde_json::Value {
    let id = container_id(h, name).expect("container id");
    let bytes = fs::read(h.state_dir().join(format!("{id}.json"))).expect("state record");
    serde_json::from_slice(&bytes).expect("state JSON")
}

fn assert_nowhere_on_host(values: &[&str]) {
    for v in values {
        let found = harness::host_files_containing(v);
        assert!(
            found.is_empty(),
            "a value is on the host's filesystem: {found:?}"
        );
    }
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn database_credentials_are_per_container_and_revoked_on_removal() {
    let Some(s) = begin("1h", "1h") else { return };
    let h = s.h;
    let _agent = h.start_agent();
    let a = ContainerGuard::new(h, "dso-dyn-db-a");
    let b = ContainerGuard::new(h, "dso-dyn-db-b");
    run_detached(h, &a.name, "app_db", false);
    run_detached(h, &b.name, "app_db", false);
    let ca = cred(&read_secret(h, &a.name, "app_db"));
    let cb = cred(&read_secret(h, &b.name, "app_db"));
    // Two containers, two credentials; both log in while their containers run.
    assert_ne!(ca.username, cb.username);
    assert_ne!(ca.password, cb.password);
    assert!(
        s.pg.login(&ca.username, &ca.password),
        "a's credential logs in"
    );
    assert!(
        s.pg.login(&cb.username, &cb.password),
        "b's credential logs in"
    );

    // The state record has the lease id, never the value.
    let rec = state_record(h, &a.name);
    let text = rec.to_string();
    assert!(
        rec["secrets"][0]["lease"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("database/creds/app/")),
        "{text}"
    );
    assert!(
        !text.contains(&ca.password) && !text.contains(&ca.username),
        "{text}"
    );
    // Audit: issued, with a hashed lease id.
    let issued = audit_events(h, "lease_issued");
    assert!(issued.len() >= 2, "{issued:?}");
    let lease_id = rec["secrets"][0]["lease"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let audit_text = fs::read_to_string(h.audit_path()).unwrap_or_default();
    assert!(
        !audit_text.contains(&lease_id),
        "the lease id is in the audit log"
    );
    assert!(!audit_text.contains(&ca.password));
    // `dso status` shows the leases and their expiry.
    let status = h.dso(&["status"], None);
    let status_text = stdout(&status);
    assert!(
        status_text.contains("LEASE") && status_text.contains("app_db"),
        "{status_text}"
    );

    assert_nowhere_on_host(&[&ca.password, &cb.password]);

    // Removed: the agent revokes the lease, Postgres drops the role; b is untouched.
    assert!(h.docker(&["rm", "-f", &a.name]).status.success());
    wait_for("a's role dropped", Duration::from_secs(60), || {
        !s.pg.role_exists(&ca.username)
    });
    assert!(!s.pg.login(&ca.username, &ca.password));
    assert!(s.pg.login(&cb.username, &cb.password));
    assert!(
        audit_events(h, "lease_revoked")
            .iter()
            .any(|e| e["secret"] == "app_db"),
        "no lease_revoked event"
    );
    drop(b);
    wait_for("b's role dropped", Duration::from_secs(60), || {
        !s.pg.role_exists(&cb.username)
    });
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn a_killed_agent_revokes_at_its_next_start() {
    let Some(s) = begin("1h", "1h") else { return };
    let h = s.h;
    let mut agent = h.start_agent();
    let c = ContainerGuard::new(h, "dso-dyn-db-kill");
    run_detached(h, &c.name, "app_db", false);
    let cr = cred(&read_secret(h, &c.name, "app_db"));
    assert!(s.pg.login(&cr.username, &cr.password));
    // kill -9 between issue and revoke; the container goes while no agent runs.
    agent.0.kill().expect("SIGKILL the agent");
    let _ = agent.0.wait();
    assert!(h.docker(&["rm", "-f", &c.name]).status.success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(s.pg.role_exists(&cr.username), "nobody revoked it yet");
    // The next agent revokes at start.
    let _agent = h.start_agent();
    wait_for(
        "role dropped after agent restart",
        Duration::from_secs(60),
        || !s.pg.role_exists(&cr.username),
    );
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn a_revoked_lease_is_replaced_by_rotation() {
    // A 9 s TTL: the agent renews at 6 s; once the lease is revoked behind its back, the
    // renewal fails and a new credential is issued and written into the running container.
    let Some(s) = begin("9s", "1h") else { return };
    let h = s.h;
    let _agent = h.start_agent();
    let c = ContainerGuard::new(h, "dso-dyn-db-rot");
    run_detached(h, &c.name, "app_db", false);
    let first = cred(&read_secret(h, &c.name, "app_db"));
    // Renewed at least once while it is valid: the credential stays.
    wait_for("a lease_renewed event", Duration::from_secs(30), || {
        !audit_events(h, "lease_renewed").is_empty()
    });
    assert_eq!(
        cred(&read_secret(h, &c.name, "app_db")).username,
        first.username
    );
    assert!(s.pg.login(&first.username, &first.password));
    let lease_id = state_record(h, &c.name)["secrets"][0]["lease"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.bao.cmd(&["lease", "revoke", &lease_id]);
    wait_for(
        "the role of the revoked lease dropped",
        Duration::from_secs(30),
        || !s.pg.role_exists(&first.username),
    );
    wait_for(
        "a new credential in the container",
        Duration::from_secs(60),
        || cred(&read_secret(h, &c.name, "app_db")).username != first.username,
    );
    let second = cred(&read_secret(h, &c.name, "app_db"));
    assert!(s.pg.login(&second.username, &second.password));
    assert_nowhere_on_host(&[&first.password, &second.password]);
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn dso_rotate_issues_a_new_credential_and_revokes_the_old() {
    let Some(s) = begin("1h", "1h") else { return };
    let h = s.h;
    let c = ContainerGuard::new(h, "dso-dyn-db-force");
    run_detached(h, &c.name, "app_db", false);
    let first = cred(&read_secret(h, &c.name, "app_db"));
    // No agent: dso rotate does it itself.
    let out = h.dso(&["rotate", "app_db"], None);
    assert!(
        out.status.success(),
        "dso rotate: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let second = cred(&read_secret(h, &c.name, "app_db"));
    assert_ne!(first.username, second.username);
    assert!(s.pg.login(&second.username, &second.password));
    assert!(
        !s.pg.role_exists(&first.username),
        "the old lease was revoked"
    );
    let rec = state_record(h, &c.name);
    assert!(!rec.to_string().contains(&second.password));
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn key_selects_one_field() {
    let Some(s) = begin("1h", "1h") else { return };
    let h = s.h;
    let c = ContainerGuard::new(h, "dso-dyn-db-user");
    run_detached(h, &c.name, "app_db_user", false);
    let user = read_secret(h, &c.name, "app_db_user");
    assert!(user.starts_with("v-"), "{user}");
    assert!(s.pg.role_exists(&user));
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn refused_creation_and_unknown_role_fail_closed() {
    let Some(s) = begin("1h", "1h") else { return };
    let h = s.h;
    let root = dso_runc_root(h);
    let c = ContainerGuard::new(h, "dso-dyn-db-broken");
    let out = h.run_file_ref(&c.name, "broken_db");
    assert_failed_closed(
        h,
        &root,
        &c.name,
        &out,
        &["broken_db", "unrecognized role option"],
    );
    let c = ContainerGuard::new(h, "dso-dyn-db-nosuch");
    let out = h.run_file_ref(&c.name, "nosuch_db");
    assert_failed_closed(h, &root, &c.name, &out, &["nosuch_db", "nosuchrole"]);
    let c = ContainerGuard::new(h, "dso-dyn-pki-badcn");
    let out = h.run_file_ref(&c.name, "bad_cn");
    assert_failed_closed(h, &root, &c.name, &out, &["bad_cn", "evil.example.com"]);
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn failed_revocation_is_audited_retried_and_shown() {
    let Some(mut s) = begin("1h", "1h") else {
        return;
    };
    let h = s.h;
    let c = ContainerGuard::new(h, "dso-dyn-db-down");
    run_detached(h, &c.name, "app_db", false);
    let cr = cred(&read_secret(h, &c.name, "app_db"));
    // The server goes away; then the container.
    s.bao.kill();
    assert!(h.docker(&["rm", "-f", &c.name]).status.success());
    let _agent = h.start_agent();
    wait_for(
        "two lease_failed events (retried)",
        Duration::from_secs(60),
        || {
            audit_events(h, "lease_failed")
                .iter()
                .filter(|e| e["secret"] == "app_db" && e["status"] == "failure")
                .count()
                >= 2
        },
    );
    let status = h.dso(&["status", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let pending = v["pending_revocations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        pending
            .iter()
            .any(|p| p["secret"] == "app_db" && p["attempts"].as_u64() >= Some(1)),
        "{v}"
    );
    let text = stdout(&h.dso(&["status"], None));
    assert!(text.contains("pending revocations"), "{text}");
    assert!(!v.to_string().contains(&cr.password));
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn pki_certificate_verifies_and_is_reissued_with_a_signal() {
    // 15 s certificates: re-issued at 10 s.
    let Some(s) = begin("1h", "15s") else { return };
    let h = s.h;
    let _agent = h.start_agent();
    let c = ContainerGuard::new(h, "dso-dyn-pki");
    run_detached(h, &c.name, "web_tls", true);
    let k = ContainerGuard::new(h, "dso-dyn-pki-key");
    run_detached(h, &k.name, "web_key", false);
    let pem = read_secret(h, &c.name, "web_tls");
    // Certificate, chain, private key: in that order.
    let cert_at = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let key_at = pem.find("PRIVATE KEY-----").expect("a private key");
    assert!(cert_at < key_at);
    assert!(
        pem.matches("-----BEGIN CERTIFICATE-----").count() >= 2,
        "certificate and chain"
    );
    let key_only = read_secret(h, &k.name, "web_key");
    assert!(
        key_only.starts_with("-----BEGIN")
            && key_only.contains("PRIVATE KEY")
            && !key_only.contains("CERTIFICATE")
    );

    // openssl verify against the server's CA; the names are the ones asked for. openssl reads
    // the certificate (public) from a file; the key never leaves memory.
    let dir = tempfile::tempdir().unwrap();
    let cert_end =
        pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let cert_file = dir.path().join("cert.pem");
    fs::write(&cert_file, format!("{}\n", &pem[cert_at..cert_end])).unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&s.pki_ca)
        .arg(&cert_file)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-serial",
            "-in",
        ])
        .arg(&cert_file)
        .output()
        .expect("openssl");
    let text = stdout(&out);
    assert!(
        text.contains("CN = web.internal") || text.contains("CN=web.internal"),
        "{text}"
    );
    assert!(
        text.contains("DNS:www.web.internal") && text.contains("IP Address:10.1.2.3"),
        "{text}"
    );
    let first_serial = text
        .lines()
        .find(|l| l.starts_with("serial="))
        .unwrap_or("")
        .to_string();

    // Re-issued before it expires, rotated in place, and the container got its SIGHUP.
    wait_for(
        "a new certificate in the container",
        Duration::from_secs(60),
        || read_secret(h, &c.name, "web_tls") != pem,
    );
    wait_for(
        "SIGHUP reached the container",
        Duration::from_secs(20),
        || {
            h.docker(&["exec", &c.name, "cat", "/tmp/hups"])
                .status
                .success()
        },
    );
    let pem2 = read_secret(h, &c.name, "web_tls");
    let end2 = pem2.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    fs::write(&cert_file, format!("{}\n", &pem2[..end2])).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&cert_file)
        .output()
        .expect("openssl");
    assert_ne!(
        stdout(&out).trim(),
        first_serial.trim(),
        "a new certificate"
    );

    // The private keys are nowhere on the host.
    let key_body = |p: &str| {
        let start = p.find("PRIVATE KEY-----").unwrap() + "PRIVATE KEY-----".len();
        p[start..].lines().nth(1).unwrap_or("").to_string()
    };
    assert_nowhere_on_host(&[&key_body(&pem), &key_body(&pem2), &key_body(&key_only)]);
}

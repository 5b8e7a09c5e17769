//! The AWS provider against moto (`moto_server`, PyPI `moto[server]`) with IAM authentication
//! enforced (`INITIAL_NO_AUTH_ACTION_COUNT`), so that signatures and policies are really
//! checked, and against `tests/fakes/imds_fake.py`, an IMDSv2 stand-in.
//!
//! One moto server serves the whole file. Its first three actions (creating an admin user, its
//! policy and its access key) go through unauthenticated; everything after — seeding secrets,
//! the other users, the role, and every fetch by dso — is signed and authorized.
//!
//! Credentials are always handed to the provider explicitly (`Env::from_pairs`), never through
//! the process environment, since the tests run in parallel threads. The tests that go through
//! `dso::providers::build` (which reads the process environment) run this test binary again as
//! a child with a clean environment of their own.
//!
//! Skipped (with a message) when python3 with moto is missing, except under `CI=true`, where
//! that is a failure.

use dso_testkit::aws_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aws_support::{Imds, Key, Moto, REGION, http_get, http_request, require_moto, rfc3339};
use dso::providers::aws::{AwsProvider, AwsSettings, Env};
use dso::providers::{FetchRequest, Provider, ProviderError, Reason};

/// The moto server of this test binary, seeded with these SecretStrings (plus `bin/key`, a
/// SecretBinary, and `rotating`, with two versions).
fn moto() -> &'static Moto {
    aws_support::moto(&serde_json::json!({
        "app/db": r#"{"username":"app","password":"pw-1","port":5432}"#,
        "plain/token": "tok-123",
    }))
}

fn role_imds_config(m: &Moto, expiration: &str) -> serde_json::Value {
    aws_support::role_imds_config(m, expiration)
}

// ---------------------------------------------------------------------------------------------
// Helpers for the provider.

/// An env with only HOME (an empty dir, so no ~/.aws files) plus `vars`.
fn env_with(home: &Path, vars: &[(&str, &str)]) -> Env {
    let home = home.to_str().expect("utf-8 temp path").to_string();
    let mut pairs: Vec<(&str, &str)> = vec![("HOME", home.as_str())];
    pairs.extend_from_slice(vars);
    Env::from_pairs(pairs)
}

fn settings(endpoint: &str, imds_endpoint: Option<&str>) -> AwsSettings {
    AwsSettings {
        region: Some(REGION.into()),
        endpoint: Some(endpoint.into()),
        // Never the real IMDS from a test: a closed loopback port unless a fake is given.
        imds_endpoint: Some(imds_endpoint.unwrap_or("http://127.0.0.1:9").into()),
        ..AwsSettings::default()
    }
}

fn provider_with_key(m: &Moto, key: &Key) -> AwsProvider {
    let home = tempfile::tempdir().expect("tempdir");
    AwsProvider::new(
        "aws",
        &settings(&m.endpoint, None),
        env_with(
            home.path(),
            &[
                ("AWS_ACCESS_KEY_ID", &key.id),
                ("AWS_SECRET_ACCESS_KEY", &key.secret),
            ],
        ),
        Duration::from_secs(10),
    )
    .expect("provider")
}

fn req(path: &str, key: Option<&str>, version: Option<&str>) -> FetchRequest {
    FetchRequest {
        path: path.into(),
        key: key.map(Into::into),
        version: version.map(Into::into),
        workload: None,
    }
}

fn fetch_str(
    p: &dyn Provider,
    r: &FetchRequest,
) -> Result<(String, Option<String>), ProviderError> {
    p.fetch(r).map(|f| {
        (
            String::from_utf8(f.value.expose().to_vec()).expect("utf-8 value"),
            f.version,
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Tests against moto.

#[test]
fn correct_key_gets_the_value_and_its_version() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let p = provider_with_key(m, &m.key("reader"));
    let (v, version) = fetch_str(&p, &req("plain/token", None, None)).unwrap();
    assert_eq!(v, "tok-123");
    assert!(version.is_some_and(|v| !v.is_empty()));

    let (v, _) = fetch_str(&p, &req("app/db", None, None)).unwrap();
    let whole: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(whole["password"], "pw-1");
}

#[test]
fn json_key_selection() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let p = provider_with_key(m, &m.key("reader"));
    assert_eq!(
        fetch_str(&p, &req("app/db", Some("password"), None))
            .unwrap()
            .0,
        "pw-1"
    );
    assert_eq!(
        fetch_str(&p, &req("app/db", Some("port"), None)).unwrap().0,
        "5432"
    );
    let e = fetch_str(&p, &req("app/db", Some("nope"), None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Key { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("nope") && !msg.contains("pw-1"), "{msg}");
    // A plain string has no keys.
    let e = fetch_str(&p, &req("plain/token", Some("x"), None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Key { .. }), "{e:?}");
}

#[test]
fn secret_binary_is_decoded() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let p = provider_with_key(m, &m.key("reader"));
    let f = p.fetch(&req("bin/key", None, None)).unwrap();
    assert_eq!(f.value.expose(), b"\x00\x01binary\xff");
}

#[test]
fn version_ids_pin_and_report() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let v1 = m.seed["rotating"]["v1"].as_str().unwrap();
    let v2 = m.seed["rotating"]["v2"].as_str().unwrap();
    let p = provider_with_key(m, &m.key("reader"));
    assert_eq!(
        fetch_str(&p, &req("rotating", None, None)).unwrap(),
        ("value-two".to_string(), Some(v2.to_string()))
    );
    assert_eq!(
        fetch_str(&p, &req("rotating", None, Some(v1))).unwrap(),
        ("value-one".to_string(), Some(v1.to_string()))
    );
    // version(): DescribeSecret's AWSCURRENT, and a pinned version is its own version.
    assert_eq!(
        p.version(&req("rotating", None, None)).unwrap().as_deref(),
        Some(v2)
    );
    assert_eq!(
        p.version(&req("rotating", None, Some(v1)))
            .unwrap()
            .as_deref(),
        Some(v1)
    );
    // An unknown version id is not found (moto: ResourceNotFoundException).
    let e = p
        .fetch(&req(
            "rotating",
            None,
            Some("00000000-0000-0000-0000-000000000000"),
        ))
        .unwrap_err();
    assert!(
        matches!(e.reason, Reason::NotFound(_) | Reason::Unavailable(_)),
        "{e:?}"
    );
}

#[test]
fn version_falls_back_to_get_secret_value_without_describe_permission() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let v2 = m.seed["rotating"]["v2"].as_str().unwrap();
    let p = provider_with_key(m, &m.key("getonly"));
    // DescribeSecret is refused for this user...
    let e = p.describe_current_version("rotating").unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
    // ...so version() uses GetSecretValue.
    assert_eq!(
        p.version(&req("rotating", None, None)).unwrap().as_deref(),
        Some(v2)
    );
    assert_eq!(
        p.version(&req("rotating", None, None)).unwrap().as_deref(),
        Some(v2)
    );
}

#[test]
fn missing_secret_is_not_found() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let p = provider_with_key(m, &m.key("reader"));
    let e = p.fetch(&req("does/not/exist", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::NotFound(_)), "{e:?}");
    assert!(e.to_string().contains("does/not/exist"), "{e}");
}

#[test]
fn wrong_secret_key_is_denied() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let mut key = m.key("reader");
    let right = key.secret.clone();
    // Its last character changed (to another one: a key that ends in "x" stays wrong).
    let last = if right.ends_with('x') { 'y' } else { 'x' };
    key.secret = format!("{}{last}", &right[..right.len() - 1]);
    let p = provider_with_key(m, &key);
    let e = p.fetch(&req("plain/token", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("Signature"), "{msg}");
    assert!(!msg.contains(&key.secret) && !msg.contains(&right), "{msg}");

    // An access key id moto has never issued.
    let p = provider_with_key(
        m,
        &Key {
            id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret: right.clone(),
        },
    );
    let e = p.fetch(&req("plain/token", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
}

#[test]
fn user_without_get_secret_value_is_denied() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let key = m.key("nopriv");
    let p = provider_with_key(m, &key);
    let e = p.fetch(&req("plain/token", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("AccessDenied"), "{msg}");
    assert!(msg.contains("secretsmanager:GetSecretValue"), "{msg}");
    assert!(!msg.contains(&key.secret), "{msg}");
}

#[test]
fn profile_file_credentials() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let reader = m.key("reader");
    let nopriv = m.key("nopriv");
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[weak]\naws_access_key_id={}\naws_secret_access_key={}\n",
            reader.id, reader.secret, nopriv.id, nopriv.secret
        ),
    )
    .unwrap();
    let creds = creds.to_str().unwrap();
    let make = |profile: Option<&str>, vars: &[(&str, &str)]| {
        let mut s = settings(&m.endpoint, None);
        s.profile = profile.map(Into::into);
        let mut all = vec![("AWS_SHARED_CREDENTIALS_FILE", creds)];
        all.extend_from_slice(vars);
        AwsProvider::new(
            "aws",
            &s,
            env_with(dir.path(), &all),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    // default profile
    assert_eq!(
        fetch_str(&make(None, &[]), &req("plain/token", None, None))
            .unwrap()
            .0,
        "tok-123"
    );
    // AWS_PROFILE, and the `profile` setting over AWS_PROFILE
    let e = make(None, &[("AWS_PROFILE", "weak")])
        .fetch(&req("plain/token", None, None))
        .unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
    assert_eq!(
        fetch_str(
            &make(Some("default"), &[("AWS_PROFILE", "weak")]),
            &req("plain/token", None, None)
        )
        .unwrap()
        .0,
        "tok-123"
    );
    // A named profile that does not exist is a configuration error, not a silent fallback.
    let e = make(Some("nope"), &[])
        .fetch(&req("plain/token", None, None))
        .unwrap_err();
    assert!(matches!(e.reason, Reason::Config(_)), "{e:?}");
}

#[test]
fn instance_role_credentials_from_imds() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let expiration = m.seed["role"]["expiration"].as_str().unwrap().to_string();
    let imds = Imds::start(&role_imds_config(m, &expiration));

    // The fake speaks IMDSv2 only: no token, no metadata.
    let (status, _) = http_get(
        imds.port,
        "/latest/meta-data/iam/security-credentials/",
        &[],
    );
    assert_eq!(status, 401);
    let (status, token) = http_request(
        imds.port,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    );
    assert_eq!(status, 200);
    let (status, role) = http_get(
        imds.port,
        "/latest/meta-data/iam/security-credentials/",
        &[("X-aws-ec2-metadata-token", token.trim())],
    );
    assert_eq!((status, role.as_str()), (200, "dso-instance-role"));

    let home = tempfile::tempdir().unwrap();
    let p = AwsProvider::new(
        "aws",
        &settings(&m.endpoint, Some(&imds.endpoint())),
        env_with(home.path(), &[]),
        Duration::from_secs(10),
    )
    .unwrap();
    let before = imds.stats();
    assert_eq!(
        fetch_str(&p, &req("plain/token", None, None)).unwrap().0,
        "tok-123"
    );
    assert_eq!(
        fetch_str(&p, &req("app/db", Some("username"), None))
            .unwrap()
            .0,
        "app"
    );
    let after = imds.stats();
    // One load for both fetches (cached), through the token PUT.
    assert_eq!(
        after["credential_gets"].as_u64().unwrap() - before["credential_gets"].as_u64().unwrap(),
        1
    );
    assert!(after["token_puts"].as_u64().unwrap() > before["token_puts"].as_u64().unwrap());
    let creds = p.credentials().credentials().unwrap();
    assert_eq!(
        creds.source(),
        &dso::providers::aws::CredentialSource::InstanceRole {
            role: "dso-instance-role".into()
        }
    );
    assert!(creds.session_token().is_some());

    // The role's policy has no DescribeSecret: version() falls back to GetSecretValue.
    assert!(p.version(&req("rotating", None, None)).unwrap().is_some());

    // A tampered session token is refused by moto (the token is really checked).
    let mut bad = role_imds_config(m, &expiration);
    bad["token"] = serde_json::Value::String("tampered".into());
    imds.rewrite(&bad);
    p.credentials().invalidate();
    let e = p.fetch(&req("plain/token", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
    assert!(!e.to_string().contains("tampered"), "{e}");
}

#[test]
fn imds_credentials_close_to_expiry_are_reloaded() {
    if !require_moto() {
        return;
    }
    let m = moto();
    // Expires in 2 minutes: inside the 5-minute refresh window, so every use reloads.
    let soon = SystemTime::now() + Duration::from_secs(120);
    let soon = rfc3339(soon);
    let imds = Imds::start(&role_imds_config(m, &soon));
    let home = tempfile::tempdir().unwrap();
    let p = AwsProvider::new(
        "aws",
        &settings(&m.endpoint, Some(&imds.endpoint())),
        env_with(home.path(), &[]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        fetch_str(&p, &req("plain/token", None, None)).unwrap().0,
        "tok-123"
    );
    assert_eq!(
        fetch_str(&p, &req("plain/token", None, None)).unwrap().0,
        "tok-123"
    );
    assert_eq!(imds.stats()["credential_gets"].as_u64().unwrap(), 2);

    // With an expiry an hour away, the next load is kept.
    let later = rfc3339(SystemTime::now() + Duration::from_secs(3600));
    imds.rewrite(&role_imds_config(m, &later));
    fetch_str(&p, &req("plain/token", None, None)).unwrap();
    fetch_str(&p, &req("plain/token", None, None)).unwrap();
    assert_eq!(imds.stats()["credential_gets"].as_u64().unwrap(), 3);
}

#[test]
fn no_credentials_anywhere_fails_fast() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let home = tempfile::tempdir().unwrap();
    // IMDS: a closed port (connection refused) ...
    let started = Instant::now();
    let p = AwsProvider::new(
        "aws",
        &settings(&m.endpoint, None),
        env_with(home.path(), &[]),
        Duration::from_secs(10),
    )
    .unwrap();
    let e = p.fetch(&req("plain/token", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
    assert!(e.to_string().contains("no AWS credentials found"), "{e}");
    // ... and an instance without a role.
    let mut cfg = role_imds_config(m, "2099-01-01T00:00:00Z");
    cfg["no_role"] = true.into();
    let imds = Imds::start(&cfg);
    let p = AwsProvider::new(
        "aws",
        &settings(&m.endpoint, Some(&imds.endpoint())),
        env_with(home.path(), &[]),
        Duration::from_secs(10),
    )
    .unwrap();
    let e = p.fetch(&req("plain/token", None, None)).unwrap_err();
    assert!(e.to_string().contains("none attached"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn unresponsive_imds_times_out_quickly() {
    // A listener that never answers: connects succeed (the kernel's backlog), requests hang,
    // so only the IMDS timeout ends them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let p = AwsProvider::new(
        "aws",
        &AwsSettings {
            region: Some(REGION.into()),
            endpoint: Some("http://127.0.0.1:9".into()),
            imds_endpoint: Some(imds),
            ..AwsSettings::default()
        },
        env_with(home.path(), &[]),
        Duration::from_secs(10),
    )
    .unwrap();
    let e = p.fetch(&req("x", None, None)).unwrap_err();
    assert!(e.to_string().contains("no AWS credentials found"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

// ---------------------------------------------------------------------------------------------
// Through `dso::providers::build`, which reads the process environment: in a child process.

/// What the child does, from its environment (set by `run_child`).
#[test]
fn child_build_fetch() {
    let Ok(yaml) = std::env::var("DSO_AWS_CHILD_CONFIG") else {
        return; // not a child run
    };
    let path = std::env::var("DSO_AWS_CHILD_PATH").unwrap();
    let key = std::env::var("DSO_AWS_CHILD_KEY").ok();
    let cfg = dso::config::Config::from_str_at(&yaml, Path::new("child.yaml"))
        .unwrap_or_else(|e| panic!("config: {e}"));
    let pc = &cfg.providers["aws"];
    let result = dso::providers::build("aws", pc, &cfg).and_then(|p| {
        p.fetch(&FetchRequest {
            path,
            key,
            version: None,
            workload: None,
        })
    });
    match result {
        Ok(f) => println!(
            "CHILD-RESULT ok {}",
            String::from_utf8_lossy(f.value.expose())
        ),
        Err(e) => println!("CHILD-RESULT err {e}"),
    }
}

/// Runs `child_build_fetch` in a fresh process whose environment is exactly `env` (plus PATH),
/// and returns its `CHILD-RESULT` line.
fn run_child(yaml: &str, path: &str, key: Option<&str>, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child_build_fetch",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("DSO_AWS_CHILD_CONFIG", yaml)
    .env("DSO_AWS_CHILD_PATH", path)
    .envs(env.iter().copied());
    if let Some(k) = key {
        cmd.env("DSO_AWS_CHILD_KEY", k);
    }
    let out = cmd.output().expect("run child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("CHILD-RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result from the child: {stdout}"))
        .to_string()
}

fn child_yaml(m: &Moto, imds: Option<&str>) -> String {
    format!(
        "providers:\n  aws:\n    type: aws\n    region: {REGION}\n    endpoint: \"{}\"\n    imds_endpoint: \"{}\"\nruntime:\n  fetch_timeout: 10s\n",
        m.endpoint,
        imds.unwrap_or("http://127.0.0.1:9")
    )
}

#[test]
fn build_with_env_credentials() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let home = tempfile::tempdir().unwrap();
    let reader = m.key("reader");
    let h = home.path().to_str().unwrap();
    let out = run_child(
        &child_yaml(m, None),
        "app/db",
        Some("password"),
        &[
            ("HOME", h),
            ("AWS_ACCESS_KEY_ID", &reader.id),
            ("AWS_SECRET_ACCESS_KEY", &reader.secret),
        ],
    );
    assert_eq!(out, "ok pw-1");
    // Wrong secret: denied, and the message names the provider but not the key.
    let out = run_child(
        &child_yaml(m, None),
        "app/db",
        None,
        &[
            ("HOME", h),
            ("AWS_ACCESS_KEY_ID", &reader.id),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ],
    );
    assert!(
        out.starts_with("err aws \"aws\": permission denied"),
        "{out}"
    );
    assert!(!out.contains("not-the-secret"), "{out}");
}

#[test]
fn build_with_profile_file() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let dir = tempfile::tempdir().unwrap();
    let reader = m.key("reader");
    let creds = dir.path().join("creds");
    std::fs::write(
        &creds,
        format!(
            "[ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            reader.id, reader.secret
        ),
    )
    .unwrap();
    let out = run_child(
        &child_yaml(m, None),
        "plain/token",
        None,
        &[
            ("HOME", dir.path().to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_PROFILE", "ci"),
        ],
    );
    assert_eq!(out, "ok tok-123");
}

#[test]
fn build_with_instance_role() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let expiration = m.seed["role"]["expiration"].as_str().unwrap().to_string();
    let imds = Imds::start(&role_imds_config(m, &expiration));
    let home = tempfile::tempdir().unwrap();
    let out = run_child(
        &child_yaml(m, Some(&imds.endpoint())),
        "app/db",
        Some("username"),
        &[("HOME", home.path().to_str().unwrap())],
    );
    assert_eq!(out, "ok app");
    assert_eq!(imds.stats()["credential_gets"].as_u64().unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Retries and error mapping, against a canned local server (no moto needed).

/// Serves `responses` (status, body) in order, one per connection, and counts requests.
fn canned_server(
    responses: Vec<(u16, &'static str)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for (status, body) in responses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body_in = vec![0u8; length];
            let _ = reader.read_exact(&mut body_in);
            counter.fetch_add(1, Ordering::SeqCst);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (endpoint, count)
}

fn canned_provider(endpoint: &str) -> AwsProvider {
    let home = tempfile::tempdir().unwrap();
    AwsProvider::new(
        "aws",
        &settings(endpoint, None),
        env_with(
            home.path(),
            &[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "SECRET"),
            ],
        ),
        Duration::from_secs(10),
    )
    .unwrap()
}

#[test]
fn throttling_and_server_errors_are_retried() {
    use std::sync::atomic::Ordering;
    let ok = r#"{"ARN":"arn","Name":"n","VersionId":"v-1","SecretString":"s3cr3t"}"#;
    let (endpoint, count) = canned_server(vec![
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ),
        (503, r#"{"__type":"ServiceUnavailable"}"#),
        (200, ok),
    ]);
    let p = canned_provider(&endpoint);
    assert_eq!(
        fetch_str(&p, &req("n", None, None)).unwrap(),
        ("s3cr3t".to_string(), Some("v-1".to_string()))
    );
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn client_errors_are_not_retried_and_name_the_code() {
    use std::sync::atomic::Ordering;
    let (endpoint, count) = canned_server(vec![
        (
            400,
            r#"{"__type":"InvalidRequestException","message":"You can't perform this operation on the secret because it was marked for deletion."}"#,
        ),
        (
            400,
            r#"{"__type":"com.amazonaws.secretsmanager#DecryptionFailure","message":"KMS denied"}"#,
        ),
        (400, r#"{"__type":"ExpiredTokenException"}"#),
    ]);
    let p = canned_provider(&endpoint);
    let e = p.fetch(&req("n", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("InvalidRequestException"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let e = p.fetch(&req("n", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
    assert!(e.to_string().contains("DecryptionFailure"), "{e}");
    let e = p.fetch(&req("n", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e:?}");
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

/// PCI-DSS 10.2.1 at the provider: moto's request recorder (what CloudTrail would keep) reads
/// back the workload in the User-Agent of every call made for it.
#[test]
fn the_user_agent_names_the_workload_in_motos_request_log() {
    if !require_moto() {
        return;
    }
    let m = moto();
    let port: u16 = m
        .endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("moto port");
    let (code, _) = http_request(port, "POST", "/moto-api/recorder/start-recording", &[]);
    assert_eq!(code, 200);
    let p = provider_with_key(m, &m.key("reader"));
    let mut r = req("plain/token", None, None);
    r.workload = Some("docker:billing-api".into());
    let f = dso::providers::fetch_for(&p, &r).expect("fetch");
    assert_eq!(f.value.expose(), b"tok-123");
    let _ = dso::providers::version_for(&p, &r);
    // Without a workload: dso's plain User-Agent.
    p.fetch(&req("app/db", Some("port"), None)).expect("fetch");
    let (_, recording) = http_request(port, "GET", "/moto-api/recorder/download-recording", &[]);
    let _ = http_request(port, "POST", "/moto-api/recorder/stop-recording", &[]);
    let entries: Vec<serde_json::Value> = recording
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ua_of = |target: &str, needle: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| {
                let h = &e["headers"];
                let body = e["body"].as_str().unwrap_or_default();
                let body = if e["body_encoded"] == true {
                    use base64::Engine;
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .unwrap_or_default();
                    String::from_utf8_lossy(&raw).into_owned()
                } else {
                    body.to_string()
                };
                h["X-Amz-Target"].as_str() == Some(target) && body.contains(needle)
            })
            .filter_map(|e| e["headers"]["User-Agent"].as_str().map(str::to_string))
            .collect()
    };
    let want = format!("dso/{} (docker:billing-api)", env!("CARGO_PKG_VERSION"));
    let with = ua_of("secretsmanager.GetSecretValue", "plain/token");
    assert!(
        !with.is_empty(),
        "no GetSecretValue for plain/token recorded: {recording}"
    );
    assert!(with.iter().all(|ua| *ua == want), "{with:?}");
    let described: Vec<String> = ua_of("secretsmanager.DescribeSecret", "plain/token")
        .into_iter()
        .chain(ua_of("secretsmanager.GetSecretValue", "plain/token"))
        .collect();
    assert!(described.iter().all(|ua| *ua == want), "{described:?}");
    let without = ua_of("secretsmanager.GetSecretValue", "app/db");
    assert!(
        without
            .iter()
            .any(|ua| *ua == format!("dso/{}", env!("CARGO_PKG_VERSION"))),
        "{without:?}"
    );
    assert!(
        !recording.contains("tok-123"),
        "a value in moto's request log"
    );
}

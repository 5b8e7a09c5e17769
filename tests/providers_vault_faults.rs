//! The Vault provider under faults a real server cannot produce on demand: connection resets
//! (before and in the middle of a body), stalls past the fetch timeout, bursts of 5xx, plus the
//! transport set-ups that need a server configured just so (plain http on loopback, a listener
//! that demands a client certificate). These use `tests/fakes/vault_fake.py` (checked against
//! the official client, hvac, in `fake_speaks_vault_per_hvac`). Everything about Vault's API
//! itself (KV v1/v2, policies, AppRole, namespaces, token renewal, dynamic secrets) is tested
//! against a real OpenBao server in `tests/providers_vault.rs`.
//!
//! Needs python3 (and hvac for the fake check): skipped locally when missing, fails under CI.

use dso_testkit::support;

use std::time::{Duration, Instant};

use dso::providers::{Provider, Reason};
use serde_json::json;
use support::{Fake, Pki, assert_clean, build, config, req};

const APP_TOKEN: &str = "s.apptoken-0123456789abcdef";
const DATA_ONLY_TOKEN: &str = "s.dataonly-5e6f7a8b9c";
const ROLE_ID: &str = "role-id-7f3a9c";
const SECRET_ID: &str = "secret-id-e81b44d0";
const VALUES: &[&str] = &["pw-v1", "pw-v2", "only-value", "legacy-value", "ns-pw"];

fn seed() -> serde_json::Value {
    json!({
        "mounts": {"secret": 2, "kv": 1},
        "secrets": {
            "secret": {
                "app/db": [{"password": "pw-v1", "user": "app"}, {"password": "pw-v2", "user": "app"}],
                "app/single": [{"value": "only-value"}],
                "app/cfg": [{"port": 5432, "nested": {"a": [1, 2]}, "name": "x"}],
                "other/x": [{"v": "forbidden-value"}]
            },
            "kv": {"legacy": {"token": "legacy-value"}}
        },
        "policies": {
            "app": "path \"secret/data/app/*\" { capabilities = [\"read\"] }\n\
                    path \"secret/metadata/app/*\" { capabilities = [\"read\"] }\n\
                    path \"kv/*\" { capabilities = [\"read\"] }",
            "dataonly": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"
        },
        "tokens": {
            APP_TOKEN: {"policies": ["app"], "ttl": 3600},
            DATA_ONLY_TOKEN: {"policies": ["dataonly"], "ttl": 3600}
        },
        "approles": {
            "web": {"role_id": ROLE_ID, "secret_id": SECRET_ID, "policies": ["app"], "ttl": 60},
            "short": {"role_id": "short-role", "secret_id": "short-secret", "policies": ["app"],
                      "ttl": 3, "max_ttl": 4}
        },
        "namespaces": {"team-a": {"secrets": {"secret": {"app/db": [{"password": "ns-pw"}]}}}}
    })
}

struct Env {
    pki: Pki,
    fake: Fake,
    token_file: std::path::PathBuf,
}

/// The fake over HTTPS (localhost cert from a test CA), seeded; `extra` fake args.
fn start(extra: &[&str]) -> Option<Env> {
    if !support::python_available(&[]) {
        return None;
    }
    let pki = Pki::new("dso vault test CA");
    let (cert, key) = pki.localhost();
    let seed_file = pki.file("seed.json", &seed().to_string());
    let mut args = vec![
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--seed",
        seed_file.to_str().unwrap(),
        "--root-token",
        "root-not-used-by-tests",
    ];
    args.extend_from_slice(extra);
    let fake = Fake::start("vault_fake.py", &args, 1, Some(&pki.ca_pem));
    let token_file = pki.file("vault.token", &format!("{APP_TOKEN}\n"));
    Some(Env {
        pki,
        fake,
        token_file,
    })
}

impl Env {
    fn token_entry(&self, extra: &str) -> String {
        format!(
            "{{ type: vault, address: '{}', ca_file: {}, auth: {{ method: token, token_file: {} }}{extra} }}",
            self.fake.https_url(),
            self.pki.ca_pem.display(),
            self.token_file.display()
        )
    }

    fn provider(&self, extra: &str, timeout: &str) -> Box<dyn Provider> {
        let cfg = config(&[("vault", self.token_entry(extra))], timeout);
        build(&cfg, "vault")
    }
}

fn text(v: &dso::secrets::SecretValue) -> String {
    String::from_utf8(v.expose().to_vec()).unwrap()
}

fn secrets_in_errors() -> Vec<&'static str> {
    let mut s = vec![APP_TOKEN, ROLE_ID, SECRET_ID, "forbidden-value"];
    s.extend_from_slice(VALUES);
    s
}

#[test]
fn fake_speaks_vault_per_hvac() {
    if !support::python_available(&["hvac", "requests"]) {
        return;
    }
    support::run_check("check_vault_fake.py", &Pki::new("hvac check CA"));
}

#[test]
fn plain_http_on_loopback() {
    if !support::python_available(&[]) {
        return;
    }
    let pki = Pki::new("unused");
    let seed_file = pki.file("seed.json", &seed().to_string());
    let fake = Fake::start(
        "vault_fake.py",
        &["--http", "--seed", seed_file.to_str().unwrap()],
        1,
        None,
    );
    let token = pki.file("t", APP_TOKEN);
    let entry = format!(
        "{{ type: vault, address: 'http://127.0.0.1:{}', auth: {{ token_file: {} }} }}",
        fake.port,
        token.display()
    );
    let p = build(&config(&[("vault", entry)], "5s"), "vault");
    assert_eq!(
        text(
            &p.fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "pw-v2"
    );
}

#[test]
fn mutual_tls_client_certificate() {
    if !support::python_available(&[]) {
        return;
    }
    let pki = Pki::new("mtls CA");
    let (cert, key) = pki.localhost();
    let (ccert, ckey) = pki.client("dso client");
    let seed_file = pki.file("seed.json", &seed().to_string());
    let fake = Fake::start(
        "vault_fake.py",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--client-ca",
            pki.ca_pem.to_str().unwrap(),
            "--seed",
            seed_file.to_str().unwrap(),
        ],
        1,
        Some(&pki.ca_pem),
    );
    let token = pki.file("t", APP_TOKEN);
    let base = format!(
        "type: vault, address: '{}', ca_file: {}, auth: {{ token_file: {} }}",
        fake.https_url(),
        pki.ca_pem.display(),
        token.display()
    );
    let with = format!(
        "{{ {base}, client_cert: {}, client_key: {} }}",
        ccert.display(),
        ckey.display()
    );
    let p = build(&config(&[("vault", with)], "5s"), "vault");
    assert_eq!(
        text(
            &p.fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "pw-v2"
    );
    let without = build(
        &config(&[("vault", format!("{{ {base} }}"))], "5s"),
        "vault",
    );
    let e = without.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(
        matches!(e.reason, Reason::Tls(_) | Reason::Unavailable(_)),
        "{e}"
    );
}

#[test]
fn provider_down_is_unavailable_fast() {
    let pki = Pki::new("down");
    let token = pki.file("t", APP_TOKEN);
    let entry = format!(
        "{{ type: vault, address: 'https://127.0.0.1:{}', ca_file: {}, auth: {{ token_file: {} }} }}",
        support::closed_port(),
        pki.ca_pem.display(),
        token.display()
    );
    let p = build(&config(&[("vault", entry)], "10s"), "vault");
    let started = Instant::now();
    let e = p.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("connect"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10), "not fast");
}

#[test]
fn slower_than_the_timeout_is_a_timeout() {
    let Some(env) = start(&["--slow", "5"]) else {
        return;
    };
    let p = env.provider("", "1s");
    let e = p.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Timeout(_)), "{e}");
}

#[test]
fn server_errors_are_retried_then_fail() {
    let Some(env) = start(&[]) else { return };
    let p = env.provider("", "10s");
    // A passing storm: two 500s, then success on the third attempt.
    env.fake.admin_post("/_fake/faults", json!({"fail500": 2}));
    assert_eq!(
        text(
            &p.fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "pw-v2"
    );
    // A lasting storm: three attempts, then an error that says so.
    env.fake
        .admin_post("/_fake/faults", json!({"fail500": 1000}));
    let before = env.fake.stats()["by_path"]["/v1/secret/data/app/db"]
        .as_u64()
        .unwrap();
    let e = p.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("500"), "{e}");
    let after = env.fake.stats()["by_path"]["/v1/secret/data/app/db"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 3, "attempts");
}

#[test]
fn connection_resets_fail_closed() {
    let Some(env) = start(&[]) else { return };
    let p = env.provider("", "10s");
    env.fake.admin_post("/_fake/faults", json!({"reset": 1000}));
    let e = p.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Unavailable(_)), "{e}");
    assert_clean(&format!("{e} {e:?}"), &secrets_in_errors());
    // One reset, then the retry gets through.
    env.fake.admin_post("/_fake/faults", json!({"reset": 1}));
    assert_eq!(
        text(
            &p.fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "pw-v2"
    );
}

/// The server sends its status, headers and half the body, then resets the connection: never a
/// partial value, an `Unavailable` error with no secret in it; the retry gets the whole value.
#[test]
fn connection_reset_mid_body_fails_closed() {
    let Some(env) = start(&[]) else { return };
    let p = env.provider("", "10s");
    env.fake.admin_post(
        "/_fake/faults",
        json!({"midbody": 1000, "only": "/v1/secret/"}),
    );
    let e = p.fetch(&req("app/db", Some("password"), None)).unwrap_err();
    // Cut while the body was being read, not before the answer.
    assert!(matches!(e.reason, Reason::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("reading the response"), "{e}");
    assert_clean(&format!("{e} {e:?}"), &secrets_in_errors());
    env.fake.admin_post(
        "/_fake/faults",
        json!({"midbody": 1, "only": "/v1/secret/"}),
    );
    assert_eq!(
        text(
            &p.fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "pw-v2"
    );
}

//! The Vault provider against `tests/fakes/vault_fake.py` over TLS with certificates made here,
//! through `dso::providers::build` + `fetch`, as the shim uses it. The fake itself is checked
//! against the official client (hvac) in `fake_speaks_vault_per_hvac`.
//!
//! Needs python3 (and hvac for the fake check): skipped locally when missing, fails under CI.

#[path = "fakes/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dso::providers::{Provider, ProviderError};
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

    fn approle_provider(&self, secret_id: &str) -> Box<dyn Provider> {
        let role = self.pki.file("role_id", ROLE_ID);
        let sid = self.pki.file("secret_id", secret_id);
        let entry = format!(
            "{{ type: vault, address: '{}', ca_file: {}, auth: {{ method: approle, role_id_file: {}, secret_id_file: {} }} }}",
            self.fake.https_url(),
            self.pki.ca_pem.display(),
            role.display(),
            sid.display()
        );
        build(&config(&[("vault", entry)], "5s"), "vault")
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
fn kv2_keys_whole_objects_versions_and_pins() {
    let Some(env) = start(&[]) else { return };
    let p = env.provider("", "5s");

    let f = p.fetch(&req("app/db", Some("password"), None)).unwrap();
    assert_eq!(text(&f.value), "pw-v2");
    assert_eq!(f.version.as_deref(), Some("2"));

    // No key, several fields: the whole data object as compact JSON.
    let f = p.fetch(&req("app/db", None, None)).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(f.value.expose()).unwrap(),
        json!({"password": "pw-v2", "user": "app"})
    );
    assert!(!f.value.expose().contains(&b' '));
    // No key, one field: its value.
    assert_eq!(
        text(&p.fetch(&req("app/single", None, None)).unwrap().value),
        "only-value"
    );
    // Non-string fields come as compact JSON.
    assert_eq!(
        text(&p.fetch(&req("app/cfg", Some("port"), None)).unwrap().value),
        "5432"
    );
    assert_eq!(
        text(
            &p.fetch(&req("app/cfg", Some("nested"), None))
                .unwrap()
                .value
        ),
        r#"{"a":[1,2]}"#
    );

    // A pinned version.
    let f = p
        .fetch(&req("app/db", Some("password"), Some("1")))
        .unwrap();
    assert_eq!(text(&f.value), "pw-v1");
    assert_eq!(f.version.as_deref(), Some("1"));

    // The cheap version check reads the metadata endpoint.
    assert_eq!(
        p.version(&req("app/db", Some("password"), None))
            .unwrap()
            .as_deref(),
        Some("2")
    );
    let stats = env.fake.stats();
    assert_eq!(stats["by_path"]["/v1/secret/metadata/app/db"], 1);
}

#[test]
fn kv1_mount() {
    let Some(env) = start(&[]) else { return };
    let p = env.provider(", mount: kv, kv_version: 1", "5s");
    let f = p.fetch(&req("legacy", Some("token"), None)).unwrap();
    assert_eq!(text(&f.value), "legacy-value");
    assert_eq!(f.version, None);
    assert_eq!(
        text(&p.fetch(&req("legacy", None, None)).unwrap().value),
        "legacy-value"
    );
    assert!(matches!(
        p.fetch(&req("nothing", None, None)),
        Err(ProviderError::NotFound { .. })
    ));
}

#[test]
fn missing_secret_version_and_key() {
    let Some(env) = start(&[]) else { return };
    let p = env.provider("", "5s");
    let e = p.fetch(&req("app/missing", None, None)).unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("app/missing"), "{e}");
    let e = p.fetch(&req("app/db", None, Some("9"))).unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e}");
    let e = p.fetch(&req("app/db", Some("nokey"), None)).unwrap_err();
    assert!(matches!(e, ProviderError::Key { .. }), "{e}");
    assert!(e.to_string().contains("nokey"), "{e}");
    assert_clean(&e.to_string(), &secrets_in_errors());
    // A path that would climb out of the mount is refused before any request.
    let e = p.fetch(&req("app/../../sys/raw", None, None)).unwrap_err();
    assert!(matches!(e, ProviderError::Config { .. }), "{e}");
}

#[test]
fn denied_paths_and_bad_tokens() {
    let Some(env) = start(&[]) else { return };
    let p = env.provider("", "5s");
    let e = p.fetch(&req("other/x", None, None)).unwrap_err();
    assert!(matches!(e, ProviderError::Denied { .. }), "{e}");
    assert!(e.to_string().contains("permission denied"), "{e}");
    assert_clean(&format!("{e} {e:?}"), &secrets_in_errors());

    std::fs::write(&env.token_file, "s.wrong-token-value\n").unwrap();
    let p = env.provider("", "5s");
    let e = p.fetch(&req("app/db", Some("password"), None)).unwrap_err();
    assert!(matches!(e, ProviderError::Denied { .. }), "{e}");
    assert_clean(&format!("{e} {e:?}"), &["s.wrong-token-value"]);
}

#[test]
fn approle_logs_in_once_for_concurrent_fetches() {
    let Some(env) = start(&[]) else { return };
    let p: Arc<dyn Provider> = Arc::from(env.approle_provider(SECRET_ID));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.fetch(&req("app/db", Some("password"), None)))
        })
        .collect();
    for t in threads {
        assert_eq!(text(&t.join().unwrap().unwrap().value), "pw-v2");
    }
    assert_eq!(env.fake.stats()["logins"], 1);

    let bad = env.approle_provider("not-the-secret-id");
    let e = bad.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(matches!(e, ProviderError::Denied { .. }), "{e}");
    assert!(e.to_string().contains("invalid role or secret ID"), "{e}");
    assert_clean(&format!("{e} {e:?}"), &["not-the-secret-id", ROLE_ID]);
}

#[test]
fn namespace_header_selects_the_namespace() {
    let Some(env) = start(&[]) else { return };
    let p = env.provider(", namespace: team-a", "5s");
    assert_eq!(
        text(
            &p.fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "ns-pw"
    );
}

#[test]
fn token_from_the_environment_value() {
    let Some(env) = start(&[]) else { return };
    // What from_config does with VAULT_TOKEN, without mutating this process's environment.
    let settings = dso::providers::vault::VaultSettings {
        address: env.fake.https_url(),
        mount: "secret".into(),
        kv_version: 2,
        namespace: None,
        auth: Default::default(),
        ca_file: Some(env.pki.ca_pem.clone()),
        client_cert: None,
        client_key: None,
    };
    let p = dso::providers::vault::VaultProvider::new(
        "vault",
        &settings,
        Some(zeroize::Zeroizing::new(APP_TOKEN.to_string())),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        text(
            &p.fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "pw-v2"
    );
    let none =
        dso::providers::vault::VaultProvider::new("vault", &settings, None, Duration::from_secs(5))
            .unwrap();
    let e = none.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(e.to_string().contains("VAULT_TOKEN"), "{e}");
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
        matches!(
            e,
            ProviderError::Tls { .. } | ProviderError::Unavailable { .. }
        ),
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
    assert!(matches!(e, ProviderError::Unavailable { .. }), "{e}");
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
    assert!(matches!(e, ProviderError::Timeout { .. }), "{e}");
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
    assert!(matches!(e, ProviderError::Unavailable { .. }), "{e}");
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
    assert!(matches!(e, ProviderError::Unavailable { .. }), "{e}");
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
    assert!(matches!(e, ProviderError::Unavailable { .. }), "{e}");
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

#[test]
fn untrusted_server_certificate_is_a_tls_error() {
    let Some(env) = start(&[]) else { return };
    let other = Pki::new("some other CA");
    let entry = format!(
        "{{ type: vault, address: '{}', ca_file: {}, auth: {{ token_file: {} }} }}",
        env.fake.https_url(),
        other.ca_pem.display(),
        env.token_file.display()
    );
    let p = build(&config(&[("vault", entry)], "5s"), "vault");
    let e = p.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(matches!(e, ProviderError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[test]
fn version_check_falls_back_when_metadata_is_denied() {
    let Some(env) = start(&[]) else { return };
    std::fs::write(&env.token_file, DATA_ONLY_TOKEN).unwrap();
    let p = env.provider("", "5s");
    for _ in 0..2 {
        assert_eq!(
            p.version(&req("app/db", None, None)).unwrap().as_deref(),
            Some("2")
        );
    }
    // Metadata was tried once, then left alone.
    let stats = env.fake.stats();
    assert_eq!(stats["by_path"]["/v1/secret/metadata/app/db"], 1, "{stats}");
    assert_eq!(stats["by_path"]["/v1/secret/data/app/db"], 2, "{stats}");
}

#[test]
fn session_renews_then_logs_in_again_at_max_ttl() {
    use dso::providers::vault::{Renewal, VaultAuthSettings, VaultProvider, VaultSettings};
    let Some(env) = start(&[]) else { return };
    let settings = VaultSettings {
        address: env.fake.https_url(),
        mount: "secret".into(),
        kv_version: 2,
        namespace: None,
        auth: VaultAuthSettings::Approle {
            role_id_file: env.pki.file("short_role", "short-role"),
            secret_id_file: Some(env.pki.file("short_secret", "short-secret")),
            mount: "approle".into(),
        },
        ca_file: Some(env.pki.ca_pem.clone()),
        client_cert: None,
        client_key: None,
    };
    let p = VaultProvider::new("vault", &settings, None, Duration::from_secs(5)).unwrap();
    assert_eq!(p.renew_if_needed().unwrap(), None, "no session yet");
    p.fetch(&req("app/db", Some("password"), None)).unwrap();
    assert_eq!(p.renew_if_needed().unwrap(), Some(Renewal::NotNeeded));
    // Two thirds of the 3 s TTL: renewed with renew-self (the max TTL leaves ~2 s).
    std::thread::sleep(Duration::from_millis(2100));
    let r = p.renew_if_needed().unwrap();
    let stats = env.fake.stats();
    assert_eq!(stats["renewals"], 1, "{stats}");
    // Either renewed, or (if the max TTL already cut the renewal short) logged in again.
    assert!(
        matches!(r, Some(Renewal::Renewed | Renewal::LoggedIn)),
        "{r:?}"
    );
    // Past the max TTL the token is dead; the session logs in again and fetching still works.
    std::thread::sleep(Duration::from_millis(2100));
    p.fetch(&req("app/db", Some("password"), None)).unwrap();
    assert!(env.fake.stats()["logins"].as_u64().unwrap() >= 2);
}

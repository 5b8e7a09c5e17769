//! Shared by the provider and TLS tests: certificates made at test time (rcgen), the Python
//! fakes started as child processes, and the "python3 or its packages are missing" policy
//! (skip locally, fail under `CI=true`). The fakes themselves are in tests/fakes/.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::FAKES_DIR;

/// True when `python3` runs and imports `modules`. Otherwise: panics under `CI=true`, else
/// prints why the test is skipped and returns false.
pub fn python_available(modules: &[&str]) -> bool {
    let code = if modules.is_empty() {
        "pass".to_string()
    } else {
        format!("import {}", modules.join(", "))
    };
    let why = match Command::new("python3").arg("-c").arg(&code).output() {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!(
            "python3 cannot import {modules:?} (pip install -r tests/requirements.txt): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("python3 not found: {e}"),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{why}");
    }
    dso::test_support::skipped(&why);
    false
}

/// Validity windows for generated certificates.
#[derive(Clone, Copy)]
pub enum Validity {
    Current,
    Expired,
}

/// A test CA and the certificates it signs, as PEM files in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    counter: std::cell::Cell<u32>,
}

impl Pki {
    pub fn new(ca_name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params
            .distinguished_name
            .push(DnType::CommonName, ca_name.to_string());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = params.self_signed(&ca_key).expect("ca cert");
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).expect("write ca");
        Pki {
            dir,
            ca_pem,
            ca_cert,
            ca_key,
            counter: std::cell::Cell::new(0),
        }
    }

    fn issue(
        &self,
        cn: &str,
        sans: &[&str],
        validity: Validity,
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, cn.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        match validity {
            Validity::Current => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2099, 1, 1);
            }
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
        }
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign");
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let cert_path = self.dir.path().join(format!("cert{n}.pem"));
        let key_path = self.dir.path().join(format!("key{n}.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    /// A server certificate for `sans` (DNS names or IP addresses).
    pub fn server(&self, sans: &[&str], validity: Validity) -> (PathBuf, PathBuf) {
        self.issue(
            sans.first().copied().unwrap_or("server"),
            sans,
            validity,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate for localhost and 127.0.0.1, valid now.
    pub fn localhost(&self) -> (PathBuf, PathBuf) {
        self.server(&["localhost", "127.0.0.1"], Validity::Current)
    }

    /// A client certificate for mutual TLS.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(
            cn,
            &[],
            Validity::Current,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// Writes `contents` to a file in the temp dir (mode 0600) and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        private_file(self.dir.path(), name, contents)
    }
}

/// A fake started from `tests/fakes/<script>`, killed on drop.
pub struct Fake {
    child: Child,
    /// The first port it printed (HTTPS unless started with `--http`).
    pub port: u16,
    /// Further ports it printed (e.g. the plain-http one of `--also-http`).
    pub more_ports: Vec<u16>,
    ca: Option<PathBuf>,
}

impl Fake {
    /// Starts the script and waits for it to print `ports` port lines.
    pub fn start(script: &str, args: &[&str], ports: usize, ca: Option<&Path>) -> Fake {
        let mut child = Command::new("python3")
            .arg(Path::new(FAKES_DIR).join(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut found = Vec::new();
        for _ in 0..ports {
            match lines.next() {
                Some(Ok(l)) => found.push(l.trim().parse::<u16>().expect("port line")),
                _ => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    let _ = child.kill();
                    panic!("{script} did not start: {err}");
                }
            }
        }
        Fake {
            child,
            port: found[0],
            more_ports: found[1..].to_vec(),
            ca: ca.map(Path::to_path_buf),
        }
    }

    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn admin_client(&self) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("read ca");
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("ca pem"));
        }
        b.build().expect("admin client")
    }

    fn admin_url(&self, path: &str) -> String {
        match self.ca {
            Some(_) => format!("https://localhost:{}{path}", self.port),
            None => format!("http://127.0.0.1:{}{path}", self.port),
        }
    }

    /// POST JSON to an admin endpoint (`/_fake/faults`, `/_fake/seed`).
    pub fn admin_post(&self, path: &str, body: serde_json::Value) {
        let resp = self
            .admin_client()
            .post(self.admin_url(path))
            .json(&body)
            .send()
            .expect("admin post");
        assert!(
            resp.status().is_success(),
            "admin {path}: {}",
            resp.status()
        );
    }

    /// `GET /_fake/stats`.
    pub fn stats(&self) -> serde_json::Value {
        self.admin_client()
            .get(self.admin_url("/_fake/stats"))
            .send()
            .expect("stats")
            .json()
            .expect("stats json")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `contents` to `dir/name` (mode 0600) and returns its path.
pub fn private_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&p)
        .expect("create file");
    std::io::Write::write_all(&mut f, contents.as_bytes()).expect("write file");
    p
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

/// Runs one of the `check_*_fake.py` scripts (official client libraries against a fake).
pub fn run_check(script: &str, pki: &Pki) {
    let (cert, key) = pki.localhost();
    let out = Command::new("python3")
        .arg(Path::new(FAKES_DIR).join(script))
        .arg("--ca")
        .arg(&pki.ca_pem)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The dso.yaml config for the given provider entries (YAML flow mappings), validated by the
/// real loader, with `runtime.fetch_timeout`.
pub fn config(providers: &[(&str, String)], timeout: &str) -> dso::config::Config {
    let mut yaml = String::from("providers:\n");
    for (name, entry) in providers {
        yaml.push_str(&format!("  {name}: {entry}\n"));
    }
    yaml.push_str(&format!("runtime: {{ fetch_timeout: {timeout} }}\n"));
    dso::config::Config::from_str_at(&yaml, Path::new("test-dso.yaml"))
        .unwrap_or_else(|e| panic!("config does not load: {e}\n{yaml}"))
}

/// Builds provider `name` from `cfg` through `dso::providers::build`.
pub fn build(cfg: &dso::config::Config, name: &str) -> Box<dyn dso::providers::Provider> {
    dso::providers::build(name, &cfg.providers[name], cfg)
        .unwrap_or_else(|e| panic!("build {name}: {e}"))
}

pub fn req(path: &str, key: Option<&str>, version: Option<&str>) -> dso::providers::FetchRequest {
    dso::providers::FetchRequest {
        path: path.to_string(),
        key: key.map(str::to_string),
        version: version.map(str::to_string),
        workload: None,
    }
}

/// Asserts that `text` mentions none of `secrets`.
pub fn assert_clean(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{s:?} leaked into {text:?}");
    }
}

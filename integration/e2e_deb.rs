//! The Debian package, for real: built with cargo-deb from the debug binaries the test build
//! already made (packaging/build-deb.sh --dev: no release build), installed with dpkg on this
//! machine, checked (paths, /etc/dso 0700, man pages, completions, unit), then used the way a
//! user would: `/usr/bin/dso install` registers `/usr/bin/dso-runc` with the harness's private
//! dockerd and a container receives its secrets; finally `dpkg --purge`. Needs root, dpkg and
//! cargo-deb (skipped elsewhere, a failure under `CI=true`). Refuses to run when a `dso`
//! package is already installed: it would be replaced and purged.

use dso_testkit::harness;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use harness::{Harness, IMAGE, dso_exe};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{key}=` line in:\n{out}"))
}

fn skip_or_fail(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("\n\n*** CI=true and the .deb test cannot run: {why} ***\n\n");
    }
    dso::test_support::skipped(why);
    false
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "dso"])
        .output()
        .is_ok_and(|o| text(&o.stdout).contains("install ok installed"))
}

fn can_run() -> bool {
    if !harness::require_root() {
        return false;
    }
    let has = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(Command::new("dpkg").arg("--version")) {
        return skip_or_fail("dpkg is not installed");
    }
    if !has(Command::new("cargo").args(["deb", "--version"])) {
        return skip_or_fail(
            "cargo-deb is not installed (scripts/install-deps.sh: cargo install cargo-deb --locked)",
        );
    }
    if package_installed() {
        return skip_or_fail(
            "a `dso` package is already installed on this machine; this test would replace and purge it",
        );
    }
    true
}

/// Purges the package when the test ends, whatever happened.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        match Command::new("dpkg").args(["--purge", "dso"]).output() {
            Ok(out) if !out.status.success() => {
                eprintln!("dpkg --purge dso failed: {}", text(&out.stderr))
            }
            Err(e) => eprintln!("cannot run dpkg --purge dso: {e}"),
            Ok(_) => {}
        }
    }
}

/// The cargo target dir the test binaries were built in (…/target/debug/dso → …/target).
fn target_dir() -> PathBuf {
    Path::new(dso_exe())
        .parent()
        .and_then(Path::parent)
        .expect("dso is built in <target>/debug")
        .to_path_buf()
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn deb_installs_registers_with_dockerd_delivers_a_secret_and_purges() {
    if !can_run() {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = target_dir();
    let out = Command::new(repo.join("packaging/build-deb.sh"))
        .arg("--dev")
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(repo)
        .output()
        .expect("running packaging/build-deb.sh");
    let built = ok("packaging/build-deb.sh --dev", &out);
    let deb = built
        .lines()
        .rev()
        .find(|l| l.trim().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("build-deb.sh printed no .deb path:\n{built}"));
    assert!(deb.is_file(), "{}", deb.display());

    // What the package holds: binaries, unit, man pages, completions, schema; no key material.
    let listing = ok(
        "dpkg-deb -c",
        &Command::new("dpkg-deb")
            .arg("-c")
            .arg(&deb)
            .output()
            .unwrap(),
    );
    for f in [
        "./usr/bin/dso",
        "./usr/bin/dso-runc",
        "./usr/bin/dso-init",
        "./lib/systemd/system/dso-agent.service",
        "./usr/share/man/man1/dso.1.gz",
        "./usr/share/man/man1/dso-install.1.gz",
        "./usr/share/bash-completion/completions/dso",
        "./usr/share/zsh/vendor-completions/_dso",
        "./usr/share/dso/dso.schema.json",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(f)),
            "{f} not in the package:\n{listing}"
        );
    }
    for forbidden in [".key", ".vault", "./etc/"] {
        assert!(
            !listing.lines().any(|l| l.contains(forbidden)),
            "the package ships {forbidden}:\n{listing}"
        );
    }

    let _purge = Purge;
    let out = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    ok("dpkg -i", &out);
    for bin in ["/usr/bin/dso", "/usr/bin/dso-runc", "/usr/bin/dso-init"] {
        let m = fs::metadata(bin).unwrap_or_else(|e| panic!("{bin}: {e}"));
        assert_eq!(m.permissions().mode() & 0o777, 0o755, "{bin}");
    }
    let etc = fs::metadata("/etc/dso").expect("/etc/dso created");
    assert!(etc.is_dir());
    assert_eq!(etc.permissions().mode() & 0o777, 0o700, "/etc/dso mode");
    let version = ok(
        "/usr/bin/dso --version",
        &Command::new("/usr/bin/dso")
            .arg("--version")
            .output()
            .unwrap(),
    );
    assert!(version.starts_with("dso "), "{version}");

    // The installed binaries, registered with the harness's dockerd by the installed CLI.
    let h = Harness::get();
    let _serial = h.serial();
    let file_value = harness::random_token("deb-file-");
    let env_value = harness::random_token("deb-env-");
    h.set_secret("db_password", file_value.as_bytes());
    h.set_secret("api_key", env_value.as_bytes());
    let dockerd_flags = [
        "--daemon-json".to_string(),
        h.dir().join("daemon.json").display().to_string(),
        "--dockerd-pidfile".to_string(),
        h.dir().join("dockerd.pid").display().to_string(),
        "--docker-host".to_string(),
        format!("unix://{}", h.socket().display()),
    ];
    let installed_dso = |args: &[&str]| -> Output {
        Command::new("/usr/bin/dso")
            .arg("--config")
            .arg(h.config_path())
            .args(args)
            .args(&dockerd_flags)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    ok(
        "/usr/bin/dso install",
        &installed_dso(&["install", "--name", "dso-deb"]),
    );
    let daemon_json: serde_json::Value =
        serde_json::from_slice(&fs::read(h.dir().join("daemon.json")).unwrap()).unwrap();
    assert_eq!(
        daemon_json["runtimes"]["dso-deb"]["path"], "/usr/bin/dso-runc",
        "{daemon_json}"
    );
    let run = h.docker(&[
        "run",
        "--rm",
        "--runtime",
        "dso-deb",
        "--network",
        "none",
        "-e",
        "API_KEY=dso://api_key",
        "-e",
        "DB_PASSWORD_FILE=dsofile://db_password",
        IMAGE,
        "sh",
        "-c",
        "echo env=$API_KEY; echo file=$(cat $DB_PASSWORD_FILE)",
    ]);
    let printed = ok("docker run --runtime dso-deb", &run);
    assert_eq!(field(&printed, "env"), env_value);
    assert_eq!(field(&printed, "file"), file_value);
    ok(
        "/usr/bin/dso uninstall",
        &installed_dso(&["uninstall", "--name", "dso-deb"]),
    );

    drop(_purge);
    assert!(!package_installed(), "dso still installed after purge");
    assert!(!Path::new("/usr/bin/dso-runc").exists());
}

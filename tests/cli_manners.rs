//! The `dso` binary's manners: `--help` with examples on every command, `--version`, exit
//! codes, shell completions and man pages generated from the CLI definition, the config
//! reference in docs/ current, and every dso.yaml example in runtime-config/ accepted by
//! `dso config validate` and pointing editors at the schema.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const DSO: &str = env!("CARGO_BIN_EXE_dso");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn dso(args: &[&str]) -> Output {
    Command::new(DSO)
        .args(args)
        .env_remove("DSO_CONFIG")
        .output()
        .expect("running dso")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every command path (`["secret", "set"]`, ...), read from the man pages dso generates.
fn command_paths() -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let out = dso(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut paths: Vec<Vec<String>> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".1").map(String::from))
        .map(|n| n.split('-').skip(1).map(String::from).collect())
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_command_has_help_with_examples() {
    let paths = command_paths();
    for required in [
        vec!["install"],
        vec!["uninstall"],
        vec!["doctor"],
        vec!["secret", "set"],
        vec!["config", "validate"],
        vec!["completions"],
        vec!["man"],
    ] {
        assert!(
            paths.iter().any(|p| *p == required),
            "{required:?} missing from {paths:?}"
        );
    }
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = dso(&args);
        assert_eq!(out.status.code(), Some(0), "dso {args:?}");
        let help = stdout(&out);
        assert!(
            help.contains("Examples:"),
            "dso {args:?} has no examples:\n{help}"
        );
    }
    let root = stdout(&dso(&["--help"]));
    assert!(root.contains("Exit status:"), "{root}");
}

#[test]
fn version_and_exit_codes() {
    let out = dso(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), format!("dso {}\n", env!("CARGO_PKG_VERSION")));
    // Usage errors exit 2; failures exit 1 with one line that says what to do.
    assert_eq!(dso(&["--no-such-flag"]).status.code(), Some(2));
    let out = dso(&["--config", "/nonexistent/dso.yaml", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("dso: ") && err.contains("dso init"),
        "{err}"
    );
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef dso"),
        ("fish", "complete -c dso"),
    ] {
        let out = dso(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("doctor"),
            "{shell} completions lack subcommands"
        );
    }
}

#[test]
fn config_reference_on_disk_is_what_the_cli_prints() {
    let out = dso(&["config", "reference"]);
    assert!(out.status.success());
    let on_disk = fs::read_to_string(Path::new(REPO).join("docs/config-reference.md")).unwrap();
    assert!(
        stdout(&out) == on_disk,
        "docs/config-reference.md is stale: run `dso config reference > docs/config-reference.md`"
    );
    let schema = stdout(&dso(&["config", "schema"]));
    let shipped =
        fs::read_to_string(Path::new(REPO).join("runtime-config/dso.schema.json")).unwrap();
    assert_eq!(schema, shipped);
}

#[test]
fn runtime_config_examples_pass_dso_config_validate() {
    let dir = Path::new(REPO).join("runtime-config/examples");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = dso(&["--config", path.to_str().unwrap(), "config", "validate"]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let first = fs::read_to_string(&path).unwrap();
        assert!(
            first.starts_with("# yaml-language-server: $schema=../dso.schema.json\n"),
            "{} does not name the schema on its first line",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} examples found");
    // The daemon.json snippet is valid JSON registering dso-runc.
    let dj: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(Path::new(REPO).join("runtime-config/daemon.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dj["runtimes"]["dso"]["path"], "/usr/bin/dso-runc");
}

#[test]
fn install_sh_stages_binaries_docs_and_a_private_etc_dso() {
    let bin_dir = Path::new(DSO).parent().unwrap();
    let stage = tempfile::tempdir().unwrap();
    let out = Command::new(Path::new(REPO).join("packaging/install.sh"))
        .arg("--from")
        .arg(bin_dir)
        .args(["--prefix", "/opt/dso"])
        .arg("--destdir")
        .arg(stage.path())
        .output()
        .expect("running packaging/install.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = stage.path();
    for f in [
        "opt/dso/bin/dso",
        "opt/dso/bin/dso-runc",
        "opt/dso/bin/dso-init",
        "opt/dso/share/man/man1/dso-doctor.1",
        "opt/dso/share/bash-completion/completions/dso",
        "opt/dso/share/dso/dso.schema.json",
    ] {
        assert!(s.join(f).is_file(), "{f} not installed");
    }
    let unit = fs::read_to_string(s.join("etc/systemd/system/dso-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/dso/bin/dso agent"), "{unit}");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(s.join("etc/dso"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(
        fs::read_dir(s.join("etc/dso")).unwrap().count(),
        0,
        "no key material"
    );
}

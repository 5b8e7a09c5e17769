//! The quick start of README.md and docs/install.md, run exactly as written: the shell block
//! that follows `<!-- quickstart -->` in each (the two must be the same) is extracted and run
//! by bash, not retyped here. It runs as a new user's would, with dso's default paths
//! (/etc/dso, /var/lib/dso, /run/dso), which this test makes private: the test's thread enters
//! a mount namespace of its own with a tmpfs on each, and starts the harness's private dockerd
//! from there, so dockerd, its shims and dso-runc see the same files and the host's are never
//! touched. `dso` on PATH is this build; `busybox` is the harness's imported image under that
//! name; `docker` talks to the private dockerd, whose runtime `dso` is dso-runc with the
//! default config path (what `dso install` registers). Its own test binary: the mount
//! namespace and the dockerd belong to this test alone. Needs root, dockerd, runc and
//! busybox-static (skipped elsewhere, a failure under `CI=true`).

use dso_testkit::harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directories the quick start writes to with dso's defaults.
const PRIVATE_DIRS: [&str; 4] = ["/etc/dso", "/var/lib/dso", "/run/dso", "/var/log/dso"];
const MARKER: &str = "<!-- quickstart -->";

/// The body of the ```sh block right after the marker line.
fn quickstart_block(doc: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let after = text
        .split_once(MARKER)
        .unwrap_or_else(|| panic!("{doc} has no {MARKER} line"))
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .unwrap_or_else(|| panic!("{doc}: {MARKER} is not followed by a ```sh block"));
    let end = body
        .find("\n```")
        .unwrap_or_else(|| panic!("{doc}: the quickstart block is not closed"));
    body[..=end].to_string()
}

/// The directories made on the host as mount points; unmounted (in this thread's namespace)
/// and removed on drop, also when the test fails.
struct MountPoints(Vec<PathBuf>);

impl Drop for MountPoints {
    fn drop(&mut self) {
        for dir in PRIVATE_DIRS {
            let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        }
        for dir in &self.0 {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Enters a new mount namespace (this thread and what it starts from now on) with a tmpfs on
/// each of [`PRIVATE_DIRS`].
fn private_default_dirs() -> MountPoints {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("making / private in the new namespace");
    let mut created = MountPoints(Vec::new());
    for dir in PRIVATE_DIRS {
        let dir = Path::new(dir);
        if !dir.exists() {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            created.0.push(dir.to_path_buf());
        }
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700,size=16m"),
        )
        .unwrap_or_else(|e| panic!("tmpfs on {}: {e}", dir.display()));
    }
    created
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn the_quickstart_of_the_docs_works_as_written() {
    let readme = quickstart_block("README.md");
    let install = quickstart_block("docs/install.md");
    assert_eq!(
        readme, install,
        "README.md and docs/install.md must give the same quick start"
    );
    if !harness::require_root() {
        return;
    }
    let _mount_points = private_default_dirs();
    // What `dso install` registers: dso-runc, reading the default /etc/dso/dso.yaml.
    harness::DAEMON_EXTRA
        .set(serde_json::json!({
            "runtimes": { "dso": { "path": harness::dso_runc_exe() } }
        }))
        .unwrap();
    let h = harness::Harness::get();
    let _serial = h.serial();
    h.docker_ok(&["tag", harness::IMAGE, "busybox:latest"]);

    let bin_dir = Path::new(harness::dso_exe()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &readme])
        .env("PATH", path)
        .env("DOCKER_HOST", format!("unix://{}", h.socket().display()))
        .env("DOCKER_CONFIG", h.dir().join("docker-cli"))
        .env_remove("DSO_CONFIG")
        .current_dir(h.dir())
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "the quick start failed ({}):\n--- block\n{readme}--- stdout\n{stdout}--- stderr\n{stderr}--- dockerd\n{}",
        out.status,
        h.dockerd_log_tail(20)
    );
    assert!(out.status.success(), "{report}");
    // The container printed the secret; the config declares it with its grant.
    assert!(
        stdout.ends_with("\ncorrect horse battery staple"),
        "{report}"
    );
    let config = fs::read_to_string("/etc/dso/dso.yaml").unwrap();
    assert!(
        config.contains(
            "  db_password: { provider: \"local\", allow: [ {docker: {name: \"quickstart\"}} ] }\n"
        ),
        "{config}"
    );
}

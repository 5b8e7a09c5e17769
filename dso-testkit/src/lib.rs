//! What dso's test binaries share (tests/*.rs and integration/*.rs): the real-runc lab, the
//! private dockerd harness, OpenBao and PostgreSQL, and the fake provider servers.

pub mod aws_support;
pub mod bao;
pub mod harness;
pub mod runc_lab;
pub mod support;

use std::path::PathBuf;
use std::sync::OnceLock;

/// The path of dso's binary `name`: cargo builds a package's binaries before its integration
/// tests, next to the `deps/` dir that holds the test executable.
fn built_bin(cell: &'static OnceLock<String>, name: &str) -> &'static str {
    cell.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe.parent().and_then(|deps| deps.parent());
        let path: PathBuf = dir.expect("target/<profile>/deps").join(name);
        assert!(path.exists(), "{} is not built", path.display());
        path.to_string_lossy().into_owned()
    })
}

/// `dso-runc`, as cargo built it for this test run.
pub fn dso_runc_exe() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    built_bin(&PATH, "dso-runc")
}

/// `dso`, as cargo built it for this test run.
pub fn dso_exe() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    built_bin(&PATH, "dso")
}

/// The Python fakes and their checks (tests/fakes/*.py).
pub const FAKES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fakes");

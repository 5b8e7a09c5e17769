//! Builds `dso-init` (init/dso-init.rs) next to the other binaries (target/<profile>/).
//!
//! dso-init runs as PID 1 in containers that may have no libc at all (`FROM scratch`), so it is
//! a `no_std` binary with no dependencies, linked as a classic static executable against
//! glibc's static archive. A `no_std` binary cannot unwind, while the agent must (a panic in one
//! connection must not abort it: issue 14 point 14); Cargo has one `panic` setting per profile
//! for the whole package, so dso-init is not a Cargo target but compiled here, with Cargo's own
//! rustc, `-C panic=abort`, and copied beside dso-runc, where dso-runc looks for it.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "init/dso-init.rs";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-changed=build.rs");
    if let Err(e) = build_init() {
        // A build script's panic is how Cargo reports a failed step.
        panic!("building dso-init: {e}");
    }
}

fn build_init() -> Result<(), String> {
    let var = |name: &str| env::var(name).map_err(|e| format!("${name}: {e}"));
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let rustc = var("RUSTC")?;
    let target = var("TARGET")?;
    // Optimised in every profile: it is small, and it runs before every env-ref container's
    // command.
    let built = out_dir.join("dso-init");
    let mut cmd = Command::new(&rustc);
    cmd.args([
        "--edition",
        "2024",
        "--crate-type",
        "bin",
        "--crate-name",
        "dso_init",
    ])
    .args(["--target", &target])
    .args([
        "-C",
        "panic=abort",
        "-C",
        "opt-level=2",
        "-C",
        "debuginfo=0",
        "-C",
        "strip=symbols",
    ])
    .args(["-D", "warnings"]);
    // rustc links std-less binaries with `-nodefaultlibs` and `-pie`; ask for a classic static
    // executable and pull libc from its static archive.
    let glibc: &[&str] = &[
        "-no-pie",
        "-static",
        "-Wl,-Bstatic",
        "-Wl,--start-group",
        "-lc",
        "-lgcc",
        "-lgcc_eh",
        "-Wl,--end-group",
    ];
    // musl's target links statically by itself, from its own crt and libc.
    let musl: &[&str] = &["-lc"];
    for arg in if target.contains("musl") { musl } else { glibc } {
        cmd.arg("-C").arg(format!("link-arg={arg}"));
    }
    cmd.arg("-o").arg(&built).arg(SOURCE);
    let status = cmd.status().map_err(|e| format!("running {rustc}: {e}"))?;
    if !status.success() {
        return Err(format!("{rustc} failed ({status})"));
    }
    // OUT_DIR is target/<profile>/build/dso-<hash>/out: the binaries live three levels up.
    let bin_dir: &Path = out_dir
        .ancestors()
        .nth(3)
        .ok_or_else(|| format!("unexpected OUT_DIR {}", out_dir.display()))?;
    let dest = bin_dir.join("dso-init");
    // Replace, not overwrite in place: a running container may have the old one bind-mounted.
    let tmp = bin_dir.join(".dso-init.tmp");
    std::fs::copy(&built, &tmp).map_err(|e| format!("copying to {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &dest).map_err(|e| format!("renaming to {}: {e}", dest.display()))?;
    Ok(())
}

//! The `dso-runc` shim: every runc call is exec'd straight through to the delegate, except a
//! `create`/`run` whose spec has secret references: those get their secrets fetched, the spec
//! rewritten (tmpfs, file paths, dso-init), runc's create, and the secrets injected, by `dso`
//! ([`create_main`]) or by the running agent ([`handoff`]).

pub mod arena;
pub mod argv;
mod create;
pub mod delegate;
pub mod handoff;
pub mod inject;
pub mod modify;
pub mod runclog;
pub mod spec;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use argv::Invocation;
use delegate::{Delegate, Runc};
use runclog::RuncLog;
use spec::Spec;

pub use create::{CreateError, init_location};

/// The hidden `dso` subcommand that runs a create with secrets (see [`main`]).
pub const CREATE_ENTRY: &str = "__dso-runc-create";

/// `dso-runc`: runs with the whole argv (argv[0] included); returns the exit code on failure
/// (on success it has exec'd).
///
/// This path is kept thin on purpose: it is on every runc call Docker makes. It reads argv and,
/// for `create`/`run` only, scans config.json for references; then it execs runc, or — when
/// there are references — hands the create to the running agent ([`handoff`]) or, without one,
/// execs `dso` (next to this executable) to do the heavy work. So the providers, TLS stack and
/// config schema are never even loaded for a passthrough call.
pub fn main(args: Vec<OsString>) -> i32 {
    let inv = match Invocation::parse(args.iter().skip(1).cloned()) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("dso: {e}");
            return 2;
        }
    };
    let delegate = Runc::resolve(&inv);
    let log = RuncLog::from_invocation(&inv);
    if inv.is_create_or_run() {
        let refs = inv
            .bundle_dir()
            .map_err(|e| format!("cannot find the bundle: {e}"))
            .and_then(|b| spec::has_references(&b).map_err(|e| e.to_string()));
        match refs {
            Ok(false) => {}
            Ok(true) => {
                // A running agent for this dso.yaml does the work without an exec of dso.
                if let Some(code) = handoff::offer(&inv, &delegate, &log) {
                    return code;
                }
                let dso = std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|d| d.join("dso")))
                    .unwrap_or_else(|| "/usr/bin/dso".into());
                let err = std::process::Command::new(&dso)
                    .arg(CREATE_ENTRY)
                    .args(&args[1..])
                    .exec();
                log.error(&format!("dso: cannot run {}: {err}", dso.display()));
                return 127;
            }
            Err(msg) => {
                log.error(&format!("dso: {msg}"));
                return 1;
            }
        }
    }
    let err = delegate.exec(&inv.args);
    log.error(&format!("dso: cannot run {:?}: {err}", delegate.0));
    127
}

/// `dso __dso-runc-create <runc argv>`: a `create`/`run` whose spec has references.
pub fn create_main(args: Vec<OsString>) -> i32 {
    let inv = match Invocation::parse(args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("dso: {e}");
            return 2;
        }
    };
    let delegate = Runc::resolve(&inv);
    let log = RuncLog::from_invocation(&inv);
    let spec = match inv
        .bundle_dir()
        .map_err(|e| format!("cannot find the bundle: {e}"))
        .and_then(|b| Spec::load(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(msg) => {
            log.error(&format!("dso: {msg}"));
            return 1;
        }
    };
    if !spec.has_own_references() {
        let err = delegate.exec(&inv.args);
        log.error(&format!("dso: cannot run {:?}: {err}", delegate.0));
        return 127;
    }
    log.install_tracing();
    match create::create_with_secrets(&inv, &delegate, spec, &log) {
        Ok(code) => code,
        Err(e) => {
            log.error(&format!("dso: {e}"));
            1
        }
    }
}

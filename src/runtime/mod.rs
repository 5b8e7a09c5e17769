//! The `dso-runc` shim: every runc call is exec'd straight through to the delegate, except a
//! `create`/`run` whose spec has secret references: those get their secrets fetched, the spec
//! rewritten (tmpfs, file paths, dso-init), runc's create, and the secrets injected.

pub mod argv;
mod create;
pub mod delegate;
pub mod inject;
pub mod modify;
pub mod runclog;
pub mod spec;

use std::ffi::OsString;

use argv::Invocation;
use runclog::RuncLog;
use spec::Spec;

pub use create::{CreateError, StateRecord};

/// Runs dso-runc with the whole argv (argv[0] included); returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let inv = match Invocation::parse(args.into_iter().skip(1)) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("dso: {e}");
            return 2;
        }
    };
    let delegate = delegate::resolve(&inv);
    let passthrough = |inv: &Invocation| -> i32 {
        let err = delegate::exec(&delegate, &inv.args);
        RuncLog::from_invocation(inv).error(&format!("dso: cannot run {delegate:?}: {err}"));
        127
    };
    if !inv.is_create_or_run() {
        return passthrough(&inv);
    }

    let log = RuncLog::from_invocation(&inv);
    let spec = match inv
        .bundle_dir()
        .map_err(|e| e.to_string())
        .and_then(|b| Spec::load(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(msg) => {
            log.error(&format!("dso: {msg}"));
            return 1;
        }
    };
    let annotations = spec.annotations();
    let env = spec.env();
    if !crate::secrets::has_refs(
        env.iter().map(String::as_str),
        annotations.keys().map(String::as_str),
    ) {
        return passthrough(&inv);
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

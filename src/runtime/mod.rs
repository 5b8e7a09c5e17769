//! The `dso-runc` shim: pass everything through to the delegate runtime except `create`/`run`
//! with secret references, which get a rewritten spec and their secrets injected.

pub mod argv;

use std::ffi::OsString;

/// Runs dso-runc; returns the exit code.
pub fn main(_args: Vec<OsString>) -> i32 {
    1
}

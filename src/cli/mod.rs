//! The `dso` command line: local store (`secret`), `init`, `config validate`.

use std::ffi::OsString;

/// Runs the `dso` CLI; returns the process exit code.
pub fn main(_args: Vec<OsString>) -> i32 {
    0
}

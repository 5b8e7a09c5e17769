//! dso: a secrets-injecting OCI runtime. `dso-runc` wraps runc (see [`runtime`]), `dso` is the
//! CLI (see [`cli`]), `dso-init` runs inside containers for env injection.
//!
//! No `unsafe` here but the documented spots that have no safe wrapper (each
//! `#[allow(unsafe_code)]` with a `SAFETY:` comment); `init/dso-init.rs` is not part of this
//! crate (see its own header).
#![deny(unsafe_code)]

pub mod agent;
pub mod atomic_file;
pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod engine;
/// The fuzz targets' entry points: built only with the `fuzzing` feature (fuzz/ and
/// tests/fuzz_regressions.rs), never in the runtime's own build.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod keyring;
pub mod policy;
pub mod providers;
pub mod rotation;
pub mod runtime;
pub mod secrets;
pub mod state;
#[doc(hidden)]
pub mod test_support;
pub mod trust;

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
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod keyring;
pub mod policy;
pub mod providers;
pub mod rotation;
pub mod runtime;
pub mod secrets;
#[doc(hidden)]
pub mod test_support;
pub mod trust;

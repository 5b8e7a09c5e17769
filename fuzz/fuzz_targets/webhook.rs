#![no_main]
//! Fuzz target `webhook`: see `dso::fuzzing::webhook_request` for the input shape and what it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dso::fuzzing::webhook_request(data));

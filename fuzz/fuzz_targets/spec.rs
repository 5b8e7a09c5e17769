#![no_main]
//! Fuzz target `spec`: see `dso::fuzzing::spec` for the input shape and what it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dso::fuzzing::spec(data));

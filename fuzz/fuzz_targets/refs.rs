#![no_main]
//! Fuzz target `refs`: see `dso::fuzzing::refs` for the input shape and what it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dso::fuzzing::refs(data));

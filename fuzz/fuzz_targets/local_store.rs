#![no_main]
//! Fuzz target `local_store`: see `dso::fuzzing::local_store` for the input shape and what it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dso::fuzzing::local_store(data));

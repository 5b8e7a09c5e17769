#![no_main]
//! Fuzz target `config`: see `dso::fuzzing::config` for the input shape and what it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dso::fuzzing::config(data));

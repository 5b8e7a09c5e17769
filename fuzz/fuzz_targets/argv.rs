#![no_main]
//! Fuzz target `argv`: see `dso::fuzzing::argv` for the input shape and what it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dso::fuzzing::argv(data));

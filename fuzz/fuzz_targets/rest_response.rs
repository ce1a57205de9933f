#![no_main]
//! `cargo +nightly fuzz run rest_response`: see `arcane_sources::fuzzing::rest_response`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::rest_response(data));

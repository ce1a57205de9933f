#![no_main]
//! `cargo +nightly fuzz run copy_binary`: see `arcane_sources::fuzzing::copy_binary`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::copy_binary(data));

#![no_main]
//! `cargo +nightly fuzz run pgoutput`: see `arcane_sources::fuzzing::pgoutput`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::pgoutput(data));

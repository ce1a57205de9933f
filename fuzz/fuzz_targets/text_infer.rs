#![no_main]
//! `cargo +nightly fuzz run text_infer`: see `arcane_sources::fuzzing::text_infer`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::text_infer(data));

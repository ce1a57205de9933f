#![no_main]
//! `cargo +nightly fuzz run csv_fast`: see `arcane_sources::fuzzing::csv_fast`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::csv_fast(data));

#![no_main]
//! `cargo +nightly fuzz run ndjson_decoder`: see `arcane_sources::fuzzing::ndjson_decoder`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::ndjson_decoder(data));

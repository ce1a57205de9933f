#![no_main]
//! `cargo +nightly fuzz run ndjson_fast`: see `arcane_sources::fuzzing::ndjson_fast`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::ndjson_fast(data));

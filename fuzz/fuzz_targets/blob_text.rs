#![no_main]
//! `cargo +nightly fuzz run blob_text`: see `arcane_sources::fuzzing::blob_text`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::blob_text(data));

#![no_main]
//! `cargo +nightly fuzz run cloudevents`: see `arcane_sources::fuzzing::cloudevents`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arcane_sources::fuzzing::cloudevents(data));

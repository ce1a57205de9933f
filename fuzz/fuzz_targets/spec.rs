#![no_main]
//! `cargo +nightly fuzz run spec`: a stream spec of each kind parsed, validated and built as
//! the `arcane` binary does (see `fuzz/harness/spec.rs`).

use libfuzzer_sys::fuzz_target;

#[path = "../harness/spec.rs"]
mod spec;

fuzz_target!(|data: &[u8]| spec::check_spec(data));

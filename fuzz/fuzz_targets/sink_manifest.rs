#![no_main]
//! `cargo +nightly fuzz run sink_manifest`: see `arcane_sinks::fuzzing::sink_manifest`; the
//! checkpoints of a manifest that could be read are also decoded as each source's position.

use libfuzzer_sys::fuzz_target;

#[path = "../harness/positions.rs"]
mod positions;

fuzz_target!(|data: &[u8]| {
    if let Some(manifest) = arcane_sinks::fuzzing::sink_manifest(data) {
        positions::decode_checkpoints(&manifest);
    }
});

//! The committed fuzz corpora of the `spec` and `sink_manifest` targets
//! (`fuzz/corpus/<target>/`) replayed through the targets' own harnesses on the stable
//! toolchain, so the test suite checks them without nightly or libFuzzer.

use arcane_test_support::fuzz_corpus::replay;

#[path = "../../fuzz/harness/spec.rs"]
mod spec;

#[path = "../../fuzz/harness/positions.rs"]
mod positions;

#[test]
fn spec_corpus_replays() {
    replay("spec", spec::check_spec);
}

#[test]
fn sink_manifest_corpus_replays() {
    replay("sink_manifest", |data| {
        if let Some(manifest) = arcane_sinks::fuzzing::sink_manifest(data) {
            positions::decode_checkpoints(&manifest);
        }
    });
}

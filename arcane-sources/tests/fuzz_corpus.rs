//! The committed fuzz corpora (`fuzz/corpus/<target>/`, minimized seeds and every input that
//! once crashed a target) replayed through the targets' entry points
//! (`arcane_sources::fuzzing`, feature `fuzzing`) on the stable toolchain, so the test suite
//! checks them without nightly or libFuzzer.

use arcane_test_support::fuzz_corpus::replay;

#[test]
fn ndjson_decoder_corpus_replays() {
    replay("ndjson_decoder", arcane_sources::fuzzing::ndjson_decoder);
}

#[test]
fn ndjson_fast_corpus_replays() {
    replay("ndjson_fast", arcane_sources::fuzzing::ndjson_fast);
}

#[test]
fn csv_fast_corpus_replays() {
    replay("csv_fast", arcane_sources::fuzzing::csv_fast);
}

#[test]
fn text_infer_corpus_replays() {
    replay("text_infer", arcane_sources::fuzzing::text_infer);
}

#[test]
fn blob_text_corpus_replays() {
    replay("blob_text", arcane_sources::fuzzing::blob_text);
}

#[test]
fn pgoutput_corpus_replays() {
    replay("pgoutput", arcane_sources::fuzzing::pgoutput);
}

#[test]
fn rest_response_corpus_replays() {
    replay("rest_response", arcane_sources::fuzzing::rest_response);
}

#[test]
fn copy_binary_corpus_replays() {
    replay("copy_binary", arcane_sources::fuzzing::copy_binary);
}

#[test]
fn cloudevents_corpus_replays() {
    replay("cloudevents", arcane_sources::fuzzing::cloudevents);
}

//! A stream's spec as the `arcane` binary reads it: `StreamContext::spec` into the kind's
//! `KindSpec` (errors name the JSON path), then the kind's graph builder, which validates the
//! sink and source settings (`validate()`, group limits) and builds the source and sink.
//! Errors are fine, panics are not. Byte 0 picks the kind; the rest is the spec's JSON.
//!
//! Shared by the `spec` fuzz target and `arcane-cli/tests/fuzz_corpus.rs`.

use arcane_cli::kinds::{
    BlobLanding, Generator, Mqtt, NatsJetStream, PostgresCdc, RabbitMq, RestApi,
};
use arcane_cli::{BuiltinKind, KindSpec, SourceKind};
use arcane_core::{StreamContext, StreamGraphBuilder};
use serde_json::Value;

/// URL schemes that name no local directory (a sink on a local one is created by the build).
const REMOTE: [&str; 10] = [
    "memory:", "s3:", "s3a:", "az:", "adl:", "azure:", "abfs:", "abfss:", "gs:", "http",
];

/// Check one input.
pub(crate) fn check_spec(data: &[u8]) {
    let Some((&kind, spec)) = data.split_first() else {
        return;
    };
    let Ok(spec) = serde_json::from_slice::<Value>(spec) else {
        return;
    };
    match kind % 7 {
        0 => build(BlobLanding, spec),
        1 => build(Generator, spec),
        2 => build(RestApi, spec),
        3 => build(NatsJetStream, spec),
        4 => build(RabbitMq, spec),
        5 => build(Mqtt, spec),
        _ => build(PostgresCdc, spec),
    }
}

/// A sink URL that would create a local directory is parsed as given, then replaced by an
/// in-memory one (the build must not write to the machine's file system).
fn keep_off_disk(url: &mut String, field: &str) {
    if !REMOTE.iter().any(|r| url.starts_with(r)) {
        let _ = arcane_core::location::location_url(url, field);
        *url = "memory://arcane-fuzz-spec/dataset".into();
    }
}

fn build<K: SourceKind>(kind: K, spec: Value) {
    let ctx = StreamContext::new("fuzz", kind.name(), spec);
    let Ok(mut parsed) = ctx.spec::<KindSpec<K::Config>>() else {
        return;
    };
    keep_off_disk(&mut parsed.sink.url, "spec.sink.url");
    if let Some(url) = &mut parsed.sink.dead_letter.url {
        keep_off_disk(url, "spec.sink.deadLetter.url");
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let _ = runtime.block_on(BuiltinKind(kind).build(&ctx, parsed));
}

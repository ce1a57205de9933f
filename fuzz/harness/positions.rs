//! The checkpoints of a manifest decoded as the position of each source that resumes from
//! them (a decoding error is fine, a panic is not). Shared by the `sink_manifest` fuzz target
//! and `arcane-cli/tests/fuzz_corpus.rs`.

use arcane_core::Checkpoint;
use arcane_sinks::parquet::manifest::Manifest;
use arcane_sources::blob_landing::BlobLandingPosition;
use arcane_sources::postgres_cdc::PgPosition;
use arcane_sources::rest_api::RestApiPosition;

fn decode(checkpoint: &Checkpoint) {
    let _ = checkpoint.decode::<BlobLandingPosition>("fuzz");
    let _ = checkpoint.decode::<RestApiPosition>("fuzz");
    let _ = checkpoint.decode::<PgPosition>("fuzz");
}

/// Every checkpoint of `manifest`.
pub(crate) fn decode_checkpoints(manifest: &Manifest) {
    let state = &manifest.state;
    let backfill = state.backfill.as_ref().and_then(|b| b.checkpoint.as_ref());
    for checkpoint in [
        manifest.checkpoint.as_ref(),
        state.stream_checkpoint.as_ref(),
        backfill,
    ]
    .into_iter()
    .flatten()
    {
        decode(checkpoint);
    }
}

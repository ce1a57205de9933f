//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off by default; not a
//! public API): the commit manifest and the upload markers as a restarted sink reads them.
//!
//! The committed corpus (`fuzz/corpus/sink_manifest/`) is replayed through the same function
//! by `tests/fuzz_corpus.rs` on the stable toolchain.

use std::collections::BTreeMap;
use std::sync::Arc;

use arcane_core::{Checkpoint, Group, Mode, Sink, SinkContext};
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::ParquetSink;
use super::config::ParquetSinkConfig;
use super::manifest::{self, MANIFEST_VERSION, Manifest, manifest_path};
use super::store::{Location, open_location};
use super::upload::{list_markers, marker_path};

/// The dataset the fuzz target's sink writes to (an in-memory store of this process; it is
/// emptied before and after each input).
pub const FUZZ_URL: &str = "memory://arcane-fuzz/dataset";

async fn clear(loc: &Location) {
    let paths: Vec<_> = loc
        .store
        .list(Some(&loc.prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap_or_default();
    for path in paths {
        let _ = loc.store.delete(&path).await;
    }
}

/// A manifest (and optionally an upload marker) found by a restarted sink. Byte 0 chooses:
/// bit 0 the manifest's sequence (1 or 7), bit 1 whether the input after the first NUL byte
/// is an upload marker of that sequence, bit 2 a backfill run. The manifest is read back as
/// the sink reads it (it must round-trip: recovery rewrites its state), then a sink opens on
/// the dataset (recovery), writes one row and commits. Returns the manifest when it could be
/// read, for the caller to decode its checkpoints as source positions.
pub fn sink_manifest(data: &[u8]) -> Option<Manifest> {
    let (&mode, rest) = data.split_first()?;
    let (manifest_bytes, marker_bytes) = match rest.iter().position(|&b| b == 0) {
        Some(i) if mode & 2 != 0 => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let sequence = if mode & 1 == 0 { 1 } else { 7 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .ok()?;
    runtime.block_on(async {
        let loc = open_location(FUZZ_URL, &BTreeMap::new(), "url").ok()?;
        clear(&loc).await;
        let put = |path, bytes: &[u8]| {
            let bytes = bytes::Bytes::copy_from_slice(bytes);
            let store = loc.store.clone();
            async move { store.put(&path, bytes.into()).await.is_ok() }
        };
        if !put(manifest_path(&loc, sequence), manifest_bytes).await {
            return None;
        }
        if let Some(marker) = marker_bytes
            && !put(marker_path(&loc, sequence, "fuzz"), marker).await
        {
            return None;
        }
        let read = manifest::read(&loc, "fuzz", sequence).await.ok();
        if let Some(m) = &read {
            assert!(m.version <= MANIFEST_VERSION, "newer manifests are refused");
            // Recovery carries the state into the next manifest: once written, a manifest
            // reads back as written. (Not necessarily equal to the input: a number beyond
            // 2^53 in a source position may come back a float rounded differently.)
            let written = serde_json::to_vec_pretty(m).ok();
            let again = written
                .as_deref()
                .and_then(|w| serde_json::from_slice::<Manifest>(w).ok());
            let rewritten = again
                .as_ref()
                .and_then(|a| serde_json::to_vec_pretty(a).ok());
            assert!(written.is_some(), "a manifest that was read can be written");
            assert_eq!(
                rewritten, written,
                "a written manifest reads back as written"
            );
        }
        if let Ok(markers) = list_markers(&loc, "fuzz").await {
            assert!(markers.len() <= 1);
        }
        open_and_commit(mode & 4 != 0).await;
        clear(&loc).await;
        read
    })
}

/// A sink on [`FUZZ_URL`]: open (recovery), one row, a commit; errors are fine, panics not.
async fn open_and_commit(backfill: bool) {
    let Ok(mut sink) = ParquetSink::new_at(ParquetSinkConfig::new(FUZZ_URL), "sink") else {
        return;
    };
    let ctx = SinkContext {
        stream_id: "fuzz".into(),
        mode: if backfill {
            Mode::Backfill
        } else {
            Mode::Stream
        },
        backfill_id: backfill.then(|| "b1".into()),
        ..SinkContext::default()
    };
    if sink.open(&ctx).await.is_err() {
        return;
    }
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let Ok(batch) = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]) else {
        return;
    };
    let group = Group {
        batch,
        checkpoint: Checkpoint::default(),
        dead_letters: Vec::new(),
    };
    if sink.write(group).await.is_ok() {
        let _ = sink.flush().await;
    }
}

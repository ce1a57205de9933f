//! Manifests edited by hand or copied between locations: a sink opening on them fails with an
//! error naming the manifest, never a panic or a commit over another manifest (see also the
//! `sink_manifest` fuzz target in `fuzz/`).

use std::collections::BTreeMap;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Checkpoint, Group, Sink, SinkContext};
use arcane_sinks::{ParquetSink, ParquetSinkConfig};
use object_store::ObjectStoreExt;
use object_store::path::Path;

fn ctx() -> SinkContext {
    SinkContext {
        stream_id: "orders".into(),
        ..SinkContext::default()
    }
}

/// The JSON of the manifest a sink commits at `url` (its sequence 0).
async fn committed_manifest(url: &str) -> serde_json::Value {
    let mut sink = ParquetSink::new(ParquetSinkConfig::new(url)).unwrap();
    sink.open(&ctx()).await.unwrap();
    let group = Group::new(GeneratorSource::batch(0, 3), Checkpoint::default());
    sink.write(group).await.unwrap();
    sink.flush().await.unwrap();
    let loc = arcane_store::open_location(url, &BTreeMap::new(), "url").unwrap();
    let path = Path::from(format!("{}/_arcane/manifests/{:020}.json", loc.prefix, 0));
    let bytes = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
    loc.store.delete(&path).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Store `manifest` under the name of `sequence`.
async fn put_manifest(url: &str, sequence: u64, manifest: &serde_json::Value) {
    let loc = arcane_store::open_location(url, &BTreeMap::new(), "url").unwrap();
    let path = Path::from(format!(
        "{}/_arcane/manifests/{sequence:020}.json",
        loc.prefix
    ));
    let bytes = serde_json::to_vec(manifest).unwrap();
    loc.store.put(&path, bytes.into()).await.unwrap();
}

async fn open_error(url: &str) -> String {
    let mut sink = ParquetSink::new(ParquetSinkConfig::new(url)).unwrap();
    sink.open(&ctx()).await.unwrap_err().to_string()
}

#[tokio::test]
async fn a_manifest_whose_sequence_is_not_its_name_is_refused() {
    let url = "memory://hostile-manifests-1/orders";
    let mut manifest = committed_manifest(url).await;
    manifest["sequence"] = 5.into();
    put_manifest(url, 2, &manifest).await;
    let err = open_error(url).await;
    assert!(
        err.contains("00000000000000000002.json holds sequence 5 but its name says 2"),
        "{err}"
    );
}

#[tokio::test]
async fn the_last_possible_sequence_is_an_error_not_an_overflow() {
    // Found while writing the sink_manifest fuzz target: `sequence + 1` overflowed (a panic in debug builds,
    // the next commit over manifest 0 in release builds).
    let url = "memory://hostile-manifests-2/orders";
    let mut manifest = committed_manifest(url).await;
    manifest["sequence"] = u64::MAX.into();
    put_manifest(url, u64::MAX, &manifest).await;
    let err = open_error(url).await;
    assert!(
        err.contains("the newest manifest has sequence 18446744073709551615"),
        "{err}"
    );
}

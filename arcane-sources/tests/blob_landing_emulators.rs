//! The blob-landing source against an S3 server (moto) and the Azure Blob emulator (azurite).
//!
//! `scripts/test.sh` starts both and exports `ARCANE_TEST_S3_ENDPOINT`
//! (`http://127.0.0.1:PORT`) and `ARCANE_TEST_AZURITE_ENDPOINT`
//! (`http://127.0.0.1:PORT/devstoreaccount1`).

mod support;

use std::collections::BTreeMap;

use arcane_core::testing::MemoryStoreHandle;
use arcane_sources::blob_landing::{BlobLandingSource, BlobLandingSourceConfig, FieldConfig};
use arcane_test_support::Store;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use support::*;

/// Files of the end-to-end test, put into `store` under `landing/`.
async fn put_landing_files(store: &dyn ObjectStore) -> (Vec<i64>, f64) {
    let mut a = ndjson(0..3_000);
    a.push_str("{\"id\": oops}\n");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("landing/2026-11-20.ndjson", a.into_bytes()),
        (
            "landing/2026-11-21.ndjson.gz",
            gzip(ndjson(3_000..6_000).as_bytes()),
        ),
        (
            "landing/2026-11-22.ndjson.zst",
            zstd(ndjson(6_000..9_000).as_bytes()),
        ),
        (
            "other/ignored.ndjson",
            ndjson(100_000..100_010).into_bytes(),
        ),
    ];
    for (path, bytes) in files {
        store
            .put(&Path::from(path), PutPayload::from(bytes))
            .await
            .unwrap();
    }
    let ids: Vec<i64> = (0..9_000).collect();
    let amount = ids.iter().map(|&i| i as f64 * 1.5).sum();
    (ids, amount)
}

async fn land_and_check(url: String, options: BTreeMap<String, String>, expected: (Vec<i64>, f64)) {
    let mut cfg = BlobLandingSourceConfig::new(url);
    cfg.storage_options = options;
    cfg.batch_rows = 1_000;
    cfg.schema = Some(vec![
        FieldConfig::new("id", "int64").required(),
        FieldConfig::new("name", "utf8"),
        FieldConfig::new("amount", "float64"),
    ]);
    let store = MemoryStoreHandle::default();
    let letters = Letters::default();
    let report = land(
        BlobLandingSource::new(cfg).unwrap(),
        store.clone(),
        letters.clone(),
    )
    .await;
    assert_finished(&report);
    let batches = store.batches();
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, expected.0, "every row once, in file order");
    let amount: f64 = batches
        .iter()
        .flat_map(|b| b.column(2).as_primitive::<Float64Type>().values().to_vec())
        .sum();
    assert!(
        (amount - expected.1).abs() < 1e-6,
        "{amount} != {}",
        expected.1
    );
    let letters = letters.all();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].origin.ends_with("landing/2026-11-20.ndjson"),
        "{letters:?}"
    );
    assert_eq!(letters[0].locator, "line 3001");
}

async fn land_on(store: Store) {
    let expected = put_landing_files(store.object_store().as_ref()).await;
    land_and_check(store.url_of("landing/"), store.options(), expected).await;
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_files_land_with_every_row_and_bad_lines_dead_lettered() {
    land_on(Store::s3().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_files_land_with_every_row_and_bad_lines_dead_lettered() {
    land_on(Store::azure().await).await;
}

//! Stores for the sink tests: memory, local FS, S3 (moto) and Azure Blob (azurite).
#![allow(dead_code, unreachable_pub)]

use arcane_core::{Checkpoint, Position};
use arcane_sinks::{ParquetSinkConfig, read_committed};
use arrow_array::RecordBatch;

pub use arcane_test_support::Store;

/// What the sink tests need of a [`Store`] beyond its location.
pub trait SinkStore {
    /// A sink configuration writing to the store's `stream/` prefix.
    fn config(&self) -> ParquetSinkConfig;
    /// The committed rows.
    async fn read(&self) -> Vec<RecordBatch>;
}

impl SinkStore for Store {
    fn config(&self) -> ParquetSinkConfig {
        let mut c = ParquetSinkConfig::new(self.url());
        c.storage_options = self.options();
        c
    }

    async fn read(&self) -> Vec<RecordBatch> {
        read_committed(&self.url(), &self.options())
            .await
            .expect("read committed")
    }
}

/// The checkpoint after `rows` generator rows.
pub fn checkpoint(rows: u64) -> Checkpoint {
    Checkpoint::at(Position(serde_json::json!({ "rows": rows })))
}

/// Sorted ids of `batches` (column `id`).
pub fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .expect("id column")
                .as_primitive::<arrow_array::types::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    out.sort_unstable();
    out
}

//! The blob-landing source (feature `blob-landing`): files that land under an object-store
//! prefix (`file://`, `s3://`, `az://`, `gs://`), in NDJSON, CSV or Parquet (NDJSON and CSV
//! also gzip- or zstd-compressed), decoded straight into Arrow.
//!
//! * [`BlobLandingSource`] — the [`Source`](arcane_core::Source); see its docs for ordering,
//!   late files, schema inference, resume, dead letters and store errors.
//! * [`BlobLandingSourceConfig`] — its settings (camelCase JSON, part of a stream's spec).
//! * [`BlobLandingPosition`] — the position stored in the sink's manifest.
//! * [`LateFiles`] — what to do with a file that lands with a path sorting before the
//!   position (`lateFiles: skip | fail`); [`FILES_LATE`] counts them.
//!
//! ```no_run
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use arcane_core::{GroupLimits, StreamContext, StreamGraph};
//! use arcane_core::testing::MemorySink;
//! use arcane_sources::blob_landing::{BlobLandingSource, BlobLandingSourceConfig, FieldConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> arcane_core::Result<()> {
//! let mut config = BlobLandingSourceConfig::new("file:///data/landing/");
//! config.schema = Some(vec![
//!     FieldConfig::new("order_id", "utf8").required(),
//!     FieldConfig::new("amount", "float64"),
//!     FieldConfig::new("event_time", "timestamp[ms, UTC]"),
//! ]);
//! let graph = StreamGraph::from_source(BlobLandingSource::new(config)?)
//!     .grouped_within(GroupLimits::new(NonZeroUsize::new(10_000).unwrap(), Duration::from_secs(15)))
//!     .to_sink(MemorySink::new());
//! let ctx = StreamContext::new("orders", "blob_landing", serde_json::json!({})).with_backfill("b1");
//! let report = graph.run(&ctx).join().await;
//! report.outcome?;
//! # Ok(())
//! # }
//! ```
//!
//! Decoding: NDJSON and CSV are read on a blocking thread into segments of 2 MiB and split
//! into blocks of `batchRows` records or about 512 KiB, whichever comes first; the blocks are
//! slices of their segment (not copies), decoded by the decode threads and taken back in file
//! order, running ahead of the sink by a bounded number of batches (so decoding overlaps with
//! encoding). Parquet is read with the async Arrow reader on its own task.

mod config;
pub(crate) mod event;
mod fetch;
pub(crate) mod infer_csv;
mod listing;
mod parquet_file;
mod position;
mod source;
pub(crate) mod text;

pub use config::{
    BlobLandingSourceConfig, Compression, CsvConfig, DEFAULT_BATCH_ROWS, DEFAULT_CSV_DELIMITER,
    DEFAULT_CSV_QUOTE, DEFAULT_POLL_INTERVAL, FieldConfig, FileFormat, LATE_FILE_CLOCK_SKEW,
    LateFiles,
};
pub use position::BlobLandingPosition;
pub use source::{BlobLandingSource, FILES_LATE};

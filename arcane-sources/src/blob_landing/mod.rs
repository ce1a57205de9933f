//! The blob-landing source (feature `blob-landing`): files that land under an object-store
//! prefix (`file://`, `s3://`, `az://`, `gs://`), in NDJSON, CSV or Parquet (NDJSON and CSV
//! also gzip- or zstd-compressed), decoded straight into Arrow.
//!
//! * [`BlobLandingSource`] — the [`Source`](arcane_core::Source); see its docs for ordering,
//!   resume and dead letters.
//! * [`BlobLandingSourceConfig`] — its settings (camelCase JSON, part of a stream's spec).
//! * [`BlobLandingPosition`] — the position stored in the sink's manifest.

mod config;
mod event;
mod fetch;
mod listing;
mod parquet_file;
mod position;
mod schema;
mod source;
mod text;

pub use config::{
    BlobLandingSourceConfig, Compression, CsvConfig, DEFAULT_BATCH_ROWS, DEFAULT_CSV_DELIMITER,
    DEFAULT_CSV_QUOTE, DEFAULT_INFER_SCHEMA_RECORDS, DEFAULT_POLL_INTERVAL, FieldConfig,
    FileFormat,
};
pub use position::BlobLandingPosition;
pub use source::BlobLandingSource;

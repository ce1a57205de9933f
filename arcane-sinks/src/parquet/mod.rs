//! The Parquet sink: see the [crate documentation](crate).

pub mod config;
#[cfg(test)]
mod counting;
mod dead_letter;
mod dictionary;
pub(crate) mod encode;
pub mod failpoint;
#[cfg(any(feature = "delta", feature = "iceberg"))]
pub(crate) mod footer;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod manifest;
pub mod partition;
mod read;
pub(crate) mod schema;
mod sink;
mod spill;
mod store;
mod upload;

pub use dead_letter::{ParquetDeadLetterSink, dead_letter_schema};
pub use read::{committed_files, latest_manifest, live_files, read_committed, read_committed_head};
pub use sink::{
    ParquetSink, ShardProgress, ShardResume, ShardedBackfillProgress, sharded_backfills,
};

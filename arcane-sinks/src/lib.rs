//! # arcane-sinks
//!
//! Sinks for Arcane streams. [`ParquetSink`] is the sink most streams end in: Arrow groups in,
//! Parquet files on blob storage out, **exactly once**, with bounded memory.
//!
//! * Storage is chosen by URL (`s3://`, `az://`/`abfss://`, `gs://`, `file://`, `memory://`)
//!   through `object_store`; options come from `storageOptions` and the usual `AWS_*`,
//!   `AZURE_*`, `GOOGLE_*` environment variables. Behaviour is identical across stores.
//! * Streaming write: `AsyncArrowWriter` flushes each row group as it fills (by
//!   `writer.rowGroupSize` rows or `writer.rowGroupBytes` encoded bytes) into an
//!   `object_store::buffered::BufWriter`, which uploads `writer.uploadPartSize` parts
//!   (multipart) with at most `writer.uploadConcurrency` in flight. Memory per open file is
//!   bounded by one row group plus `uploadPartSize × (uploadConcurrency + 1)`; it does not
//!   grow with the file.
//! * Rolling: files are committed when one reaches `rolling.targetFileSize` encoded bytes
//!   (written row groups + the in-progress estimate), `rolling.maxRowsPerFile` rows (exact:
//!   groups are split), or `rolling.maxFileAge` (checked by [`Sink::tick`](arcane_core::Sink::tick)).
//!   Before writing a group that would take a file further past the target than it is short of
//!   it, the open files are committed first, so files land close to the target.
//! * Partitioning: Hive-style `col=value/…` from `partitionBy.columns` and/or an event-time
//!   `strftime` format (`date=%Y-%m-%d/hour=%H`), at most `maxOpenFiles` files open at once.
//!
//! ## Layout
//!
//! ```text
//! {prefix}/{partition}/part-{streamId}-{sequence:08}-{file:04}.parquet        root generation
//! {prefix}/_generations/{backfillId}-{sequence:08}/{partition}/part-….parquet overwrite generations
//! {prefix}/_arcane/manifests/{sequence:020}.json                              commit manifests
//! {prefix}/_dead_letters/part-{streamId}-{time}-{uuid}.parquet                dead letters (default)
//! ```
//!
//! `sequence` is the commit sequence: every file open at a commit is committed by the manifest
//! of that sequence, so names are deterministic and a retried commit reuses them.
//!
//! ## Commit protocol
//!
//! 1. Groups are written into open files (multipart uploads in progress, invisible).
//! 2. On a roll, flush, tick or schema mismatch, every open file is completed (multipart
//!    completion / atomic rename on the local file system) and then **one** manifest
//!    `{sequence}.json` is written with the files, their rows and bytes, and the checkpoint of
//!    the last group. The manifest put is the commit point.
//! 3. [`Sink::open`](arcane_core::Sink::open) reads the newest manifest, deletes data files of
//!    later sequences (completed uploads whose manifest was never written) and local staging
//!    files, and returns the manifest's checkpoint. Incomplete S3 multipart uploads and Azure
//!    uncommitted blocks are invisible; they are overwritten by the retried commit (same names)
//!    and otherwise expire by the store's lifecycle rules (`object_store` cannot list them).
//!
//! Readers use the manifests ([`read_committed`], [`committed_files`]); Hive readers that
//! list directories can see a completed-but-uncommitted file between a crash and the next
//! start.
//!
//! ## Backfills and generations
//!
//! In backfill mode (`SinkContext.mode`), `backfillBehavior: merge` writes into the current
//! generation; `overwrite` writes a new generation under `_generations/`. Its progress is in the
//! manifest: a restart with the same backfill id resumes from its last commit; a new id starts
//! over (an abandoned generation is deleted). [`Sink::finish`](arcane_core::Sink::finish)
//! switches the current generation in one manifest entry; replaced generations are deleted
//! after `generationRetention`.
//!
//! ## Schema
//!
//! The target schema is `schema` or learned from the first batch (and kept in the manifest).
//! A missing non-nullable column, a changed type or an unknown column is
//! `Error::SchemaMismatch` after committing what came before. Rows with a null in a
//! non-nullable column or a null event time go to the stream's dead-letter queue (write them
//! with [`ParquetDeadLetterSink`]), counted in `arcane.stream.rows.dead_lettered`.
//!
//! With `schemaEvolution: addNullableColumns` ([`SchemaEvolution`]) a batch that only adds
//! nullable columns widens the schema in place instead: the open files are committed with the
//! old schema, later files carry the new columns, and the widened schema is kept in the
//! manifest. Readers merging the files by column name see nulls for the new columns in older
//! files. Dropped, retyped or new non-nullable columns stay a `SchemaMismatch`.
//!
//! ## Metrics
//!
//! `arcane.stream.batch.commit_duration` (histogram), `arcane.stream.files.open` (gauge);
//! rows/bytes/files written are counted by the graph from the returned commits.
//!
//! ## Example
//!
//! ```
//! use arcane_core::{Checkpoint, Group, Position, Sink, SinkContext};
//! use arcane_core::testing::GeneratorSource;
//! use arcane_sinks::{ParquetSink, ParquetSinkConfig, read_committed};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> arcane_core::Result<()> {
//! let config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
//!     "url": "memory:///orders",
//!     "writer": { "compression": "zstd(3)" },
//! })).unwrap();
//! let mut sink = ParquetSink::new(config)?;
//! let ctx = SinkContext { stream_id: "orders".into(), ..SinkContext::default() };
//! assert_eq!(sink.open(&ctx).await?, None);
//! let checkpoint = Checkpoint::at(Position(serde_json::json!({ "rows": 100 })));
//! sink.write(Group::new(GeneratorSource::batch(0, 100), checkpoint.clone())).await?;
//! let commit = sink.flush().await?.unwrap();
//! assert_eq!((commit.rows, commit.checkpoint), (100, checkpoint));
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! | feature | stores |
//! |---|---|
//! | `s3` (default) | `s3://` (AWS and S3-compatible) |
//! | `azure` (default) | `az://`, `abfss://` |
//! | `gcs` (default) | `gs://` |
//! | always | `file://`, `memory://` |

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod parquet;

pub use crate::parquet::config::*;
pub use crate::parquet::config::{
    BackfillBehavior, BloomFilterConfig, DeadLetterConfig, EventTimePartition, ParquetSinkConfig,
    PartitionConfig, RollingConfig, SchemaEvolution, SchemaField, SortingColumnConfig,
    StatisticsLevel, WriterConfig,
};
pub use crate::parquet::{
    ParquetDeadLetterSink, ParquetSink, committed_files, dead_letter_schema, latest_manifest,
    live_files, read_committed, read_committed_head,
};

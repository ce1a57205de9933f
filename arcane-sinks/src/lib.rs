//! # arcane-sinks
//!
//! Sinks for Arcane streams. [`ParquetSink`] is the sink most streams end in: Arrow groups in,
//! Parquet files on blob storage out, **exactly once**, with bounded memory.
//!
//! * Storage is chosen by URL (`s3://`, `az://`/`abfss://`, `gs://`, `file://`, `memory://`)
//!   through `object_store`; options come from `storageOptions` and the usual `AWS_*`,
//!   `AZURE_*`, `GOOGLE_*` environment variables. Behaviour is identical across stores.
//! * Streaming write: each file's writer flushes each row group as it fills (by
//!   `writer.rowGroupSize` rows or `writer.rowGroupBytes` encoded bytes, the rules of
//!   parquet's `ArrowWriter`) into the file's multipart upload, cut into
//!   `writer.uploadPartSize` parts with at most `writer.uploadConcurrency` in flight (on the
//!   local file system, into a staging file through `object_store::buffered::BufWriter`).
//!   Memory per open file is bounded by one row group plus
//!   `uploadPartSize × (uploadConcurrency + 1)`; it does not grow with the file.
//! * Parallel encoding: the top-level columns of each batch are encoded and compressed at once
//!   on `writer.encodeThreads` threads (default: the available parallelism, at most 4; `1`
//!   encodes on the sink's thread), kept for the sink's lifetime; each column takes its
//!   batches in order while the others run, so the next group's columns start while the last
//!   one's slowest column is still being encoded (two groups in the encoder at most). The
//!   files are those of parquet's `AsyncArrowWriter` byte for byte, whatever the number of
//!   threads and their timing, but for where `rowGroupBytes` cuts a row group when the
//!   bytes per row grow by more than a third within two groups (the cut is decided on exact
//!   sizes within a quarter of the limit, on the last known bytes per row below it).
//! * Dictionaries: `writer.dictionary: auto` (default) dictionary-encodes every column except
//!   string and binary columns whose values are mostly distinct (more than half of the first
//!   8192 non-null values of the first batch a file gets), decided once per column for the
//!   sink's lifetime; `true` dictionary-encodes every column, `false` none.
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
//! {prefix}/_arcane/uploads/{sequence:020}-{file:04}.json                      upload markers (object stores)
//! {prefix}/_arcane/staging/{sequence:020}/…                                   staging files (local FS)
//! {prefix}/_dead_letters/part-{streamId}-{sequence:08}-dead-letters.parquet   dead letters (default)
//! ```
//!
//! `sequence` is the commit sequence: every file open at a commit is committed by the manifest
//! of that sequence, so names are deterministic and a retried commit reuses them. The manifest
//! format (version 3) is documented field by field in [`MANIFEST.md`](parquet::manifest),
//! with how a reader finds the live files and the compatibility promise.
//!
//! ## Commit protocol
//!
//! A file becomes visible only when the manifest that commits it is written; nothing
//! uncommitted is ever at a path a reader lists.
//!
//! 1. Groups are written into open files nobody can see. On stores with a multipart API (S3,
//!    Azure, GCS, memory) each file is a multipart upload (every file, however small, is at
//!    least one part), recorded by an upload marker written before its first part. On the local
//!    file system each file is written under `_arcane/staging/{sequence}/`.
//! 2. On a roll, flush, tick or schema change every open file is finished (all parts uploaded,
//!    or the staging file written), and so is the commit's dead-letter file.
//! 3. **One** manifest `{sequence}.json` is written with the files (their rows, bytes and how
//!    each becomes visible: upload id and part ids, or staging path), the dead letters and the
//!    checkpoint of the last group. The manifest put is the commit point.
//! 4. The uploads are completed (staging files renamed), then the markers deleted. The next
//!    commit does not start before this succeeded.
//!
//! [`Sink::open`](arcane_core::Sink::open) recovers before anything else: it completes the
//! uploads (renames the staging files) the newest manifest commits and that are not visible
//! yet (completing twice is harmless; a committed upload that is gone is a FATAL error naming
//! the file), aborts every multipart upload whose marker no manifest covers ("aborted N
//! incomplete uploads left by an interrupted run") and deletes uncommitted staging files, then
//! returns the manifest's checkpoint. Azure cannot abort uploads: its uncommitted blocks expire
//! after 7 days.
//!
//! ## Reading the output
//!
//! Readers that want exactly the committed rows open the files the manifests list:
//! [`live_files`] (`arcane show --files URL`), [`committed_files`], [`read_committed`].
//! Globbing the prefix is not a transaction: it reads what is there at the time of listing.
//! Uncommitted data is never at a live path (it is in invisible uploads or under `_arcane/`),
//! but an overwrite backfill's generations live under `_generations/`, and a replaced
//! generation stays there for `generationRetention`. Verified (pyarrow 26.0.1, DuckDB 2.0.1):
//!
//! * `pyarrow.dataset.dataset(prefix, format="parquet", partitioning="hive")` and
//!   `pyarrow.parquet.read_table(prefix)` skip files and directories whose names start with
//!   `_` or `.`: they never read `_arcane/`, `_dead_letters/` or `_generations/`, so after an
//!   overwrite backfill they read the replaced root generation (until it is deleted, then
//!   nothing) instead of the current one.
//! * DuckDB's `read_parquet('{prefix}/**/*.parquet', hive_partitioning=true)` does not skip
//!   them: it reads the current and every retained generation (duplicates), local staging
//!   files of a commit in progress, and fails with "Hive partition mismatch" when files of
//!   other depths (dead letters) are under the prefix.
//!
//! Plain Parquet files cannot give glob readers transactions; that takes a table format.
//!
//! ## Delta Lake (feature `delta`)
//!
//! `tableFormat: {"delta": {}}` ([`TableFormat`], [`DeltaConfig`]) keeps a Delta Lake
//! transaction log under `{url}/_delta_log/`: after each manifest is committed and its files
//! are visible, it is published as one Delta commit (put-if-absent) with a `txn` action
//! `{appId: streamId, version: sequence}` and an `add` per file with stats from its footer; a
//! start publishes what a crash left unpublished before writing anything new. The manifests
//! stay the commit point; with a table format they are written put-if-absent and each start
//! first claims the next sequence, so a second runner of the stream fails instead of
//! corrupting the table. Arcane writes the log's JSON itself (no `deltalake` dependency). See
//! `delta` (with the feature) and `docs/delta-lake.md`.
//!
//! ## Apache Iceberg (feature `iceberg`)
//!
//! `tableFormat: {"iceberg": {"catalog": {"sql": {"uri": …}}, "namespace": …, "table": …}}`
//! ([`IcebergConfig`]) keeps an Iceberg format v2 table at `url`, registered in a SQL catalog on
//! PostgreSQL (pyiceberg's `SqlCatalog` tables): each manifest that commits files is published
//! as one fast-append snapshot whose summary carries the stream id and the manifest sequence,
//! committed by a compare-and-swap of the catalog row; a start publishes what a crash left
//! unpublished. Data files carry Iceberg field ids. Arcane writes the metadata JSON and the
//! Avro manifests itself. See `iceberg` (with the feature) and `docs/iceberg.md`.
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
//! | feature | adds |
//! |---|---|
//! | `s3` | `s3://` (AWS and S3-compatible) |
//! | `azure` | `az://`, `abfss://` |
//! | `gcs` | `gs://` |
//! | `delta` | `tableFormat: {"delta": {}}`: a Delta Lake log over the files (no extra dependency) |
//! | `iceberg` | `tableFormat: {"iceberg": {…}}`: an Iceberg table in a SQL catalog on PostgreSQL (adds `tokio-postgres`) |
//! | always | `file://`, `memory://` |

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "delta")]
pub mod delta;
#[cfg(feature = "iceberg")]
pub mod iceberg;
pub mod parquet;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use crate::parquet::fuzzing;

pub use crate::parquet::config::*;
pub use crate::parquet::config::{
    BackfillBehavior, BloomFilterConfig, DeadLetterConfig, DeltaConfig, EventTimePartition,
    IcebergCatalogConfig, IcebergConfig, ParquetSinkConfig, PartitionConfig, RollingConfig,
    SchemaEvolution, SchemaField, SortingColumnConfig, SqlCatalogConfig, StatisticsLevel,
    TableFormat, WriterConfig,
};
pub use crate::parquet::{
    ParquetDeadLetterSink, ParquetSink, ShardProgress, ShardResume, ShardedBackfillProgress,
    committed_files, dead_letter_schema, latest_manifest, live_files, read_committed,
    read_committed_head, sharded_backfills,
};

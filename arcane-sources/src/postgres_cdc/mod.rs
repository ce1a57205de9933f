//! PostgreSQL change data capture: a consistent snapshot of one table, then its inserts,
//! updates and deletes through logical decoding with the built-in `pgoutput` plugin.
//!
//! # Configuration
//!
//! See [`PostgresCdcSourceConfig`]: `connection`, `table`, `slot`, `publication`, and optional
//! `createSlot`/`createPublication` (default true), `snapshot` (default true), `batchRows`,
//! `pollInterval`, `retry`, `passwordEnv`. The server needs `wal_level = logical`;
//! the user needs `REPLICATION` (or superuser) and `SELECT` on the table.
//!
//! # How it reads
//!
//! * **Slot and publication.** The publication (`FOR TABLE`) and a logical replication slot
//!   with the `pgoutput` plugin are created on first start when missing (unless
//!   `createPublication`/`createSlot` is false, then a missing one is a config error). A slot
//!   left by an earlier run that committed nothing is dropped and recreated.
//! * **Snapshot.** The slot is created with `pg_create_logical_replication_slot`, which returns
//!   its consistent point *C*: every transaction committing after *C* is in the change stream.
//!   The table is then read in one `REPEATABLE READ` transaction, paged by its single-column
//!   integer primary key (`batchRows` rows per chunk, bounded memory), and the transaction's
//!   MVCC snapshot (`pg_current_snapshot()`) is recorded in the position. Streaming starts at
//!   *C* and skips a change whose transaction is visible in that snapshot (its effect is already
//!   in the snapshot rows): every row exactly once, with no exported snapshot and no
//!   replication connection needed. When a snapshot is interrupted (restart, lost connection)
//!   the next one resumes after the last primary key read with a new MVCC snapshot, recorded
//!   as a new *segment*; each change is then checked against the snapshot that read its key.
//!   Snapshot rows carry `_op = "r"`, `_lsn = C`, null `_commit_ts`/`_xid`.
//! * **Changes.** The source polls `pg_logical_slot_peek_binary_changes(slot, upto, NULL,
//!   'proto_version', '1', 'publication_names', publication)` with `upto` the server's current
//!   WAL position, decodes the `pgoutput` messages (text-format values) and emits the
//!   captured table's rows in commit order. It does not consume the slot: the slot is moved
//!   with `pg_replication_slot_advance` only in [`Source::commit`](arcane_core::Source::commit),
//!   after the sink committed the rows. Peeking re-decodes the WAL between the slot's
//!   committed position and the end on each poll, so a short `groupingIntervalSeconds` keeps
//!   that work small. The streaming replication protocol would avoid it but is not available
//!   in `tokio-postgres`.
//! * **Position.** `{"lsn": "0/16B3748", "tx": {...}, "snapshot": {...}, "segments": [...]}`:
//!   every transaction whose commit ends at or before `lsn`, plus the first `tx.rows` rows of
//!   the transaction committing at `tx.commitLsn` (a transaction larger than `batchRows` is
//!   split into several batches). A restart peeks from the slot, skips what the position
//!   covers and the checkpoint's extra rows, so a crash or SIGTERM neither loses nor
//!   duplicates a change. During the snapshot the position also holds the last primary key
//!   read. A checkpoint that ends inside a snapshot chunk is resumed by skipping that many rows
//!   of the re-read chunk, which is exact unless rows of that key range changed in between;
//!   `rowsPerGroup` a multiple of `batchRows` keeps group cuts on chunk boundaries.
//! * **Worker.** The stream is read by a background task started with
//!   [`spawn_source`](crate::runtime::spawn_source): dropping the stream stops it and closes
//!   its connection at once (even in the middle of a query), and its output skips the rows a
//!   resumed checkpoint covers, counting emitted rows only: a row sent to the dead letters
//!   before a restart does not shift the skip, and its dead letter is emitted again with the
//!   batch whose end commits it.
//! * **Backfill mode** takes a fresh slot and snapshot and ends after the snapshot; the
//!   streaming run resumes from its committed position (the slot's consistent point).
//!
//! # Output schema and type mapping
//!
//! The table's columns in table order, all nullable (a delete carries only the replica
//! identity columns unless the table has `REPLICA IDENTITY FULL`; an unchanged TOASTed value
//! of an update is null unless `REPLICA IDENTITY FULL` provides the old value), then:
//! `_op` (utf8: `r` snapshot read, `c` insert, `u` update, `d` delete), `_lsn` (uint64, the
//! change's WAL position), `_commit_ts` (timestamp\[us, UTC\]) and `_xid` (int64).
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | boolean | Boolean |
//! | smallint / integer / bigint | Int16 / Int32 / Int64 |
//! | real / double precision | Float32 / Float64 |
//! | numeric(p, s), p ≤ 38 | Decimal128(p, s) |
//! | numeric (unconstrained or p > 38) | Utf8 (exact text) |
//! | text, varchar, char, name, json, jsonb, uuid, xml | Utf8 |
//! | bytea | Binary |
//! | date | Date32 |
//! | time | Time64(µs) |
//! | timestamp | Timestamp(µs) |
//! | timestamptz | Timestamp(µs, UTC) |
//!
//! Any other type (arrays, intervals, geometric, enums, domains, ...) is a clear error naming
//! the table and column. A value that does not fit its Arrow type (numeric `NaN`, `infinity`
//! dates, BC timestamps) sends that row to the dead-letter queue with the reason.
//!
//! # Schema changes
//!
//! `pgoutput` sends the table's shape before its changes. A new column (compatible) widens the
//! output schema in place: the column is appended, nullable, and older rows have it null. The
//! Parquet sink accepts the wider schema with `sink.schemaEvolution: addNullableColumns`
//! (files written from then on carry the column); with the default `none` it is a
//! `SchemaMismatch` like any other change. A dropped, renamed or retyped column, an
//! unsupported new type, or a `TRUNCATE` is [`Error::SchemaMismatch`](arcane_core::Error)
//! naming the table and column, so the runner annotates the Job and the operator backfills.
//!
//! # Connection loss and metrics
//!
//! Connecting and reading run under the `retry` block ([`RetryConfig`](arcane_core::RetryConfig):
//! `maxAttempts`, `initialDelay`, `maxDelay`, `jitter`). A transient failure (a lost or refused
//! connection, a server shutting down or out of connections) is logged at WARN with its cause
//! and retried with exponential backoff, continuing after the last emitted row; the budget
//! starts afresh once the stream has emitted something again. When it is spent the stream
//! fails with a transient error (exit code 2, RESTART) carrying the last cause. Failed
//! authentication, a missing database or table and missing privileges are not retried: the
//! error (exit code 1, FATAL) says what to fix. Gauges [`REPLICATION_LAG_BYTES`] (WAL between
//! the server's position and the slot's committed position) and [`REPLICATION_LAG_SECONDS`]
//! (age of the last transaction read, 0 when caught up) carry the stream's labels.

mod changes;
mod client;
mod config;
mod pgoutput;
mod position;
mod relation;
mod rows;
mod slot;
mod snapshot;
mod source;
mod types;
mod worker;

pub use config::{DEFAULT_BATCH_ROWS, DEFAULT_POLL_INTERVAL, PostgresCdcSourceConfig};
pub use pgoutput::Lsn;
pub use position::{PgPosition, Segment, SnapshotProgress, TxProgress};
pub use source::{PostgresCdcSource, REPLICATION_LAG_BYTES, REPLICATION_LAG_SECONDS};
pub use types::{SUPPORTED_TYPES, arrow_type};
#[cfg(feature = "fuzzing")]
pub(crate) use {pgoutput::Message, pgoutput::Value, pgoutput::decode, types::ColumnBuilder};

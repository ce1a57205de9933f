//! PostgreSQL change data capture: a consistent snapshot of one table, then its inserts,
//! updates and deletes through logical decoding with the built-in `pgoutput` plugin.
//!
//! # Configuration
//!
//! See [`PostgresCdcSourceConfig`]: `connection`, `table`, `slot`, `publication`, and optional
//! `createSlot`/`createPublication` (default true), `insertOnly` (default false), `snapshot`
//! (default true), `batchRows`,
//! `pollInterval`, `heartbeatInterval`, `retainedWalWarningBytes`, `idleTimeout`, `retry`,
//! `passwordEnv`. The server needs `wal_level = logical`;
//! the user needs `REPLICATION` (or superuser) and `SELECT` on the table.
//!
//! # Before anything is created
//!
//! A publication that publishes updates and deletes of a table without a replica identity makes
//! the application's own `UPDATE`/`DELETE` on that table fail, and an idle slot pins WAL. So a
//! run first checks, and refuses with a FATAL error (exit 1) naming the table or setting and
//! the fix: the table exists; it has a replica identity (a primary key, `REPLICA IDENTITY
//! USING INDEX` or `FULL`) unless `insertOnly` is set; the user has `REPLICATION` (or is
//! superuser) and `SELECT` on the table; `wal_level = logical`; an existing publication
//! includes the table and publishes what is captured (and no updates or deletes of a table
//! that cannot replicate them); a missing publication can be created (the user owns the table
//! and may `CREATE` in the database); a slot to create finds a free one
//! (`max_replication_slots`). Only then are the publication and the slot created; a refusal
//! after that (e.g. the slot cannot be created) drops what this run created, never what an
//! earlier run or someone else created.
//!
//! With `insertOnly: true` the publication is created `WITH (publish = 'insert, truncate')`:
//! the stream carries the snapshot and the inserts, never updates or deletes, and the table
//! needs no replica identity. (`truncate` is published too, unlike a bare `'insert'`: it needs
//! no replica identity, and a truncated table is then a schema mismatch instead of rows gone
//! silently.) Without it the publication publishes `'insert, update, delete, truncate'`.
//!
//! # Retiring a stream
//!
//! The slot keeps WAL on the server until the stream reads it, so a deleted stream must drop
//! it: [`retire`] (the `arcane retire --spec FILE` command) drops the slot and, unless
//! `createPublication` is false, the publication. It is idempotent, and refuses while the
//! stream runs (its sessions are named `application_name = 'arcane postgres-cdc <slot>'`
//! unless the connection string names them).
//!
//! # How it reads
//!
//! * **Slot and publication.** The publication (`FOR TABLE`) and a logical replication slot
//!   with the `pgoutput` plugin are created on first start when missing (unless
//!   `createPublication`/`createSlot` is false, then a missing one is a config error), after
//!   the checks above. A slot left by an earlier run that committed nothing is dropped and
//!   recreated. A slot found ahead of the stream's committed position (moved by someone else:
//!   a second stream or backfill on the same slot, `pg_replication_slot_advance`) no longer
//!   holds the changes in between: the run is refused (exit 1) saying so, never resumed past
//!   them.
//! * **Snapshot.** The slot is created with `pg_create_logical_replication_slot`, which returns
//!   its consistent point *C*: every transaction committing after *C* is in the change stream.
//!   The table is then read in one `REPEATABLE READ` transaction, `batchRows` rows per chunk
//!   (bounded memory), and the transaction's MVCC snapshot (`pg_current_snapshot()`) is
//!   recorded in the position. Streaming starts at *C* and skips a change whose transaction is
//!   visible in that snapshot (its effect is already in the snapshot rows): every row exactly
//!   once, with no replication connection needed. Snapshot rows carry
//!   `_op = "r"`, `_lsn = C`, null `_commit_ts`/`_xid`. The pages are read on a second
//!   connection (one more session for the snapshot's duration) that joins the transaction's
//!   snapshot (`pg_export_snapshot()`, `SET TRANSACTION SNAPSHOT`) and speaks the protocol
//!   itself, the transport of the replication connection: the server sends each row as one
//!   message, and the rows of one read of the socket are handed on together (a client library
//!   parses and queues each message on its own, about a sixth of the source's CPU time). Each
//!   page is one `COPY (SELECT …) TO STDOUT (FORMAT binary)`, decoded as it arrives: booleans,
//!   integers, floats, dates, times, timestamps and bytea from their binary form straight into
//!   the Arrow builders (a domain cast to its base type), the other types (numeric, text-like,
//!   enums, arrays) from their text form, as in the change stream. The server's backend
//!   produces the rows on one core while the source decodes them on the other. How the table
//!   is paged:
//!   * **By its key**: the primary key, else a unique index on NOT NULL columns (no
//!     expressions, no predicate), of any supported types, composite included: keyset
//!     pagination `WHERE (a, b) > (E'…'::text::type COLLATE c, ...) ORDER BY a, b LIMIT n`, in
//!     the key's own ordering, 16 × `batchRows` rows per page (one bounded statement each),
//!     sent on as batches of `batchRows` rows while the server goes on with the page (between
//!     two statements the server would otherwise wait for the source to read everything in
//!     flight); each batch's position is its last key. The key's ordering is its columns'
//!     types and collations. The position holds the last key read as the key columns' text
//!     forms (`"afterKey": ["eu", "42"]`), cast back to the
//!     column types on resume, so text, uuid, numeric, timestamp and composite keys round-trip.
//!     When a snapshot is interrupted (restart, lost connection) the next one resumes after the
//!     last key read with a new MVCC snapshot, recorded as a new *segment*; a change committed
//!     between two segments' snapshots is checked against the segment whose key range holds
//!     its key (the server compares the keys, with the same types and collations), so the
//!     resumed snapshot is exact too.
//!   * **Without a key**: `ctid` block ranges (`ctid >= '(b,0)' AND ctid < '(e,0)'`, a TID
//!     range scan, fast on PostgreSQL 14 and later; a full scan per chunk before), about
//!     `batchRows` rows per range from the table's statistics, up to the table's size when the
//!     snapshot was taken; the position holds the next block (`"nextBlock": 1234`). Such a
//!     table's changes need `REPLICA IDENTITY FULL` (or `insertOnly`), see above. An
//!     interrupted keyless snapshot resumes at the next block with a new MVCC snapshot; a row
//!     has no key to tell which snapshot read it, so a change committed between the
//!     interruption and the resume is emitted unless the first snapshot saw it: nothing is
//!     lost, but a change to a row in the blocks not yet read can appear both in the snapshot
//!     and as a change (at least once, for that window only). Without writes in that window,
//!     or without an interruption, it is exact.
//! * **Changes.** The source streams them over the replication protocol: a second
//!   connection with `replication=database` runs `START_REPLICATION SLOT slot LOGICAL 0/0
//!   (proto_version '1', publication_names 'publication')`; the server decodes each WAL
//!   record once and sends the captured table's `pgoutput` messages (text-format values) as
//!   their transactions commit, and the source emits its rows in commit order (a partial
//!   batch, or the position alone, every `pollInterval`). Standby status updates, every 10 s
//!   and whenever the sink commits, report as flushed only what the sink committed: the slot
//!   moves in [`Source::commit`](arcane_core::Source::commit), never ahead of the output. A
//!   server that stops answering for `idleTimeout` (default 45 s; each status update asks for
//!   a keepalive) counts as a lost connection, reopened under `retry`: connecting, the
//!   snapshot's pages, the change stream and its periodic queries are all bounded by it. The transport is written on `postgres-protocol` (trust, password, MD5 and
//!   SCRAM-SHA-256 authentication; plain TCP or a Unix socket, like the SQL connections).
//! * **Position.** `{"lsn": "0/16B3748", "tx": {...}, "snapshot": {...}, "segments": [...]}`:
//!   every transaction whose commit ends at or before `lsn`, plus the first `tx.rows` rows of
//!   the transaction committing at `tx.commitLsn` (a transaction larger than `batchRows` is
//!   split into several batches). A restart streams from the slot's confirmed position, skips what the position
//!   covers and the checkpoint's extra rows, so a crash or SIGTERM neither loses nor
//!   duplicates a change. During the snapshot the position also holds the last key (or the
//!   next block) read. A checkpoint that ends inside a snapshot chunk is resumed by skipping that many rows
//!   of the re-read chunk, which is exact unless rows of that range changed in between;
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
//! # Sharded backfills
//!
//! A backfill with `backfillShards: N` runs as the `N` pods of an Indexed Job
//! ([`with_shard`](PostgresCdcSource::with_shard)), each reading one range of the table. The
//! snapshot above is exact because the MVCC snapshots the table was read with are recorded
//! in the position and the stream, starting at the slot's consistent point *C*, skips every
//! change such a snapshot already saw. The pods cannot share one exported snapshot (it lives
//! only as long as the exporting session, and each pod restarts on its own), so each shard
//! reads its range under snapshots of its own, and the stream checks a change against the
//! snapshot that read its key:
//!
//! 1. **One plan, the slot first.** A shard whose own lineage has no checkpoint takes a
//!    PostgreSQL advisory lock on the slot's name (session level: released if the pod dies),
//!    then reads the plan from the backfill's board beside the output
//!    (`_arcane/shards/B-of-N/board/postgres-cdc-plan.json`). The first shard to get there
//!    finds none: it runs the same checks and creation as an unsharded start (publication,
//!    fresh slot at *C*), splits the table, and writes the plan put-if-absent: *C* and the
//!    ranges. Keyed tables: `N - 1` keys (text forms) at the quantiles of a `TABLESAMPLE
//!    SYSTEM` sample of about 256 heap blocks, sorted in the key's order; shard `i` reads the
//!    keys above the `i - 1`-th up to and including the `i`-th (an empty table: shard 0 reads
//!    everything). Keyless tables: `N - 1` heap blocks splitting the table's size at planning
//!    time; the last shard reads up to the table's size at its own snapshot. Every other shard
//!    reads the plan, and refuses (FATAL) when the slot is gone or was advanced past *C* (a
//!    streaming run during the backfill), or the plan is for another table, slot or count.
//! 2. **Each shard a series of segments.** A shard reads its range as an unsharded snapshot
//!    does (keyset pagination bounded by `(key) <= (last key of the range)`, or its block
//!    range), in `REPEATABLE READ` transactions, each recorded as a segment (its lower bound
//!    and MVCC snapshot), resuming after the last key or block committed when its pod is
//!    restarted. Its rows carry `_lsn = C`.
//! 3. **The stream merges the shards.** When the backfill completes, the stream resumes from
//!    [`merge_shard_positions`]: *C* with every shard's segments in index order, which is key
//!    order. A change committed after *C* is then skipped exactly when the segment whose
//!    range holds its key saw its transaction (the check a resumed snapshot makes), so a keyed
//!    table is exact. Without a key a change is skipped only when every shard's snapshot saw
//!    it: a change committed between the earliest and the latest shard snapshot may appear
//!    both in a snapshot and as a change (at least once, never lost), as for an interrupted
//!    keyless snapshot.
//!
//! The slot belongs to the backfill once the plan is written: no shard drops it. The streaming
//! run after the backfill must not start before it completes (it would advance the slot the
//! shards' plan depends on; a shard started after that refuses, as above).
//!
//! # Output schema and type mapping
//!
//! The table's columns in table order, all nullable (a delete carries only the replica
//! identity columns unless the table has `REPLICA IDENTITY FULL`), then: `_op` (utf8: `r`
//! snapshot read, `c` insert, `u` update, `d` delete), `_lsn` (uint64, the change's WAL
//! position), `_commit_ts` (timestamp\[us, UTC\]), `_xid` (int64) and `_unchanged_toast`
//! (list of utf8, [`UNCHANGED_TOAST_COLUMN`]).
//!
//! **Unchanged TOASTed values.** An update that does not touch a large (TOASTed, stored out of
//! line) value does not carry it in the WAL: `pgoutput` sends it as "unchanged". With `REPLICA
//! IDENTITY FULL` the old row carries it and the update row has the value. Otherwise the value
//! is not available to logical decoding at all, so the row has it null **and names the column
//! in `_unchanged_toast`**: a consumer merging changes keeps the previous value of every column
//! listed there (never a silent null). `_unchanged_toast` is null when every value is present
//! (snapshot rows, inserts, deletes, and updates that carry every column). Set `REPLICA
//! IDENTITY FULL` on tables whose large columns must be in every update row (at the cost of
//! logging whole old rows). Output landed before this column existed has one column less:
//! with `sink.schemaEvolution: addNullableColumns` the sink widens in place, otherwise the first
//! run after the upgrade is a schema mismatch (the operator backfills).
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
//! | an enum | Utf8 (the label) |
//! | a domain | the type it is over (a domain's `numeric(p, s)` gives its precision) |
//! | a one-dimensional array of any type above | List (`item`, nullable elements) |
//!
//! Any other type (intervals, geometric, ranges, composites, ...) is a clear error naming
//! the table and column, before anything is created. An array value of more than one
//! dimension cannot be a list: that row goes to the dead-letter queue with the reason. A value that does not fit its Arrow type (numeric `NaN`, `infinity`
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
//! (age of the last transaction read, 0 when caught up) and [`SLOT_RETAINED_WAL_BYTES`] (WAL
//! the slot keeps on the server's disk, from its `restart_lsn`) carry the stream's labels; a
//! WARN is logged (at most once a minute) while the retained WAL exceeds
//! `retainedWalWarningBytes` (default 1 GiB).
//!
//! # Quiet tables
//!
//! A slot retains WAL from its `restart_lsn`, which moves only when the slot is advanced. WAL
//! is shared by the whole cluster, so a captured table that receives no changes while others
//! do would pin everything written since its last change. The server sends a keepalive with
//! its position when WAL moves on without a change to send (and in answer to each status
//! update); when no transaction is open there, the stream's position moves to that point
//! anyway (an empty batch carrying only the position, every `pollInterval`), and the slot is
//! confirmed there once the sink has committed it. The
//! retained WAL therefore stays bounded by what is written between two commits, whatever the
//! captured table does (tested with a quiet table while another takes 64 MB of inserts).
//! A database that takes no writes at all, while other databases of the cluster do, gives
//! the server no WAL of its own to decode; `heartbeatInterval` (e.g. `"1m"`) writes a logical
//! message of a few bytes there (`pg_logical_emit_message(false, 'arcane.heartbeat', '')`,
//! never a row) once per interval, so the position keeps moving.

mod changes;
mod client;
mod config;
mod copy;
mod pgoutput;
mod position;
mod preflight;
mod relation;
mod replication;
mod retire;
mod rows;
mod shards;
mod slot;
mod snapshot;
mod source;
mod types;
mod worker;

pub use config::{
    DEFAULT_BATCH_ROWS, DEFAULT_IDLE_TIMEOUT, DEFAULT_POLL_INTERVAL,
    DEFAULT_RETAINED_WAL_WARNING_BYTES, PostgresCdcSourceConfig,
};
pub use pgoutput::Lsn;
pub use position::{PgPosition, Segment, SnapshotProgress, TxProgress};
pub use retire::retire;
pub use rows::UNCHANGED_TOAST_COLUMN;
pub use shards::merge_shard_positions;
pub use source::{
    PostgresCdcSource, REPLICATION_LAG_BYTES, REPLICATION_LAG_SECONDS, SLOT_RETAINED_WAL_BYTES,
};
pub use types::{SUPPORTED_TYPES, arrow_type};
#[cfg(feature = "fuzzing")]
pub(crate) use {
    copy::CopyReader, pgoutput::Message, pgoutput::Value, pgoutput::decode, types::ColumnBuilder,
    types::binary_cast,
};

//! [`PostgresCdcSource`]: snapshot + `pgoutput` change stream of one table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arcane_core::metrics::MetricLabels;
use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedBatch, PositionedStream, Result,
    Source, SourceStart,
};
use arrow_array::builder::{
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

use super::config::{PostgresCdcSourceConfig, Settings};
use super::pgoutput::{self, Lsn, Message, RelColumn, Value};
use super::types::{ColumnBuilder, SUPPORTED_TYPES, arrow_type};

/// Gauge: bytes of WAL between the server's current position and the slot's committed position.
pub const REPLICATION_LAG_BYTES: &str = "arcane.source.postgres.replication_lag_bytes";
/// Gauge: seconds between now and the commit time of the last transaction read (0 when caught up).
pub const REPLICATION_LAG_SECONDS: &str = "arcane.source.postgres.replication_lag_seconds";

/// The source position: an LSN, plus snapshot progress while the snapshot runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgPosition {
    /// Every transaction whose commit ends at or before this LSN is included.
    pub lsn: Lsn,
    /// The first `rows` emitted rows of the transaction committing at `commitLsn` are included
    /// too (a transaction larger than `batchRows` is split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<TxProgress>,
    /// While the snapshot runs: the rows with a primary key up to `afterPk` are included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
    /// The snapshots the table was read with; changes of transactions visible in them are
    /// already in the snapshot rows and are skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
}

/// Progress inside one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxProgress {
    /// The transaction's commit LSN.
    pub commit_lsn: Lsn,
    /// Rows of it already included.
    pub rows: u64,
}

/// Progress of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotProgress {
    /// The last primary key included (`None`: none yet).
    pub after_pk: Option<i64>,
}

/// The rows with a primary key above `afterPk` (up to the next segment's) were read with this
/// MVCC snapshot (`pg_current_snapshot()`), taken before WAL position `walEnd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Lower bound (exclusive) of the primary keys read with this snapshot.
    pub after_pk: Option<i64>,
    /// `xmin:xmax:xip,...` of the snapshot.
    pub snapshot: String,
    /// WAL insert position right after the snapshot was taken.
    pub wal_end: Lsn,
}

struct ParsedSnapshot {
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
}

impl ParsedSnapshot {
    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next() {
            Some("") | None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?,
        };
        Some(Self { xmin, xmax, xip })
    }

    /// Was the (32-bit) transaction id committed and visible in this snapshot?
    fn visible(&self, xid: u32) -> bool {
        // Widen to the 64-bit id closest to xmax (same epoch or the one before).
        let epoch = self.xmax & !0xFFFF_FFFF;
        let mut full = epoch | u64::from(xid);
        if full > self.xmax + (1 << 31) && full >= (1 << 32) {
            full -= 1 << 32;
        } else if full > self.xmax + (1 << 31) {
            return false;
        }
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

/// Shared between the stream's worker and [`Source::commit`].
#[derive(Debug, Default)]
struct Shared {
    /// An LSN the slot should be advanced to (committed by the sink, not yet advanced).
    pending_advance: Mutex<Option<Lsn>>,
}

/// The PostgreSQL change-data-capture source; see the [module docs](super).
#[derive(Debug)]
pub struct PostgresCdcSource {
    settings: Settings,
    prefix: String,
    shared: Arc<Shared>,
    ack_client: Option<Client>,
}

impl PostgresCdcSource {
    /// A source from its settings; errors name `spec.source.<field>`.
    pub fn new(config: PostgresCdcSourceConfig) -> Result<Self> {
        Self::new_at(config, "spec.source")
    }

    /// A source whose config errors name `{prefix}.<field>`.
    pub fn new_at(config: PostgresCdcSourceConfig, prefix: &str) -> Result<Self> {
        Ok(Self {
            settings: config.validate(prefix)?,
            prefix: prefix.to_string(),
            shared: Arc::new(Shared::default()),
            ack_client: None,
        })
    }

    fn qualified(&self) -> String {
        format!("{}.{}", self.settings.schema, self.settings.table)
    }
}

/// An error inside the worker: from PostgreSQL (maybe transient) or already typed.
#[derive(Debug)]
enum WorkError {
    Pg(tokio_postgres::Error),
    Typed(Error),
}

impl From<tokio_postgres::Error> for WorkError {
    fn from(e: tokio_postgres::Error) -> Self {
        WorkError::Pg(e)
    }
}
impl From<Error> for WorkError {
    fn from(e: Error) -> Self {
        WorkError::Typed(e)
    }
}

type WorkResult<T> = std::result::Result<T, WorkError>;

/// Connection lost or server restarting: worth reconnecting.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P")
        }
        // No SQLSTATE: an I/O or protocol error on the connection.
        None => true,
    }
}

fn slot_busy(e: &WorkError) -> bool {
    matches!(e, WorkError::Pg(pg) if pg.code().map(|c| c.code()) == Some("55006"))
}

async fn connect(settings: &Settings) -> std::result::Result<Client, tokio_postgres::Error> {
    let (client, connection) = settings.pg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    client
        .batch_execute(
            "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET extra_float_digits = 3; \
             SET bytea_output = hex; SET IntervalStyle = postgres",
        )
        .await?;
    Ok(client)
}

fn pg_err(name: &str, what: &str, e: tokio_postgres::Error) -> Error {
    let message = format!(
        "{what}: {}",
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string())
    );
    if is_transient(&e) {
        Error::source_transient(name, message, e)
    } else {
        Error::Source {
            source_name: name.to_string(),
            message,
            retry: arcane_core::Retry::Permanent,
            source: Some(Box::new(e)),
        }
    }
}

/// One output column of the table.
#[derive(Debug, Clone, PartialEq)]
struct OutCol {
    name: String,
    data_type: DataType,
}

/// The table as read from the catalog.
#[derive(Debug, Clone)]
struct TableInfo {
    oid: u32,
    columns: Vec<OutCol>,
    /// Index of the single integer primary-key column, if there is one.
    pk: Option<usize>,
}

async fn table_info(
    client: &Client,
    name: &str,
    schema: &str,
    table: &str,
) -> WorkResult<TableInfo> {
    let qualified = format!("{schema}.{table}");
    let rows = client
        .query(
            "SELECT c.oid, a.attname::text, a.atttypid, a.atttypmod, \
                    coalesce(a.attnum = ANY (i.indkey::int2[]) AND array_length(i.indkey::int2[], 1) = 1, false) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await?;
    if rows.is_empty() {
        return Err(Error::source_permanent(
            name,
            format!("table {qualified} does not exist (or has no columns); create it or fix spec.source.table"),
        )
        .into());
    }
    let oid: u32 = rows[0].get(0);
    let mut columns = Vec::new();
    let mut pk = None;
    for (i, row) in rows.iter().enumerate() {
        let col: String = row.get(1);
        let type_oid: u32 = row.get(2);
        let typmod: i32 = row.get(3);
        let is_pk: bool = row.get(4);
        let data_type = arrow_type(type_oid, typmod).ok_or_else(|| {
            Error::source_permanent(
                name,
                format!("table {qualified} column {col:?} has a type (oid {type_oid}) this source does not support; supported: {SUPPORTED_TYPES}; cast it in a view-free way or exclude the table"),
            )
        })?;
        if is_pk
            && matches!(
                data_type,
                DataType::Int16 | DataType::Int32 | DataType::Int64
            )
        {
            pk = Some(i);
        }
        columns.push(OutCol {
            name: col,
            data_type,
        });
    }
    Ok(TableInfo { oid, columns, pk })
}

/// Rows being collected into one Arrow batch.
struct RowsBuilder {
    schema: SchemaRef,
    cols: Vec<ColumnBuilder>,
    op: StringBuilder,
    lsn: UInt64Builder,
    ts: TimestampMicrosecondBuilder,
    xid: Int64Builder,
    ok: Vec<bool>,
}

fn output_schema(columns: &[OutCol]) -> SchemaRef {
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
        .collect();
    fields.push(Field::new("_op", DataType::Utf8, false));
    fields.push(Field::new("_lsn", DataType::UInt64, false));
    fields.push(Field::new(
        "_commit_ts",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    ));
    fields.push(Field::new("_xid", DataType::Int64, true));
    Arc::new(Schema::new(fields))
}

impl RowsBuilder {
    fn new(columns: &[OutCol]) -> Self {
        Self {
            schema: output_schema(columns),
            cols: columns
                .iter()
                .map(|c| ColumnBuilder::new(&c.data_type))
                .collect(),
            op: StringBuilder::new(),
            lsn: UInt64Builder::new(),
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            xid: Int64Builder::new(),
            ok: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.ok.len()
    }

    /// Append one row; `value(i)` gives output column `i`'s text. Returns the first conversion
    /// error (the row is then dropped from the batch at `finish`).
    fn append<'v>(
        &mut self,
        value: impl Fn(usize) -> Option<&'v str>,
        op: &str,
        lsn: Lsn,
        commit_ts: Option<i64>,
        xid: Option<u32>,
        names: &[OutCol],
    ) -> std::result::Result<(), String> {
        let mut first_err = None;
        for (i, b) in self.cols.iter_mut().enumerate() {
            match value(i) {
                None => b.append_null(),
                Some(text) => {
                    if let Err(e) = b.append_text(text) {
                        b.append_null();
                        first_err.get_or_insert_with(|| format!("column {:?}: {e}", names[i].name));
                    }
                }
            }
        }
        self.op.append_value(op);
        self.lsn.append_value(lsn.0);
        self.ts.append_option(commit_ts);
        self.xid.append_option(xid.map(i64::from));
        self.ok.push(first_err.is_none());
        first_err.map_or(Ok(()), Err)
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = self.cols.iter_mut().map(|b| b.finish()).collect();
        arrays.push(Arc::new(self.op.finish()));
        arrays.push(Arc::new(self.lsn.finish()));
        arrays.push(Arc::new(self.ts.finish()));
        arrays.push(Arc::new(self.xid.finish()));
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::fatal(format!("postgres-cdc batch: {e}")))?;
        let ok = std::mem::take(&mut self.ok);
        if ok.iter().all(|&k| k) {
            return Ok(batch);
        }
        arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(ok))
            .map_err(|e| Error::fatal(format!("postgres-cdc batch: {e}")))
    }
}

/// The worker behind the stream: snapshot, then the change stream.
struct Worker {
    settings: Settings,
    name: String,
    qualified: String,
    mode: Mode,
    labels: MetricLabels,
    /// Rows dead-lettered since the last batch was sent (they travel with its position).
    dead_letters: Vec<DeadLetter>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<PositionedBatch>>,
    /// Position after the last emitted row.
    pos: PgPosition,
    /// Rows after `pos` to skip (the checkpoint's `rows`).
    skip_rows: u64,
    table: TableInfo,
    /// Relation column → output column, from the last Relation message.
    mapping: Vec<Option<usize>>,
    rows: RowsBuilder,
    /// The position last sent downstream.
    sent: Option<PgPosition>,
}

/// Stop: the stream was dropped.
struct Closed;

impl Worker {
    async fn send(&mut self) -> std::result::Result<(), Closed> {
        let batch = match self.rows.finish() {
            Ok(b) => b,
            Err(e) => {
                let _ = self.tx.send(Err(e)).await;
                return Err(Closed);
            }
        };
        let position = match Position::encode(&self.pos) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.tx.send(Err(e)).await;
                return Err(Closed);
            }
        };
        self.sent = Some(self.pos.clone());
        let letters = std::mem::take(&mut self.dead_letters);
        self.tx
            .send(Ok(
                PositionedBatch::new(batch, position).with_dead_letters(letters)
            ))
            .await
            .map_err(|_| Closed)
    }

    async fn run(mut self) {
        let mut attempts = 0u32;
        let mut client: Option<Client> = None;
        loop {
            let result = async {
                let c = match client.take() {
                    Some(c) => c,
                    None => connect(&self.settings).await?,
                };
                let r = self.phases(&c).await;
                client = Some(c);
                r
            }
            .await;
            match result {
                Ok(Ok(())) | Ok(Err(Closed)) => return,
                Err(WorkError::Pg(e))
                    if is_transient(&e) && attempts < self.settings.config.reconnect_attempts =>
                {
                    attempts += 1;
                    client = None;
                    let wait =
                        Duration::from_secs(1 << attempts.min(5)).min(Duration::from_secs(30));
                    tracing::warn!(source = %self.name, error = %e, attempt = attempts, wait = ?wait, "postgres connection lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.tx.closed() => return,
                    }
                }
                Err(WorkError::Pg(e)) => {
                    let _ = self
                        .tx
                        .send(Err(pg_err(&self.name, "reading changes", e)))
                        .await;
                    return;
                }
                Err(WorkError::Typed(e)) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }

    async fn phases(&mut self, client: &Client) -> WorkResult<std::result::Result<(), Closed>> {
        if self.pos.snapshot.is_some() {
            if let Err(closed) = self.snapshot(client).await? {
                return Ok(Err(closed));
            }
        }
        if self.mode == Mode::Backfill {
            return Ok(Ok(()));
        }
        self.stream(client).await
    }

    /// Read the table in primary-key order in one REPEATABLE READ transaction.
    async fn snapshot(&mut self, client: &Client) -> WorkResult<std::result::Result<(), Closed>> {
        let Some(pk) = self.table.pk else {
            return Err(Error::source_permanent(
                &self.name,
                format!("table {} has no single-column integer primary key, which the snapshot pages by; add one or set spec.source.snapshot to false", self.qualified),
            )
            .into());
        };
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let row = client
            .query_one(
                "SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text",
                &[],
            )
            .await?;
        let snap: String = row.get(0);
        let wal_end = Lsn::parse(row.get::<_, &str>(1)).unwrap_or_default();
        let after_pk = self.pos.snapshot.and_then(|s| s.after_pk);
        self.pos.segments.push(Segment {
            after_pk,
            snapshot: snap,
            wal_end,
        });
        tracing::info!(source = %self.name, table = %self.qualified, after_pk = ?after_pk, "snapshot started");
        let select: Vec<String> = self
            .table
            .columns
            .iter()
            .map(|c| format!("_t.{}::text", quote_ident(&c.name)))
            .collect();
        let pk_name = quote_ident(&self.table.columns[pk].name);
        let sql = format!(
            "SELECT _t.{pk_name}::int8, {} FROM {} AS _t WHERE $1::int8 IS NULL OR _t.{pk_name} > $1::int8 ORDER BY _t.{pk_name} LIMIT $2",
            select.join(", "),
            self.qualified_sql()
        );
        let stmt = client.prepare(&sql).await?;
        let limit = self.settings.config.batch_rows as i64;
        loop {
            let after = self.pos.snapshot.and_then(|s| s.after_pk);
            let rows = client.query(&stmt, &[&after, &limit]).await?;
            let done = rows.len() < self.settings.config.batch_rows;
            for row in &rows {
                let key: i64 = row.get(0);
                self.pos.snapshot = Some(SnapshotProgress {
                    after_pk: Some(key),
                });
                if self.skip_rows > 0 {
                    self.skip_rows -= 1;
                    continue;
                }
                let values: Vec<Option<&str>> = (0..self.table.columns.len())
                    .map(|i| row.get(i + 1))
                    .collect();
                let lsn = self.pos.lsn;
                if let Err(reason) =
                    self.rows
                        .append(|i| values[i], "r", lsn, None, None, &self.table.columns)
                {
                    self.dead_letter(&format!("snapshot primary key {key}"), reason);
                }
            }
            if done {
                self.pos.snapshot = None;
            }
            if let Err(closed) = self.send().await {
                return Ok(Err(closed));
            }
            if done {
                break;
            }
        }
        client.batch_execute("COMMIT").await?;
        tracing::info!(source = %self.name, table = %self.qualified, "snapshot finished");
        Ok(Ok(()))
    }

    fn qualified_sql(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.settings.schema),
            quote_ident(&self.settings.table)
        )
    }

    fn dead_letter(&mut self, locator: &str, reason: String) {
        tracing::warn!(source = %self.name, locator, reason = %reason, "row dead-lettered");
        self.dead_letters
            .push(DeadLetter::new(self.qualified.clone(), locator, reason));
    }

    /// Poll the slot with `pg_logical_slot_peek_binary_changes` until the stream is dropped.
    async fn stream(&mut self, client: &Client) -> WorkResult<std::result::Result<(), Closed>> {
        let slot = self.settings.config.slot.clone();
        let publication = self.settings.config.publication.clone();
        let peek = client
            .prepare(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL, \
                 'proto_version', '1', 'publication_names', $3)",
            )
            .await?;
        'poll: loop {
            // Advance the slot to what the sink committed, if commit() could not.
            let pending = self
                .shared
                .pending_advance
                .lock()
                .map(|mut p| p.take())
                .unwrap_or(None);
            if let Some(lsn) = pending {
                if let Err(e) = advance_slot(client, &slot, lsn).await {
                    if slot_busy(&e) {
                        if let Ok(mut p) = self.shared.pending_advance.lock() {
                            p.get_or_insert(lsn);
                        }
                    } else {
                        return Err(e);
                    }
                }
            }
            let row = client
                .query_one(
                    "SELECT pg_current_wal_lsn()::text, (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1)",
                    &[&slot],
                )
                .await?;
            let upto_text: String = row.get(0);
            let upto = Lsn::parse(&upto_text).unwrap_or_default();
            let Some(confirmed) = row.get::<_, Option<&str>>(1).and_then(Lsn::parse) else {
                return Err(Error::source_permanent(&self.name, format!("replication slot {slot} disappeared; the changes it held are lost; backfill the stream")).into());
            };
            metrics::gauge!(REPLICATION_LAG_BYTES, self.labels.to_vec())
                .set(upto.0.saturating_sub(confirmed.0) as f64);
            let before = self.pos.clone();
            let mut emitted = 0usize;
            let mut last_ts: Option<i64> = None;
            let result = client
                .query_raw(
                    &peek,
                    [
                        &slot as &(dyn tokio_postgres::types::ToSql + Sync),
                        &upto_text,
                        &publication,
                    ],
                )
                .await;
            let rows = match result {
                Ok(rows) => rows,
                Err(e) => {
                    let e = WorkError::Pg(e);
                    if slot_busy(&e) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    return Err(e);
                }
            };
            futures::pin_mut!(rows);
            let mut cur: Option<CurTx> = None;
            let mut first = true;
            while let Some(row) = rows.next().await {
                // The slot can still be held by the backend of a process that just stopped
                // (its last peek running on); the error arrives with the first row.
                let row = match row {
                    Ok(row) => row,
                    Err(e) => {
                        let e = WorkError::Pg(e);
                        if first && slot_busy(&e) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue 'poll;
                        }
                        return Err(e);
                    }
                };
                first = false;
                let change_lsn = Lsn::parse(row.get::<_, &str>(0)).unwrap_or_default();
                let data: &[u8] = row.get(1);
                let msg = pgoutput::decode(data).map_err(|e| {
                    Error::source_permanent(
                        &self.name,
                        format!("cannot decode pgoutput message at {change_lsn}: {}", e.0),
                    )
                })?;
                match msg {
                    Message::Begin {
                        final_lsn,
                        commit_ts_us,
                        xid,
                    } => {
                        let already = match self.pos.tx {
                            Some(t) if t.commit_lsn == final_lsn => t.rows,
                            _ => 0,
                        };
                        cur = Some(CurTx {
                            final_lsn,
                            commit_ts_us,
                            xid,
                            skip: final_lsn < self.pos.lsn,
                            already,
                            count: 0,
                        });
                    }
                    Message::Commit { end_lsn, .. } => {
                        if let Some(t) = cur.take() {
                            if !t.skip {
                                self.pos.lsn = end_lsn;
                                self.pos.tx = None;
                                last_ts = Some(t.commit_ts_us);
                            }
                        }
                        if self.rows.len() >= self.settings.config.batch_rows {
                            emitted += self.rows.len();
                            if let Err(c) = self.send().await {
                                return Ok(Err(c));
                            }
                        }
                    }
                    Message::Relation { relid, columns, .. } if relid == self.table.oid => {
                        if cur.as_ref().is_some_and(|t| t.skip) {
                            continue;
                        }
                        self.apply_relation(client, &columns).await?;
                    }
                    Message::Insert { relid, new } if relid == self.table.oid => {
                        if let Some(t) = cur.as_mut() {
                            if let Err(c) = self.change(t, "c", change_lsn, &new, None).await {
                                return Ok(Err(c));
                            }
                        }
                    }
                    Message::Update { relid, old, new } if relid == self.table.oid => {
                        if let Some(t) = cur.as_mut() {
                            if let Err(c) =
                                self.change(t, "u", change_lsn, &new, old.as_deref()).await
                            {
                                return Ok(Err(c));
                            }
                        }
                    }
                    Message::Delete { relid, old } if relid == self.table.oid => {
                        if let Some(t) = cur.as_mut() {
                            if let Err(c) = self.change(t, "d", change_lsn, &old, None).await {
                                return Ok(Err(c));
                            }
                        }
                    }
                    Message::Truncate { relids }
                        if relids.contains(&self.table.oid)
                            && cur.as_ref().is_some_and(|t| !t.skip) =>
                    {
                        return Err(Error::SchemaMismatch {
                            location: format!("postgres table {}", self.qualified),
                            message: format!("the table was truncated (at {change_lsn}); backfill the stream to take a new snapshot"),
                        }
                        .into());
                    }
                    _ => {}
                }
            }
            // Every transaction committed before `upto` was returned by this call.
            if self.pos.tx.is_none() && upto > self.pos.lsn {
                self.pos.lsn = upto;
            }
            let lsn = self.pos.lsn;
            self.pos.segments.retain(|s| s.wal_end > lsn);
            metrics::gauge!(REPLICATION_LAG_SECONDS, self.labels.to_vec()).set(match last_ts {
                Some(ts) => (chrono::Utc::now().timestamp_micros() - ts).max(0) as f64 / 1e6,
                None => 0.0,
            });
            emitted += self.rows.len();
            if self.rows.len() > 0 || (self.pos != before && self.sent.as_ref() != Some(&self.pos))
            {
                if let Err(c) = self.send().await {
                    return Ok(Err(c));
                }
            }
            if emitted == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.config.poll_interval) => {}
                    _ = self.tx.closed() => return Ok(Err(Closed)),
                }
            }
        }
    }

    /// Handle one change of the captured table.
    async fn change(
        &mut self,
        t: &mut CurTx,
        op: &str,
        lsn: Lsn,
        values: &[Value<'_>],
        old: Option<&[Value<'_>]>,
    ) -> std::result::Result<(), Closed> {
        if t.skip {
            return Ok(());
        }
        if self.in_snapshot(t.xid, t.final_lsn, values) {
            return Ok(());
        }
        t.count += 1;
        if t.count <= t.already {
            return Ok(());
        }
        self.pos.tx = Some(TxProgress {
            commit_lsn: t.final_lsn,
            rows: t.count,
        });
        if self.skip_rows > 0 {
            self.skip_rows -= 1;
            return Ok(());
        }
        let mut texts: Vec<Option<&str>> = vec![None; self.table.columns.len()];
        for (i, v) in values.iter().enumerate() {
            let Some(Some(out)) = self.mapping.get(i) else {
                continue;
            };
            texts[*out] = match v {
                Value::Text(s) => Some(s),
                Value::Null => None,
                // Unchanged TOASTed value: the old row has it with REPLICA IDENTITY FULL.
                Value::Unchanged => match old.and_then(|o| o.get(i)) {
                    Some(Value::Text(s)) => Some(s),
                    _ => None,
                },
            };
        }
        if let Err(reason) = self.rows.append(
            |i| texts[i],
            op,
            lsn,
            Some(t.commit_ts_us),
            Some(t.xid),
            &self.table.columns,
        ) {
            self.dead_letter(&format!("change at {lsn} (xid {})", t.xid), reason);
        }
        if self.rows.len() >= self.settings.config.batch_rows {
            return self.send().await;
        }
        Ok(())
    }

    /// Is this change already in the snapshot rows (its transaction visible in the snapshot
    /// that read the row's primary-key range)?
    fn in_snapshot(&self, xid: u32, final_lsn: Lsn, values: &[Value<'_>]) -> bool {
        if self.pos.segments.is_empty() {
            return false;
        }
        let key = self
            .table
            .pk
            .and_then(|pk| self.mapping.iter().position(|m| *m == Some(pk)))
            .and_then(|i| match values.get(i) {
                Some(Value::Text(s)) => s.parse::<i64>().ok(),
                _ => None,
            });
        let segment = self
            .pos
            .segments
            .iter()
            .rev()
            .find(|s| match (s.after_pk, key) {
                (None, _) => true,
                (Some(after), Some(k)) => k > after,
                (Some(_), None) => false,
            });
        match segment {
            Some(s) if final_lsn < s.wal_end => {
                ParsedSnapshot::parse(&s.snapshot).is_some_and(|p| p.visible(xid))
            }
            _ => false,
        }
    }

    /// A Relation message for the captured table: check it against the output schema.
    /// Returns whether the schema changed (widened).
    async fn apply_relation(&mut self, client: &Client, rel: &[RelColumn]) -> WorkResult<bool> {
        let location = format!("postgres table {}", self.qualified);
        let mut columns = self.table.columns.clone();
        let mut mapping = Vec::with_capacity(rel.len());
        for c in rel {
            let Some(dt) = arrow_type(c.type_oid, c.typmod) else {
                return Err(Error::SchemaMismatch {
                    location,
                    message: format!("column {:?} now has a type (oid {}) this source does not support; supported: {SUPPORTED_TYPES}", c.name, c.type_oid),
                }
                .into());
            };
            match columns.iter().position(|o| o.name == c.name) {
                Some(i) if columns[i].data_type != dt => {
                    return Err(Error::SchemaMismatch {
                        location,
                        message: format!(
                            "column {:?} changed type from {} to {dt}; backfill the stream",
                            c.name, columns[i].data_type
                        ),
                    }
                    .into());
                }
                Some(i) => mapping.push(Some(i)),
                None => {
                    tracing::info!(source = %self.name, column = %c.name, data_type = %dt, "new column; the output schema widens (nullable)");
                    columns.push(OutCol {
                        name: c.name.clone(),
                        data_type: dt,
                    });
                    mapping.push(Some(columns.len() - 1));
                }
            }
        }
        // An output column the relation lacks: a change from before the column was added
        // (still in the catalog), or a dropped/renamed column (incompatible).
        let missing: Vec<&OutCol> = columns
            .iter()
            .filter(|o| !rel.iter().any(|c| c.name == o.name))
            .collect();
        if !missing.is_empty() {
            let now = table_info(
                client,
                &self.name,
                &self.settings.schema,
                &self.settings.table,
            )
            .await?;
            if let Some(gone) = missing
                .iter()
                .find(|m| !now.columns.iter().any(|c| c.name == m.name))
            {
                return Err(Error::SchemaMismatch {
                    location,
                    message: format!(
                        "column {:?} was dropped or renamed; backfill the stream",
                        gone.name
                    ),
                }
                .into());
            }
        }
        self.mapping = mapping;
        if columns != self.table.columns {
            // Rows of the old shape go out first; a dropped stream is noticed on the next send.
            if self.rows.len() > 0 && self.send().await.is_err() {
                tracing::debug!(source = %self.name, "stream dropped during a schema change");
            }
            self.table.columns = columns;
            self.rows = RowsBuilder::new(&self.table.columns);
            return Ok(true);
        }
        Ok(false)
    }
}

struct CurTx {
    final_lsn: Lsn,
    commit_ts_us: i64,
    xid: u32,
    skip: bool,
    already: u64,
    count: u64,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn advance_slot(client: &Client, slot: &str, lsn: Lsn) -> WorkResult<()> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let confirmed = row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|s| Lsn::parse(&s));
    if confirmed.is_some_and(|c| c >= lsn) {
        return Ok(());
    }
    client
        .execute(
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&slot, &lsn.to_string()],
        )
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Source for PostgresCdcSource {
    fn name(&self) -> String {
        format!(
            "postgres-cdc {} (slot {})",
            self.qualified(),
            self.settings.config.slot
        )
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        let name = self.name();
        let cfg = self.settings.config.clone();
        let client = connect(&self.settings)
            .await
            .map_err(|e| pg_err(&name, "connecting", e))?;
        let qualified = self.qualified();
        let info = match table_info(&client, &name, &self.settings.schema, &self.settings.table)
            .await
        {
            Ok(i) => i,
            Err(WorkError::Pg(e)) => return Err(pg_err(&name, "reading the table's columns", e)),
            Err(WorkError::Typed(e)) => return Err(e),
        };
        // Publication.
        let has_pub = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&cfg.publication],
            )
            .await
            .map_err(|e| pg_err(&name, "reading publications", e))?
            .is_some();
        if !has_pub {
            if !cfg.create_publication {
                return Err(Error::config(
                    format!("{}.publication", self.prefix),
                    format!(
                        "publication {} does not exist; create it (CREATE PUBLICATION {} FOR TABLE {qualified}) or set createPublication: true",
                        cfg.publication, cfg.publication
                    ),
                ));
            }
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    quote_ident(&cfg.publication),
                    format_args!(
                        "{}.{}",
                        quote_ident(&self.settings.schema),
                        quote_ident(&self.settings.table)
                    )
                ))
                .await
                .map_err(|e| pg_err(&name, "creating the publication", e))?;
            tracing::info!(source = %name, publication = %cfg.publication, "publication created");
        }
        // Slot and position.
        let resume: Option<PgPosition> = match &start.resume_from {
            Some(cp) => cp.decode(&name)?,
            None => None,
        };
        let slot_row = client
            .query_opt("SELECT confirmed_flush_lsn::text, plugin::text FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()", &[&cfg.slot])
            .await
            .map_err(|e| pg_err(&name, "reading replication slots", e))?;
        let slot_lsn = slot_row
            .as_ref()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|s| Lsn::parse(&s));
        let (pos, skip_rows) = match resume {
            Some(pos) => {
                if slot_lsn.is_none() {
                    return Err(Error::source_permanent(
                        &name,
                        format!(
                            "replication slot {} is missing, so the changes after the committed position {} are lost; backfill the stream (it creates a new slot)",
                            cfg.slot, pos.lsn
                        ),
                    ));
                }
                (pos, start.resume_from.as_ref().map_or(0, |c| c.rows))
            }
            None => {
                // Nothing committed yet. A slot left by an earlier run that committed nothing
                // is recreated so that the snapshot and the slot agree.
                if slot_lsn.is_some() && (cfg.snapshot || start.mode == Mode::Backfill) {
                    if !cfg.create_slot {
                        return Err(Error::config(
                            format!("{}.createSlot", self.prefix),
                            format!(
                                "slot {} exists but nothing was committed from it; a snapshot needs a new slot: drop it or set createSlot: true",
                                cfg.slot
                            ),
                        ));
                    }
                    tracing::warn!(source = %name, slot = %cfg.slot, "dropping the slot of an earlier run that committed nothing, to take a consistent snapshot");
                    client
                        .execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
                        .await
                        .map_err(|e| pg_err(&name, "dropping the old slot", e))?;
                }
                let lsn = if slot_lsn.is_some() && !(cfg.snapshot || start.mode == Mode::Backfill) {
                    slot_lsn.unwrap_or_default()
                } else {
                    if !cfg.create_slot {
                        return Err(Error::config(
                            format!("{}.slot", self.prefix),
                            format!(
                                "replication slot {} does not exist; create it (SELECT pg_create_logical_replication_slot('{}', 'pgoutput')) or set createSlot: true",
                                cfg.slot, cfg.slot
                            ),
                        ));
                    }
                    let row = client
                        .query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&cfg.slot])
                        .await
                        .map_err(|e| pg_err(&name, "creating the replication slot (is wal_level = logical?)", e))?;
                    let lsn = Lsn::parse(row.get::<_, &str>(0)).unwrap_or_default();
                    tracing::info!(source = %name, slot = %cfg.slot, consistent_point = %lsn, "replication slot created");
                    lsn
                };
                let snapshot = (cfg.snapshot || start.mode == Mode::Backfill)
                    .then_some(SnapshotProgress { after_pk: None });
                (
                    PgPosition {
                        lsn,
                        tx: None,
                        snapshot,
                        segments: Vec::new(),
                    },
                    0,
                )
            }
        };
        drop(client);
        let (tx, rx) = mpsc::channel(2);
        let rows = RowsBuilder::new(&info.columns);
        let mapping = (0..info.columns.len()).map(Some).collect();
        let worker = Worker {
            settings: self.settings.clone(),
            name,
            qualified,
            mode: start.mode,
            labels: start.labels,
            dead_letters: Vec::new(),
            shared: self.shared.clone(),
            tx,
            pos,
            skip_rows,
            table: info,
            mapping,
            rows,
            sent: None,
        };
        tokio::spawn(worker.run());
        Ok(Box::pin(tokio_stream_from(rx)))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let name = self.name();
        let Some(pos) = checkpoint.decode::<PgPosition>(&name)? else {
            return Ok(());
        };
        if pos.snapshot.is_some() {
            return Ok(());
        }
        if let Ok(mut p) = self.shared.pending_advance.lock() {
            *p = Some(p.map_or(pos.lsn, |old| old.max(pos.lsn)));
        }
        if self.ack_client.as_ref().is_none_or(|c| c.is_closed()) {
            self.ack_client = Some(
                connect(&self.settings)
                    .await
                    .map_err(|e| pg_err(&name, "connecting to advance the slot", e))?,
            );
        }
        let Some(client) = self.ack_client.as_ref() else {
            return Ok(());
        };
        // The worker's peek holds the slot briefly; retry, then leave it to the worker.
        for _ in 0..50 {
            let target = match self.shared.pending_advance.lock() {
                Ok(p) => *p,
                Err(_) => None,
            };
            let Some(target) = target else { return Ok(()) };
            match advance_slot(client, &self.settings.config.slot, target).await {
                Ok(()) => {
                    if let Ok(mut p) = self.shared.pending_advance.lock() {
                        if *p == Some(target) {
                            *p = None;
                        }
                    }
                    return Ok(());
                }
                Err(e) if slot_busy(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(WorkError::Pg(e)) => {
                    return Err(pg_err(&name, "advancing the replication slot", e));
                }
                Err(WorkError::Typed(e)) => return Err(e),
            }
        }
        Ok(())
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<PositionedBatch>>,
) -> impl futures::Stream<Item = Result<PositionedBatch>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_visibility_follows_xmin_xmax_and_in_progress_list() {
        let s = ParsedSnapshot::parse("100:105:101,103").unwrap();
        assert!(s.visible(99));
        assert!(s.visible(102));
        assert!(!s.visible(101));
        assert!(!s.visible(105));
        assert!(!s.visible(200));
        let wrapped = ParsedSnapshot::parse("4294967390:4294967400:").unwrap();
        assert!(wrapped.visible(100)); // 2^32 + 100 < xmin
        assert!(!wrapped.visible(110)); // 2^32 + 110 >= xmax
    }
}

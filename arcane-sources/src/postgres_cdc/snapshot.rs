//! The snapshot, in one `REPEATABLE READ` transaction per attempt: keyset pagination on the
//! table's key (its primary key, else a unique index on NOT NULL columns; any types, composite
//! keys compared as rows), or, for a table without a key, `ctid` block ranges (a TID range
//! scan).

use arcane_core::Error;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::client::{WorkResult, quote_ident};
use super::pgoutput::Lsn;
use super::position::{Segment, SnapshotProgress};
use super::rows::KeyCol;
use super::worker::Worker;

/// Rows per heap block assumed for a keyless table never analyzed (the most an 8 kB page
/// holds), so that a chunk of blocks stays within `batchRows` rows.
const MAX_ROWS_PER_BLOCK: f64 = 291.0;

impl Worker {
    /// Read the table in one REPEATABLE READ transaction, `batchRows` rows per chunk,
    /// continuing after the last key (or block) read.
    pub(super) async fn snapshot(&mut self, client: &Client) -> WorkResult<()> {
        self.begin_snapshot(client).await?;
        match self.table.key.clone() {
            Some(key) => self.keyset_snapshot(client, &key).await?,
            None => self.block_snapshot(client).await?,
        }
        client.batch_execute("COMMIT").await?;
        tracing::info!(source = %self.name, table = %self.qualified, "snapshot finished");
        Ok(())
    }

    /// Open the snapshot's transaction and record its MVCC snapshot as a new segment.
    async fn begin_snapshot(&mut self, client: &Client) -> WorkResult<()> {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let row = client
            .query_one(
                "SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text",
                &[],
            )
            .await?;
        let progress = self.pos.snapshot.clone().unwrap_or_default();
        let segment = Segment {
            after_key: progress.key(),
            from_block: progress.next_block,
            after_pk: None,
            snapshot: row.get(0),
            wal_end: Lsn::parse(row.get::<_, &str>(1)).unwrap_or_default(),
        };
        tracing::info!(source = %self.name, table = %self.qualified, after_key = ?segment.after_key, from_block = ?segment.from_block, "snapshot started");
        self.pos.segments.push(segment);
        Ok(())
    }

    /// Every column as text, after a first column locating the row (for dead letters).
    fn select_list(&self, locator: &str) -> String {
        let mut select = vec![format!("{locator}::text")];
        select.extend(
            self.table
                .columns
                .iter()
                .map(|c| format!("_t.{}::text", quote_ident(&c.name))),
        );
        select.join(", ")
    }

    /// Keyset pagination: `WHERE (k1, k2) > ($1, $2) ORDER BY k1, k2 LIMIT n`, the values
    /// cast from text to the key columns' types and compared with their collations.
    async fn keyset_snapshot(&mut self, client: &Client, key: &[KeyCol]) -> WorkResult<()> {
        let cols: Vec<String> = key
            .iter()
            .map(|k| format!("_t.{}", quote_ident(&self.table.columns[k.index].name)))
            .collect();
        let order = cols.join(", ");
        let params: Vec<String> = key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("${}::text::{}{}", i + 1, k.sql_type, k.collate))
            .collect();
        let locator = match cols.as_slice() {
            [one] => one.clone(),
            _ => format!("ROW({order})"),
        };
        let select = self.select_list(&locator);
        let what = if self.table.has_primary_key {
            "snapshot primary key"
        } else {
            "snapshot key"
        };
        let table = self.qualified_sql();
        let first = client
            .prepare(&format!(
                "SELECT {select} FROM {table} AS _t ORDER BY {order} LIMIT $1"
            ))
            .await?;
        let after = client
            .prepare(&format!(
                "SELECT {select} FROM {table} AS _t WHERE ({order}) > ({}) ORDER BY {order} LIMIT ${}",
                params.join(", "),
                key.len() + 1
            ))
            .await?;
        let batch_rows = self.settings.config.batch_rows;
        let limit = batch_rows as i64;
        loop {
            let last = self.pos.snapshot.as_ref().and_then(|s| s.key());
            let rows = match &last {
                None => client.query(&first, &[&limit]).await?,
                Some(values) if values.len() != key.len() => {
                    return Err(Error::source_permanent(
                        &self.name,
                        format!(
                            "the snapshot resumes after a key of {} column(s) but table {}'s key now has {}; backfill the stream",
                            values.len(),
                            self.qualified,
                            key.len()
                        ),
                    )
                    .into());
                }
                Some(values) => {
                    let mut p: Vec<&(dyn ToSql + Sync)> =
                        values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                    p.push(&limit);
                    client.query(&after, &p).await?
                }
            };
            let done = rows.len() < batch_rows;
            for row in &rows {
                self.snapshot_row(row, what);
            }
            if let Some(row) = rows.last() {
                let values = key
                    .iter()
                    .map(|k| {
                        row.get::<_, Option<String>>(k.index + 1)
                            .unwrap_or_default()
                    })
                    .collect();
                self.pos.snapshot = Some(SnapshotProgress {
                    after_key: Some(values),
                    ..SnapshotProgress::default()
                });
            }
            if done {
                self.pos.snapshot = None;
            }
            self.send().await?;
            if done {
                return Ok(());
            }
        }
    }

    /// A table without a key: ranges of heap blocks (`ctid >= '(b,0)' AND ctid < '(e,0)'`, a
    /// TID range scan), about `batchRows` rows each, up to the table's size when the snapshot
    /// was taken (every row visible in it is in those blocks).
    async fn block_snapshot(&mut self, client: &Client) -> WorkResult<()> {
        let table = self.qualified_sql();
        client
            .batch_execute(&format!("LOCK TABLE {table} IN ACCESS SHARE MODE"))
            .await?;
        let row = client
            .query_one(
                "SELECT (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8, \
                        c.relpages::int8, c.reltuples::float8 FROM pg_class c WHERE c.oid = $1",
                &[&self.table.oid],
            )
            .await?;
        let blocks = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let (pages, tuples): (i64, f64) = (row.get(1), row.get(2));
        let per_block = if pages > 0 && tuples > 0.0 {
            (tuples / pages as f64)
                .ceil()
                .clamp(1.0, MAX_ROWS_PER_BLOCK)
        } else {
            MAX_ROWS_PER_BLOCK
        };
        let chunk = ((self.settings.config.batch_rows as f64 / per_block) as u64).max(1);
        let select = self.select_list("_t.ctid");
        let range: Statement = client
            .prepare(&format!(
                "SELECT {select} FROM {table} AS _t \
                 WHERE _t.ctid >= $1::text::tid AND _t.ctid < $2::text::tid ORDER BY _t.ctid"
            ))
            .await?;
        loop {
            let from = self
                .pos
                .snapshot
                .as_ref()
                .and_then(|s| s.next_block)
                .unwrap_or(0);
            let to = from.saturating_add(chunk).min(blocks);
            let done = to >= blocks;
            let mut rows = Vec::new();
            if from < to {
                let (lo, hi) = (format!("({from},0)"), format!("({to},0)"));
                rows = client.query(&range, &[&lo, &hi]).await?;
                for row in &rows {
                    self.snapshot_row(row, "snapshot ctid");
                }
            }
            self.pos.snapshot = (!done).then(|| SnapshotProgress {
                next_block: Some(to),
                ..SnapshotProgress::default()
            });
            if done || !rows.is_empty() {
                self.send().await?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// One snapshot row (a locator, then every column as text) into the batch, or to the dead
    /// letters when a value does not fit its column.
    fn snapshot_row(&mut self, row: &Row, what: &str) {
        let values: Vec<Option<&str>> = (0..self.table.columns.len())
            .map(|i| row.get(i + 1))
            .collect();
        let lsn = self.pos.lsn;
        if let Err(reason) = self.rows.append(
            |i| values[i],
            &[],
            "r",
            lsn,
            None,
            None,
            &self.table.columns,
        ) {
            let locator: Option<&str> = row.get(0);
            self.dead_letter(&format!("{what} {}", locator.unwrap_or("?")), reason);
        }
    }
}

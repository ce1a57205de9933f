//! The snapshot, in one `REPEATABLE READ` transaction per attempt: keyset pagination on the
//! table's key (its primary key, else a unique index on NOT NULL columns; any types, composite
//! keys compared as rows), or, for a table without a key, `ctid` block ranges (a TID range
//! scan). Each page is one `COPY (SELECT …) TO STDOUT (FORMAT binary)`, decoded as it
//! arrives: the fixed-size types straight from their binary form into the Arrow builders,
//! the others from their text (see [`binary_cast`]).

use arcane_core::Error;
use futures::StreamExt;
use tokio_postgres::Client;

use super::client::{WorkError, WorkResult, quote_ident, within};
use super::copy::CopyReader;
use super::pgoutput::Lsn;
use super::position::{Segment, SnapshotProgress};
use super::rows::KeyCol;
use super::types::binary_cast;
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
        let row = within(self.settings.config.idle_timeout, async {
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            Ok(client
                .query_one(
                    "SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text",
                    &[],
                )
                .await?)
        })
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

    /// A first column locating the row (for dead letters) and the key columns as text (the
    /// position after a page), then every column cast for binary `COPY`.
    fn select_list(&self, locator: &str, key: &[KeyCol]) -> String {
        let column = |i: usize| format!("_t.{}", quote_ident(&self.table.columns[i].name));
        let mut select = vec![format!("{locator}::text")];
        select.extend(key.iter().map(|k| format!("{}::text", column(k.index))));
        select.extend(
            self.table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{}::{}", column(i), binary_cast(&c.data_type))),
        );
        select.join(", ")
    }

    /// Keyset pagination: `WHERE (k1, k2) > (v1, v2) ORDER BY k1, k2 LIMIT n`, the last key's
    /// values (text literals) cast to the key columns' types and compared with their
    /// collations.
    async fn keyset_snapshot(&mut self, client: &Client, key: &[KeyCol]) -> WorkResult<()> {
        let cols: Vec<String> = key
            .iter()
            .map(|k| format!("_t.{}", quote_ident(&self.table.columns[k.index].name)))
            .collect();
        let order = cols.join(", ");
        let locator = match cols.as_slice() {
            [one] => one.clone(),
            _ => format!("ROW({order})"),
        };
        let select = self.select_list(&locator, key);
        let what = if self.table.has_primary_key {
            "snapshot primary key"
        } else {
            "snapshot key"
        };
        let table = self.qualified_sql();
        let batch_rows = self.settings.config.batch_rows;
        // A shard of a sharded backfill reads up to the last key of its range.
        let until = self.pos.snapshot.as_ref().and_then(|s| s.until_key.clone());
        let cast = |values: &[String]| -> String {
            key.iter()
                .zip(values)
                .map(|(k, v)| format!("{}::text::{}{}", literal(v), k.sql_type, k.collate))
                .collect::<Vec<_>>()
                .join(", ")
        };
        loop {
            let last = self.pos.snapshot.as_ref().and_then(|s| s.key());
            let mut conditions = Vec::new();
            for bound in [&last, &until].into_iter().flatten() {
                if bound.len() != key.len() {
                    return Err(Error::source_permanent(
                        &self.name,
                        format!(
                            "the snapshot resumes after a key of {} column(s) but table {}'s key now has {}; backfill the stream",
                            bound.len(),
                            self.qualified,
                            key.len()
                        ),
                    )
                    .into());
                }
            }
            if let Some(values) = &last {
                conditions.push(format!("({order}) > ({})", cast(values)));
            }
            if let Some(values) = &until {
                conditions.push(format!("({order}) <= ({})", cast(values)));
            }
            let filter = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            let query = format!(
                "SELECT {select} FROM {table} AS _t {filter} ORDER BY {order} LIMIT {batch_rows}"
            );
            let (rows, last_key) = self.copy_page(client, &query, key.len(), what).await?;
            let done = rows < batch_rows;
            if let Some(values) = last_key {
                self.pos.snapshot = Some(SnapshotProgress {
                    after_key: Some(values),
                    until_key: until.clone(),
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

    /// One page: `COPY (query) TO STDOUT (FORMAT binary)` into the batch, row by row as the
    /// data arrives. The query's fields are a locator, `keys` key columns as text, then the
    /// table's columns. Returns the rows read and the last row's key.
    async fn copy_page(
        &mut self,
        client: &Client,
        query: &str,
        keys: usize,
        what: &str,
    ) -> WorkResult<(usize, Option<Vec<String>>)> {
        let idle = self.settings.config.idle_timeout;
        let sql = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
        let copy = within(idle, async { Ok(client.copy_out(&sql).await?) }).await?;
        futures::pin_mut!(copy);
        let malformed = |name: &str, e: String| {
            Error::source_permanent(
                name,
                format!("reading the snapshot's binary COPY data: {e}"),
            )
        };
        let mut reader = CopyReader::default();
        let mut rows = 0;
        let mut last_key: Vec<Vec<u8>> = vec![Vec::new(); keys];
        let fields = 1 + keys + self.table.columns.len();
        // The server may take a while to find a page's first row, never to send the next.
        while let Some(chunk) = tokio::time::timeout(idle, copy.next())
            .await
            .map_err(|_| WorkError::TimedOut(idle))?
        {
            reader.push(&chunk?);
            while reader.next_tuple().map_err(|e| malformed(&self.name, e))? {
                if reader.len() != fields {
                    let e = format!("a row of {} fields, not {fields}", reader.len());
                    return Err(malformed(&self.name, e).into());
                }
                for (i, k) in last_key.iter_mut().enumerate() {
                    k.clear();
                    k.extend_from_slice(reader.field(1 + i).unwrap_or_default());
                }
                self.snapshot_row(&reader, 1 + keys, what);
                rows += 1;
            }
        }
        reader.finish().map_err(|e| malformed(&self.name, e))?;
        let last_key = (rows > 0 && keys > 0).then(|| {
            last_key
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        });
        Ok((rows, last_key))
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
        let select = self.select_list("_t.ctid", &[]);
        // A shard of a sharded backfill reads up to the end of its block range.
        let until = self.pos.snapshot.as_ref().and_then(|s| s.until_block);
        let end = until.unwrap_or(blocks);
        loop {
            let from = self
                .pos
                .snapshot
                .as_ref()
                .and_then(|s| s.next_block)
                .unwrap_or(0);
            let to = from.saturating_add(chunk).min(end);
            let done = to >= end;
            let mut rows = 0;
            if from < to {
                let query = format!(
                    "SELECT {select} FROM {table} AS _t \
                     WHERE _t.ctid >= '({from},0)'::tid AND _t.ctid < '({to},0)'::tid ORDER BY _t.ctid"
                );
                (rows, _) = self.copy_page(client, &query, 0, "snapshot ctid").await?;
            }
            self.pos.snapshot = (!done).then(|| SnapshotProgress {
                next_block: Some(to),
                until_block: until,
                ..SnapshotProgress::default()
            });
            if done || rows > 0 {
                self.send().await?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// The current row of a page (a locator, then from field `offset` on every column)
    /// into the batch, or to the dead letters when a value does not fit its column.
    fn snapshot_row(&mut self, row: &CopyReader, offset: usize, what: &str) {
        let lsn = self.pos.lsn;
        if let Err(reason) =
            self.rows
                .append_binary(|i| row.field(offset + i), lsn, &self.table.columns)
        {
            let locator = row.field(0).map(String::from_utf8_lossy);
            self.dead_letter(
                &format!("{what} {}", locator.as_deref().unwrap_or("?")),
                reason,
            );
        }
    }
}

/// `v` as a string literal whatever `standard_conforming_strings` is: `E'…'` with
/// backslashes and quotes escaped.
fn literal(v: &str) -> String {
    format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(super::literal("a'b\\c"), "E'a''b\\\\c'");
        assert_eq!(super::literal(""), "E''");
    }
}

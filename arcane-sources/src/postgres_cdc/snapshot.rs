//! The snapshot: the table read in primary-key order in one `REPEATABLE READ` transaction.

use arcane_core::Error;
use tokio_postgres::{Client, Row, Statement};

use super::client::{WorkResult, quote_ident};
use super::pgoutput::Lsn;
use super::position::{Segment, SnapshotProgress};
use super::worker::Worker;

impl Worker {
    /// Read the table in primary-key order in one REPEATABLE READ transaction, `batchRows`
    /// rows per chunk, continuing after the last primary key read.
    pub(super) async fn snapshot(&mut self, client: &Client) -> WorkResult<()> {
        let Some(pk) = self.table.int_pk() else {
            return Err(Error::source_permanent(
                &self.name,
                format!("table {} has no single-column integer primary key, which the snapshot pages by; add one or set spec.source.snapshot to false", self.qualified),
            )
            .into());
        };
        let chunk = self.begin_snapshot(client, pk).await?;
        let limit = self.settings.config.batch_rows as i64;
        loop {
            let after = self.pos.snapshot.and_then(|s| s.after_pk);
            let rows = client.query(&chunk, &[&after, &limit]).await?;
            let done = rows.len() < self.settings.config.batch_rows;
            for row in &rows {
                self.snapshot_row(row);
            }
            if done {
                self.pos.snapshot = None;
            }
            self.send().await?;
            if done {
                break;
            }
        }
        client.batch_execute("COMMIT").await?;
        tracing::info!(source = %self.name, table = %self.qualified, "snapshot finished");
        Ok(())
    }

    /// Open the snapshot's transaction, record its MVCC snapshot as a new segment, and
    /// prepare the chunk query (`$1`: the last key read, `$2`: the chunk size).
    async fn begin_snapshot(&mut self, client: &Client, pk: usize) -> WorkResult<Statement> {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let row = client
            .query_one(
                "SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text",
                &[],
            )
            .await?;
        let after_pk = self.pos.snapshot.and_then(|s| s.after_pk);
        self.pos.segments.push(Segment {
            after_pk,
            snapshot: row.get(0),
            wal_end: Lsn::parse(row.get::<_, &str>(1)).unwrap_or_default(),
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
        Ok(client.prepare(&sql).await?)
    }

    /// One snapshot row (primary key, then every column as text) into the batch, or to the
    /// dead letters when a value does not fit its column.
    fn snapshot_row(&mut self, row: &Row) {
        let key: i64 = row.get(0);
        self.pos.snapshot = Some(SnapshotProgress {
            after_pk: Some(key),
        });
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
            self.dead_letter(&format!("snapshot primary key {key}"), reason);
        }
    }
}

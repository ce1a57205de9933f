//! The snapshot, in one `REPEATABLE READ` transaction per attempt: keyset pagination on the
//! table's key (its primary key, else a unique index on NOT NULL columns; any types, composite
//! keys compared as rows), or, for a table without a key, `ctid` block ranges (a TID range
//! scan). Each page is one `COPY (SELECT …) TO STDOUT (FORMAT binary)`, decoded as it
//! arrives: the fixed-size types straight from their binary form into the Arrow builders,
//! the others from their text (see [`binary_cast`]).

use arcane_core::Error;
use arrow_schema::DataType;
use tokio_postgres::Client;

use super::client::{WorkResult, quote_ident, within};
use super::copy::{CopyConn, CopyReader};
use super::pgoutput::Lsn;
use super::position::{Segment, SnapshotProgress};
use super::rows::{KeyCol, OutCol, RowsBuilder};
use super::types::binary_cast;
use super::worker::Worker;

/// Rows per heap block assumed for a keyless table never analyzed (the most an 8 kB page
/// holds), so that a chunk of blocks stays within `batchRows` rows.
const MAX_ROWS_PER_BLOCK: f64 = 291.0;

/// Batches (`batchRows` rows each) per keyset page: one `COPY` statement reads this many
/// batches, sent one by one while the server goes on with the page. Between two statements
/// the server waits for the source to read everything in flight; longer pages make those
/// waits rare, and a page is still one bounded statement (a `statement_timeout` applies to
/// each).
const PAGE_BATCHES: usize = 16;

impl Worker {
    /// Read the table in one REPEATABLE READ transaction, `batchRows` rows per chunk,
    /// continuing after the last key (or block) read.
    pub(super) async fn snapshot(&mut self, client: &Client) -> WorkResult<()> {
        self.forget_unsent_rows();
        self.begin_snapshot(client).await?;
        // The pages are read on a second connection, in the same MVCC snapshot.
        let idle = self.settings.config.idle_timeout;
        let exported: String = within(idle, async {
            Ok(client
                .query_one("SELECT pg_export_snapshot()", &[])
                .await?
                .get(0))
        })
        .await?;
        let application = format!(
            "{} snapshot",
            self.settings.pg.get_application_name().unwrap_or("arcane")
        );
        let mut copy = CopyConn::open(&self.settings, &application, &exported).await?;
        match self.table.key.clone() {
            Some(key) => self.keyset_snapshot(&mut copy, &key).await?,
            None => self.block_snapshot(client, &mut copy).await?,
        }
        copy.execute("COMMIT").await?;
        client.batch_execute("COMMIT").await?;
        tracing::info!(source = %self.name, table = %self.qualified, "snapshot finished");
        Ok(())
    }

    /// Drop the rows (and dead letters) an earlier attempt read after the last batch it sent:
    /// the snapshot's position moves only with a sent batch, so this attempt reads them
    /// again (keeping them would emit them twice).
    fn forget_unsent_rows(&mut self) {
        let rows = self.rows.len();
        if rows == 0 && self.dead_letters.is_empty() {
            return;
        }
        tracing::info!(source = %self.name, table = %self.qualified, rows, dead_letters = self.dead_letters.len(), "snapshot rows read after the last batch sent are read again");
        self.rows = RowsBuilder::new(&self.table.columns);
        self.dead_letters.clear();
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

    /// The fields each snapshot row is read as: first the key columns whose text cannot be
    /// told from their binary value, as text (see [`KeyText`]), or the `ctid` of a table read
    /// by blocks; then every column cast for binary `COPY`.
    fn select_list(&self, plan: &RowPlan) -> String {
        let column = |i: usize| format!("_t.{}", quote_ident(&self.table.columns[i].name));
        let mut select: Vec<String> = plan
            .ctid
            .then(|| "_t.ctid::tid".into())
            .into_iter()
            .collect();
        select.extend(plan.key.iter().filter_map(|k| match k {
            KeyText::Field(_, column_index) => Some(format!("{}::text", column(*column_index))),
            _ => None,
        }));
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
    async fn keyset_snapshot(&mut self, copy: &mut CopyConn, key: &[KeyCol]) -> WorkResult<()> {
        let cols: Vec<String> = key
            .iter()
            .map(|k| format!("_t.{}", quote_ident(&self.table.columns[k.index].name)))
            .collect();
        let order = cols.join(", ");
        let plan = RowPlan::keyed(key, &self.table.columns);
        let select = self.select_list(&plan);
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
            let page_rows = batch_rows.saturating_mul(PAGE_BATCHES);
            let query = format!(
                "SELECT {select} FROM {table} AS _t {filter} ORDER BY {order} LIMIT {page_rows}"
            );
            let chunks = Chunks {
                rows: batch_rows,
                until: until.clone(),
            };
            let rows = self
                .copy_page(copy, &query, &plan, what, Some(&chunks))
                .await?;
            // A full page ended with a full batch, already sent with its last key.
            if rows < page_rows {
                self.pos.snapshot = None;
                self.send().await?;
                return Ok(());
            }
        }
    }

    /// One page: `COPY (query) TO STDOUT (FORMAT binary)` into the batch, row by row as the
    /// data arrives, its fields laid out as `plan` says. With `chunks`, every `chunks.rows`
    /// rows are sent as a batch whose position is the last row's key. Returns the rows read.
    async fn copy_page(
        &mut self,
        copy: &mut CopyConn,
        query: &str,
        plan: &RowPlan,
        what: &str,
        chunks: Option<&Chunks>,
    ) -> WorkResult<usize> {
        copy.copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT binary)"))
            .await?;
        let malformed = |name: &str, e: String| {
            Error::source_permanent(
                name,
                format!("reading the snapshot's binary COPY data: {e}"),
            )
        };
        let mut reader = CopyReader::default();
        let mut rows = 0;
        let fields = plan.columns + self.table.columns.len();
        // Each wait for the server is bounded by `idleTimeout` (see `CopyConn`).
        while let Some(chunk) = copy.data().await? {
            reader.push(chunk);
            while reader.next_tuple().map_err(|e| malformed(&self.name, e))? {
                if reader.len() != fields {
                    let e = format!("a row of {} fields, not {fields}", reader.len());
                    return Err(malformed(&self.name, e).into());
                }
                self.snapshot_row(&reader, plan, what);
                rows += 1;
                if let Some(chunks) = chunks.filter(|c| rows % c.rows == 0) {
                    // The server keeps sending the page while the batch goes on.
                    let key = plan
                        .key
                        .iter()
                        .map(|k| k.text(reader.field(k.field(plan.columns)).unwrap_or_default()))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| malformed(&self.name, e))?;
                    self.pos.snapshot = Some(SnapshotProgress {
                        after_key: Some(key),
                        until_key: chunks.until.clone(),
                        ..SnapshotProgress::default()
                    });
                    self.send().await?;
                }
            }
        }
        reader.finish().map_err(|e| malformed(&self.name, e))?;
        Ok(rows)
    }

    /// A table without a key: ranges of heap blocks (`ctid >= '(b,0)' AND ctid < '(e,0)'`, a
    /// TID range scan), about `batchRows` rows each, up to the table's size when the snapshot
    /// was taken (every row visible in it is in those blocks).
    async fn block_snapshot(&mut self, client: &Client, copy: &mut CopyConn) -> WorkResult<()> {
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
        let plan = RowPlan::blocks();
        let select = self.select_list(&plan);
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
                rows = self
                    .copy_page(copy, &query, &plan, "snapshot ctid", None)
                    .await?;
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

    /// The current row of a page into the batch, or to the dead letters (located by its key
    /// or `ctid`) when a value does not fit its column.
    fn snapshot_row(&mut self, row: &CopyReader, plan: &RowPlan, what: &str) {
        let lsn = self.pos.lsn;
        let offset = plan.columns;
        if let Err(reason) =
            self.rows
                .append_binary(|i| row.field(offset + i), lsn, &self.table.columns)
        {
            self.dead_letter(&format!("{what} {}", plan.locator(row)), reason);
        }
    }
}

/// How a keyed snapshot's page is cut into batches: every `rows` rows, each batch's position
/// the last key read (and the shard's range end, `until`).
struct Chunks {
    rows: usize,
    until: Option<Vec<String>>,
}

/// Where a key column's text (the position after a page, and a dead letter's locator) is
/// read from a snapshot row, so that the server casts a key to text only when its binary
/// value does not tell it.
#[derive(Debug, Clone, Copy)]
enum KeyText {
    /// Output column `i`, cast to `text` for the copy anyway: its bytes are its text.
    Same(usize),
    /// Output column `i`, a binary `int2`, `int4` or `int8`, printed as PostgreSQL does.
    Int(usize),
    /// Extra field `f` (before the columns), `column::text`, of output column `i`.
    Field(usize, usize),
}

impl KeyText {
    /// The row's field this key is read from, the table's columns starting at `columns`.
    fn field(self, columns: usize) -> usize {
        match self {
            Self::Same(i) | Self::Int(i) => columns + i,
            Self::Field(f, _) => f,
        }
    }

    /// The key's text from its field's bytes.
    fn text(self, v: &[u8]) -> Result<String, String> {
        match self {
            Self::Same(_) | Self::Field(..) => std::str::from_utf8(v)
                .map(str::to_owned)
                .map_err(|e| format!("a key that is not UTF-8 text: {e}")),
            Self::Int(_) => match v.len() {
                2 => Ok(i16::from_be_bytes([v[0], v[1]]).to_string()),
                4 => Ok(i32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string()),
                8 => Ok(i64::from_be_bytes(v.try_into().unwrap_or_default()).to_string()),
                n => Err(format!("a binary integer key of {n} bytes")),
            },
        }
    }
}

/// The layout of a snapshot row: `columns` fields before the table's columns (the `ctid` of a
/// table read by blocks, then the key columns cast to text), and where each key column's text
/// is.
#[derive(Debug)]
struct RowPlan {
    key: Vec<KeyText>,
    ctid: bool,
    columns: usize,
}

impl RowPlan {
    /// Pages by `key`: integer and text-cast key columns are read from the columns themselves.
    fn keyed(key: &[KeyCol], columns: &[OutCol]) -> Self {
        let mut extra = 0;
        let key = key
            .iter()
            .map(|k| match &columns[k.index].data_type {
                DataType::Int16 | DataType::Int32 | DataType::Int64 => KeyText::Int(k.index),
                dt if binary_cast(dt) == "text" => KeyText::Same(k.index),
                _ => {
                    extra += 1;
                    KeyText::Field(extra - 1, k.index)
                }
            })
            .collect();
        Self {
            key,
            ctid: false,
            columns: extra,
        }
    }

    /// Reads by heap blocks: the first field is the row's `ctid`.
    fn blocks() -> Self {
        Self {
            key: Vec::new(),
            ctid: true,
            columns: 1,
        }
    }

    /// The current row's key (a composite one as PostgreSQL prints a row) or `ctid`, for a
    /// dead letter.
    fn locator(&self, row: &CopyReader) -> String {
        if self.ctid {
            return match row.field(0) {
                Some(&[a, b, c, d, e, f]) => format!(
                    "({},{})",
                    u32::from_be_bytes([a, b, c, d]),
                    u16::from_be_bytes([e, f])
                ),
                _ => "?".into(),
            };
        }
        let texts: Vec<String> = self
            .key
            .iter()
            .map(|k| {
                let v = row.field(k.field(self.columns)).unwrap_or_default();
                k.text(v)
                    .unwrap_or_else(|_| String::from_utf8_lossy(v).into_owned())
            })
            .collect();
        match texts.as_slice() {
            [one] => one.clone(),
            _ => record_text(&texts),
        }
    }
}

/// Values printed as PostgreSQL prints a row (`record_out`): `(a,b)`, a value quoted when it
/// is empty or holds a quote, backslash, parenthesis, comma or white space, with quotes and
/// backslashes doubled inside.
fn record_text(values: &[String]) -> String {
    let quoted = values.iter().map(|v| {
        let needs = v.is_empty()
            || v.chars()
                .any(|c| matches!(c, '"' | '\\' | '(' | ')' | ',') || c.is_ascii_whitespace());
        if needs {
            format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\"\""))
        } else {
            v.clone()
        }
    });
    format!("({})", quoted.collect::<Vec<_>>().join(","))
}

/// `v` as a string literal whatever `standard_conforming_strings` is: `E'…'` with
/// backslashes and quotes escaped.
fn literal(v: &str) -> String {
    format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_are_located_as_postgres_prints_a_row() {
        let t = |v: &[&str]| record_text(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(t(&["1", "abc"]), "(1,abc)");
        assert_eq!(
            t(&["", "a b", "x,y", "q\"t", "b\\s", "(p)"]),
            "(\"\",\"a b\",\"x,y\",\"q\"\"t\",\"b\\\\s\",\"(p)\")"
        );
    }

    #[test]
    fn integer_keys_are_printed_from_their_binary_value() {
        assert_eq!(KeyText::Int(0).text(&(-7i16).to_be_bytes()).unwrap(), "-7");
        assert_eq!(
            KeyText::Int(0).text(&i32::MIN.to_be_bytes()).unwrap(),
            "-2147483648"
        );
        assert_eq!(
            KeyText::Int(0).text(&i64::MAX.to_be_bytes()).unwrap(),
            "9223372036854775807"
        );
        assert!(
            KeyText::Int(0)
                .text(&[1, 2, 3])
                .unwrap_err()
                .contains("3 bytes")
        );
        assert!(
            KeyText::Same(0)
                .text(&[0xff])
                .unwrap_err()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(super::literal("a'b\\c"), "E'a''b\\\\c'");
        assert_eq!(super::literal(""), "E''");
    }
}

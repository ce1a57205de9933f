//! The captured table's shape, and turning decoded rows into Arrow batches.

use std::collections::HashMap;
use std::sync::Arc;

use arcane_core::{Error, Result};
use arrow_array::builder::{
    Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tokio_postgres::Client;

use super::client::WorkResult;
use super::pgoutput::Lsn;
use super::types::{
    ColumnBuilder, SUPPORTED_TYPES, TYPE_META_SQL, TypeMeta, missing_meta, resolve_type,
};

/// One output column of the table.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OutCol {
    pub(super) name: String,
    pub(super) data_type: DataType,
}

/// The table's `REPLICA IDENTITY` setting (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplicaIdentity {
    /// `DEFAULT`: the primary key (nothing without one).
    Default,
    /// `NOTHING`.
    Nothing,
    /// `FULL`: the whole old row.
    Full,
    /// `USING INDEX`: the columns of that index.
    Index,
}

impl ReplicaIdentity {
    fn from_char(c: &str) -> Self {
        match c {
            "n" => Self::Nothing,
            "f" => Self::Full,
            "i" => Self::Index,
            _ => Self::Default,
        }
    }
}

/// One column of the key the snapshot pages by.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct KeyCol {
    /// Index of the output column.
    pub(super) index: usize,
    /// The column's type as SQL (`format_type`), e.g. `text`, `uuid`, `numeric(10,2)`.
    pub(super) sql_type: String,
    /// `COLLATE "schema"."name"` when the column has a collation, else empty.
    pub(super) collate: String,
}

/// The table as read from the catalog.
#[derive(Debug, Clone)]
pub(super) struct TableInfo {
    pub(super) oid: u32,
    pub(super) columns: Vec<OutCol>,
    /// The primary key, else the first unique index on NOT NULL columns (no expressions, no
    /// predicate), in index column order: what the snapshot pages by. `None`: no such key.
    pub(super) key: Option<Vec<KeyCol>>,
    /// Whether the table has a primary key.
    pub(super) has_primary_key: bool,
    /// The table's replica identity.
    pub(super) identity: ReplicaIdentity,
    /// Whether the replica identity index of `REPLICA IDENTITY USING INDEX` exists.
    pub(super) identity_index: bool,
    /// The catalog's description of the enum, domain and array types met so far.
    pub(super) types: HashMap<u32, TypeMeta>,
}

/// Fetch from `pg_type` what [`resolve_type`] needs to resolve `oids` (domains and array
/// elements are followed, a few rounds at most), adding it to `types`.
pub(super) async fn fetch_type_meta(
    client: &Client,
    oids: impl IntoIterator<Item = u32>,
    types: &mut HashMap<u32, TypeMeta>,
) -> WorkResult<()> {
    let oids: Vec<u32> = oids.into_iter().collect();
    for _ in 0..8 {
        let mut need: Vec<u32> = oids.iter().flat_map(|o| missing_meta(*o, types)).collect();
        need.sort_unstable();
        need.dedup();
        if need.is_empty() {
            break;
        }
        let rows = client.query(TYPE_META_SQL, &[&need]).await?;
        for row in &rows {
            let byte = |i: usize| row.get::<_, &str>(i).bytes().next().unwrap_or(b' ');
            types.insert(
                row.get(0),
                TypeMeta {
                    typtype: byte(1),
                    category: byte(2),
                    elem: row.get(3),
                    base: row.get(4),
                    base_typmod: row.get(5),
                },
            );
        }
        // An OID the catalog does not have (a type dropped meanwhile) stays unresolved.
        for oid in need {
            types.entry(oid).or_insert(TypeMeta {
                typtype: b'?',
                category: b'?',
                elem: 0,
                base: 0,
                base_typmod: -1,
            });
        }
    }
    Ok(())
}

impl TableInfo {
    /// Whether PostgreSQL can publish this table's updates and deletes (it has a replica
    /// identity: a primary key, an identity index, or FULL).
    pub(super) fn replicates_updates(&self) -> bool {
        match self.identity {
            ReplicaIdentity::Full => true,
            ReplicaIdentity::Default => self.has_primary_key,
            ReplicaIdentity::Index => self.identity_index,
            ReplicaIdentity::Nothing => false,
        }
    }
}

pub(super) async fn table_info(
    client: &Client,
    name: &str,
    schema: &str,
    table: &str,
) -> WorkResult<TableInfo> {
    let qualified = format!("{schema}.{table}");
    let rows = client
        .query(
            "SELECT c.oid, a.attname::text, a.atttypid, a.atttypmod, a.attnum, \
                    format_type(a.atttypid, a.atttypmod), \
                    (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname) FROM pg_collation co \
                       JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation), \
                    c.relreplident::text, c.relkind::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
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
    let relkind: &str = rows[0].get(8);
    if relkind != "r" {
        return Err(Error::source_permanent(
            name,
            format!("{qualified} is not a plain table (relkind {relkind:?}: a view, partitioned table, foreign table or other relation), which this source cannot capture; capture a plain table (each partition as its own stream)"),
        )
        .into());
    }
    let oid: u32 = rows[0].get(0);
    let identity = ReplicaIdentity::from_char(rows[0].get(7));
    let mut columns = Vec::new();
    let mut attnums = Vec::new();
    let mut types = Vec::new();
    let mut type_meta = HashMap::new();
    fetch_type_meta(
        client,
        rows.iter().map(|r| r.get::<_, u32>(2)),
        &mut type_meta,
    )
    .await?;
    for row in &rows {
        let col: String = row.get(1);
        let type_oid: u32 = row.get(2);
        let typmod: i32 = row.get(3);
        attnums.push(row.get::<_, i16>(4));
        types.push((
            row.get::<_, String>(5),
            row.get::<_, Option<String>>(6).unwrap_or_default(),
        ));
        let data_type = resolve_type(type_oid, typmod, &type_meta).ok_or_else(|| {
            Error::source_permanent(
                name,
                format!("table {qualified} column {col:?} has a type (oid {type_oid}) this source does not support; supported: {SUPPORTED_TYPES}; cast it in a view-free way or exclude the table"),
            )
        })?;
        columns.push(OutCol {
            name: col,
            data_type,
        });
    }
    // Unique indexes usable as a key: the primary key first, then the replica identity
    // index, then the one with the fewest columns.
    let indexes = client
        .query(
            "SELECT i.indisprimary, i.indisreplident, i.indkey::int2[] \
             FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid \
               AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL \
               AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey::int2[]) k JOIN pg_attribute a \
                               ON a.attrelid = i.indrelid AND a.attnum = k WHERE NOT a.attnotnull) \
             ORDER BY i.indisprimary DESC, i.indisreplident DESC, \
                      array_length(i.indkey::int2[], 1), i.indexrelid",
            &[&oid],
        )
        .await?;
    let has_primary_key = indexes.iter().any(|r| r.get::<_, bool>(0));
    let identity_index = client
        .query_opt(
            "SELECT 1 FROM pg_index WHERE indrelid = $1 AND indisreplident AND indisvalid",
            &[&oid],
        )
        .await?
        .is_some();
    let key = indexes.first().and_then(|r| {
        r.get::<_, Vec<i16>>(2)
            .iter()
            .map(|attnum| {
                let index = attnums.iter().position(|a| a == attnum)?;
                Some(KeyCol {
                    index,
                    sql_type: types[index].0.clone(),
                    collate: types[index].1.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()
    });
    Ok(TableInfo {
        oid,
        columns,
        key,
        has_primary_key,
        identity,
        identity_index,
        types: type_meta,
    })
}

/// Rows being collected into one Arrow batch.
pub(super) struct RowsBuilder {
    schema: SchemaRef,
    cols: Vec<ColumnBuilder>,
    op: StringBuilder,
    lsn: UInt64Builder,
    ts: TimestampMicrosecondBuilder,
    xid: Int64Builder,
    unchanged: ListBuilder<StringBuilder>,
    ok: Vec<bool>,
}

/// The metadata column listing, per row, the columns whose value is unavailable: an unchanged
/// TOASTed value that an update did not touch and the replica identity did not carry.
pub const UNCHANGED_TOAST_COLUMN: &str = "_unchanged_toast";

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
    fields.push(Field::new(
        UNCHANGED_TOAST_COLUMN,
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        true,
    ));
    Arc::new(Schema::new(fields))
}

impl RowsBuilder {
    pub(super) fn new(columns: &[OutCol]) -> Self {
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
            unchanged: ListBuilder::new(StringBuilder::new()),
            ok: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ok.len()
    }

    /// Append one row; `value(i)` gives output column `i`'s text, `unchanged` the names of the
    /// columns whose value is unavailable (null in the row). Returns the first conversion
    /// error (the row is then dropped from the batch at `finish`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append<'v>(
        &mut self,
        value: impl Fn(usize) -> Option<&'v str>,
        unchanged: &[&str],
        op: &str,
        lsn: Lsn,
        commit_ts: Option<i64>,
        xid: Option<u32>,
        names: &[OutCol],
    ) -> std::result::Result<(), String> {
        let put = |i: usize, b: &mut ColumnBuilder| value(i).map(|text| b.append_text(text));
        self.append_with(put, unchanged, op, lsn, commit_ts, xid, names)
    }

    /// Append one snapshot row read with binary `COPY`: `value(i)` is output column `i` in
    /// the binary format of the type [`binary_cast`](super::types::binary_cast) cast it to.
    pub(super) fn append_binary<'v>(
        &mut self,
        value: impl Fn(usize) -> Option<&'v [u8]>,
        lsn: Lsn,
        names: &[OutCol],
    ) -> std::result::Result<(), String> {
        let put = |i: usize, b: &mut ColumnBuilder| value(i).map(|v| b.append_binary(v));
        self.append_with(put, &[], "r", lsn, None, None, names)
    }

    #[allow(clippy::too_many_arguments)]
    fn append_with(
        &mut self,
        put: impl Fn(usize, &mut ColumnBuilder) -> Option<std::result::Result<(), String>>,
        unchanged: &[&str],
        op: &str,
        lsn: Lsn,
        commit_ts: Option<i64>,
        xid: Option<u32>,
        names: &[OutCol],
    ) -> std::result::Result<(), String> {
        let mut first_err = None;
        for (i, b) in self.cols.iter_mut().enumerate() {
            match put(i, b) {
                None => b.append_null(),
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    b.append_null();
                    first_err.get_or_insert_with(|| format!("column {:?}: {e}", names[i].name));
                }
            }
        }
        self.op.append_value(op);
        self.lsn.append_value(lsn.0);
        self.ts.append_option(commit_ts);
        self.xid.append_option(xid.map(i64::from));
        if unchanged.is_empty() {
            self.unchanged.append_null();
        } else {
            for name in unchanged {
                self.unchanged.values().append_value(name);
            }
            self.unchanged.append(true);
        }
        self.ok.push(first_err.is_none());
        first_err.map_or(Ok(()), Err)
    }

    pub(super) fn finish(&mut self) -> Result<RecordBatch> {
        // The builders start the next batch with room for as many rows as this one.
        let rows = self.len();
        let mut arrays: Vec<ArrayRef> = self.cols.iter_mut().map(|b| b.finish_sized()).collect();
        let op = std::mem::replace(&mut self.op, StringBuilder::with_capacity(rows, rows)).finish();
        arrays.push(Arc::new(op));
        let lsn = std::mem::replace(&mut self.lsn, UInt64Builder::with_capacity(rows)).finish();
        arrays.push(Arc::new(lsn));
        let ts = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        arrays.push(Arc::new(std::mem::replace(&mut self.ts, ts).finish()));
        let xid = std::mem::replace(&mut self.xid, Int64Builder::with_capacity(rows)).finish();
        arrays.push(Arc::new(xid));
        arrays.push(Arc::new(self.unchanged.finish()));
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

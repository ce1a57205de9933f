//! The captured table's shape, and turning decoded rows into Arrow batches.

use std::sync::Arc;

use arcane_core::{Error, Result};
use arrow_array::builder::{
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tokio_postgres::Client;

use super::client::WorkResult;
use super::pgoutput::Lsn;
use super::types::{ColumnBuilder, SUPPORTED_TYPES, arrow_type};

/// One output column of the table.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OutCol {
    pub(super) name: String,
    pub(super) data_type: DataType,
}

/// The table as read from the catalog.
#[derive(Debug, Clone)]
pub(super) struct TableInfo {
    pub(super) oid: u32,
    pub(super) columns: Vec<OutCol>,
    /// Index of the single integer primary-key column, if there is one.
    pub(super) pk: Option<usize>,
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
pub(super) struct RowsBuilder {
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
            ok: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ok.len()
    }

    /// Append one row; `value(i)` gives output column `i`'s text. Returns the first conversion
    /// error (the row is then dropped from the batch at `finish`).
    pub(super) fn append<'v>(
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

    pub(super) fn finish(&mut self) -> Result<RecordBatch> {
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

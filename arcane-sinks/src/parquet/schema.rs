//! Checking incoming batches against the target schema.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{Schema, SchemaRef};

/// A batch made to fit the target schema, and the rows that could not be.
#[derive(Debug)]
pub(crate) struct Conformed {
    /// The convertible rows, with the target schema.
    pub(crate) batch: RecordBatch,
    /// Rows (index in the incoming batch) that cannot be converted, with the reason.
    pub(crate) rejected: Vec<(usize, String)>,
}

/// Fit `batch` to `target`.
///
/// * A missing nullable column is filled with nulls.
/// * A missing non-nullable column, a column of another type, or a column the target does not
///   have is a schema mismatch (`Err` with the description).
/// * A null in a column the target declares non-nullable rejects that row.
pub(crate) fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<Conformed, String> {
    let incoming = batch.schema();
    for f in incoming.fields() {
        if target.field_with_name(f.name()).is_err() {
            return Err(format!(
                "column \"{}\" ({}) is not in the sink schema [{}]",
                f.name(),
                f.data_type(),
                describe(target)
            ));
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    let mut bad: Option<Vec<Option<String>>> = None;
    for field in target.fields() {
        match incoming.index_of(field.name()) {
            Err(_) if field.is_nullable() => columns.push(arrow_array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
            Err(_) => {
                return Err(format!(
                    "non-nullable column \"{}\" ({}) is missing",
                    field.name(),
                    field.data_type()
                ));
            }
            Ok(i) => {
                let col = batch.column(i);
                if col.data_type() != field.data_type() {
                    return Err(format!(
                        "column \"{}\" changed type: expected {}, found {}",
                        field.name(),
                        field.data_type(),
                        col.data_type()
                    ));
                }
                if !field.is_nullable() && col.null_count() > 0 {
                    let reasons = bad.get_or_insert_with(|| vec![None; batch.num_rows()]);
                    for (row, reason) in reasons.iter_mut().enumerate() {
                        if col.is_null(row) && reason.is_none() {
                            *reason = Some(format!(
                                "column \"{}\" is null but the sink schema requires a value",
                                field.name()
                            ));
                        }
                    }
                }
                columns.push(col.clone());
            }
        }
    }
    let all = RecordBatch::try_new(
        Arc::new(Schema::new(
            target
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        )),
        columns,
    )
    .map_err(|e| format!("cannot assemble batch: {e}"))?;
    let (kept, rejected) = match bad {
        None => (all, Vec::new()),
        Some(reasons) => {
            let keep = BooleanArray::from(reasons.iter().map(|r| r.is_none()).collect::<Vec<_>>());
            let kept = arrow_select::filter::filter_record_batch(&all, &keep)
                .map_err(|e| format!("cannot filter rejected rows: {e}"))?;
            let rejected = reasons
                .into_iter()
                .enumerate()
                .filter_map(|(i, r)| r.map(|r| (i, r)))
                .collect();
            (kept, rejected)
        }
    };
    let batch = RecordBatch::try_new(target.clone(), kept.columns().to_vec())
        .map_err(|e| format!("cannot convert to the sink schema: {e}"))?;
    Ok(Conformed { batch, rejected })
}

fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{}: {}{}",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " not null" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `target` widened by the columns of `incoming` it does not have, when all of them are
/// nullable: `Some((widened, added column names))`; `None` when there is nothing to add or a new
/// column is non-nullable (then the batch is a plain mismatch).
pub(crate) fn widen(target: &Schema, incoming: &Schema) -> Option<(SchemaRef, Vec<String>)> {
    let added: Vec<_> = incoming
        .fields()
        .iter()
        .filter(|f| target.field_with_name(f.name()).is_err())
        .collect();
    if added.is_empty() || added.iter().any(|f| !f.is_nullable()) {
        return None;
    }
    let mut fields: Vec<arrow_schema::FieldRef> = target.fields().iter().cloned().collect();
    fields.extend(added.iter().map(|f| {
        Arc::new(
            f.as_ref()
                .clone()
                .with_metadata(std::collections::HashMap::new()),
        )
    }));
    let names = added.iter().map(|f| f.name().clone()).collect();
    Some((Arc::new(Schema::new(fields)), names))
}

/// A schema learned from a batch: its fields without metadata.
pub(crate) fn learn(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_metadata(std::collections::HashMap::new())
            })
            .collect::<Vec<_>>(),
    ))
}

/// `batch` with its top-level second and millisecond timestamp columns converted to
/// microseconds (lossless), the unit Delta Lake and Iceberg store; other columns as they are.
pub(crate) fn to_micros(batch: RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let schema = batch.schema();
    let slow = |t: &arrow_schema::DataType| {
        matches!(
            t,
            arrow_schema::DataType::Timestamp(
                arrow_schema::TimeUnit::Second | arrow_schema::TimeUnit::Millisecond,
                _
            )
        )
    };
    if !schema.fields().iter().any(|f| slow(f.data_type())) {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, col) in schema.fields().iter().zip(batch.columns()) {
        match f.data_type() {
            arrow_schema::DataType::Timestamp(
                arrow_schema::TimeUnit::Second | arrow_schema::TimeUnit::Millisecond,
                tz,
            ) => {
                let t = arrow_schema::DataType::Timestamp(
                    arrow_schema::TimeUnit::Microsecond,
                    tz.clone(),
                );
                columns.push(arrow_cast::cast(col, &t)?);
                fields.push(f.as_ref().clone().with_data_type(t));
            }
            _ => {
                columns.push(col.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new_with_metadata(
            fields,
            schema.metadata().clone(),
        )),
        columns,
    )
}
